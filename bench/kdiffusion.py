"""k-diffusion (Crowson) as a peer: its samplers and its likelihood on our SDEs' score models.

    pip install --no-deps k-diffusion==0.1.1.post1

k-diffusion's package `__init__` imports torchvision, CLIP, kornia and more, whose binaries do not
match this machine's torch build; its `sampling.py` needs only torch, scipy, torchdiffeq, torchsde,
tqdm and `utils.append_dims`. So `sampling()` loads the installed package's own `sampling.py` file
unchanged, as the module `k_diffusion.sampling`, beside a `k_diffusion.utils` that holds only
`append_dims` (k-diffusion's one-liner, the same semantics). Nothing of k-diffusion is copied here.

k-diffusion works in EDM's variables: x_k = x_t / alpha(t) at noise level sigma_k = sigma(t) /
alpha(t), with a denoiser D(x_k, sigma_k) = x0_hat. `denoiser` builds D from our score:
t = t(sigma_k) from the log-SNR -2 log sigma_k (clamped to [t_min, T]), x0_hat = (x_t + sigma^2
s(x_t, t)) / alpha. Its samplers run in its recommended configuration: the Karras schedule
(rho = 7) from sigma_k(T) to sigma_k(t_eps) followed by sigma = 0 (`get_sigmas_karras`), so the
last step is a denoising step and the output is at noise 0 (judge it against the PF-ODE continued
to noise 0); `sample_dpm_fast` (DPM-Solver, its own log-sigma-uniform steps, fixed NFE) ends at
sigma_k(t_eps) instead.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import math
import sys
import types
from collections.abc import Callable

import torch
from torch import Tensor

from score_sde.sde_lib import SDE

VERSION = "0.1.1.post1"
# name: (sampling function, NFE -> steps, steps -> NFE); Heun's last step (to sigma 0) is Euler's
SAMPLERS = {
    "k-diffusion Euler (Karras)": ("sample_euler", lambda k: k, lambda n: n),
    "k-diffusion Heun (Karras)": ("sample_heun", lambda k: (k + 1) // 2, lambda n: 2 * n - 1),
    "k-diffusion LMS-4 (Karras)": ("sample_lms", lambda k: k, lambda n: n),
    "k-diffusion DPM++ 2M (Karras)": ("sample_dpmpp_2m", lambda k: k, lambda n: n),
    "k-diffusion DPM fast (sigma_min)": ("sample_dpm_fast", lambda k: k, lambda n: n),
}


@functools.cache
def installed() -> bool:
    """Whether k-diffusion is installed; if not, says so on stderr once (the scripts skip its
    rows)."""
    if importlib.util.find_spec("k_diffusion") is not None:
        return True
    print(f"# k-diffusion is not installed (pip install --no-deps k-diffusion=={VERSION}): "
          "its rows are skipped", file=sys.stderr)
    return False


def version() -> str:
    """The installed k-diffusion's version, or "not installed"."""
    try:
        return importlib.metadata.version("k-diffusion")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def sampling() -> types.ModuleType:
    """k-diffusion's `sampling` module from the installed package (module docstring)."""
    if "k_diffusion.sampling" in sys.modules:
        return sys.modules["k_diffusion.sampling"]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"k-diffusion is not installed: pip install --no-deps "
                         f"k-diffusion=={VERSION}")
    package = types.ModuleType("k_diffusion")
    package.__path__ = list(spec.submodule_search_locations)
    utils = types.ModuleType("k_diffusion.utils")

    def append_dims(x: Tensor, target_dims: int) -> Tensor:
        if target_dims < x.ndim:
            raise ValueError(f"input has {x.ndim} dims but target_dims is {target_dims}")
        return x[(...,) + (None,) * (target_dims - x.ndim)]

    utils.append_dims = append_dims
    package.utils = utils
    sys.modules.update({"k_diffusion": package, "k_diffusion.utils": utils})
    location = f"{package.__path__[0]}/sampling.py"
    module_spec = importlib.util.spec_from_file_location("k_diffusion.sampling", location)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules["k_diffusion.sampling"] = module
    module_spec.loader.exec_module(module)
    return module


def sigma_k(sde: SDE, t: float) -> float:
    """EDM's noise level sigma(t) / alpha(t)."""
    tt = torch.tensor(t, dtype=torch.float64)
    return (sde.sigma(tt) / sde.alpha(tt)).item()


