"""CRaFT (Algorithm 1) and the baselines it is compared with, all from one knowledge table.

The four RAIT rules differ in two switches only (CRaFT paper, AAAI'25; docs/build.md):

| method            | IdK pool needs Δμ < 0 (flow) | take by certainty (else random) |
| ----------------- | ---------------------------- | ------------------------------- |
| Cor-RAIT          | no                           | no                              |
| CorCer-RAIT       | no                           | yes  (= CRaFT w/o Flow)         |
| CRaFT w/o Cer     | yes                          | no                              |
| CRaFT             | yes                          | yes                             |

Van-Tuning keeps the gold answer of a random draw from the whole table.

``balance="subject"`` (paper mode only) gives every subject of the table's ``subject`` column the
set's IdK share, each subject taken in the method's own order (`rait.select.balance`; Van-Tuning's
draw becomes stratified by subject).

Modes:

- ``paper`` (default): μ as probed (for MCQA the correct p_gold / Σp, never the release's, see below);
  vanilla pool μ ≥ τ, IdK pool μ < τ; the flow filter keeps Δμ < 0 (strict);
  certainty at full precision; vanilla ranked by σ descending, IdK by σ ascending; random draws
  without replacement. ``dead_band`` > 0 additionally drops questions with |μ − τ| < dead_band
  (none by default).
- ``as_released`` (`triviaqa_RAI.py`, `mmlu_RAI.py`; docs/build.md), per task as the released scripts do:
  n_total splits as ``n_total // 10 * 2`` IdK (`resolve_sizes`). OEQA: vanilla μ ≥ τ + 0.01, IdK
  μ ≤ τ − 0.01 (0.51 / 0.49), flow keeps Δμ < 0, σ rounded to 2 decimals by Python's ``round`` before
  ranking (the release's certainty producer rounds each value so; pandas' ``round(2)`` differs at
  midpoints), draws without replacement (the release asserted the pools were big enough; we warn and
  take what exists). MCQA: vanilla μ ≥ τ, IdK μ < τ, flow keeps Δμ ≤ 0 (drops only Δμ > 0), σ at
  full precision, Van-Tuning and Cor-RAIT always draw with replacement, the ranked methods re-draw
  a short pool with replacement from its certainty order, as the release samples its ranked frame.
  The release's MMLU μ (letter columns normalised one at a time) is not computed here: the build
  stage hands these selectors the table of `rait.select.released` (docs/build.md).
  Draws use pandas ``sample(random_state=seed)`` like the release (which used seed 0 for OEQA and
  42 for MCQA) but on the pool sorted by id, so the rows are not bit-identical to the release's.
  Known deviations kept on purpose in both modes: ties in σ are broken by id (the release used
  an unstable quicksort for OEQA and kept all boundary ties for MCQA, ``keep='all'``, which can
  return more than asked); the final unseeded shuffle is left to the trainer's sampler.
"""

from __future__ import annotations

from typing import ClassVar

import pandas as pd

from rait.select.balance import check_balance, share_of, subjects_of, take_balanced
from rait.select.base import Selector, draw, rank, resolve_sizes, split_by_correctness
from rait.select.methods import TAU

MODES = ("paper", "as_released")
RELEASED_OEQA_MARGIN = 0.01  # thresholds 0.51 / 0.49 around τ = 0.5


def released_round(certainty: float) -> float:
    """σ to 2 decimals as `KQ_triviaqa_train_init_certainty.py` rounds it: Python's ``round`` of each value, which
    rounds the float's exact binary value (0.215 is 0.21499…, so 0.21), where pandas' ``round(2)`` scales by 100
    first (21.5, so 0.22)."""
    return round(float(certainty), 2)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


class VanTuning(Selector):
    """Van-Tuning: questions drawn at random from the whole table, gold answers kept, no IdK.

    The size is n_total, or n_vanilla + n_idk, so it matches the RAIT sets it is compared with. With
    ``balance="subject"`` the draw is stratified: each subject gives its share of the table (the balance rule at IdK
    share 0, `rait.select.balance`), the questions of a subject being the first its seeded draw reaches.
    """

    name = "van_tuning"

    def __init__(self, n_total: int | None = None, n_vanilla: int | None = None, n_idk: int | None = None,
                 mode: str = "paper", seed: int = 0, balance: str | None = None):
        self.n_total = n_total
        self.n_vanilla = n_vanilla
        self.n_idk = n_idk
        self.mode = mode
        self.seed = seed
        self.balance = balance

    def fit(self, table: pd.DataFrame) -> "VanTuning":
        _check_mode(self.mode)
        check_balance(self.balance, released=self.mode == "as_released")
        table, task = self._check_table(table)
        n_van, n_idk = resolve_sizes(self.n_total, self.n_vanilla, self.n_idk, idk_share=0.0)
        n = None if n_van is None and n_idk is None else (n_van or 0) + (n_idk or 0)
        how = "replace" if self.mode == "as_released" and task == "mcqa" else "random"
        warn: list[str] = []
        balanced = {}
        if self.balance:
            order = list(draw(table, len(table), self.seed, False)["id"])
            vanilla, _, notes, balanced["balance"] = take_balanced(
                self.method, subjects_of(table, self.method), order, [], n, None if n is None else 0, share_of(n, 0, 0.0),
                "random", warn)
            note = notes["vanilla"]
        else:
            vanilla, note = self._take(table, n, "vanilla", how, self.seed, warn)
        self._set_selection(vanilla, [], {
            "mode": self.mode, "task": task,
            "pool": {"table": len(table), "vanilla": len(table), "idk": 0},
            "asked": {"vanilla": n, "idk": 0},
            "how": {"vanilla": note, "idk": "none"},
            **balanced,
            "warnings": warn,
        })
        return self


