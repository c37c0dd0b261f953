"""The data stage: a pool of QA records from one dataset spec, its validation split held out first.

`rait data load` and the pool of every `rait run` track are this one call, `run(DataSettings, out)`, so a
pool means the same records, in the same order, whichever way it was made (docs/architecture.md). The
validation split is drawn before the sample, so a recipe chosen on it never saw a pool or test item
(docs/study.md, decision rules); test sets are loaded with `load_test_records`, the same sampling.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from rait.artifacts import write_manifest
from rait.data.jsonl import write_records
from rait.data.loaders import ARC_MODES, check_mapping, load_source, spec_of
from rait.data.records import QARecord
from rait.data.split import split_records
from rait.data.testsets import select_records
from rait.errors import MAX_SEED, RaitError, SettingsError, check_choice, check_count


@dataclass
class DataSettings:
    """Where the records come from and which of them form the pool.

    `data` is a dataset spec (`facts:train`, `mmlu:test`, `jsonl:FILE`, `csv:FILE`, `parquet:FILE`, `disk:FOLDER`,
    or a bare path, read by its suffix); `columns` maps a table's columns to record fields (`load_generic`);
    `limit` keeps the first records as loaded (a quick look), `max_chars` drops long questions, `validation`
    holds that many out first (stratified by `stratify`, seeded by `seed`), and `sample` then draws the pool from
    the rest.
    """

    data: str
    sample: int | None = None
    stratify: str | None = None
    max_chars: int | None = None
    validation: int | None = None
    limit: int | None = None
    arc_mode: str = "sane"  # ARC's choices: all of them ("sane") or as CRaFT's loader shows them ("as_released")
    seed: int = 0
    columns: dict[str, str | list[str]] | None = None

    def __post_init__(self) -> None:
        for name in ("sample", "max_chars", "validation", "limit"):
            if getattr(self, name) is not None:
                check_count(name, getattr(self, name), 1)
        if self.limit is not None and self.sample is not None:  # a sample of the first records is neither
            raise SettingsError("limit", "keeps the first records as loaded, --sample draws a seeded sample of them "
                                "all: give one of the two")
        check_count("seed", self.seed, 0, MAX_SEED)
        check_choice("arc_mode", self.arc_mode, ARC_MODES)
        if self.columns is not None:
            check_mapping(self.columns)


@dataclass
class Pool:
    """What the data stage wrote: the pool and, when one was asked for, the validation split."""

    records: list[QARecord]
    validation: list[QARecord]
    path: Path
    validation_path: Path | None


def load(settings: DataSettings) -> tuple[list[QARecord], list[QARecord]]:
    """The pool's records and the validation split (empty when none is asked for), nothing written."""
    spec = spec_of(settings.data)
    kwargs = {"mode": settings.arc_mode} if spec.startswith("arc") else {}
    records = load_source(spec, columns=settings.columns, **kwargs)[: settings.limit]
    records = select_records(records, None, settings.stratify, settings.max_chars, settings.seed)
    validation: list[QARecord] = []
    if settings.validation:
        records, validation = split_records(records, test_size=settings.validation, seed=settings.seed,
                                            stratify_by=settings.stratify)
    records = select_records(records, settings.sample, settings.stratify, None, settings.seed)
    return records, validation


def run(settings: DataSettings, out: str | Path, *, validation_out: str | Path | None = None) -> Pool:
    """Write the pool to `out` and the validation split to `validation_out` (default `<out stem>.validation.jsonl`),
    each as QA-record JSONL with its manifest. An empty pool is refused before anything is written."""
    out = Path(out)
    records, validation = load(settings)
    if not records:
        raise RaitError(f"the pool is empty ({settings.data})")
    write_records(out, records)
    write_manifest(out, stage="data", settings=asdict(settings))
    validation_path = None
    if validation:
        validation_path = Path(validation_out) if validation_out else out.with_name(f"{out.stem}.validation.jsonl")
        write_records(validation_path, validation)
        write_manifest(validation_path, stage="data", settings=asdict(settings), extra={"split": "validation"})
    return Pool(records, validation, out, validation_path)
