"""Overrides for app runs of seconds, shared by the app tests (a uniquely named module, not
conftest: spawned DDP workers re-import the test modules and would find the root conftest)."""

# a run of a few steps on 256 ring points with a 1-block MLP: seconds, not minutes
TINY = [
    "logger=none", "threads=1", "train.steps=6", "train.batch_size=32", "train.warmup=2",
    "progress=false", "train.log_every=1", "checkpoint.every=2", "checkpoint.keep=2",
    "data.n_train=256", "data.n_test=32", "model.net.hidden=16", "model.net.depth=1",
    "model.net.embed_dim=8", "eval.n_samples=16", "eval.nll_points=8", "eval.rtol=1e-3",
    "eval.atol=1e-3", "solver.steps=5",
]
# a tiny run that evaluates no NLL and draws no paths: the `trained` fixture's (conftest.py)
QUICK = TINY + ["eval.nll_points=0", "eval.paths=false"]

# a digits preset (experiment=...) on a 2-step, 8-channel U-Net with a 4-point evaluation
TINY_DIGITS = [
    "logger=none", "train.steps=2", "train.batch_size=8", "progress=false", "model.net.channels=8",
    "model.net.norm_groups=4", "eval.n_samples=4", "eval.nll_points=4", "eval.rtol=1e-2",
    "eval.atol=1e-2", "solver.steps=3",
]
