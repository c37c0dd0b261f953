"""Named sets of records: a dataset spec (or records file) with an optional seeded, stratified sample.

The pool of `rait probe` / `rait run`, every test set of `rait eval` / `rait run`, and the
MCQA shot records are all loaded this way, so a sample means the same items everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from rait.data.loaders import check_mapping, load_source, spec_of
from rait.errors import SettingsError, check_count
from rait.data.records import QARecord
from rait.data.split import split_records


@dataclass
class TestSet:
    name: str
    data: str
    sample: int | None = None
    stratify: str | None = None
    domain: str = "ID"
    max_chars: int | None = None  # keep questions whose text and options are at most this long
    columns: dict[str, str | list[str]] | None = None  # a table's columns -> record fields (`load_generic`)

    def __post_init__(self) -> None:
        for name in ("sample", "max_chars"):
            if getattr(self, name) is not None:
                check_count(name, getattr(self, name), 1)
        if self.columns is not None:
            check_mapping(self.columns)


def record_chars(record: QARecord) -> int:
    """Length of what a prompt shows of a record: the question and its options."""
    return len(record.question) + sum(len(c) for c in record.choices or ())


def select_records(records: list[QARecord], sample: int | None, stratify: str | None, max_chars: int | None,
                   seed: int) -> list[QARecord]:
    """The records of at most `max_chars`, then a seeded sample of `sample` (stratified by `stratify`) if fewer."""
    if max_chars is not None:
        records = [r for r in records if record_chars(r) <= max_chars]
    if sample is not None and sample > len(records):  # silently fewer would pass for the sample asked for
        kept = f" of at most {max_chars} characters" if max_chars is not None else ""
        raise SettingsError("sample", f"{sample} is more than the {len(records)} records{kept} there are")
    if sample is not None and sample < len(records):
        _, records = split_records(records, test_size=sample, seed=seed, stratify_by=stratify)
    return records


def load_test_records(test_set: TestSet, seed: int) -> list[QARecord]:
    """The test set's records: a dataset spec (or a path, read by its suffix), length-filtered and sampled by seed if
    asked.

    `max_chars` is for small budgets: on a CPU one long MMLU passage in a batch pads every row to its length.
    """
    records = load_source(spec_of(test_set.data), columns=test_set.columns)
    return select_records(records, test_set.sample, test_set.stratify, test_set.max_chars, seed)
