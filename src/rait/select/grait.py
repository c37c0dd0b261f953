"""GRAIT (Zhu et al., NAACL 2025 Findings): gradient-driven IdK selection and adaptive weights.

Inputs: the knowledge table and the gradient store of `rait grads` (L2-normalised
projected gradients of every pool question in its refusal form, uᴿ, and answer form, uᴬ).
The paper, its release (`construct_grait_data.py`) and docs/grait.md are the reference; in short:

- split: ik = μ ≥ τ, idk = μ < τ, the split of every builder (`split_by_correctness`, with
  its ``dead_band``); ``as_released`` is strict on both sides (μ = τ dropped), as GRAIT's
  script is. The vanilla side is the top N_ik of ik by μ.
- influence, from set means, never from an N×N matrix (docs/grait.md):
  I_O1(i) = ⟨uᴿ_i, mean uᴿ over idk⟩ and
  α_i = ⟨uᴿ_i, mean uᴿ over ik⟩ − ⟨uᴿ_i, mean uᴿ over idk⟩, over the *full* pools with
  each sample's similarity to itself included, as in the release.
- IdK selection rule (``rule``):
  ``o1_topk`` (default): the top N_idk by I_O1, the paper's figure and observation O1;
  ``greedy_then_bottom``: the released script bit for bit (`construct_grait_data.py`, lines 51-64): a greedy pass
  picks N_idk questions by score = Σ_{k∈vanilla} ⟨uᴿ_j, uᴬ_k⟩ + Σ_{m∈picked} ⟨uᴿ_j, uᴿ_m⟩,
  updated by one matrix-vector product per pick; the picks are discarded and the N_idk
  *lowest*-scoring remaining questions are kept (it needs an idk pool of 2·N_idk);
  ``random``: a seeded random draw (ablation).
- weights of the selected IdK rows: w = (N/2)·softmax(weight_sign·α/T), T = 0.05, N the
  number selected, so they sum to N/2 (the release's 500 for N = 1000); vanilla rows weigh 1.
  ``weight_sign`` defaults to −1: α is the pull towards refusing *known* questions minus the
  pull towards refusing unknown ones, so a high α drives over-refusal and should weigh less
  (docs/grait.md). The release uses +1, and then overwrites every weight with 1 before saving:
  ``as_released=True`` writes weight 1 the same way (combine with ``rule="greedy_then_bottom"``
  to reproduce the released training file), splits n_total as the release does (``n_total // 10 * 2``
  IdK) and, through the build stage, reads the release's MMLU μ (`rait.select.released`).

Balance (``balance="subject"``, `rait.select.balance`): per-subject quotas, each subject's vanilla
side its top μ, its IdK side its top I_O1 (I_O1 and α still from the full pools), its seeded draw
(``random``), or the greedy loop run on the subject's IdK pool against the whole balanced vanilla
set (``greedy_then_bottom``, which can keep half of a subject's pool); the adaptive weights are
those of the IdK ids finally selected.

Ties: pools are ordered by id, so ties (in μ, in I_O1, or in the greedy scores) go to the
smaller id, whatever the row order of the table. The release breaks them by file order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import softmax

from rait.errors import RaitError, check_choice, check_count, check_number
from rait.grads.store import GradientFeatures
from rait.select.balance import check_balance, share_of, subjects_of, take_balanced
from rait.select.base import Selector, draw, rank, resolve_sizes, split_by_correctness
from rait.select.methods import TAU

RULES = ("o1_topk", "greedy_then_bottom", "random")
TEMPERATURE = 0.05


def o1_influence(refusal_idk: np.ndarray) -> np.ndarray:
    """I_O1 of every idk question: its refusal feature · the mean refusal feature of the idk pool."""
    return refusal_idk @ refusal_idk.mean(axis=0)


def alpha_scores(refusal: np.ndarray, refusal_ik: np.ndarray, refusal_idk: np.ndarray) -> np.ndarray:
    """α of each row: mean similarity to the ik pool minus mean similarity to the idk pool (refusal forms)."""
    return refusal @ (refusal_ik.mean(axis=0) - refusal_idk.mean(axis=0))


def greedy_then_bottom(refusal_idk: np.ndarray, answer_vanilla: np.ndarray, n_pick: int, n_keep: int) -> tuple[list[int], list[int]]:
    """The released selection loop with matrix-vector products; returns (greedy picks, kept), as row positions.

    score[j] starts as Σ_k ⟨uᴿ_j, uᴬ_k⟩ over the vanilla rows; each round picks the highest
    remaining score (first position on ties, like Python's max over an insertion-ordered
    dict), removes it and adds ⟨uᴿ_j, uᴿ_picked⟩ to every other score. Kept = the n_keep
    lowest-scoring rows never picked (stable sort: ties keep pool order).
    """
    score = refusal_idk @ answer_vanilla.sum(axis=0)
    remaining = np.ones(len(refusal_idk), dtype=bool)
    picks = []
    for _ in range(min(n_pick, len(refusal_idk))):
        best = int(np.argmax(np.where(remaining, score, -np.inf)))
        picks.append(best)
        remaining[best] = False
        score += refusal_idk @ refusal_idk[best]
    rest = np.flatnonzero(remaining)
    kept = rest[np.argsort(score[rest], kind="stable")][:n_keep]
    return picks, [int(j) for j in kept]


def adaptive_weights(alpha: np.ndarray, weight_sign: int = -1, temperature: float = TEMPERATURE) -> np.ndarray:
    """w = (N/2)·softmax(weight_sign·α/T): positive weights summing to N/2 (mean 0.5)."""
    if len(alpha) == 0:
        return np.zeros(0)
    return len(alpha) / 2 * softmax(weight_sign * np.asarray(alpha, dtype=np.float64) / temperature)


class GRAIT(Selector):
    """GRAIT's data: top-μ known questions plus gradient-selected, adaptively weighted IdK questions.

    `features`: a finished gradient store folder (`rait grads --out`) or a loaded
    `GradientFeatures`; `d` picks one of its projection sizes (default: the largest).
    After ``fit``, ``scores_`` holds I_O1, α, selection and weight of every idk question.
    """

    name = "grait"
    uses_gradients = True

    def __init__(
        self,
        features: str | Path | GradientFeatures | None = None,
        n_total: int | None = None,
        n_vanilla: int | None = None,
        n_idk: int | None = None,
        idk_share: float = 0.2,
        tau: float = TAU,
        dead_band: float = 0.0,
        rule: str = "o1_topk",
        weight_sign: int = -1,
        temperature: float = TEMPERATURE,
        as_released: bool = False,
        d: int | None = None,
        seed: int = 0,
        refusal: str | None = None,
        balance: str | None = None,
    ):
        self.features = str(features) if isinstance(features, Path) else features
        self.n_total = n_total
        self.n_vanilla = n_vanilla
        self.n_idk = n_idk
        self.idk_share = idk_share
        self.tau = tau
        self.dead_band = dead_band
        self.rule = rule
        self.weight_sign = weight_sign
        self.temperature = temperature
        self.as_released = as_released
        self.d = d
        self.seed = seed
        self.refusal = refusal
        self.balance = balance

    def validate(self) -> GRAIT:
        """Check GRAIT's own parameters before any data is read (`BuildSettings` does, for `rait build` and
        `rait run`)."""
        check_choice("rule", self.rule, RULES)
        check_choice("weight_sign", self.weight_sign, (-1, 1))
        check_number("temperature", self.temperature, 0, low_open=True)
        if self.d is not None:
            check_count("d", self.d, 1)
        return self

    def _check_params(self) -> GradientFeatures:
        self.validate()
        if self.features is None:
            raise RaitError("GRAIT needs gradient features: pass the folder written by `rait grads`")
        if isinstance(self.features, GradientFeatures):
            return self.features
        return GradientFeatures.load(self.features, self.d)

    def fit(self, table: pd.DataFrame) -> GRAIT:
        features = self._check_params()
        table, task = self._check_table(table)
        n_van, n_idk = resolve_sizes(self.n_total, self.n_vanilla, self.n_idk, self.idk_share, released=self.as_released)
        check_balance(self.balance, released=self.as_released, n_vanilla=n_van, n_idk=n_idk)
        mu = table["mu"].astype(float)
        if self.as_released:
            known, unknown = mu > self.tau, mu < self.tau
        else:
            known, unknown = split_by_correctness(mu, self.tau, self.dead_band)
        ik_pool = table[known].sort_values("id", kind="mergesort")
        idk_pool = table[unknown].sort_values("id", kind="mergesort")
        warn: list[str] = []
        if not self.balance:
            vanilla, van_note = self._take(rank(ik_pool, "mu", descending=True), n_van, "vanilla", "top", self.seed, warn)

        ik_ids, idk_ids = list(ik_pool["id"]), list(idk_pool["id"])
        refusal_ik = features.rows("refusal", ik_ids)
        refusal_idk = features.rows("refusal", idk_ids)
        if not ik_ids:
            warn.append("grait: the ik pool is empty; α uses only the idk term")
            refusal_ik = np.zeros((1, refusal_idk.shape[1]))
        influence = o1_influence(refusal_idk) if idk_ids else np.zeros(0)
        alpha = alpha_scores(refusal_idk, refusal_ik, refusal_idk) if idk_ids else np.zeros(0)

        balanced = {}
        if self.balance:
            vanilla, idk, notes, balanced["balance"] = self._take_balanced(
                table, ik_pool, idk_pool, influence, refusal_idk, features, n_van, n_idk, warn)
            van_note, idk_note = notes["vanilla"], notes["idk"]
        elif self.rule == "o1_topk":
            by_influence = pd.DataFrame({"id": idk_ids, "influence": influence})
            idk, idk_note = self._take(rank(by_influence, "influence", descending=True), n_idk, "IdK", "top", self.seed, warn)
        elif self.rule == "random":
            idk, idk_note = self._take(idk_pool, n_idk, "IdK", "random", self.seed, warn)
        else:
            if n_idk is None:
                raise ValueError("rule 'greedy_then_bottom' needs an IdK count (n_idk or n_total)")
            answer_vanilla = features.rows("answer", vanilla) if vanilla else np.zeros((0, refusal_idk.shape[1]))
            picks, kept = greedy_then_bottom(refusal_idk, answer_vanilla, n_idk, n_idk)
            idk = [idk_ids[j] for j in kept]
            idk_note = f"greedy picked {len(picks)} (discarded), kept the {len(idk)} lowest-scoring of the other {len(idk_ids) - len(picks)}"
            if len(idk) < n_idk:
                warn.append(f"grait: greedy_then_bottom needs an IdK pool of 2 x {n_idk} = {2 * n_idk}; "
                            f"the pool has {len(idk_ids)}, so {len(idk)} were kept")

        position = {qid: j for j, qid in enumerate(idk_ids)}
        weights = adaptive_weights(alpha[[position[q] for q in idk]], self.weight_sign, self.temperature)
        weight_of = dict(zip(idk, weights.tolist()))
        self.scores_ = pd.DataFrame({
            "id": idk_ids, "mu": idk_pool["mu"].astype(float).to_numpy(), "influence_o1": influence, "alpha": alpha,
            "selected": [q in weight_of for q in idk_ids],
            "weight": [(1.0 if self.as_released else weight_of[q]) if q in weight_of else np.nan for q in idk_ids],
        })
        self._set_selection(vanilla, idk, {
            "task": task, "rule": self.rule, "weight_sign": self.weight_sign, "temperature": self.temperature,
            "as_released": self.as_released, "features": features.source,
            "pool": {"table": len(table), "vanilla": len(ik_ids), "idk": len(idk_ids),
                     "between_thresholds": int((~known & ~unknown).sum())},
            "asked": {"vanilla": n_van, "idk": n_idk},
            "how": {"vanilla": van_note, "idk": idk_note},
            "weights": _weight_summary(weights) | {"written": "1 (as released)" if self.as_released else "adaptive"},
            **balanced,
            "warnings": warn,
        }, weights=None if self.as_released else weight_of)
        return self

    def _take_balanced(self, table: pd.DataFrame, ik_pool: pd.DataFrame, idk_pool: pd.DataFrame, influence: np.ndarray,
                       refusal_idk: np.ndarray, features: GradientFeatures, n_van: int | None, n_idk: int | None,
                       warn: list[str]) -> tuple[list[str], list[str], dict, dict]:
        """Both sides balanced by subject, each subject taken by GRAIT's own rule (module docstring)."""
        idk_ids = list(idk_pool["id"])
        extra: dict = {}
        if self.rule == "o1_topk":
            by_influence = pd.DataFrame({"id": idk_ids, "influence": influence})
            idk_order, how = list(rank(by_influence, "influence", descending=True)["id"]), "top"
        elif self.rule == "random":
            idk_order, how = list(draw(idk_pool, len(idk_pool), self.seed, False)["id"]), "random"
        else:
            if n_idk is None:
                raise ValueError("rule 'greedy_then_bottom' needs an IdK count (n_idk or n_total)")
            row_of = {qid: j for j, qid in enumerate(idk_ids)}

            def pick(ids: list[str], n: int, vanilla: list[str]) -> list[str]:
                answer = features.rows("answer", vanilla) if vanilla else np.zeros((0, refusal_idk.shape[1]))
                _, kept = greedy_then_bottom(refusal_idk[[row_of[q] for q in ids]], answer, n, n)
                return [ids[j] for j in kept]

            idk_order, how = idk_ids, "top"
            extra = {"idk_usable": lambda size: size // 2, "idk_pick": pick}
        vanilla_order = list(rank(ik_pool, "mu", descending=True)["id"])
        return take_balanced(self.method, subjects_of(table, self.method), vanilla_order, idk_order, n_van, n_idk,
                             share_of(n_van, n_idk, self.idk_share), how, warn, **extra)


def _weight_summary(weights: np.ndarray) -> dict:
    """Sum, range and effective sample size (Σw)²/Σw² of the adaptive weights."""
    if len(weights) == 0:
        return {"sum": 0.0}
    return {"sum": float(weights.sum()), "min": float(weights.min()), "max": float(weights.max()),
            "effective_n": float(weights.sum() ** 2 / (weights**2).sum())}
