"""Balance a build by subject (`BuildSettings.balance = "subject"`; docs/build.md, "Balance by subject").

Why: on a pool of several kinds of question (the facts pool's relations, MMLU's subjects) the model
knows some kinds far better than others, so a selector's IdK questions pile up on the kinds it mostly
fails. The fine-tune can then learn "this kind of question -> refuse" instead of "a question I cannot
answer -> refuse", and refuses whole kinds of question it has never seen (issue "Refusal that
transfers"). A balanced set gives every subject known (vanilla) and unknown (IdK) samples in the
same proportion, the set's IdK share r, so the kind of question does not predict the refusal.

How (`quotas`): subject s has K_s vanilla and U_s IdK candidates *of the method's own pools* (after
its split, dead band and, for the flow methods, the flow filter). It can give at most
c_s = min(K_s / (1 − r), U_s / r) samples at share r (c_s = K_s when r = 0, U_s when r = 1). The
asked total N = n_vanilla + n_idk is shared out in proportion to c_s (scaled down to N when the
subjects hold more, never above c_s), so subject s gets r·m_s IdK and (1 − r)·m_s vanilla samples
with m_s = c_s·min(1, N / Σc). Each side is then rounded to whole samples by largest remainder
(ties to the smaller subject name), so the totals are exactly n_vanilla and n_idk whenever the
subjects hold them, no subject gets more than its pool holds, and each subject's IdK count is
within one sample of r times its size. r = n_idk / N of the asked sizes (the build's idk_share up
to the rounding of n_total·idk_share); with no size (whole pools) r is idk_share and every subject
gives its full capacity.

Within a subject the method's own order decides (`take_balanced`): CRaFT's and CorCer-RAIT's σ
ranking, GRAIT's μ ranking and I_O1 ranking, and the random methods' seeded draw (the whole pool
drawn in one seeded permutation, of which each subject keeps its first questions; pandas' draw of
n is the first n of its draw of all, so a subject's questions are those the unbalanced draw reaches
first). The chosen ids keep that order in the set.

A subject that has candidates on one side but none on a side the share needs is dropped, with a
`SelectionWarning`; so is a balanced set smaller than asked. Subjects come from the QA records
(`QARecord.subject`), which `rait build` writes into the table's ``subject`` column
(`with_subjects`); a record without a subject belongs to the subject "" (all of them together).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, Callable, Iterable, Sequence

import pandas as pd

from rait.data.records import QARecord
from rait.errors import DataError, SettingsError, check_choice

BALANCES = ("subject",)
SUBJECT = "subject"  # the table column a balanced selector reads


def check_balance(balance: str | None, *, released: bool = False, n_vanilla: int | None = None,
                  n_idk: int | None = None) -> None:
    """Refuse a balance outside `BALANCES`, with the as_released modes, or with one side's size left open."""
    check_choice("balance", balance, BALANCES)
    if balance is None:
        return
    if released:
        raise SettingsError("balance", "the as_released mode reproduces the papers' released sets, which are not "
                            "balanced; balance with mode 'paper'")
    if (n_vanilla is None) != (n_idk is None):
        raise SettingsError("balance", "needs both n_vanilla and n_idk (or n_total with idk_share, or no size): the "
                            "IdK share every subject follows is n_idk / (n_vanilla + n_idk)")


def with_subjects(table: pd.DataFrame, records: Iterable[QARecord]) -> pd.DataFrame:
    """The table with a ``subject`` column from the records (a record without one: ""), replacing any such column."""
    subject = {record.id: record.subject or "" for record in records}
    return table.assign(**{SUBJECT: table["id"].astype(str).map(subject).fillna("")})


def subjects_of(table: pd.DataFrame, method: str) -> dict[str, str]:
    """id -> subject from the table's ``subject`` column (a missing value is the subject "")."""
    if SUBJECT not in table.columns:
        raise DataError("<knowledge table>", f"{method}: balance='subject' needs each question's subject (`rait build` "
                        "adds it from the records: rait.select.balance.with_subjects)", field=SUBJECT)
    values = table[SUBJECT].where(table[SUBJECT].notna(), "").astype(str)
    return dict(zip(table["id"].astype(str), values))


def share_of(n_vanilla: int | None, n_idk: int | None, idk_share: float) -> Fraction:
    """The IdK share r every subject follows: n_idk / (n_vanilla + n_idk), else (no size) idk_share."""
    if n_vanilla is not None and n_idk is not None and n_vanilla + n_idk > 0:
        return Fraction(n_idk, n_vanilla + n_idk)
    return Fraction(str(float(idk_share)))


def capacity(known: int, unknown: int, share: Fraction) -> Fraction:
    """The most samples a subject can give at IdK share `share`: min(K / (1 − r), U / r)."""
    if share == 0:
        return Fraction(known)
    if share == 1:
        return Fraction(unknown)
    return min(Fraction(known) / (1 - share), Fraction(unknown) / share)


