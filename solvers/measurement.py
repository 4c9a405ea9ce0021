"""Training-free posterior sampling for a known linear measurement y = A x + n, n ~ N(0, s_y^2 I).

By Bayes (docs/math.md, "Conditional generation"), grad log p_t(x | y) = grad log p_t(x) +
grad log p_t(y | x); the second term needs p_t(y | x_t) = int p(y | x_0) p(x_0 | x_t) dx_0, which no
model gives. The methods differ in how they replace p(x_0 | x_t), all around Tweedie's denoiser
x0_hat(x_t) = (x_t + sigma_t^2 s(x_t, t)) / alpha_t:

    dps          p(x_0 | x_t) ~ delta(x0_hat)          (Chung et al. 2023, "DPS")
                 grad log p_t(y | x) ~ -grad_x |y - A x0_hat(x)|^2 / (2 s_y^2)
    pigdm        p(x_0 | x_t) ~ N(x0_hat, r_t^2 I),    r_t^2 = d^2 sigma^2 / (alpha^2 d^2 + sigma^2)
                 (Song et al. 2023, "Pi-GDM"; d = data_std)
                 grad log p_t(y | x) ~ J^T A^T (r_t^2 A A^T + s_y^2 I)^-1 (y - A x0_hat),
                 J = d x0_hat / d x_t: exact when the data are N(m, d^2 I)

With jacobian="gaussian" both methods replace J by its value under an N(m, d^2 I) prior,
alpha d^2 / (alpha^2 d^2 + sigma^2) I, instead of backpropagating through the network: no backward
pass, and no blow-up near T, where J = (I + sigma^2 ds/dx) / alpha amplifies the network's Jacobian
error by 1 / alpha (about 150 at t = 1 on the default VP SDE) and the published methods diverge on a
trained image model. On an N(m, d^2 I) prior the two are equal.
    replacement  A a coordinate mask: the known coordinates follow the exact reverse process of
                 their forward-noised measurement, score -(x_k - alpha y) / (sigma^2 + alpha^2 s_y^2),
                 and the unknown ones take the model's score at the current state (score_sde's
                 inpainting written as a score; exact when known and unknown parts are independent)

Legend: s the prior score model, A a `solvers.operators.LinearOperator` (or an (M, N) matrix),
s_y = noise_std, `scale` multiplies the likelihood term (DPS's step size; 1 is Bayes).

Cost: one guided evaluation is one score call, plus one backward pass through it for dps and pigdm
(a sampler's `nfe` counts guided evaluations). Their bias against the exact posterior is tabulated
by `bench/inverse_problems.py`; none of the three is exact for a general prior.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from score_sde.sde_lib import SDE, ScoreFn, append_dims, check_number, x0_from_score
from score_sde.solvers.operators import LinearOperator, matrix_operator

METHODS = ("dps", "pigdm", "replacement")
JACOBIANS = ("network", "gaussian")
_EIGEN_MAX = 1 << 22  # M * N up to which pigdm solves with an eigendecomposition of A A^T


class _GramSolver:
    """Solves (r^2 A A^T + s^2 I) v = b for per-sample r^2 (B,): in closed form when A A^T = c I, by
    an eigendecomposition of A A^T for small operators, else by `cg_steps` steps of conjugate
    gradients (no host synchronisation)."""

    def __init__(self, op: LinearOperator, noise_var: float, cg_steps: int):
        self.op, self.s2, self.cg_steps = op, noise_var, cg_steps
        self.eig: tuple[Tensor, Tensor] | None = None
        if op.gram_scale is None and op.num_measurements * math.prod(op.event_shape) <= _EIGEN_MAX:
            a = op.matrix()
            self.eig = torch.linalg.eigh(a @ a.T)

    def __call__(self, b: Tensor, r2: Tensor) -> Tensor:
        r2 = r2[:, None]
        if self.op.gram_scale is not None:
            return b / (r2 * self.op.gram_scale + self.s2)
        if self.eig is not None:
            lam, u = (v.to(b) for v in self.eig)
            return ((b @ u) / (r2 * lam + self.s2)) @ u.T
        v, res = torch.zeros_like(b), b.clone()
        p, rr = res.clone(), (res * res).sum(1, keepdim=True)
        for _ in range(self.cg_steps):
            ap = r2 * self.op.gram(p) + self.s2 * p
            step = rr / (p * ap).sum(1, keepdim=True).clamp_min(torch.finfo(b.dtype).tiny)
            v, res = v + step * p, res - step * ap
            rr_new = (res * res).sum(1, keepdim=True)
            p, rr = res + rr_new / rr.clamp_min(torch.finfo(b.dtype).tiny) * p, rr_new
        return v


def measurement_guidance(sde: SDE, score_fn: ScoreFn, operator: LinearOperator | Tensor,
                         y: Tensor, noise_std: float, *, method: str = "pigdm", scale: float = 1.0,
                         data_std: float = 1.0, jacobian: str = "network", cg_steps: int = 50
                         ) -> ScoreFn:
    """A score_fn(x, t) of the posterior p_t(x | y), approximately, for any sampler.

    Args:
        sde: the SDE the prior score belongs to.
        score_fn: the prior score_fn(x, t) -> like x, x (B, *D), t (B,).
        operator: A, a `LinearOperator` (solvers.operators) or an (M, N) matrix on flattened events.
        y: the measurement, (M,) for the whole batch or (B, M) (any shape with M entries per row).
        noise_std: s_y >= 0, the std of the measurement noise (dps needs s_y > 0).
        method: "dps", "pigdm" or "replacement" (A a coordinate mask, `operators.mask_operator`).
        scale: the weight of the likelihood term, >= 0 (dps and pigdm; 1 is Bayes' rule).
        data_std: d, the prior's std per coordinate assumed by pigdm's r_t and by
            jacobian="gaussian" (data scaled to [-1, 1]: about 0.5; with the network's Jacobian,
            d = 0 turns pigdm into dps).
        jacobian: d x0_hat / d x_t of dps and pigdm: "network" (a backward pass through score_fn,
            as published) or "gaussian" (the N(m, d^2 I) prior's, alpha d^2 / (alpha^2 d^2 +
            sigma^2); needs data_std > 0).
        cg_steps: conjugate-gradient steps of pigdm for operators with no closed-form A A^T.

    Returns:
        score_fn(x, t) -> (B, *D).

    Raises:
        ValueError: an unknown method, a bad number, a y that does not fit A, replacement with an
            operator that is not a mask, dps with noise_std = 0.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    noise_std = check_number("noise_std", noise_std, strict=False)
    scale = check_number("scale", scale, strict=False)
    data_std = check_number("data_std", data_std, strict=False)
    op = operator if isinstance(operator, LinearOperator) else matrix_operator(operator)
    y = torch.as_tensor(y)
    if y.numel() % op.num_measurements != 0 or not bool(torch.isfinite(y).all()):
        raise ValueError(f"y must be finite with {op.num_measurements} entries per measurement "
                         f"(A is {op.name}, M = {op.num_measurements}), got shape {tuple(y.shape)}")
    y = y.reshape(-1, op.num_measurements)
    if jacobian not in JACOBIANS:
        raise ValueError(f"jacobian must be one of {JACOBIANS}, got {jacobian!r}")
    if jacobian == "gaussian" and data_std == 0:
        raise ValueError("jacobian='gaussian' needs data_std > 0 (the prior's std per coordinate; "
                         "about 0.5 for data in [-1, 1])")
    if method == "dps" and noise_std == 0:
        raise ValueError("method='dps' needs noise_std > 0 (its likelihood is N(y; A x0_hat, "
                         "noise_std^2 I)); use 'pigdm' or 'replacement' for exact measurements")
    if method == "replacement":
        if op.known is None:
            raise ValueError(f"method='replacement' needs a coordinate mask "
                             f"(operators.mask_operator), got the operator {op.name!r}")
        if scale != 1:
            raise ValueError(f"scale has no meaning for method='replacement', got {scale}")
        return _replacement(sde, score_fn, op, y, noise_std)
    solve = _GramSolver(op, noise_std**2, cg_steps) if method == "pigdm" else None

    def residual_weights(target: Tensor, a_x0: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """v (B, M) with grad log p_t(y | x) = J^T A^T v."""
        if solve is None:  # dps
            return (target - a_x0) / noise_std**2
        return solve(target - a_x0, data_std**2 * sigma**2 / (alpha**2 * data_std**2 + sigma**2))

    def guided(x: Tensor, t: Tensor) -> Tensor:
        target = _rows(y, x)
        alpha, sigma = sde.alpha(t, check=False).to(x), sde.sigma(t, check=False).to(x)
        if jacobian == "gaussian":
            score = score_fn(x, t)
            x0_hat = x0_from_score(x, score, append_dims(alpha, x.ndim), append_dims(sigma, x.ndim))
            v = residual_weights(target, op(x0_hat), alpha, sigma)
            jac = alpha * data_std**2 / (alpha**2 * data_std**2 + sigma**2)
            return score + scale * append_dims(jac, x.ndim) * op.transpose(v)
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            score = score_fn(x_in, t)
            x0_hat = x0_from_score(x_in, score, append_dims(alpha, x.ndim),
                                   append_dims(sigma, x.ndim))
            a_x0 = op(x0_hat)
            v = residual_weights(target, a_x0.detach(), alpha, sigma)
            (grad,) = torch.autograd.grad((v * a_x0).sum(), x_in)  # J^T A^T v
        return score.detach() + scale * grad

    return guided


def damped_pseudo_inverse(operator: LinearOperator | Tensor, damping: float, *,
                          cg_steps: int = 50) -> Callable[[Tensor], Tensor]:
    """y -> A^T (A A^T + damping I)^-1 y, the back-projection of measurements to events.

    It is (A^T A + damping I)^-1 A^T y (push-through identity): Tikhonov-regularised least squares,
    and the Wiener (linear MMSE) estimate of x from y = A x + n when x ~ N(0, d^2 I) and
    n ~ N(0, s_y^2 I) with damping = s_y^2 / d^2. For f x f average pooling it is nearest-neighbour
    upsampling scaled by 1 / (1 + f^2 damping); for a mask, y at the known coordinates scaled by
    1 / (1 + damping) and 0 elsewhere; for a blur, a Wiener deconvolution (zero padding, solved like
    pigdm's linear system: in closed form, by an eigendecomposition, or by conjugate gradients).

    Args:
        operator: A, a `LinearOperator` or an (M, N) matrix.
        damping: >= 0; 0 is the pseudoinverse and needs A A^T invertible.
        cg_steps: conjugate-gradient steps for large operators without a closed-form A A^T.

    Returns:
        back_project(y (B, M)) -> (B, *D).
    """
    damping = check_number("damping", damping, strict=False)
    op = operator if isinstance(operator, LinearOperator) else matrix_operator(operator)
    solve = _GramSolver(op, damping, cg_steps)

    def back_project(y: Tensor) -> Tensor:
        if y.ndim != 2 or y.shape[1] != op.num_measurements:
            raise ValueError(f"y must have shape (B, M) = (B, {op.num_measurements}) for "
                             f"{op.name}, got {tuple(y.shape)}")
        return op.transpose(solve(y, y.new_ones(y.shape[0])))

    return back_project


def _rows(y: Tensor, x: Tensor) -> Tensor:
    """y as (B, M) on x's dtype and device."""
    y = y.to(x)
    if y.shape[0] == 1:
        return y.expand(x.shape[0], -1)
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"y holds {y.shape[0]} measurements but x has batch size {x.shape[0]}; "
                         "give one measurement (M,) or one per sample (B, M)")
    return y


def _replacement(sde: SDE, score_fn: ScoreFn, op: LinearOperator, y: Tensor,
                 noise_std: float) -> ScoreFn:
    known = op.known

    def guided(x: Tensor, t: Tensor) -> Tensor:
        target, idx = _rows(y, x), known.to(x.device)
        alpha = sde.alpha(t, check=False).to(x)[:, None]
        sigma = sde.sigma(t, check=False).to(x)[:, None]
        score = score_fn(x, t).flatten(1).clone()
        x_k = x.flatten(1)[:, idx]
        score[:, idx] = -(x_k - alpha * target) / (sigma**2 + alpha**2 * noise_std**2)
        return score.reshape(x.shape)

    return guided
