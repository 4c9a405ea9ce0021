"""What runs report: the summary at the end of `score-sde train` and the table at the end of a
sweep, each job's final metrics read back from its metrics.jsonl. Imports no torch."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from score_sde.metrics import read_metrics

if TYPE_CHECKING:
    from score_sde.train import TrainResult


def summary_lines(res: TrainResult) -> list[str]:
    """What `score-sde train` prints at the end: the run, the test NLL and its references."""
    m = res.metrics
    lines = [f"run folder: {res.run_dir}", f"checkpoint: {res.checkpoint}",
             f"time: {m['train_seconds']:.0f} s training, {m['eval_seconds']:.0f} s sampling, "
             "NLL and pictures"]
    if "test_nll" in m:
        line = (f"test NLL: {m['test_nll']:.4f} +- {m['test_nll_stderr']:.4f} nats "
                f"({m['nll_points']} points, {m['nll_nfe']:.0f} NFE per point)")
        if "test_bpd" in m:
            line += f"; {m['test_bpd']:.4f} +- {m['test_bpd_stderr']:.4f} bits/dim"
        lines.append(line)
    if "gmm_bpd" in m:
        lines.append(f"baseline, sklearn GaussianMixture({m['gmm_components']}, full covariance) "
                     f"on the same dequantized data: {m['gmm_bpd']:.4f} +- "
                     f"{m['gmm_bpd_stderr']:.4f} bits/dim")
    if "fid" in m:
        kid = f"; KID {m['kid']:.5f} +- {m['kid_std']:.5f}" if "kid" in m else ""
        lines.append(f"Frechet distance of the samples to the {m['fid_reference']} training images "
                     f"in {m['fid_features']} features: {m['fid']:.4f}{kid}")
    if "judge_test_accuracy" in m:
        accs = ", ".join(f"{k.removeprefix('class_accuracy_w')}: {v:.3f}" for k, v in m.items()
                         if k.startswith("class_accuracy_w"))
        lines.append(f"class-conditional samples judged to be of the asked-for class "
                     f"({m['per_class']} per class), by guidance scale: {accs} (chance "
                     f"{m['chance']:.3f}; the judge's test accuracy {m['judge_test_accuracy']:.3f})")
    if "entropy" in m:
        gap = m["test_nll"] - m["entropy"] if "test_nll" in m else float("nan")
        lines.append(f"true entropy: {m['entropy']:.4f} +- {m['entropy_stderr']:.4f} nats "
                     f"(NLL - entropy = {gap:+.4f})")
    if "true_nll_same_points" in m:
        lines.append(f"true NLL of the same test points: {m['true_nll_same_points']:.4f} nats")
    return lines + ["pictures:"] + [f"  {p}" for p in res.pictures]


def _job_folders(root: Path) -> list[Path]:
    """The job folders of a sweep folder, in the order hydra ran them."""
    found = []
    for cfg in root.glob("*/.hydra/hydra.yaml"):
        found.append((int(OmegaConf.load(cfg).hydra.job.num), cfg.parent.parent))
    return [folder for _, folder in sorted(found)]


def _fmt(v: Any, spec: str = ".4f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


def sweep_table(root: Path) -> list[str]:
    """The rows of the table of a sweep folder's jobs: one per job, with its final metrics."""
    rows = []
    for folder in _job_folders(root):
        train = read_metrics(folder, "train")
        final = (read_metrics(folder, "eval") or [{}])[-1]
        done = read_metrics(folder, "summary")
        if not done:
            rows.append([folder.name, "did not finish: see its train.log"])
            continue
        nll = (f"{final['test_nll']:.4f} +- {final['test_nll_stderr']:.4f}"
               if "test_nll" in final else "-")
        gap = final["test_nll"] - final["entropy"] if "test_nll" in final and "entropy" in final \
            else None
        rows.append([folder.name, str(done[-1]["step"]), _fmt(train[-1]["loss"] if train else None),
                     nll, _fmt(final.get("entropy")), _fmt(gap, "+.4f"),
                     _fmt(final.get("test_bpd")), _fmt(final.get("sample_nfe"), ".0f"),
                     _fmt(final.get("nll_nfe"), ".0f"), _fmt(done[-1]["train_seconds"], ".0f")])
    head = ["job", "steps", "loss", "test NLL (nats)", "entropy", "NLL-entropy", "bits/dim",
            "sample NFE", "NLL NFE", "train s"]
    full = [r for r in rows if len(r) == len(head)]
    widths = [max(len(r[i]) for r in [head, *full]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *full]]
    return lines + [f"{r[0]}  {r[1]}" for r in rows if len(r) != len(head)]