def _round_half_up(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


def apportion(reals: dict[str, Fraction], total: int) -> dict[str, int]:
    """Whole numbers summing to `total`, each the floor or the ceiling of its real share (largest remainder;
    ties to the smaller key). `total` must lie between the sums of the floors and of the ceilings."""
    out = {key: math.floor(x) for key, x in reals.items()}
    left = total - sum(out.values())
    order = sorted(reals, key=lambda key: (-(reals[key] - out[key]), key))
    assert 0 <= left <= sum(1 for key in reals if reals[key] != out[key]), (total, reals)
    for key in order[:left]:
        out[key] += 1
    return out


def quotas(pools: dict[str, tuple[int, int]], n_vanilla: int | None, n_idk: int | None,
           share: Fraction) -> dict[str, tuple[int, int]]:
    """Per subject (vanilla, IdK) samples to take, from its (vanilla, IdK) candidate counts (module docstring).

    Sizes None take every subject's full capacity. The totals are exactly (n_vanilla, n_idk) when the subjects'
    capacities add up to at least n_vanilla + n_idk, and fewer otherwise.
    """
    caps = {s: capacity(k, u, share) for s, (k, u) in pools.items()}
    room = sum(caps.values(), Fraction(0))
    if n_vanilla is None or n_idk is None:
        scale = Fraction(1)
    else:
        scale = min(Fraction(1), Fraction(n_vanilla + n_idk) / room) if room else Fraction(0)
    idk_real = {s: share * scale * c for s, c in caps.items()}
    van_real = {s: (1 - share) * scale * c for s, c in caps.items()}
    n_i = _round_half_up(sum(idk_real.values(), Fraction(0)))
    n_v = _round_half_up(sum(van_real.values(), Fraction(0)))
    if n_idk is not None:
        n_i, n_v = min(n_i, n_idk), min(n_v, n_vanilla)
    idk, van = apportion(idk_real, n_i), apportion(van_real, n_v)
    return {s: (van[s], idk[s]) for s in pools}


def take_balanced(method: str, subject_of: dict[str, str], vanilla_order: Sequence[str], idk_order: Sequence[str],
                  n_vanilla: int | None, n_idk: int | None, share: Fraction, how: str, warn: list[str], *,
                  idk_usable: Callable[[int], int] = lambda n: n,
                  idk_pick: Callable[[list[str], int, list[str]], list[str]] | None = None,
                  ) -> tuple[list[str], list[str], dict[str, str], dict[str, Any]]:
    """The balanced selection from a method's candidates in its own order; returns (vanilla, idk, notes, report).

    `vanilla_order` / `idk_order`: the method's pools, each in the order it takes from (ranked, or one seeded
    permutation). Each subject keeps the first of its questions on each side, and the set keeps the method's order.
    A method whose IdK choice is not a prefix of one order (GRAIT's greedy_then_bottom) gives `idk_pick(subject's IdK
    candidates, quota, chosen vanilla ids)` and `idk_usable(pool size)`, the most it can take from a pool that size;
    its IdK ids then come subject by subject.
    """
    for side, order in (("vanilla", vanilla_order), ("IdK", idk_order)):
        assert len(set(order)) == len(order), f"{method}: the {side} candidates repeat an id"
    subjects = sorted(set(subject_of.values()))
    van_by = {s: [] for s in subjects}
    idk_by = {s: [] for s in subjects}
    for qid in vanilla_order:
        van_by[subject_of[qid]].append(qid)
    for qid in idk_order:
        idk_by[subject_of[qid]].append(qid)
    pools = {s: (len(van_by[s]), idk_usable(len(idk_by[s]))) for s in subjects}
    quota = quotas(pools, n_vanilla, n_idk, share)

    chosen_van = {qid for s in subjects for qid in van_by[s][:quota[s][0]]}
    vanilla = [qid for qid in vanilla_order if qid in chosen_van]
    if idk_pick is None:
        chosen_idk = {qid for s in subjects for qid in idk_by[s][:quota[s][1]]}
        idk = [qid for qid in idk_order if qid in chosen_idk]
    else:
        idk = [qid for s in subjects if quota[s][1] for qid in idk_pick(idk_by[s], quota[s][1], vanilla)]
    taken = {s: (sum(subject_of[q] == s for q in vanilla), sum(subject_of[q] == s for q in idk)) for s in subjects}

    needs_vanilla, needs_idk = share < 1, share > 0
    dropped = [s for s in subjects  # candidates on a side the share needs, none on another it needs
               if (needs_vanilla and pools[s][0] or needs_idk and pools[s][1])
               and (needs_vanilla and not pools[s][0] or needs_idk and not pools[s][1])]
    if dropped:
        shown = ", ".join(f"{s!r} ({len(van_by[s])} known, {len(idk_by[s])} unknown)" for s in dropped[:5])
        more = f" and {len(dropped) - 5} more" if len(dropped) > 5 else ""
        warn.append(f"{method}: balanced by subject, {len(dropped)} subject(s) lack known or unknown candidates and "
                    f"give no sample: {shown}{more}")
    if n_vanilla is not None and (len(vanilla) < n_vanilla or len(idk) < n_idk):
        warn.append(f"{method}: balanced by subject at IdK share {float(share):.3g}, the subjects hold "
                    f"{len(vanilla)} vanilla / {len(idk)} IdK of the {n_vanilla} / {n_idk} asked; took "
                    f"{len(vanilla)} / {len(idk)}")
    notes = {"vanilla": f"{how} {len(vanilla)} of {len(vanilla_order)}, balanced by subject",
             "idk": f"{how if idk_pick is None else 'picked'} {len(idk)} of {len(idk_order)}, balanced by subject"}
    report = {"by": SUBJECT, "idk_share": float(share),
              "subjects": {s: {"pool": {"vanilla": len(van_by[s]), "idk": len(idk_by[s])},
                               "taken": {"vanilla": taken[s][0], "idk": taken[s][1]}} for s in subjects},
              "dropped": dropped}
    return vanilla, idk, notes, report
