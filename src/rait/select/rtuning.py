"""R-Tuning (Zhang et al., NAACL 2024) as a data builder, from the released `training/*/run_*.py`.

R-Tuning labels a question "known" when the model's single greedy answer is right, then:

- ``variant="unknown"``: known questions keep the gold answer; unknown ones get one of 16
  refusal sentences (``FALSE_RESPONSES``, verbatim from the release), chosen at random.
- ``variant="unsure"``: every question keeps its gold answer followed by
  "Are you sure you accurately answered the question based on your internal knowledge?" and
  "I am sure." (known) or "I am unsure." (unknown). Known rows are kind "vanilla", unknown rows
  kind "idk". The release trains on the whole text; here the answer, the question and the label
  form one assistant completion, so the loss covers all three as in the release.

"Known" (``known_by``): ``"greedy"`` is R-Tuning's rule. For MCQA the greedy letter is the
argmax of the option probabilities in the table (R-Tuning also takes the argmax over A–D), so a
question is known when its gold probability is the largest (ties count as known). For open QA the
table must carry a ``greedy_correct`` column (the probe's sampled answers are not greedy).
``"mu"`` uses μ ≥ τ instead; ``"auto"`` (default) uses the greedy rule when the table allows it
and otherwise μ ≥ τ, with a warning.

The release uses every question; give n_total (or n_vanilla/n_idk) to draw at random from the
known and unknown sides instead, like Cor-RAIT, so all methods can be built at the same size. The
refusal sentence of a question is drawn from a generator seeded by (seed, id), so it does not
depend on which other questions were selected. ``balance="subject"`` takes each side by subject
(`rait.select.balance`), from the same seeded draws.
"""

from __future__ import annotations

import random

import numpy as np
import pandas as pd

from rait.data.records import QARecord
from rait.errors import DataError
from rait.prompts import answer_target
from rait.select.balance import check_balance, share_of, subjects_of, take_balanced
from rait.select.base import Selector, draw, resolve_sizes, split_by_correctness
from rait.select.methods import TAU

FALSE_RESPONSES = (
    "The answer is unknown.",
    "The answer is uncertain.",
    "The answer is unclear.",
    "It is not known.",
    "I do not know the answer.",
    "I'm not sure.",
    "There is no definitive answer.",
    "There is much debate.",
    "There is no concrete answer to this question.",
    "It is impossible to answer.",
    "There is no known case.",
    "There is no public information available.",
    "There is no scientific evidence.",
    "There is no right answer.",
    "It is impossible to know.",
    "It is difficult to predict.",
)
SURE_QUESTION = "Are you sure you accurately answered the question based on your internal knowledge?"
VARIANTS = ("unknown", "unsure")
KNOWN_BY = ("auto", "greedy", "mu")


class RTuning(Selector):
    """R-Tuning's "unknown" (refusal replacement) or "unsure" (sure/unsure suffix) data."""

    def __init__(
        self,
        variant: str = "unknown",
        known_by: str = "auto",
        tau: float = TAU,
        n_total: int | None = None,
        n_vanilla: int | None = None,
        n_idk: int | None = None,
        idk_share: float = 0.2,
        seed: int = 0,
        refusals: tuple[str, ...] = FALSE_RESPONSES,
        balance: str | None = None,
    ):
        self.variant = variant
        self.known_by = known_by
        self.tau = tau
        self.n_total = n_total
        self.n_vanilla = n_vanilla
        self.n_idk = n_idk
        self.idk_share = idk_share
        self.seed = seed
        self.refusals = refusals
        self.balance = balance

    @property
    def method(self) -> str:
        return f"rtuning_{self.variant}"

    def _known(self, table: pd.DataFrame, task: str, warn: list[str]) -> tuple[pd.Series, str]:
        """Which questions the model knows, and the rule used."""
        if "greedy_correct" in table.columns and self.known_by != "mu":
            return table["greedy_correct"].astype(bool), "greedy_correct column"
        if task == "mcqa" and self.known_by != "mu":
            for col in ("option_probs", "gold_prob"):
                if col not in table.columns:
                    raise DataError("<knowledge table>", "needed for R-Tuning's greedy rule on MCQA", field=col)
            best = table["option_probs"].map(lambda probs: float(np.max(probs)))
            return table["gold_prob"].astype(float) >= best, "gold option has the largest probability"
        if self.known_by == "greedy":
            raise DataError("<knowledge table>", "open-QA R-Tuning needs each question's greedy correctness; "
                            "add it or use known_by='mu'", field="greedy_correct")
        if self.known_by == "auto":
            warn.append(f"{self.method}: no greedy correctness in the table; known means mu >= {self.tau}")
        return split_by_correctness(table["mu"], self.tau)[0], f"mu >= {self.tau}"

    def fit(self, table: pd.DataFrame) -> "RTuning":
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.known_by not in KNOWN_BY:
            raise ValueError(f"known_by must be one of {KNOWN_BY}, got {self.known_by!r}")
        if not self.refusals:
            raise ValueError("refusals must hold at least one sentence")
        table, task = self._check_table(table)
        n_van, n_idk = resolve_sizes(self.n_total, self.n_vanilla, self.n_idk, self.idk_share)
        check_balance(self.balance, n_vanilla=n_van, n_idk=n_idk)
        warn: list[str] = []
        known, rule = self._known(table, task, warn)
        balanced = {}
        if self.balance:  # each side in one seeded draw of all of it; each subject keeps its first questions
            order = [list(draw(pool, len(pool), self.seed, False)["id"]) for pool in (table[known], table[~known])]
            vanilla, idk, notes, balanced["balance"] = take_balanced(
                self.method, subjects_of(table, self.method), *order, n_van, n_idk,
                share_of(n_van, n_idk, self.idk_share), "random", warn)
            van_note, idk_note = notes["vanilla"], notes["idk"]
        else:
            vanilla, van_note = self._take(table[known], n_van, "known", "random", self.seed, warn)
            idk, idk_note = self._take(table[~known], n_idk, "unknown", "random", self.seed, warn)
        self._set_selection(vanilla, idk, {
            "task": task, "variant": self.variant, "known_by": rule,
            "pool": {"table": len(table), "vanilla": int(known.sum()), "idk": int((~known).sum())},
            "asked": {"vanilla": n_van, "idk": n_idk},
            "how": {"vanilla": van_note, "idk": idk_note},
            **balanced,
            "warnings": warn,
        })
        return self

    def refusal_for(self, record: QARecord) -> str:
        """One of the refusal sentences, fixed per (seed, id)."""
        return random.Random(f"{self.seed}:{record.id}").choice(self.refusals)

    def target(self, record: QARecord, kind: str) -> str:
        if self.variant == "unknown":
            return super().target(record, kind)
        answer = answer_target(record)
        stop = "" if answer.endswith(".") else "."
        label = "I am sure." if kind == "vanilla" else "I am unsure."
        return f"{answer}{stop} {SURE_QUESTION} {label}"
