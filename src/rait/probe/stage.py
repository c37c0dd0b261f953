"""The probe stage (`rait probe`, and `rait run` per track): load the model, pick the task's probe, run it.

One settings class for both kinds of pool (`ProbeSettings`); the pool's task picks the engine, open QA
(`probe_open`, the papers' k-sample probe, docs/probe.md) or MCQA (`probe_mcqa`, shots and option scoring),
each with its own typed settings (`OpenSettings`, `MCQASettings`) that `ProbeSettings.for_task` fills in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from rait.data.records import QARecord
from rait.distributed import processes
from rait.errors import RaitError, SettingsError, check_count
from rait.probe.backends import load_backend
from rait.probe.mcqa import MCQASettings, probe_mcqa
from rait.probe.oeqa import OpenSettings, probe_open

_OPEN_FIELDS = {f.name for f in fields(OpenSettings)}
_MCQA_FIELDS = {f.name for f in fields(MCQASettings)}
# MCQA scores every option deterministically: the sampling seed (which `rait run` always sets) has nothing to do
_IGNORED_BY_MCQA = {"seed"}


@dataclass
class ProbeSettings:
    """How a pool is probed. None leaves a field at the pool's task's default (`OpenSettings`, `MCQASettings`).

    Both tasks: `chat` (render through the chat template; open QA True, MCQA False), `system`, `batch_size`
    (open QA: questions per generate call, 16; MCQA: forward rows, 8), `shard_size` (questions per resumable
    shard, 32). Open QA: `prompt`, `k`, `temperature`, `top_k`, `top_p`, `max_new_tokens`, `match_mode`,
    `refusal_mode`, `seed`. MCQA: `scoring` (letter or cloze), `shots`. A field the pool's task does not use
    is an error, not ignored.
    """

    chat: bool | None = None
    system: str | None = None
    batch_size: int | None = None
    shard_size: int | None = None
    prompt: str | None = None
    k: int | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    max_new_tokens: int | None = None
    match_mode: str | None = None
    refusal_mode: str | None = None
    seed: int | None = None
    scoring: str | None = None
    shots: int | None = None

    def __post_init__(self) -> None:
        given = self.given()
        open_only = sorted(given.keys() & (_OPEN_FIELDS - _MCQA_FIELDS - _IGNORED_BY_MCQA))
        mcqa_only = sorted(given.keys() & (_MCQA_FIELDS - _OPEN_FIELDS))
        if open_only and mcqa_only:
            raise SettingsError(mcqa_only[0], f"is an MCQA setting, but {open_only[0]!r} is an open-QA one: a pool "
                                "is one or the other")
        for name in ("batch_size", "shard_size"):
            if name in given:
                check_count(name, given[name], 1)
        if open_only:
            self.for_task("oeqa")  # each value checked by the settings class that uses it
        if mcqa_only:
            self.for_task("mcqa")

    def given(self) -> dict[str, Any]:
        return {name: value for name, value in asdict(self).items() if value is not None}

    def for_task(self, task: str) -> OpenSettings | MCQASettings:
        """The engine's settings for a pool of `task` ("mcqa" or "oeqa"), the task's defaults filled in."""
        kind, own = (MCQASettings, _MCQA_FIELDS) if task == "mcqa" else (OpenSettings, _OPEN_FIELDS)
        given = self.given()
        if task == "mcqa":
            given = {name: value for name, value in given.items() if name not in _IGNORED_BY_MCQA}
        foreign = sorted(given.keys() - own)
        if foreign:
            other = "open-QA" if task == "mcqa" else "MCQA"
            raise SettingsError(foreign[0], f"is an {other} setting; this pool is {'MCQA' if task == 'mcqa' else 'open QA'}")
        return kind(**given)


def run(
    settings: ProbeSettings | None,
    records: Sequence[QARecord],
    out: str | Path,
    *,
    model: str | Path | None = "default",
    exemplars: Sequence[QARecord] = (),
    device: str | None = None,
    dtype: str | None = None,
    **run_options: Any,
) -> pd.DataFrame:
    """Probe a pool (all MCQA or all open QA) with the model folder `model` and write the knowledge table.

    `settings` None probes with the task's defaults; `exemplars` are MCQA shot questions (e.g.
    MMLU val). `run_options` are `rait.probe.shards.probe_pool`'s, e.g. `inputs`, files to hash into the
    manifest ({"records": path}), and `work_dir`, where finished shards are kept for a resume.
    """
    task = pool_task(records)
    task_settings = (settings or ProbeSettings()).for_task(task)
    processes()  # under a launcher: join the ranks first, which also makes each rank's GPU its current one
    engine = load_backend(model, device=device, dtype=dtype)
    if task == "mcqa":
        return probe_mcqa(engine, records, out, exemplars=exemplars, settings=task_settings, **run_options)
    return probe_open(engine, records, out, settings=task_settings, **run_options)


def pool_task(records: Sequence[QARecord]) -> str:
    """The pool's one task ("mcqa" or "oeqa"); a mixed or empty pool is refused."""
    tasks = {r.task for r in records}
    if len(tasks) != 1:
        raise RaitError("a pool to probe must be all multiple-choice or all open QA" if tasks else "the pool is empty")
    return tasks.pop()
