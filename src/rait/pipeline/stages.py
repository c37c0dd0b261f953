"""The stage cache of `rait run`: each stage runs at most once per key, and what ran is logged.

A stage finishes by writing `stage.json` in its folder with its key (the hash of its settings and of the keys of
what it read) and its result; a rerun under the same key reads that instead of computing. A stage that was killed
keeps its folder while its key is unchanged (`stage.key`), so its work continues; one whose key changed starts
from an empty folder. `Stages` holds the run to its plan (`rait.pipeline.plan`).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from rait.artifacts import identity_key, write_json
from rait.distributed import Workers, split_batch
from rait.errors import DataError, RaitError
from rait.pipeline.plan import PlannedStage, RunPlan
from rait.pipeline.view import StageLines

STAGE_FILE, STARTED_FILE = "stage.json", "stage.key"


class Stages:
    """Runs stages at most once per key and keeps the log that becomes pipeline.json."""

    def __init__(self, view: StageLines, cached_only: bool = False, workers: Workers | None = None):
        self.view, self.cached_only = view, cached_only
        self.workers = workers or Workers(1)
        self.processes = self.workers.processes
        self.log: list[dict[str, Any]] = []
        self.planned: dict[str, PlannedStage] | None = None

    def follow(self, plan: RunPlan) -> None:
        """Run `plan`'s stages: the view draws them, and a stage the plan lacks, or has under another key, is a bug
        in rait and stops the run (`check`)."""
        self.planned = plan.by_name()
        self.view.plan(plan.names())

    def check(self, name: str, key: str | None) -> None:
        if self.planned is None:
            return
        planned = self.planned.get(name)
        if planned is None or (key is not None and planned.key not in (None, key)):
            raise RuntimeError(f"stage {name!r} (key {key}) is not in the run's plan"
                               + (f" (planned key {planned.key})" if planned else "") + ": a bug in rait")

    def launch(self, function: Callable, **kwargs: Any) -> Any:
        """A stage entry point that can use several processes, on the run's workers (`rait.distributed.Workers`)."""
        return self.workers.run(function, **kwargs)

    def per_process(self, train):
        """Training settings whose micro-batch and accumulation give, on the run's processes, the global batch they
        give on one (`rait.distributed.split_batch`)."""
        batch_size, grad_accum = split_batch(train.batch_size, train.grad_accum, self.processes)
        return replace(train, batch_size=batch_size, grad_accum=grad_accum)

    def run(self, name: str, folder: Path, parts: dict[str, Any], compute: Callable[[Path], dict | None]) -> tuple[str, dict]:
        """(key, result): the cached result if `folder` finished with the same key, else compute(folder)'s."""
        key = identity_key(parts)
        self.check(name, key)
        done, started = folder / STAGE_FILE, folder / STARTED_FILE
        if (record := finished(folder, key)) is not None:
            self.log.append({"stage": name, "key": key, "cached": True, "seconds": record.get("seconds")})
            self.view.cached(name)
            return key, record.get("result") or {}
        if self.cached_only:
            raise RaitError(f"{folder}: stage '{name}' has not finished in this run folder (or under other settings); "
                            "`rait run` computes it")
        if folder.exists() and not (started.is_file() and started.read_text(encoding="utf-8") == key):
            shutil.rmtree(folder)  # made under other settings: nothing in it can be reused
        folder.mkdir(parents=True, exist_ok=True)
        started.write_text(key, encoding="utf-8")
        self.view.started(name)
        start = time.perf_counter()
        result = compute(folder) or {}
        seconds = round(time.perf_counter() - start, 2)
        write_json(done, {"stage": name, "key": key, "parts": parts, "seconds": seconds, "result": result})
        self.log.append({"stage": name, "key": key, "cached": False, "seconds": seconds})
        self.view.finished(name, seconds)
        return key, result

    def skip(self, name: str, why: str) -> None:
        """A planned stage that has nothing to do (a method that selected no samples trains nothing)."""
        self.check(name, None)
        self.log.append({"stage": name, "key": None, "cached": False, "seconds": None, "skipped": why})
        self.view.skipped(name, why)


def finished(folder: Path, key: str | None) -> dict | None:
    """The record (`stage.json`) of the stage that finished in `folder` under `key`, else None."""
    done = folder / STAGE_FILE
    if key is None or not done.is_file():
        return None
    record = read_record(done, "stage record")
    return record if record.get("key") == key else None


def recorded_seconds(folder: Path) -> float | None:
    """The seconds of the stage that last finished in `folder`, under whatever key: an estimate for the same stage
    under new settings."""
    done = folder / STAGE_FILE
    seconds = read_record(done, "stage record").get("seconds") if done.is_file() else None
    return float(seconds) if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) else None


def read_record(path: Path, what: str) -> dict:
    """A JSON object rait wrote (a stage's `stage.json`, a run's `pipeline.json`); one that does not read back is a
    `DataError` naming it, not a traceback, and is never silently replaced."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise DataError(path, f"cannot be read as a {what} ({err.strerror})") from None
    except ValueError as err:  # bad UTF-8 too
        raise DataError(path, f"not a {what}: not JSON ({err})") from None
    if not isinstance(record, dict):
        raise DataError(path, f"not a {what}: a JSON {type(record).__name__}, not an object")
    return record
