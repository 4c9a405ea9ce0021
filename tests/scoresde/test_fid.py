"""FID / KID (score_sde.fid through torchmetrics): the Frechet distance equals scipy's closed form on
Gaussian features, ranks digits (real < a trained model's samples < noise) in the judge's
features, the `fid` command and training's eval.fid run that path, and the Inception path says
what to install."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from sklearn.mixture import GaussianMixture
from tiny_runs import TINY

from score_sde.cli import main
from score_sde.config import compose
from score_sde.data import as_uint8, digits
from score_sde.fid import JudgeFeatures, distances, feature_extractor
from score_sde.judge import fit_judge
from score_sde.samples import save_samples
from score_sde.train import train


class _Lookup(torch.nn.Module):
    """Features of 'images' that carry an index in their first two levels: table[index]."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table, self.num_features = table, table.shape[1]

    def forward(self, levels: torch.Tensor) -> torch.Tensor:
        return self.table[levels[:, 0, 0, 0].long() * 256 + levels[:, 0, 0, 1].long()]


def _indices(lo: int, hi: int) -> torch.Tensor:
    i = torch.arange(lo, hi)
    return torch.stack([i // 256, i % 256], 1).to(torch.uint8).view(-1, 1, 1, 2)


def test_frechet_distance_is_the_closed_form_on_gaussian_features():
    rng = np.random.default_rng(0)
    d, n, m = 6, 700, 500
    a = rng.normal(size=(d, d))
    f1 = rng.normal(size=(n, d)) @ a
    f2 = 0.7 * rng.normal(size=(m, d)) @ a.T + 0.3
    rep = distances(_indices(0, n), _indices(n, n + m),
                    _Lookup(torch.as_tensor(np.concatenate([f1, f2]))), kid=False, batch_size=128)
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    closed = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert rep.fid == pytest.approx(closed, rel=1e-6)
    assert rep.n_samples == n and rep.n_reference == m


def test_judge_features_rank_real_model_and_noise():
    """Against the training digits: the test digits < samples of a Gaussian mixture fitted to the
    training digits < uniform noise; KID ranks them alike."""
    data = digits()
    extractor = JudgeFeatures(fit_judge(data))
    ref = as_uint8(data.train)
    gmm = GaussianMixture(5, covariance_type="diag", random_state=0).fit(data.train.flatten(1))
    model = torch.as_tensor(gmm.sample(359)[0], dtype=torch.float32).view(-1, 1, 8, 8)
    noise = torch.randint(0, 256, (359, 1, 8, 8), generator=torch.Generator().manual_seed(0),
                          dtype=torch.uint8)
    reps = [distances(x, ref, extractor, kid_subset_size=300, kid_subsets=5)
            for x in (as_uint8(data.test), as_uint8(model), noise)]
    assert reps[0].fid < reps[1].fid < reps[2].fid
    assert reps[0].kid < reps[1].kid < reps[2].kid


def test_fid_command_on_exported_samples(tmp_path, capsys):
    """npz and PNG exports of the test digits read back exactly; `score-sde fid` on them against
    digits-test in judge features is 0 (the same images)."""
    data = digits()
    npz = save_samples(data.test, {}, tmp_path / "test.npz", fmt="npz")
    png = save_samples(data.test, {}, tmp_path / "test", fmt="png")
    for path in (npz, png):
        assert main(["fid", f"samples={path}", "reference=digits-test", "features=judge",
                     "kid_subset_size=100", "kid_subsets=5"]) == 0
        out = capsys.readouterr().out
        assert "359 images" in out and "FID: " in out
        assert abs(float(out.split("FID: ")[1].split()[0])) < 1e-6


def test_inception_says_what_to_install():
    try:
        import torch_fidelity  # noqa: F401
        pytest.skip("torch-fidelity is installed")
    except Exception:
        pass
    with pytest.raises(ValueError, match=r"pip install 'score-sde\[fid\]'"):
        feature_extractor("inception")


def test_training_reports_fid_in_judge_features(tmp_path):
    tiny = [o for o in TINY if not o.startswith(("data.", "model.net."))]
    cfg = compose("train", [*tiny, "experiment=digits-vp", "model.net.channels=8",
                            "model.net.norm_groups=4", "eval.nll_points=0", "eval.n_samples=40",
                            "eval.fid=judge", "eval.gmm_baseline=false"])
    res = train(cfg, tmp_path / "run")
    assert res.metrics["fid_features"] == "judge" and res.metrics["fid"] > 0
    assert res.metrics["fid_reference"] == 1438 and "kid" in res.metrics
