"""What a score network predicts, and the pure conversions between its possible outputs.

The one place where the network's inputs and outputs are written down.

Time input:
    The network is called as net(x_t, t, y) with t *as is*: the SDE's own time in [0, T], a (B,)
    tensor. No `t * 999`, no log(sigma), no noise level: the network never sees the SDE. Any scaling
    of t lives inside the network's time features (e.g. `SinusoidalFeatures(scale=1000)`).

Legend (docs/math.md); the forward marginal is
    x_t = alpha_t x0 + sigma_t eps,   eps ~ N(0, I),
with alpha_t = sde.alpha(t), sigma_t = sde.sigma(t) (VE: alpha_t = 1). Every prediction estimates a
posterior mean given x_t (Tweedie), and each determines the others through alpha_t and sigma_t:

    "eps"    the network estimates E[eps | x_t]              (DDPM)
             score = -eps / sigma,  x0 = (x_t - sigma eps) / alpha
    "score"  the network estimates grad log p_t(x_t)         (NCSN / score_sde)
             eps = -sigma score,  x0 = (x_t + sigma^2 score) / alpha  (Tweedie, sde_lib.x0_from_score)
    "x0"     the network estimates E[x0 | x_t]
             eps = (x_t - alpha x0) / sigma,  score = (alpha x0 - x_t) / sigma^2
    "v"      the network estimates v = alpha eps - sigma x0  (Salimans & Ho 2022)
             eps = (sigma x_t + alpha v) / r^2,  x0 = (alpha x_t - sigma v) / r^2,
             score = -eps / sigma

with r^2 = alpha_t^2 + sigma_t^2 (1 for VP; 1 + sigma^2 for VE, where v = eps - sigma x0). The v
row solves the 2x2 system x_t = alpha x0 + sigma eps, v = alpha eps - sigma x0. The identity
x_t = alpha_t x0 + sigma_t eps holds for every row by construction. (For VE at large sigma,
v ~ -sigma x0 grows with sigma: "eps" is the better-scaled target there.)

The conversions divide by sigma_t (score targets; eps from x0) and by alpha_t (x0 from eps or
score): VP and sub-VP have sigma_0 = 0, so evaluate them at t >= t_eps > 0.

Shapes: output and x_t are (B, *D); alpha_t and sigma_t are (B,) (or 0-d) and broadcast through
`sde_lib.append_dims`.
"""

from __future__ import annotations

from torch import Tensor

from score_sde.sde_lib import append_dims, x0_from_score

PREDICTIONS = ("eps", "score", "x0", "v")


def check_prediction(prediction: str, name: str = "prediction") -> str:
    """Return `prediction` if it is one of PREDICTIONS, else raise a ValueError naming `name`."""
    if prediction not in PREDICTIONS:
        raise ValueError(f"{name} must be one of {PREDICTIONS}, got {prediction!r}")
    return prediction


def eps_and_x0(output: Tensor, x_t: Tensor, alpha_t: Tensor, sigma_t: Tensor,
               prediction: str) -> tuple[Tensor, Tensor]:
    """The (eps, x0) pair that a network output of kind `prediction` stands for.

    Args:
        output: (B, *D) the network's raw output.
        x_t: (B, *D) the noisy input it was given.
        alpha_t: (B,) or 0-d, alpha(t).
        sigma_t: (B,) or 0-d, sigma(t).
        prediction: "eps", "score", "x0" or "v".

    Returns:
        eps, x0, both (B, *D), with x_t = alpha_t x0 + sigma_t eps.
    """
    check_prediction(prediction)
    _check_shapes(output, x_t)
    a, s = append_dims(alpha_t, x_t.ndim), append_dims(sigma_t, x_t.ndim)
    if prediction == "eps":
        return output, (x_t - s * output) / a
    if prediction == "score":
        return -s * output, x0_from_score(x_t, output, a, s)
    if prediction == "x0":
        return (x_t - a * output) / s, output
    r2 = a**2 + s**2
    return (s * x_t + a * output) / r2, (a * x_t - s * output) / r2


def convert(output: Tensor, x_t: Tensor, alpha_t: Tensor, sigma_t: Tensor, *, source: str,
            target: str) -> Tensor:
    """Turn a network output of kind `source` into the quantity of kind `target`.

    Args:
        output: (B, *D) an output of kind `source`.
        x_t: (B, *D) the noisy input.
        alpha_t: (B,) or 0-d, alpha(t).
        sigma_t: (B,) or 0-d, sigma(t).
        source: the kind of `output`: "eps", "score", "x0" or "v".
        target: the kind wanted, one of the same.

    Returns:
        (B, *D) the `target` quantity (`output` itself when source == target).
    """
    check_prediction(source, "source")
    check_prediction(target, "target")
    if source == target:
        _check_shapes(output, x_t)
        return output
    eps, x0 = eps_and_x0(output, x_t, alpha_t, sigma_t, source)
    if target == "eps":
        return eps
    if target == "x0":
        return x0
    a, s = append_dims(alpha_t, x_t.ndim), append_dims(sigma_t, x_t.ndim)
    if target == "score":
        if source == "x0":  # one division by sigma^2 rather than two by sigma
            return (a * output - x_t) / s**2
        return -eps / s
    return a * eps - s * x0


def _check_shapes(output: Tensor, x_t: Tensor) -> None:
    if output.shape != x_t.shape:
        raise ValueError(f"output must have the shape of x_t {tuple(x_t.shape)}, got "
                         f"{tuple(output.shape)}")
