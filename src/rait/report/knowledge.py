"""How much a model knows about each part of a pool: μ histograms per group (e.g. facts relation)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rait.artifacts import atomic_path

BINS = np.linspace(0, 1, 12) - 0.05  # one bin per possible μ of k = 10 samples: 0, 0.1, ..., 1


def knowledge_by_group(table: pd.DataFrame, groups: pd.Series, known_at: float = 0.6) -> pd.DataFrame:
    """Per group: questions, mean μ, share with μ >= known_at ("known" side), share with μ = 0 ("unknown" side)."""
    mu = table["mu"].astype(float)
    frame = pd.DataFrame({"group": groups.to_numpy(), "mu": mu.to_numpy()})
    out = frame.groupby("group")["mu"].agg(
        n="size", mean_mu="mean", known=lambda m: (m >= known_at).mean(), unknown=lambda m: (m == 0).mean())
    total = pd.DataFrame({"n": [len(mu)], "mean_mu": [mu.mean()], "known": [(mu >= known_at).mean()],
                          "unknown": [(mu == 0).mean()]}, index=["all"])
    return pd.concat([out, total])


def plot_mu_by_group(table: pd.DataFrame, groups: pd.Series, path: str | Path, title: str = "") -> Path:
    """One μ histogram per group, side by side, with shared axes."""
    from matplotlib.figure import Figure

    names = sorted(set(groups))
    columns = min(3, len(names))
    rows = -(-len(names) // columns)
    figure = Figure(figsize=(4 * columns, 2.6 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, sharex=True, squeeze=False).ravel()
    mu = table["mu"].astype(float).to_numpy()
    for ax, name in zip(axes, names):
        ax.hist(mu[groups.to_numpy() == name], bins=BINS, color="#4477aa", edgecolor="white")
        ax.set_title(f"{name} (n={int((groups == name).sum())})", fontsize=10)
        ax.set_xlabel("μ (share of k samples correct)")
        ax.set_ylabel("questions")
    for ax in axes[len(names):]:
        ax.set_visible(False)
    if title:
        figure.suptitle(title)
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    return path