def denoiser(sde: SDE, score: Callable[[Tensor, Tensor], Tensor], t_min: float
             ) -> Callable[[Tensor, Tensor], Tensor]:
    """D(x_k (B, *D), sigma_k (B,)) = x0_hat from our score (module docstring); above sigma_k(T)
    (dopri5's stages may step past its end) the model is asked at T."""
    lowest = sde.log_snr(torch.tensor(sde.T, dtype=torch.float64)).item()

    def model(x: Tensor, sigma: Tensor) -> Tensor:
        log_snr = (-2 * sigma.double().clamp(min=1e-300).log()).clamp(min=lowest)
        t = sde.t_from_log_snr(log_snr).clamp(t_min, sde.T).to(x.dtype)
        shape = (-1,) + (1,) * (x.ndim - 1)
        alpha, sig = sde.alpha(t).view(shape), sde.sigma(t).view(shape)
        x_t = alpha * x
        return (x_t + sig ** 2 * score(x_t, t)) / alpha

    return model


def sample(name: str, sde: SDE, score, x_T: Tensor, nfe: int, t_eps: float) -> tuple[Tensor, int]:
    """Run SAMPLERS[name] from x_T (at T, our variables) with at most `nfe` evaluations; returns
    (x, NFE): x at noise 0 (Karras rows) or at t_eps (DPM fast), in data units (x_t / alpha)."""
    ks = sampling()
    fn, steps_of, nfe_of = SAMPLERS[name]
    lo, hi = sigma_k(sde, t_eps), sigma_k(sde, sde.T)
    x = x_T / sde.alpha(torch.tensor(sde.T, dtype=torch.float64)).item()
    model, calls = denoiser(sde, score, t_eps), [0]

    def counted(x: Tensor, sigma: Tensor) -> Tensor:
        calls[0] += 1
        return model(x, sigma)

    steps = steps_of(nfe)
    if fn == "sample_dpm_fast":
        out = ks.sample_dpm_fast(counted, x, lo, hi, steps, disable=True)
    else:
        sigmas = ks.get_sigmas_karras(steps, lo, hi, rho=7.0).to(x.dtype)
        out = getattr(ks, fn)(counted, x, sigmas, disable=True)
    assert calls[0] == nfe_of(steps), (name, calls[0], nfe_of(steps))
    return out, calls[0]


def log_likelihood(sde: SDE, score, x: Tensor, t_eps: float, tol: float,
                   prior_logp: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, int]:
    """k-diffusion's `log_likelihood` (dopri5 in sigma_k from sigma_k(t_eps) to sigma_k(T), one
    Rademacher probe from torch's global generator fixed through the solve, rtol = atol = tol)
    for x (B, *D) at t_eps in our variables: -log p_{t_eps}(x) = -(its log-likelihood of
    x / alpha(t_eps)) + N log alpha(t_eps). Its prior is N(0, sigma_k(T)^2 I); with `prior_logp`
    (log p_T of x_T = alpha(T) x_k, (B, *D) -> (B,)) the exact prior replaces it: the module's
    `torch.distributions.Normal` is swapped, for this call, for one whose log_prob puts
    log p_T(alpha_T z) + N log alpha_T in each sample's first element (the sum it takes is then
    the exact prior); the solve and the estimator are k-diffusion's, untouched.
    Returns (nll (B,), score evaluations)."""
    ks = sampling()
    alpha = sde.alpha(torch.tensor(t_eps, dtype=torch.float64)).item()
    alpha_T = sde.alpha(torch.tensor(sde.T, dtype=torch.float64)).item()
    n = x[0].numel()

    class ExactPrior:
        def __init__(self, loc: float, scale: float):
            pass

        def log_prob(self, z: Tensor) -> Tensor:
            out = torch.zeros_like(z).flatten(1)
            out[:, 0] = prior_logp(alpha_T * z) + n * math.log(alpha_T)
            return out.view_as(z)

    class Torch(types.ModuleType):  # torch with distributions.Normal = ExactPrior
        def __getattr__(self, name: str):
            return types.SimpleNamespace(Normal=ExactPrior) if name == "distributions" else \
                getattr(torch, name)

    saved = ks.torch
    ks.torch = saved if prior_logp is None else Torch("torch")
    try:
        ll, info = ks.log_likelihood(denoiser(sde, score, t_eps), x / alpha, sigma_k(sde, t_eps),
                                     sigma_k(sde, sde.T), atol=tol, rtol=tol)
    finally:
        ks.torch = saved
    return -ll + n * math.log(alpha), info["fevals"]
