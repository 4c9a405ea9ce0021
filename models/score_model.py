"""ScoreModel: a network and an SDE, turning the network's raw output into score, x0 and eps."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from score_sde.models.parameterization import check_prediction, convert, eps_and_x0
from score_sde.sde_lib import SDE, batch_times


@dataclass
class Prediction:
    """Everything a network output implies at (x_t, t), each (B, *D).

    Attributes:
        output: the network's raw output, of kind `ScoreModel.prediction`.
        score: grad log p_t(x_t).
        x0: E[x0 | x_t].
        eps: E[eps | x_t], with x_t = alpha_t x0 + sigma_t eps.
    """

    output: Tensor
    score: Tensor
    x0: Tensor
    eps: Tensor


class ScoreModel(nn.Module):
    """The score s(x, t, y, cond) of a network that predicts eps, score, x0 or v.

    The network is called as net(x_t, t) with t as is, the SDE's time in [0, T] (it never sees
    the SDE), plus the labels y and the image condition `cond=` when they are given; the
    conversions of `models.parameterization` turn its output into the score, x0 and eps through
    alpha(t), sigma(t). Calling the model returns the score, so a ScoreModel is a `score_fn(x, t)`
    for the samplers and for `sde_lib.dsm_loss` (`partial(model, cond=c)` with a condition).

    The shapes of x, t and the output are checked on every call; the values of t are not (that
    would cost a host sync per call): the samplers and `dsm_loss` check their times at entry.

    Args:
        net: a module with forward(x (B, *D), t (B,), y=None) -> (B, *D) (and a `cond=` keyword
            for an image-conditional network such as `models.UNet(cond_channels=...)`).
        sde: the forward SDE whose alpha(t), sigma(t) define the parameterisation.
        prediction: what net outputs: "eps", "score", "x0" or "v" (see `models.parameterization`).
    """

    def __init__(self, net: nn.Module, sde: SDE, prediction: str = "eps"):
        super().__init__()
        if not isinstance(sde, SDE):
            raise ValueError(f"sde must be an sde_lib.SDE, got {type(sde).__name__}")
        self.net = net
        self.sde = sde
        self.prediction = check_prediction(prediction)

    def _output(self, x: Tensor, t: Tensor, y: Tensor | None, cond: Tensor | None) -> Tensor:
        labels = () if y is None else (y,)
        out = self.net(x, t, *labels) if cond is None else self.net(x, t, *labels, cond=cond)
        if out.shape != x.shape:
            raise ValueError(f"net must return the shape of x {tuple(x.shape)}, got "
                             f"{tuple(out.shape)}")
        return out

    def _marginal_coefs(self, x: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """t as (B,), alpha(t), sigma(t): shapes checked, values not (no host sync)."""
        t = batch_times(x, t, self.sde.T, check=False)
        return t, self.sde.alpha(t, check=False), self.sde.sigma(t, check=False)

    def _convert(self, x: Tensor, t: float | Tensor, y: Tensor | None, cond: Tensor | None,
                 target: str) -> Tensor:
        t, alpha, sigma = self._marginal_coefs(x, t)
        return convert(self._output(x, t, y, cond), x, alpha, sigma, source=self.prediction,
                       target=target)

    def forward(self, x: Tensor, t: float | Tensor, y: Tensor | None = None, *,
                cond: Tensor | None = None) -> Tensor:
        """The score grad log p_t(x | y, cond).

        Args:
            x: (B, *D) noisy data x_t.
            t: a float or (B,) times in [0, T] (sigma(t) > 0 needed; VP: t > 0).
            y: optional (B,) integer labels for a class-conditional network.
            cond: optional (B, C_cond, *D[1:]) image condition for an image-conditional network.

        Returns:
            (B, *D).
        """
        return self._convert(x, t, y, cond, "score")

    score = forward  # the score by name, as x0 and eps below

    def x0(self, x: Tensor, t: float | Tensor, y: Tensor | None = None, *,
           cond: Tensor | None = None) -> Tensor:
        """The denoised estimate E[x0 | x_t = x], (B, *D)."""
        return self._convert(x, t, y, cond, "x0")

    def eps(self, x: Tensor, t: float | Tensor, y: Tensor | None = None, *,
            cond: Tensor | None = None) -> Tensor:
        """The noise estimate E[eps | x_t = x], (B, *D)."""
        return self._convert(x, t, y, cond, "eps")

    def predict(self, x: Tensor, t: float | Tensor, y: Tensor | None = None, *,
                cond: Tensor | None = None) -> Prediction:
        """Score, x0 and eps from one network evaluation (DDIM-style solvers need eps and x0)."""
        t, alpha, sigma = self._marginal_coefs(x, t)
        out = self._output(x, t, y, cond)
        eps, x0 = eps_and_x0(out, x, alpha, sigma, self.prediction)
        score = convert(out, x, alpha, sigma, source=self.prediction, target="score")
        return Prediction(output=out, score=score, x0=x0, eps=eps)

    def extra_repr(self) -> str:
        return f"prediction={self.prediction!r}, sde={self.sde!r}"
