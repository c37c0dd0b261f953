"""`rait run`: one config from a model and a pool to the papers' table, every stage cached.

For each track (a pool with its in- and out-of-domain test sets) the stages are

    pool -> probe -> rehearse (CRaFT) -> grads (GRAIT) -> build -> train/<method> -> eval

and then one report over all tracks. `resolve` plans every stage of every track before any work
(`rait.pipeline.plan`; `rait run --dry-run` prints it), then the run goes through the plan. Each
stage writes into its own folder and finishes by writing ``stage.json`` with a key: the hash of its
settings and of the keys (or file hashes) of what it read. A rerun skips every stage whose key is
unchanged, so a change recomputes only what depends on it. A stage that was killed keeps its folder
while its key is unchanged, so the probe continues from its finished shards; a stage whose key
changed starts from an empty folder (`rait.pipeline.stages`).

    <out>/<track>/pool.jsonl
    <out>/<track>/probe/table.parquet            knowledge table (μ, σ)
    <out>/<track>/rehearse/flow_table.jsonl      + μ after rehearsal, Δμ
    <out>/<track>/grads/store/                   projected per-sample gradients
    <out>/<track>/build/<method>.jsonl           training sets
    <out>/<track>/train/<method>/                adapters
    <out>/<track>/eval/<test set>/<model>/<prompt>/outcomes.jsonl, metrics.json
    <out>/results.md, results.csv, pc_pw.png, ths.png, report.html
    <out>/pipeline.json                          every stage: key, seconds, cached or not
    <out>/workers.log                            with --processes N: the worker group's output
"""

from __future__ import annotations

import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Callable

from rich.console import Console

from rait.artifacts import write_json
from rait.distributed import Workers
from rait.errors import DataError, RaitError
from rait.pipeline.config import PipelineConfig
from rait.pipeline.fit import check_fits
from rait.pipeline.plan import RunPlan
from rait.pipeline.stages import STAGE_FILE, Stages, read_record
from rait.pipeline.track import TrackRun
from rait.pipeline.view import LiveView, StageLines, previous_times, stage_view
from rait.report.tables import write_by_seed, write_comparisons, write_diagnosis
from rait.terminal import is_verbose, use_view

CONFIG_FILE = "config.yaml"  # the config of a finished run, for `rait report`


def run_pipeline(config: PipelineConfig, out_dir: str | Path, console: Console | None = None,
                 cached_only: bool = False, processes: int = 1) -> list[dict]:
    """Run every track of `config` into `out_dir` (resumable) and write the report; returns the result rows.

    `cached_only` rebuilds the report of a finished run (`rait report`): a stage that would have to be computed
    is an error instead, and only the report's files are written: the run's pool and its `pipeline.json` stay as
    they are, and the report states the run's own times. A finished run keeps its config as `<out_dir>/config.yaml`
    for that. `processes` > 1 runs the probes, the gradient stage, the SFT and DPO trainings and the evaluations on
    that many processes of this machine (docs/distributed.md); the stage keys do not depend on it, so a run resumes
    with any number."""
    out_dir = Path(out_dir)
    with RunLock(out_dir) as lock:
        return _run_locked(config, out_dir, console, cached_only, processes, lock)


def _run_locked(config: PipelineConfig, out_dir: Path, console: Console | None, cached_only: bool, processes: int,
                lock: RunLock) -> list[dict]:
    """`run_pipeline` while `lock` is held: every write into `out_dir` happens in here."""
    log = out_dir / "pipeline.json"
    if cached_only:  # read first: a broken log or stage record stops the report before its first line
        _check_records(out_dir)
    else:
        _check_inputs(config, out_dir)
        check_fits(config)
    notes = _run_notes(log) if cached_only and log.exists() else {}
    start = time.perf_counter()
    with Workers(processes, log=out_dir / "workers.log") as workers:
        tracks, stages, model_path = _run_tracks(config, out_dir, console or Console(stderr=True), cached_only, workers,
                                                 claim=lock.claim)
    rows = [row for track in tracks for row in track.rows]
    if cached_only:
        _write_results(config, tracks, out_dir, notes)
        return rows
    wall = time.perf_counter() - start
    computed = sum(s["seconds"] or 0 for s in stages.log if not s["cached"])
    _write_results(config, tracks, out_dir, _wall_note(wall, computed))
    if config.source is not None and Path(config.source[0]).resolve() != (out_dir / CONFIG_FILE).resolve():
        shutil.copyfile(config.source[0], out_dir / CONFIG_FILE)
    from rait.models import describe_model

    write_json(log, {"model": describe_model(model_path), "processes": processes, "wall_seconds": round(wall, 1),
                     "computed_seconds": round(computed, 1), "stages": stages.log})
    return rows