class _RAITSelector(Selector):
    """Correctness split, optional flow filter on the IdK side, optional certainty ranking."""

    uses_certainty: ClassVar[bool] = False
    filter_name: ClassVar[str] = "flow"  # what the third mask of `_pools` filters the IdK pool by

    def __init__(
        self,
        n_total: int | None = None,
        n_vanilla: int | None = None,
        n_idk: int | None = None,
        idk_share: float = 0.2,
        tau: float = TAU,
        mode: str = "paper",
        dead_band: float = 0.0,
        seed: int = 0,
        refusal: str | None = None,
        balance: str | None = None,
    ):
        self.n_total = n_total
        self.n_vanilla = n_vanilla
        self.n_idk = n_idk
        self.idk_share = idk_share
        self.tau = tau
        self.mode = mode
        self.dead_band = dead_band
        self.seed = seed
        self.refusal = refusal
        self.balance = balance

    def _pools(self, table: pd.DataFrame, task: str) -> tuple[pd.Series, pd.Series, pd.Series]:
        """Boolean masks: vanilla pool, IdK pool before the flow filter, and rows the flow filter keeps."""
        mu = table["mu"].astype(float)
        released = self.mode == "as_released"
        if released and task == "oeqa":
            known = mu >= round(self.tau + RELEASED_OEQA_MARGIN, 10)
            unknown = mu <= round(self.tau - RELEASED_OEQA_MARGIN, 10)
        else:
            known, unknown = split_by_correctness(mu, self.tau, self.dead_band)
        if not self.uses_flow:
            return known, unknown, pd.Series(True, index=mu.index)
        delta = table["delta_mu"].astype(float)
        flow_keeps = (delta <= 0) if released and task == "mcqa" else (delta < 0)
        return known, unknown, flow_keeps

    def fit(self, table: pd.DataFrame) -> "_RAITSelector":
        _check_mode(self.mode)
        if self.dead_band < 0:
            raise ValueError(f"dead_band must be >= 0, got {self.dead_band}")
        table, task = self._check_table(table, needs=("delta_mu",) if self.uses_flow else ())
        released = self.mode == "as_released"
        n_van, n_idk = resolve_sizes(self.n_total, self.n_vanilla, self.n_idk, self.idk_share, released=released)
        check_balance(self.balance, released=released, n_vanilla=n_van, n_idk=n_idk)
        known, unknown, flow_keeps = self._pools(table, task)
        sigma = table["sigma"].astype(float)
        table = table.assign(certainty=sigma.map(released_round) if released and task == "oeqa" else sigma)

        vanilla_pool, idk_pool = table[known], table[unknown & flow_keeps]
        if self.uses_certainty:
            vanilla_pool = rank(vanilla_pool, "certainty", descending=True)
            idk_pool = rank(idk_pool, "certainty", descending=False)
            how = "top"
        else:
            how = "replace" if released and task == "mcqa" else "random"

        warn: list[str] = []
        balanced = {}
        if self.balance:  # each pool in the order it is taken from: ranked, or one seeded draw of all of it
            order = (lambda pool: pool) if how == "top" else (lambda pool: draw(pool, len(pool), self.seed, False))
            vanilla, idk, notes, balanced["balance"] = take_balanced(
                self.method, subjects_of(table, self.method), list(order(vanilla_pool)["id"]),
                list(order(idk_pool)["id"]), n_van, n_idk, share_of(n_van, n_idk, self.idk_share), how, warn)
            van_note, idk_note = notes["vanilla"], notes["idk"]
        else:
            vanilla, van_note = self._take_side(vanilla_pool, n_van, "vanilla", how, task, warn)
            idk, idk_note = self._take_side(idk_pool, n_idk, "IdK", how, task, warn)
        self._set_selection(vanilla, idk, {
            "mode": self.mode, "task": task,
            "pool": {
                "table": len(table),
                "vanilla": int(known.sum()),
                "idk": int((unknown & flow_keeps).sum()),
                f"dropped_by_{self.filter_name}": int((unknown & ~flow_keeps).sum()),
                "between_thresholds": int((~known & ~unknown).sum()),
            },
            "asked": {"vanilla": n_van, "idk": n_idk},
            "how": {"vanilla": van_note, "idk": idk_note},
            **balanced,
            "warnings": warn,
        })
        return self

    def _take_side(self, pool: pd.DataFrame, n: int | None, side: str, how: str, task: str, warn: list[str]) -> tuple[list[str], str]:
        """Take from a ranked or random pool; the released MCQA scripts re-draw a short ranked pool with replacement,
        from the frame `nsmallest`/`nlargest` returned, i.e. in certainty order."""
        if how == "top" and self.mode == "as_released" and task == "mcqa" and n is not None and len(pool) < n:
            return self._take(pool, n, side, "replace_ranked", self.seed, warn)
        return self._take(pool, n, side, how, self.seed, warn)


class CorRAIT(_RAITSelector):
    """Cor-RAIT (correctness only; the "R-Tuning" row of CRaFT's project page): random draws from each pool."""

    name = "cor_rait"


class CorCerRAIT(_RAITSelector):
    """CorCer-RAIT = CRaFT w/o Flow: most certain known questions, least certain unknown ones."""

    name = "corcer_rait"
    uses_certainty = True


class CRaFTWithoutCer(_RAITSelector):
    """CRaFT w/o Cer: the flow filter (IdK needs Δμ < 0), then random draws (the release has no code for it)."""

    name = "craft_wo_cer"
    uses_flow = True


class CRaFT(_RAITSelector):
    """CRaFT, Algorithm 1: flow filter on the IdK pool, then certainty ranking on both sides."""

    name = "craft"
    uses_flow = True
    uses_certainty = True
