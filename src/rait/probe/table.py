"""The knowledge table: one row per pool question, what the model knows about it.

This is the contract between the probe (which writes it), rehearsal (which writes a
second one after fine-tuning), and every selector (CRaFT, GRAIT, baselines), which are
pure functions of it. Columns:

- ``id``: the QA record id (joins back to the pool's records).
- ``task``: "mcqa" or "oeqa".
- ``mu``: correctness in [0, 1]. MCQA: gold-option probability normalised over the options.
  OEQA: share of the k samples scored correct.
- ``sigma``: certainty, higher = more certain. MCQA: minus the entropy of the raw option
  probabilities (range [-ln n, 0]). OEQA: mean pairwise cosine similarity of the k samples'
  sentence embeddings, at full precision.
- MCQA only: ``option_probs`` (raw next-token probabilities of each option letter, not
  normalised), ``gold_prob`` (the raw gold probability; CRaFT's rehearsal filter uses it).
- OEQA only: ``samples`` (the k answers, cut at the splitter), ``sample_correct`` and
  ``sample_refused`` (per-sample flags).

A flow table (CRaFT) adds ``mu_rehearsal`` and ``delta_mu`` = mu_rehearsal - mu, merged by
id (never by position: the released CRaFT code misaligns that merge).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from rait.artifacts import atomic_path
from rait.data.records import QARecord
from rait.errors import DataError

REQUIRED_COLUMNS = ("id", "task", "mu", "sigma")
MCQA_COLUMNS = ("option_probs", "gold_prob")
OEQA_COLUMNS = ("samples", "sample_correct", "sample_refused")


def validate_table(table: pd.DataFrame, source: str | Path = "<knowledge table>") -> pd.DataFrame:
    """Check the columns and values a selector relies on; return the table unchanged."""
    for col in REQUIRED_COLUMNS:
        if col not in table.columns:
            raise DataError(source, "column missing from the knowledge table", field=col)
    duplicated = table["id"][table["id"].duplicated()]
    if len(duplicated):
        line = int(duplicated.index[0]) + 1
        raise DataError(source, f"duplicate id {duplicated.iloc[0]!r}", line=line, field="id")
    bad_task = ~table["task"].isin(["mcqa", "oeqa"])
    if bad_task.any():
        raise DataError(source, "task must be 'mcqa' or 'oeqa'", line=int(bad_task.idxmax()) + 1, field="task")
    for col, low, high in (("mu", 0.0, 1.0),):
        values = pd.to_numeric(table[col], errors="coerce")
        bad = values.isna() | (values < low) | (values > high)
        if bad.any():
            raise DataError(source, f"must be a number in [{low}, {high}]", line=int(bad.idxmax()) + 1, field=col)
    bad = ~(pd.to_numeric(table["sigma"], errors="coerce").abs() < float("inf"))  # NaN and ±inf
    if bad.any():
        raise DataError(source, "must be a finite number", line=int(bad.idxmax()) + 1, field="sigma")
    return table


TABLE_SUFFIXES = (".parquet", ".jsonl")


def check_table_path(path: Path) -> None:
    """A knowledge table's format follows its suffix; refuse any other before the probe runs."""
    if path.suffix not in TABLE_SUFFIXES:
        raise DataError(path, f"a knowledge table is {' or '.join(TABLE_SUFFIXES)}, not {path.suffix or 'suffix-less'}")


def write_table(table: pd.DataFrame, path: str | Path) -> Path:
    """Write as Parquet (``.parquet``) or JSONL (``.jsonl``), atomically."""
    path = Path(path)
    check_table_path(path)
    validate_table(table.reset_index(drop=True), path)
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            table.to_parquet(tmp, index=False)
        else:
            # 15 significant digits, pandas' most (its default is 10); Parquet keeps every bit
            table.to_json(tmp, orient="records", lines=True, force_ascii=False, double_precision=15)
    return path


def read_table(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise DataError(path, "knowledge table not found")
    if path.is_dir():
        raise DataError(path, "is a folder, not a knowledge table")
    if path.suffix == ".parquet":
        try:
            table = pd.read_parquet(path)
        except Exception as err:  # pyarrow raises ArrowInvalid, OSError or others for a broken file
            raise DataError(path, f"not a readable Parquet file ({type(err).__name__}: {err})") from None
    else:
        if path.stat().st_size == 0:
            raise DataError(path, "empty file")
        try:  # precise_float: pandas' fast parser reads 0.095476 as 0.09547599999999999, which moves ties and roundings
            table = pd.read_json(path, orient="records", lines=True, dtype={"id": str}, precise_float=True)
        except ValueError as err:
            raise DataError(path, f"not valid JSON lines ({err})") from err
    return validate_table(table, path)


def merge_flow(initial: pd.DataFrame, rehearsed: pd.DataFrame) -> pd.DataFrame:
    """Add ``mu_rehearsal`` and ``delta_mu`` to the initial table, matched by id.

    Every initial question must have been re-probed; a missing id is an error, not a NaN.
    """
    after = rehearsed.set_index("id")["mu"]
    missing = ~initial["id"].isin(after.index)
    if missing.any():
        raise DataError("<rehearsal table>", f"question {initial['id'][missing].iloc[0]!r} was not re-probed", field="id")
    out = initial.copy()
    out["mu_rehearsal"] = out["id"].map(after).astype(float)
    out["delta_mu"] = out["mu_rehearsal"] - out["mu"]
    return out


def single_task(table: pd.DataFrame) -> str:
    """The table's task; rules and refusal strings differ by task, so a table must hold one."""
    tasks = sorted(set(table["task"]))
    if not tasks:
        raise DataError("<knowledge table>", "has no rows")
    if len(tasks) != 1:
        raise DataError("<knowledge table>", f"holds tasks {tasks}; build each task's table separately", field="task")
    return tasks[0]


def check_table_pool(table: pd.DataFrame, records: Sequence[QARecord], source: str | Path = "<knowledge table>",
                     *, complete: bool = False) -> None:
    """Refuse a knowledge table of another pool or another task before any work: every row must be a question of
    `records` probed as its task (an MCQA table's μ and σ mean other things than an open-QA one's); with
    `complete`, every record must have a row too. A row is named by its line (its position, counting from 1)."""
    by_id = {record.id: record for record in records}
    ids = table["id"].astype(str).tolist()
    for line, (qid, task) in enumerate(zip(ids, table["task"]), start=1):
        record = by_id.get(qid)
        if record is None:
            raise DataError(source, f"question {qid!r} is not among the pool records (was the table probed on "
                            "another pool?)", line=line, field="id")
        if task != record.task:
            raise DataError(source, f"question {qid!r} was probed as {task}, but the pool's record is {record.task} "
                            "(a table of another pool?)", line=line, field="task")
    present = set(ids)
    if complete and (missing := [qid for qid in by_id if qid not in present]):
        raise DataError(source, f"has no row for pool question {missing[0]!r} ({len(missing)} of {len(by_id)} "
                        "missing; probed on another pool?)", field="id")