class RunLock:
    """Whether another `rait run` or `rait report` is at work in a run folder, asked of the kernel: an exclusive
    `flock` on the folder itself, held while this one works and dropped when its process ends, however it ends, so
    that nothing is left behind to break a later run (issue 34: two runs on one folder both ran, and one removed
    the other's probe work folder). A folder that exists is claimed before anything is read from it; a new one by
    `claim` once every input is checked, as the run creates it."""

    def __init__(self, folder: Path):
        self.folder, self.handle = folder, None

    def __enter__(self) -> "RunLock":
        if self.folder.is_dir():
            self.claim()
        return self

    def __exit__(self, *exc) -> None:
        if self.handle is not None:
            os.close(self.handle)
            self.handle = None

    def claim(self) -> None:
        import fcntl

        if self.handle is not None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        handle = os.open(self.folder, os.O_RDONLY)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            raise RaitError(f"{self.folder}: another `rait run` or `rait report` is working in this folder; wait "
                            "for it to end, or give another --out") from None
        except OSError:  # a file system that cannot lock a folder (NFS may not): the run goes on unguarded
            os.close(handle)
            return
        self.handle = handle


def _check_inputs(config: PipelineConfig, out_dir: Path) -> None:
    """Refuse a model or data file inside the run's own folder (issue 34: `pool: {data: "jsonl:<out>/a/pool.jsonl",
    sample: 4}` was replaced by its own sample). Not only the files at the names a run writes: a stage whose
    settings changed removes its whole folder, so no file under --out is safe to read from."""
    from rait.data.loaders import source_path

    out = Path(os.path.realpath(out_dir))
    entries: list[tuple[tuple, str]] = [(("model",), config.model)]
    for i, track in enumerate(config.tracks):
        entries += [(("tracks", i, "pool", "data"), track.pool.data), (("tracks", i, "exemplars"), track.exemplars)]
        entries += [(("tracks", i, "test_sets", j, "data"), test.data) for j, test in enumerate(track.test_sets)]
    for keys, spec in entries:
        if (path := source_path(spec)) is not None and (out == path or out in path.parents):
            raise config.error(keys, f"{path} is inside the output folder {out_dir}, which the run rewrites (its "
                               "pools, and every stage folder whose settings change); keep inputs outside --out")


def _check_records(run_dir: Path) -> None:
    """Read every stage record of a finished run (`rait report`), so that a broken one is an error before any work."""
    for record in sorted(run_dir.rglob(STAGE_FILE)):
        read_record(record, "stage record")


def _wall_note(wall: float, computed: float) -> dict[str, str]:
    return {"wall time": f"{wall / 60:.1f} min, of which {computed / 60:.1f} min in stages computed by this run"}


def _run_notes(log: Path) -> dict[str, str]:
    """The wall-time note of the run that wrote `log` (its pipeline.json), for its rebuilt report."""
    record = read_record(log, "run log")
    times = [record.get(key) for key in ("wall_seconds", "computed_seconds")]
    if not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in times):
        raise DataError(log, "not a run log: 'wall_seconds' and 'computed_seconds' must be numbers")
    return _wall_note(*times)


def merge_runs(run_dirs: list[Path], out_dir: str | Path, console: Console | None = None) -> list[dict]:
    """One report over separately run seeds of one config (`rait report RUN_DIR… --out`): each run's stages are
    read from its folder (nothing is computed), its trained models become one seed of each method's row, and the
    rows, intervals (over items and seeds) and comparisons are those of a run with `seeds:`. The configs may
    differ only in `seed`, and every test set must hold the same items with the same Init-Basic answers in every
    run (a test set sampled with the run's seed differs between seeds: give it its own file or no `sample`). The
    untrained model's rows and the abstention rules' come from the first run."""
    import yaml

    out_dir, console = Path(out_dir), console or Console(stderr=True)
    configs = [PipelineConfig.from_yaml(Path(run_dir) / CONFIG_FILE) for run_dir in run_dirs]
    first = configs[0]
    texts = [yaml.safe_load((Path(run_dir) / CONFIG_FILE).read_text(encoding="utf-8")) for run_dir in run_dirs]
    for run_dir, config, text in zip(run_dirs, configs, texts):
        if config.seeds:
            raise RaitError(f"{run_dir}: its config runs several seeds (seeds: {config.seeds}); its report has its "
                            "seeds already: merge runs of one seed each")
        if fields := [key for key in {**texts[0], **text} if key != "seed" and text.get(key) != texts[0].get(key)]:
            raise RaitError(f"{run_dir}: its config differs from {run_dirs[0]}'s in {', '.join(fields)}; "
                            "separate runs merge as seeds only when the seed alone differs")
    seeds = [config.seed for config in configs]
    if len(set(seeds)) != len(seeds):
        raise RaitError(f"the runs share a seed ({seeds}): each run must be another seed")
    for run_dir in run_dirs:
        _check_records(Path(run_dir))
    runs = [_run_tracks(config, Path(run_dir), console, cached_only=True)[0] for run_dir, config in zip(run_dirs, configs)]
    for index, track in enumerate(runs[0]):
        for run_dir, other in zip(run_dirs[1:], (run[index] for run in runs[1:])):
            for test, _ in track.tests:
                mine, theirs = track.references[test.name][1], other.references[test.name][1]
                if [r["id"] for r in mine] != [r["id"] for r in theirs]:
                    raise RaitError(f"{run_dir}: test set {test.name!r} of track {track.track.name!r} holds other "
                                    f"items than in {run_dirs[0]} (sampled with the run's seed?): seeds are compared "
                                    "on the same items")
                if [r["output"] for r in mine] != [r["output"] for r in theirs]:
                    raise RaitError(f"{run_dir}: Init-Basic answers {test.name!r} differently than in {run_dirs[0]} "
                                    "(another model or settings): it is the reference of every seed")
        track.rows, track.comparisons = track.combine(
            [[row | {"seed": seed} for row in run[index].seed_rows[0]] for run, seed in zip(runs, seeds)
             if run[index].seed_rows])
        track.rewards = [step | {"seed": seed} for run, seed in zip(runs, seeds) for step in run[index].rewards]
    merged = replace(first, seeds=seeds)
    _write_results(merged, runs[0], out_dir, {"runs": ", ".join(str(d) for d in run_dirs)})
    return [row for track in runs[0] for row in track.rows]


