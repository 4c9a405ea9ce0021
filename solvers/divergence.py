"""Divergences of a vector field on a batch, exactly or by the Skilling-Hutchinson estimator.

A field `fn(x) -> like x` on x of shape (B, *D) is assumed to act on each sample separately (a
score network in eval mode does), so its Jacobian is block-diagonal over the batch and one
vector-Jacobian product with the same cotangent for every sample gives one row of every sample's
Jacobian at once. Both estimators are built on vector-Jacobian products (`_vjp`):

    exact        div fn(x) = sum_i e_i^T J(x) e_i, the N = prod(D) basis vectors vmapped in chunks
                 of `chunk_size` (memory chunk_size * B * N), never a Python loop over dimensions
    hutchinson   div fn(x) ~ v^T J(x) v with E[v v^T] = I, one estimate per probe v (P, B, *D)

Both return the value fn(x) as well, from the same forward pass, and run with gradients enabled
whatever the caller's grad mode, differentiating with respect to x only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from score_sde.sde_lib import check_int

Field = Callable[[Tensor], Tensor]
NOISES = ("rademacher", "gaussian")
_CHUNK_ELEMENTS = 2**24  # default memory budget of one exact-divergence chunk, in tensor elements


def _vjp(fn: Field, x: Tensor, batched: bool) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """fn(x) and a function mapping cotangents (K, *x.shape) to their products with fn's
    Jacobian, (K, *x.shape); it may be called more than once. Unbatched, each cotangent takes a
    plain backward pass (one costs about half of `torch.func.vjp`'s overhead on small problems);
    batched, they go through `torch.func.vjp` and `vmap`, which every op of diffusers' UNet
    supports (autograd's `is_grads_batched` does not)."""
    with torch.enable_grad():  # vmapped backward under no_grad fails in some ops (diffusers' UNet)
        if not batched:
            y = x.detach().requires_grad_()
            value = fn(y)
        else:
            value, func_vjp = torch.func.vjp(fn, x.detach())
    if value.shape != x.shape:
        raise ValueError(f"the field must return a tensor shaped like x {tuple(x.shape)}, got "
                         f"{tuple(value.shape)}")

    def vjp_fn(cotangents: Tensor) -> Tensor:
        with torch.enable_grad():
            if batched:
                return torch.func.vmap(lambda v: func_vjp(v)[0])(cotangents)
            if not value.requires_grad:  # fn does not depend on x
                return torch.zeros_like(cotangents)
            return torch.stack([torch.autograd.grad(value, y, c, retain_graph=True,
                                                    materialize_grads=True)[0]
                                for c in cotangents])

    return value.detach(), vjp_fn


def default_chunk_size(x: Tensor) -> int:
    """Basis vectors per exact-divergence chunk: keeps one chunk under 2^24 elements (64 MiB in
    float32) for x of shape (B, *D), and at least 1."""
    n = x[0].numel()
    return max(1, min(n, _CHUNK_ELEMENTS // max(1, x.numel())))


def exact_divergence(fn: Field, x: Tensor, *, chunk_size: int | None = None
                     ) -> tuple[Tensor, Tensor]:
    """fn(x) and its exact divergence, one vmapped vector-Jacobian product per basis vector.

    Args:
        fn: the field, (B, *D) -> (B, *D), acting on each sample separately.
        x: (B, *D) where to evaluate.
        chunk_size: basis vectors per vmapped batch (default: `default_chunk_size(x)`).

    Returns:
        (fn(x) of shape (B, *D), div fn(x) of shape (B,)).
    """
    if chunk_size is None:
        chunk_size = default_chunk_size(x)
    check_int("chunk_size", chunk_size)
    b, n = x.shape[0], x[0].numel()
    value, vjp_fn = _vjp(fn, x, batched=n > 1)
    div = x.new_zeros(b)
    for start in range(0, n, chunk_size):
        idx = torch.arange(start, min(start + chunk_size, n), device=x.device)
        basis = torch.zeros(len(idx), 1, n, dtype=x.dtype, device=x.device)
        basis[torch.arange(len(idx)), 0, idx] = 1
        basis = basis.expand(-1, b, -1).reshape(len(idx), *x.shape)
        jac_rows = vjp_fn(basis).reshape(len(idx), b, n)  # row i of every sample's Jacobian
        div = div + jac_rows.gather(2, idx.view(-1, 1, 1).expand(-1, b, 1)).sum((0, 2))
    return value, div.detach()


def draw_probes(x: Tensor, probes: int, noise: str = "rademacher", *,
                generator: torch.Generator | None = None) -> Tensor:
    """Hutchinson probes v with E[v v^T] = I, shaped (probes, B, *D) like x.

    Args:
        x: (B, *D), giving shape, dtype and device.
        probes: how many independent probes per sample (>= 1).
        noise: "rademacher" (entries +-1, the lower-variance choice) or "gaussian".
        generator: the source of randomness.
    """
    check_int("probes", probes)
    shape = (probes, *x.shape)
    if noise == "rademacher":
        bits = torch.randint(0, 2, shape, generator=generator, device=x.device)
        return bits.to(x.dtype) * 2 - 1
    if noise == "gaussian":
        return torch.randn(shape, generator=generator, dtype=x.dtype, device=x.device)
    raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")


def _vmap_probes(probes: Tensor) -> bool:
    """Whether P probes (P, B, *D) go through one vmapped backward pass rather than a loop of P:
    from 4 probes, and on the CPU only while the stacked cotangents stay under 2^16 elements
    (measured on the Gaussian mixture and the digits U-Net: vmapped 16 probes cost 0.5x the loop's
    time at 32 x 64 elements a probe, 0.7x on the U-Net, but 1.5x at 8 x 3072; 2 probes 1.1-2.7x)."""
    return len(probes) >= 4 and (probes.device.type != "cpu" or probes.numel() <= 2**16)


def hutchinson_divergence(fn: Field, x: Tensor, probes: Tensor, *, per_coordinate: bool = False
                          ) -> tuple[Tensor, Tensor]:
    """fn(x) and one Skilling-Hutchinson estimate v^T J(x) v of its divergence per probe.

    Args:
        fn: the field, (B, *D) -> (B, *D), acting on each sample separately.
        x: (B, *D) where to evaluate.
        probes: (P, B, *D) probes v with E[v v^T] = I (see `draw_probes`).
        per_coordinate: return the terms v_i (J^T v)_i of each estimate instead of their sum.

    Returns:
        (fn(x) of shape (B, *D), estimates of shape (P, B), or their terms (P, B, *D)).
    """
    if probes.shape[1:] != x.shape:
        raise ValueError(f"probes must have shape (P, *x.shape) = (P, {', '.join(map(str, x.shape))})"
                         f", got {tuple(probes.shape)}")
    value, vjp_fn = _vjp(fn, x, batched=_vmap_probes(probes))
    terms = (vjp_fn(probes) * probes).detach()
    return value, terms if per_coordinate else terms.flatten(2).sum(-1)
