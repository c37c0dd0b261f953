"""Consistency-RAIT: refusal keyed to the model's own sampled disagreement (docs/transfer.md).

Cor-RAIT's IdK side is every question the model answers wrong (μ < τ), including the ones it answers wrong
*consistently*: its k samples agree on one wrong answer. From inside the model those look like the questions it
knows. Unknown examples that the model cannot tell from known ones are learnt late and by memorisation (Gekhman
et al. 2024), and the responses to unfamiliar examples become the default for unfamiliar inputs (Kang et al.
2025). Fitting a refusal on consistently-wrong questions therefore pushes the fine-tune towards surface features,
such as the kind of question, and a new kind is then refused whatever the model knows.

This selector keeps Cor-RAIT's vanilla side (μ ≥ τ, random draws, gold targets). Its IdK side holds only the
unknown questions whose samples disagree: the share of the k samples that give the most common answer
(normalised, a refusal counted as one more answer) is below ``agreement_max``. Self-consistency is a knowledge
signal measured the same way on any kind of question (Manakul et al. 2023; Kuhn et al. 2023). The
consistently-wrong questions are left out of training and counted in ``report_["pool"]``.
"""

from __future__ import annotations

from collections import Counter

import pandas as pd

from rait.data.scoring import normalize_answer
from rait.errors import DataError, check_number
from rait.select.craft import _RAITSelector
from rait.select.methods import TAU


def majority_agreement(samples, refused=None) -> float:
    """Share of the samples that give the most common (normalised) answer; 0 for no samples."""
    refused = list(refused) if refused is not None else [False] * len(samples)
    answers = ["<refused>" if r else normalize_answer(str(s)) for s, r in zip(samples, refused, strict=True)]
    return Counter(answers).most_common(1)[0][1] / len(answers) if answers else 0.0


class ConsistencyRAIT(_RAITSelector):
    """Cor-RAIT whose IdK pool keeps only the unknown questions the model's own samples disagree on."""

    name = "consistency_rait"
    filter_name = "agreement"
    uses_samples = True

    def __init__(self, n_total: int | None = None, n_vanilla: int | None = None, n_idk: int | None = None,
                 idk_share: float = 0.2, tau: float = TAU, mode: str = "paper", dead_band: float = 0.0, seed: int = 0,
                 refusal: str | None = None, balance: str | None = None, agreement_max: float = 0.5):
        super().__init__(n_total, n_vanilla, n_idk, idk_share, tau, mode, dead_band, seed, refusal, balance)
        self.agreement_max = agreement_max

    def _pools(self, table: pd.DataFrame, task: str) -> tuple[pd.Series, pd.Series, pd.Series]:
        check_number("agreement_max", self.agreement_max, 0, 1)
        if task != "oeqa" or "samples" not in table.columns:
            raise DataError("<knowledge table>", f"{self.method} needs the open-QA probe's samples", field="samples")
        if self.mode != "paper":
            raise DataError("<knowledge table>", f"{self.method} has no released script to follow: mode 'paper'",
                            field="mode")
        known, unknown, _ = super()._pools(table, task)
        refused = table["sample_refused"] if "sample_refused" in table.columns else [None] * len(table)
        agreement = pd.Series([majority_agreement(s, r) for s, r in zip(table["samples"], refused)], index=table.index)
        return known, unknown, agreement < self.agreement_max
