"""Samplers and exact likelihoods over any `sde_lib` SDE and any score function score_fn(x, t)."""
