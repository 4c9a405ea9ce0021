"""score-sde: continuous-time score-based diffusion models on PyTorch.

One import root: `score_sde.sde_lib` (the SDEs, the loss, the Gaussian-mixture oracle),
`score_sde.models` (networks, parameterisations, EMA), `score_sde.solvers` (samplers and
likelihoods) and the application modules (`score_sde.cli`, `score_sde.train`, ...) beside them.
Importing the package imports none of them.
"""

__version__ = "0.2.0"
