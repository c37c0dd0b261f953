"""QA data: one record type, loaders for each source, JSONL I/O, seeded splits, and the data stage (`run`)."""

from __future__ import annotations

from rait.data.jsonl import read_records, write_records
from rait.data.loaders import load_arc, load_generic, load_mmlu, load_nq, load_source, load_triviaqa
from rait.data.paths import shared_data_dir
from rait.data.records import QARecord
from rait.data.split import exclude_ids, split_records
from rait.data.stage import DataSettings, Pool, run
from rait.data.testsets import TestSet, load_test_records, record_chars

__all__ = [
    "DataSettings",
    "Pool",
    "QARecord",
    "TestSet",
    "exclude_ids",
    "load_arc",
    "load_generic",
    "load_mmlu",
    "load_nq",
    "load_source",
    "load_test_records",
    "load_triviaqa",
    "read_records",
    "record_chars",
    "run",
    "shared_data_dir",
    "split_records",
    "write_records",
]
