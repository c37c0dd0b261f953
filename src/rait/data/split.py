"""Train/test splits of QA pools that do not depend on file order, and exemplar exclusion.

Records are sorted by id before scikit-learn's seeded shuffle, so the same seed gives the
same split however the pool was loaded or concatenated.
"""

from __future__ import annotations

from typing import Iterable

from rait.data.records import QARecord
from rait.errors import MAX_SEED, RaitError, check_count


def split_records(
    records: Iterable[QARecord],
    test_size: int | float,
    seed: int,
    stratify_by: str | None = None,
) -> tuple[list[QARecord], list[QARecord]]:
    """(train, test): test_size is a count (int) or a fraction (float), as in scikit-learn.

    stratify_by names a record attribute ("subject", "source") or a metadata key
    ("relation") whose proportions both parts keep.
    """
    from sklearn.model_selection import train_test_split  # here: importing sklearn takes seconds

    check_count("seed", seed, 0, MAX_SEED)  # scikit-learn's own refusal names no option
    records = sorted(records, key=lambda r: r.id)
    for before, after in zip(records, records[1:]):
        if before.id == after.id:
            raise RaitError(f"duplicate id {after.id!r}: a split needs unique ids")
    strata = [stratum(r, stratify_by) for r in records] if stratify_by else None
    try:
        train, test = train_test_split(records, test_size=test_size, random_state=seed, shuffle=True, stratify=strata)
    except ValueError as err:
        raise RaitError(f"cannot split {len(records)} records with test_size={test_size!r}: {err}") from None
    return train, test


def stratum(record: QARecord, key: str) -> str:
    """The value of `key` for a record: an attribute if the record has one, else a metadata entry."""
    value = getattr(record, key) if key in QARecord.__dataclass_fields__ and key != "metadata" else record.metadata.get(key)
    if value is None:
        raise RaitError(f"record {record.id!r} has no {key!r} to stratify by (neither a field nor a metadata key)")
    return str(value)


def exclude_ids(records: Iterable[QARecord], ids: Iterable[str]) -> list[QARecord]:
    """The records whose id is not in `ids`, in order: keeps few-shot exemplars out of a pool."""
    excluded = set(ids)
    return [r for r in records if r.id not in excluded]
