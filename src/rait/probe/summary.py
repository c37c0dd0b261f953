"""What a knowledge table says in a few numbers: `rait probe` prints them, `rait run` keeps them per probe."""

from __future__ import annotations

import numpy as np
import pandas as pd


def table_summary(table: pd.DataFrame) -> dict:
    """Counts and quantiles of μ and σ. Which μ counts as known is the build's τ (`rait.select`), not the probe's."""
    mu, sigma = table["mu"].astype(float), table["sigma"].astype(float)
    summary = {
        "questions": len(table),
        "mu_mean": float(mu.mean()),
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
