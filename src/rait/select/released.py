"""The MMLU μ of CRaFT's `mmlu_RAI.py` (and GRAIT's copy of it), for the ``as_released`` builds only.

The release reads each question's raw letter probabilities into columns A-D and normalises them one
column at a time, in place: A ← A / (A + B + C + D), then B ← B / (A + B + C + D) with A already
normalised, and so on; μ is the gold letter's column. Only a question whose gold letter is A gets
p_gold / Σp; the others get another number whenever the raw probabilities do not sum to 1, which letter
probabilities never quite do. It does so for the first probe and for the rehearsal re-probe, so Δμ moves
too.

The probe's table keeps the correct μ = p_gold / Σp (`rait.probe.measures.option_stats`), and so does
every ``paper`` build. The build stage (`rait.select.stage.run`) hands the ``as_released`` selectors of
an MCQA table the table of `released_mcqa_table` instead; a selector fitted directly reads μ as given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from rait.data.records import QARecord
from rait.errors import DataError
from rait.probe.table import merge_flow, read_table, single_task

REHEARSED_TABLE = "rehearsed_table.jsonl"  # the re-probe `rait rehearse` writes beside its flow_table.jsonl
FLOW_COLUMNS = ("mu_rehearsal", "delta_mu")


def released_mcqa_mu(option_probs: Sequence[float], gold_index: int) -> float:
    """The release's μ of one question: its letter columns normalised in place, in letter order; the gold one's value.

    The sums run left to right over Python floats, as the release's ``row['A'] + row['B'] + …`` does, so the
    value is the release's to the bit.
    """
    columns = [float(p) for p in option_probs]
    for letter in range(len(columns)):
        columns[letter] = columns[letter] / sum(columns)
    return columns[gold_index]


def released_mcqa_table(table: pd.DataFrame, records: Sequence[QARecord],
                        source: str | Path = "<knowledge table>") -> pd.DataFrame:
    """A copy of an MCQA table whose ``mu`` is the release's (module docstring); every other column unchanged.

    The gold letter comes from the records, never from ``gold_prob``, which two options can share.
    """
    if "option_probs" not in table.columns:
        raise DataError(source, "the release's MMLU μ is computed from the raw letter probabilities",
                        field="option_probs")
    gold = {record.id: record.letters.index(record.gold) for record in records}
    released = []
    for line, (qid, probs) in enumerate(zip(table["id"].astype(str), table["option_probs"]), start=1):
        if qid not in gold:
            raise DataError(source, f"question {qid!r} is not among the pool records", line=line, field="id")
        try:
            values = [float(p) for p in probs] if np.ndim(probs) == 1 else []
        except (TypeError, ValueError):
            values = []
        if len(values) <= gold[qid] or not sum(values) > 0:  # NaN fails the comparison too
            raise DataError(source, "needs the raw probability of every option letter, not all zero", line=line,
                            field="option_probs")
        released.append(released_mcqa_mu(values, gold[qid]))
    return table.assign(mu=released)


def differing_mu(table: pd.DataFrame, records: Sequence[QARecord]) -> int:
    """How many questions of an MCQA table have a release μ other than p_gold / Σp of the same probabilities (the
    table's own μ may hold fewer digits: JSONL keeps 15)."""
    gold = {record.id: record.letters.index(record.gold) for record in records}
    return sum(released_mcqa_mu(probs, gold[qid]) != float(probs[gold[qid]]) / sum(float(p) for p in probs)
               for qid, probs in zip(table["id"].astype(str), table["option_probs"]))


def released_flow_table(table: pd.DataFrame, records: Sequence[QARecord], rehearsed_path: str | Path,
                        source: str | Path = "<knowledge table>") -> pd.DataFrame:
    """The flow table with the release's μ before and after rehearsal, and Δμ from them, matched by id.

    `rehearsed_path` is the rehearsal re-probe (`REHEARSED_TABLE` beside the flow table): the flow table keeps
    only its correct μ, and the release's needs its raw letter probabilities.
    """
    rehearsed = read_table(rehearsed_path)
    if single_task(rehearsed) != "mcqa":
        raise DataError(rehearsed_path, "is not an MCQA re-probe", field="task")
    after = released_mcqa_table(rehearsed, records, rehearsed_path)
    initial = released_mcqa_table(table.drop(columns=list(FLOW_COLUMNS), errors="ignore"), records, source)
    return merge_flow(initial.assign(id=initial["id"].astype(str)), after.assign(id=after["id"].astype(str)))