def resolve(config: PipelineConfig, out_dir: str | Path, processes: int = 1) -> RunPlan:
    """The plan of `rait run config --out out_dir` (`rait run --dry-run`): every stage, its key, and whether the
    folder holds it finished. The pool and test sets are read and checked as the run checks them; no model is loaded
    (its weights are hashed) and nothing is written."""
    out_dir = Path(out_dir)
    _check_inputs(config, out_dir)
    stages = Stages(StageLines(Console(quiet=True)), workers=Workers(processes))
    return _resolve(config, out_dir, stages)[0]


def _resolve(config: PipelineConfig, out_dir: Path, stages: Stages) -> tuple[RunPlan, list[TrackRun], Path]:
    """Prepare every track (bad input fails here, before anything is written) and plan its stages."""
    from rait.models import model_fingerprint, resolve_model_path

    model_path = resolve_model_path(config.model)
    model_sha = model_fingerprint(model_path)["weights_sha256"]
    tracks = [TrackRun(config, index, out_dir, stages, model_path, model_sha) for index in range(len(config.tracks))]
    for track in tracks:
        track.prepare()
    previous = previous_times(out_dir)
    plan = RunPlan(config=str(config.source[0]) if config.source else "config", out=out_dir, model=config.model,
                   stages=tuple(stage for track in tracks for stage in track.plan(previous)))
    return plan, tracks, model_path


def _run_tracks(config: PipelineConfig, out_dir: Path, console: Console, cached_only: bool,
                workers: Workers | None = None, claim: Callable[[], None] | None = None
                ) -> tuple[list[TrackRun], Stages, Path]:
    """Resolve the run's plan, `claim` the run folder, then run each track as planned; the tracks keep their rows."""
    view = stage_view(console, out_dir, f"rait run {config.source[0] if config.source else out_dir}",
                      live=not cached_only and not is_verbose())
    stages = Stages(view, cached_only, workers)
    plan, tracks, model_path = _resolve(config, out_dir, stages)
    if claim is not None:
        claim()
    with view, use_view(view) if isinstance(view, LiveView) else nullcontext():
        stages.follow(plan)
        for track in tracks:
            track.rows, track.comparisons = track.run()
    return tracks, stages, model_path


def _write_results(config: PipelineConfig, tracks: list[TrackRun], out_dir: Path, notes: dict) -> None:
    """The report and the tables beside it (comparisons, diagnosis, results by seed) from finished tracks."""
    from rait.models import DEFAULT_SPEC, describe_model
    from rait.models.default import GGUF_PACKAGE, GGUF_PACKAGE_VERSION
    from rait.report import ReportSettings
    from rait.report import run as report

    # "default" is named, not its cache path, so that a report reads the same on every machine.
    described = (f"{DEFAULT_SPEC} (SmolLM2-135M-Instruct from {GGUF_PACKAGE}=={GGUF_PACKAGE_VERSION}, converted "
                 "into the user cache)") if config.model == DEFAULT_SPEC else describe_model(tracks[0].model_path)
    notes = {"model": described, "tracks": ", ".join(
        f"{t.name}: pool {t.pool.data} ({t.pool.sample or 'all'})" for t in config.tracks), **notes}
    if config.seeds:
        notes["seeds"] = f"{', '.join(map(str, config.seeds))}: trained rows are means over them, intervals over items and seeds"
    curves = [point for track in tracks for point in track.curves]
    items = [item for track in tracks for item in track.items]
    knowledge = [track.knowledge for track in tracks if track.knowledge]
    rewards = [step for track in tracks for step in track.rewards]
    rows = [row for track in tracks for row in track.rows]
    out_dir.mkdir(parents=True, exist_ok=True)
    report(ReportSettings(title=config.title, notes=notes, curves=curves, items=items, knowledge=knowledge,
                          rewards=rewards), rows, out_dir)
    write_comparisons([c for track in tracks for c in track.comparisons], out_dir)
    diagnosis = [row for track in tracks for row in track.diagnosis]
    if diagnosis:
        write_diagnosis(diagnosis, out_dir)
    if config.seeds:
        write_by_seed([row for track in tracks for row in track.by_seed], out_dir / "results_by_seed.csv")
