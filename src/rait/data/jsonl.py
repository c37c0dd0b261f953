"""QA records on disk: one `QARecord.to_dict()` JSON object per line.

Reading validates every line and points at the first bad one by file, line and field, so a
hand-edited pool fails before any model is loaded. `datasets.load_dataset("json", ...)`
reads the same files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from rait.artifacts import iter_jsonl_objects, write_jsonl
from rait.data.records import QARecord
from rait.errors import DataError

RECORD_FIELDS = tuple(QARecord.__dataclass_fields__)
REQUIRED_FIELDS = ("id", "question", "source", "split")


def read_records(path: str | Path) -> list[QARecord]:
    """Read and validate a records JSONL file (blank lines are skipped, line numbers stay physical)."""
    path = Path(path)
    records: list[QARecord] = []
    first_line_of: dict[str, int] = {}
    for line_no, row in iter_jsonl_objects(path):
        for name in row:
            if name not in RECORD_FIELDS:
                raise DataError(path, f"unknown field (known: {', '.join(RECORD_FIELDS)})", line=line_no, field=name)
        for name in REQUIRED_FIELDS:
            if name not in row:
                raise DataError(path, "missing", line=line_no, field=name)
        record = QARecord.from_dict(row)
        if problems := record.problems():
            name, message = problems[0]
            raise DataError(path, message, line=line_no, field=name)
        if record.id in first_line_of:
            first = first_line_of[record.id]
            raise DataError(path, f"duplicate id {record.id!r} (first on line {first})", line=line_no, field="id")
        first_line_of[record.id] = line_no
        records.append(record)
    if not records:
        raise DataError(path, "no records (the file is empty)")
    return records


def write_records(path: str | Path, records: Iterable[QARecord]) -> int:
    """Validate, then write records atomically; return how many were written."""
    records = list(records)
    for index, record in enumerate(records, start=1):
        if problems := record.problems():
            name, message = problems[0]
            raise DataError(path, f"record {index} ({record.id!r}) cannot be written: {message}", field=name)
    return write_jsonl(path, (record.to_dict() for record in records))
