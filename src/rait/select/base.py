"""What every RAIT data selector shares: the scikit-learn shape, pool sizes, and taking from a pool.

A selector stores its parameters in ``__init__`` and does all work in ``fit(table)``, a pure
function of the knowledge table (`rait.probe.table`) and the seed. After ``fit``:

- ``vanilla_ids_``: ids whose gold answer is kept (a list; it may repeat an id only in the
  ``as_released`` MCQA modes, which draw with replacement as the released code did);
- ``idk_ids_``: ids whose answer becomes a refusal; never shares an id with ``vanilla_ids_``;
- ``weights_``: id -> loss weight for ids whose weight is not 1 (empty for every method here;
  GRAIT sets it);
- ``report_``: pool sizes, what was asked, what was taken, how, and every warning.

A pool smaller than asked is never silent: it raises a ``SelectionWarning`` and the message
is kept in ``report_["warnings"]``. Every ordering is deterministic: pools are sorted by id
before any random draw (so the row order of the table never matters), and certainty ranking
breaks ties by id.

``target(record, kind)`` gives the completion text of a selected item; ``build_dataset`` (in
`rait.select.build`) turns a fitted selector into training rows. A new method (e.g. GRAIT)
subclasses ``Selector``, implements ``fit`` and ends it with ``self._set_selection(...)``.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import pandas as pd
from sklearn.base import BaseEstimator

from rait.data.records import QARecord
from rait.errors import DataError
from rait.probe.table import single_task, validate_table
from rait.prompts import answer_target, refusal_text

Kind = str  # "vanilla" | "idk"


class SelectionWarning(UserWarning):
    """A pool held fewer questions than asked, or a fallback rule was used; the message says what was taken."""


RELEASED_IDK_SHARE = 0.2  # the only share the releases have: CRaFT's `total_n // 10 * 2`


def resolve_sizes(n_total: int | None, n_vanilla: int | None, n_idk: int | None, idk_share: float,
                  released: bool = False) -> tuple[int | None, int | None]:
    """(n_vanilla, n_idk) from explicit counts, or from a total and an IdK share; None means "the whole pool".

    n_idk = round(n_total * idk_share) and n_vanilla = n_total - n_idk, so 10,000 at 0.2 gives the
    release's 8,000 / 2,000 and 5,000 gives 4,000 / 1,000. ``released`` applies the rule of CRaFT's
    `triviaqa_RAI.py` instead, n_idk = n_total // 10 * 2, which rounds down to a multiple of 2 (505 gives
    100, not 101); it has no other share, so any other ``idk_share`` is refused.
    """
    if not 0.0 <= idk_share <= 1.0:
        raise ValueError(f"idk_share must be in [0, 1], got {idk_share}")
    for name, value in (("n_total", n_total), ("n_vanilla", n_vanilla), ("n_idk", n_idk)):
        if value is not None and value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if n_vanilla is not None or n_idk is not None:
        if n_total is not None:
            raise ValueError("give either n_total (with idk_share) or n_vanilla/n_idk, not both")
        return n_vanilla, n_idk
    if n_total is None:
        return None, None
    if released:
        if idk_share != RELEASED_IDK_SHARE:
            raise ValueError(f"as_released splits n_total as the release does, n_total // 10 * 2 IdK (a share of "
                             f"{RELEASED_IDK_SHARE}); idk_share {idk_share} has no released rule")
        n_idk = n_total // 10 * 2
    else:
        n_idk = round(n_total * idk_share)
    return n_total - n_idk, n_idk


def split_by_correctness(mu: pd.Series, tau: float, dead_band: float = 0.0) -> tuple[pd.Series, pd.Series]:
    """The known/unknown split of every builder (docs/build.md): known μ ≥ τ, unknown μ < τ, as boolean masks.

    ``dead_band`` > 0 leaves questions with |μ − τ| < dead_band on neither side. Only the
    ``as_released`` modes differ, where a release's script did (CRaFT's open-QA 0.51 / 0.49,
    GRAIT's strict μ > τ / μ < τ).
    """
    mu = mu.astype(float)
    outside = (mu - tau).abs() >= dead_band if dead_band > 0 else pd.Series(True, index=mu.index)
    return (mu >= tau) & outside, (mu < tau) & outside


def rank(pool: pd.DataFrame, key: str, descending: bool) -> pd.DataFrame:
    """Sort a pool by `key`, ties broken by id ascending (stable, so the result never depends on row order)."""
    return pool.sort_values([key, "id"], ascending=[not descending, True], kind="mergesort")


def draw(pool: pd.DataFrame, n: int, seed: int, replace: bool) -> pd.DataFrame:
    """n rows at random (pandas ``sample``, ``random_state=seed``) from the pool sorted by id."""
    return pool.sort_values("id", kind="mergesort").sample(n=n, replace=replace, random_state=seed)


class Selector(BaseEstimator):
    """Base class: parameters in ``__init__``, selection in ``fit``; see the module docstring."""

    name: ClassVar[str] = ""
    uses_flow: ClassVar[bool] = False  # needs the knowledge flow Δμ of `rait rehearse` in the table
    uses_gradients: ClassVar[bool] = False  # needs the gradient store of `rait grads`
    uses_samples: ClassVar[bool] = False  # needs the open-QA probe's samples in the table

    @property
    def method(self) -> str:
        """The value of the ``method`` column in built datasets."""
        return self.name

    def fit(self, table: pd.DataFrame) -> "Selector":
        raise NotImplementedError

    def refusal_for(self, record: QARecord) -> str:
        """The ``refusal`` parameter if set, else the release's: "I don't know" (open QA), "I don't know." (MCQA)."""
        return getattr(self, "refusal", None) or refusal_text(record.task)

    def target(self, record: QARecord, kind: Kind) -> str:
        """The completion text of a selected item."""
        return answer_target(record) if kind == "vanilla" else self.refusal_for(record)

    # ------------------------------------------------------------ helpers for subclasses

    def _check_table(self, table: pd.DataFrame, needs: tuple[str, ...] = ()) -> tuple[pd.DataFrame, str]:
        table = validate_table(table.reset_index(drop=True))
        for col in needs:
            if col not in table.columns:
                hint = " (run rehearsal and merge the flow: rait.probe.table.merge_flow)" if col == "delta_mu" else ""
                raise DataError("<knowledge table>", f"{self.method} needs this column{hint}", field=col)
            if table[col].isna().any():
                row = int(table[col].isna().idxmax()) + 1
                raise DataError("<knowledge table>", f"{self.method} needs a value in every row", line=row, field=col)
        table = table.assign(id=table["id"].astype(str))
        return table, single_task(table)

    def _take(self, pool: pd.DataFrame, n: int | None, side: str, how: str, seed: int, warn: list[str]) -> tuple[list[str], str]:
        """Take n ids from a pool. how: "top" (already ranked), "random", "replace" (random with replacement, from the
        pool in id order) or "replace_ranked" (the same, from the pool in the order given).

        A short pool gives all of it ("top"/"random") or n draws with replacement from it
        ("replace", "replace_ranked"), with a warning either way. Returns the ids and a note of what was done.
        """
        size = len(pool)
        if n is None:
            ordered = pool if how == "top" else pool.sort_values("id", kind="mergesort")
            return list(ordered["id"]), f"all {size}"
        if how in ("replace", "replace_ranked"):
            if size == 0:
                taken, note = [], "nothing (empty pool)"
            elif how == "replace":
                taken, note = list(draw(pool, n, seed, True)["id"]), f"{n} drawn with replacement from {size}"
            else:
                taken = list(pool.sample(n=n, replace=True, random_state=seed)["id"])
                note = f"{n} drawn with replacement from {size}, in certainty order"
            if size < n:
                warn.append(f"{self.method}: the {side} pool has {size} questions but {n} were asked; took {note}")
            return taken, note
        if size < n:
            warn.append(f"{self.method}: the {side} pool has {size} questions but {n} were asked; took all {size}")
            n = size
        ids = list(pool["id"].iloc[:n]) if how == "top" else list(draw(pool, n, seed, False)["id"])
        return ids, f"{'top' if how == 'top' else 'random'} {n} of {size}"

    def _set_selection(self, vanilla: list[str], idk: list[str], report: dict[str, Any], weights: dict[str, float] | None = None) -> None:
        overlap = set(vanilla) & set(idk)
        assert not overlap, f"vanilla and IdK share ids {sorted(overlap)[:3]}"
        self.vanilla_ids_ = vanilla
        self.idk_ids_ = idk
        self.weights_ = dict(weights or {})
        report = {"method": self.method, **report, "taken": {"vanilla": len(vanilla), "idk": len(idk)}}
        report.setdefault("warnings", [])
        self.report_ = report
        for message in report["warnings"]:
            warnings.warn(message, SelectionWarning, stacklevel=3)
