"""Run a probe over a pool in shards, so that a killed run continues where it stopped.

Shard i holds questions [i·n, (i+1)·n) of the pool and is written atomically to
`<work>/shard-0000i.json` when it is complete. A rerun loads finished shards instead of
recomputing them. Each shard draws its samples from its own seed, derived from (seed, i)
alone, so the final table does not depend on which shards ran in which invocation: a
resumed run gives exactly the table of an uninterrupted one.

The work folder (default `<out>.work/` next to the output) also holds `run.json`, the
identity of the run (settings, data hash, model hash, backend). Shards of a different
run are never mixed in: a mismatch is an error naming the first difference.

Under `torchrun`/`accelerate launch` shard i is rank i mod N's (`rait.distributed`): each rank writes its
finished shards, and the main process, once every rank is done, merges them into the table. A shard's
samples depend on the seed and the shard's index only, so N processes give one process's table byte for
byte, and a run can be resumed with another number of processes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from rait.artifacts import changed_field, write_json, write_manifest
from rait.data.records import QARecord
from rait.distributed import own_units, processes, share_progress
from rait.errors import RaitError
from rait.probe.table import read_table, write_table
from rait.terminal import progress as show_progress

ShardFn = Callable[[list[QARecord], int, Callable[[int], None]], list[dict[str, Any]]]


def default_work_dir(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".work")


def shard_seed(seed: int, index: int) -> int:
    """An independent 32-bit seed for shard `index`, a function of (seed, index) only."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def records_sha256(records: Sequence[QARecord]) -> str:
    """Hash of the pool's content and order: the data identity in manifests and run.json."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps(record.to_dict(), sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def probe_pool(
    records: Sequence[QARecord],
    out: str | Path,
    probe_shard: ShardFn,
    *,
    task: str,
    settings: dict[str, Any],
    seed: int,
    shard_size: int,
    backend,
    model_info: dict[str, Any],
    identity_extra: dict[str, Any],
    manifest_extra: dict[str, Any],
    work_dir: str | Path | None = None,
    keep_work: bool = False,
    progress: bool = True,
    inputs: dict[str, str | Path] | None = None,
    description: str = "probe",
) -> pd.DataFrame:
    """Probe every shard not finished yet, then write the table (pool order) and its manifest.

    `probe_shard(records, shard_seed, advance)` returns one row per record and calls
    `advance(n)` as questions finish, which drives the progress bar. The work folder is
    removed once the table and manifest are written, unless `keep_work`.
    """
    if not records:
        raise RaitError("nothing to probe: the pool is empty")
    if shard_size < 1:
        raise ValueError("shard_size must be at least 1")
    out = Path(out)
    work_dir = Path(work_dir) if work_dir is not None else default_work_dir(out)
    data = {"questions": len(records), "sha256": records_sha256(records)}
    identity = {"task": task, "settings": settings, "seed": seed, "data_sha256": data["sha256"],
                "model_weights_sha256": model_info.get("weights_sha256"),
                "device": backend.info.get("device"), "dtype": backend.info.get("dtype"), **identity_extra}
    shards = [list(records[start:start + shard_size]) for start in range(0, len(records), shard_size)]
    paths = [work_dir / f"shard-{index:05d}.json" for index in range(len(shards))]
    state = processes()
    if state.is_main_process:
        _claim(work_dir, identity)
    on_disk = [path.exists() for path in paths]  # before any rank writes a shard of this run
    state.wait_for_everyone()
    mine = own_units(len(shards), state)
    done = {i: _load_shard(paths[i], shards[i]) for i in mine if on_disk[i]}
    started = time.perf_counter()
    finished = sum(len(shard) for shard, there in zip(shards, on_disk) if there)  # every rank's, for the bar
    with show_progress(description, len(records), finished, enabled=progress and state.is_main_process) as bar:
        advance = share_progress(bar.advance, sum(len(shards[i]) for i in mine if i not in done),
                                 len(records) - finished)
        for index in mine:
            if index in done:
                continue
            t0 = time.perf_counter()
            rows = probe_shard(shards[index], shard_seed(seed, index), advance)
            if [row["id"] for row in rows] != [r.id for r in shards[index]]:
                raise RuntimeError(f"shard {index} returned rows that do not match its questions")
            done[index] = {"index": index, "seconds": time.perf_counter() - t0, "rows": rows}
            write_json(paths[index], done[index])
    state.wait_for_everyone()  # every shard is on disk: the main process merges them
    if state.is_main_process:
        done |= {i: _load_shard(paths[i], shards[i]) for i in range(len(shards)) if i not in done}
        table = pd.DataFrame([row for index in range(len(shards)) for row in done[index]["rows"]])
        compute = sum(done[i]["seconds"] for i in done)
        timing = {"shards": len(shards), "shard_size": shard_size, "shards_resumed": sum(on_disk),
                  "processes": state.num_processes, "compute_seconds": compute,
                  "seconds_per_question": compute / len(records), "wall_seconds_this_run": time.perf_counter() - started}
        write_table(table, out)
        write_manifest(out, stage="probe", inputs=inputs, model=model_info, settings=settings, seed=seed,
                       extra={"task": task, "data": data, "backend": backend.info, "timing": timing, **manifest_extra})
        if not keep_work:
            shutil.rmtree(work_dir)
    state.wait_for_everyone()
    return table if state.is_main_process else read_table(out)


def check_work_dir(work_dir: str | Path) -> dict[str, Any] | None:
    """The identity an existing work folder holds (None when there is none yet), or a `RaitError` for a file where
    the folder goes or a `run.json` that is not one: `rait probe` asks before loading anything, as a resume would
    otherwise fail after the model is loaded."""
    work_dir = Path(work_dir)
    if work_dir.exists() and not work_dir.is_dir():
        raise RaitError(f"{work_dir}: is a file where the probe keeps its work folder (finished shards); move or "
                        "delete it")
    marker = work_dir / "run.json"
    return _read_json_object(marker, work_dir) if marker.exists() else None


def _read_json_object(path: Path, work_dir: Path) -> dict[str, Any]:
    """A JSON object written by the probe, or a `RaitError` naming the file: the folder was tampered with."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        saved = err
    if not isinstance(saved, dict):
        reason = f": {saved}" if isinstance(saved, Exception) else ""
        raise RaitError(f"{path}: not a file of the probe's work folder{reason}; delete the folder {work_dir} to "
                        "start the probe over")
    return saved


def _claim(work_dir: Path, identity: dict[str, Any]) -> None:
    """Create the work folder for this run, or check that an existing one belongs to it."""
    stored = check_work_dir(work_dir)
    if stored is not None:
        key = changed_field(stored, identity)
        if key is not None:
            raise RaitError(f"{work_dir} holds shards of a different run ({key!r} differs); "
                            "delete the folder or choose another output")
        return
    work_dir.mkdir(parents=True, exist_ok=True)
    write_json(work_dir / "run.json", identity)


def _load_shard(path: Path, shard: list[QARecord]) -> dict[str, Any]:
    saved = _read_json_object(path, path.parent)
    rows = saved.get("rows") if isinstance(saved.get("seconds"), (int, float)) else None
    ids = [row.get("id") for row in rows if isinstance(row, dict)] if isinstance(rows, list) else None
    if ids != [r.id for r in shard] or len(rows) != len(shard):
        raise RaitError(f"{path} does not hold the questions of its shard; delete the work folder and rerun")
    return {**saved, "resumed": True}

