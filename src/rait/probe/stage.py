"""The probe stage (`rait probe`, and `rait run` per track): load the model, pick the task's probe, run it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from rait.data.records import QARecord
from rait.errors import RaitError
from rait.probe.backends import load_backend
from rait.probe.mcqa import MCQASettings, probe_mcqa
from rait.probe.oeqa import OpenSettings, probe_open


def run(
    settings: MCQASettings | OpenSettings | None,
    records: Sequence[QARecord],
    out: str | Path,
    *,
    model: str | Path | None = "default",
    exemplars: Sequence[QARecord] = (),
    backend: str = "hf",
    device: str | None = None,
    dtype: str | None = None,
    **run_options: Any,
) -> pd.DataFrame:
    """Probe a pool (all MCQA or all open QA) with the model folder `model` and write the knowledge table.

    `settings` are the task's (None: its defaults); `exemplars` are MCQA shot questions (e.g.
    MMLU val). `run_options` are `rait.probe.shards.probe_pool`'s, e.g. `inputs`, files to hash into the
    manifest ({"records": path}), and `work_dir`, where finished shards are kept for a resume.
    """
    tasks = {r.task for r in records}
    if len(tasks) != 1:
        raise RaitError("a pool to probe must be all multiple-choice or all open QA" if tasks else "the pool is empty")
    task = tasks.pop()
    expected = MCQASettings if task == "mcqa" else OpenSettings
    settings = expected() if settings is None else settings
    if not isinstance(settings, expected):
        raise RaitError(f"{task} questions need {expected.__name__}, got {type(settings).__name__}")
    engine = load_backend(backend, model, device=device, dtype=dtype)
    if task == "mcqa":
        return probe_mcqa(engine, records, out, exemplars=exemplars, settings=settings, **run_options)
    return probe_open(engine, records, out, settings=settings, **run_options)
