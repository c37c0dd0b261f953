"""Summaries and histograms of a knowledge table, for the CLI and the docs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rait.artifacts import atomic_path


def summarize(table: pd.DataFrame, threshold: float = 0.5) -> dict:
    """Counts and quantiles of μ and σ; `known` is the share with μ >= threshold."""
    mu, sigma = table["mu"].astype(float), table["sigma"].astype(float)
    summary = {
        "questions": len(table),
        "mu_mean": float(mu.mean()),
        "known_share": float((mu >= threshold).mean()),
        "mu_quantiles": {q: float(mu.quantile(q)) for q in (0.1, 0.5, 0.9)},
        "sigma_mean": float(sigma.mean()),
        "sigma_quantiles": {q: float(sigma.quantile(q)) for q in (0.1, 0.5, 0.9)},
        "spearman_mu_sigma": float(mu.corr(sigma, method="spearman")) if mu.nunique() > 1 and sigma.nunique() > 1 else None,
    }
    if "sample_correct" in table:
        counts = table["sample_correct"].map(sum).value_counts().sort_index()
        summary["correct_count_histogram"] = {int(k): int(v) for k, v in counts.items()}
        summary["refused_share"] = float(np.mean([r for flags in table["sample_refused"] for r in flags]))
    if "option_probs" in table:
        argmax = table["option_probs"].map(lambda p: "ABCDEFGHIJ"[int(np.argmax(p))])
        summary["argmax_option_counts"] = {k: int(v) for k, v in argmax.value_counts().sort_index().items()}
        summary["option_mass_mean"] = float(table["option_probs"].map(sum).mean())
    return summary


def plot_histograms(table: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Two panels, μ and σ histograms, saved as a PNG (headless backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    left.hist(table["mu"].astype(float), bins=np.linspace(0, 1, 21), color="#4c72b0", edgecolor="white")
    left.set(xlabel="correctness μ", ylabel="questions")
    right.hist(table["sigma"].astype(float), bins=20, color="#dd8452", edgecolor="white")
    right.set(xlabel="certainty σ", ylabel="questions")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
