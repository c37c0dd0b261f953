"""`rait run`: one config from a model and a pool to the papers' table, every stage cached.

For each track (a pool with its in- and out-of-domain test sets) the stages are

    pool -> probe -> rehearse (CRaFT) -> grads (GRAIT) -> build -> train/<method> -> eval

and then one report over all tracks. Each stage writes into its own folder and finishes by
writing ``stage.json`` with a key: the hash of its settings and of the keys (or file
hashes) of what it read. A rerun skips every stage whose key is unchanged, so a change
recomputes only what depends on it. A stage that was killed keeps its folder while its key
is unchanged, so the probe continues from its finished shards; a stage whose key changed
starts from an empty folder.

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

import json
import os
import shutil
import time
from contextlib import ExitStack, nullcontext
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, NamedTuple

from rich.console import Console

from rait.artifacts import identity_key, read_jsonl, sha256_file, sha256_jsonl, write_json
from rait.distributed import Workers, split_batch
from rait.errors import DataError, RaitError, SettingsError
from rait.data.testsets import TestSet, load_test_records
from rait.evaluate.suite import REFERENCE_PROMPT
from rait.pipeline.config import VALIDATION, PipelineConfig, TrackConfig
from rait.pipeline.fit import check_fits
from rait.pipeline.kinds import KINDS, Kind, comparisons, kind_of
from rait.pipeline.plan import PlannedStage, RunPlan
from rait.pipeline.view import LiveView, StageLines, previous_times, stage_view
from rait.report.explorer import explorer_items
from rait.report.results import REFERENCE
from rait.report.tables import write_by_seed, write_comparisons, write_diagnosis
from rait.terminal import is_verbose, use_view
from rait.train import learning_identity
from rait.select.methods import METHODS

BASE_LABEL = "Init"  # the untouched model: rows Init-Basic (the THS reference) and Init-Refuse
STAGE_FILE, STARTED_FILE = "stage.json", "stage.key"
POOL_FILE, VALIDATION_FILE = "pool.jsonl", "validation.jsonl"  # a track's data, in its folder


CONFIG_FILE = "config.yaml"  # the config of a finished run, for `rait report`


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
    record = _read_record(done, "stage record")
    return record if record.get("key") == key else None


def _read_record(path: Path, what: str) -> dict:
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


class ModelToEvaluate(NamedTuple):
    """A model of the track's evaluation stage: its row label, its key (the training's, or the model's weights'),
    where it is (a model or an adapter folder), its prompts, and why it has nothing to evaluate, if so."""

    label: str
    key: str | None
    spec: str
    prompts: list[str]
    skipped: str | None = None


class TrackRun:
    """The stages of one track; each method's results become report rows."""

    def __init__(self, config: PipelineConfig, index: int, out_dir: Path, stages: Stages, model_path: Path,
                 model_sha: str):
        self.config, self.index, self.stages = config, index, stages
        self.track: TrackConfig = config.tracks[index]
        self.dir = out_dir / self.track.name
        self.model_path, self.model_sha = model_path, model_sha
        self.keys = ("tracks", index)

    # ------------------------------------------------------------ stages

    def _seed_label(self, seed: int) -> str:
        return f" (seed {seed})" if self.config.seeds else ""

    def pool(self) -> list:
        """The pool's records and, with `pool.validation`, the validation split held out first (`self.validation`),
        loaded and checked with nothing written: the track's folder is made when it runs (`write_pool`)."""
        from rait.data import read_records
        from rait.data.stage import load

        if self.stages.cached_only:  # `rait report`: the run's own pool, read; nothing written into its folder
            path, held = self.dir / POOL_FILE, self.dir / VALIDATION_FILE
            if not path.is_file() or (self.track.pool.validation and not held.is_file()):
                raise RaitError(f"{self.dir}: the pool of track {self.track.name!r} has not been written in this run "
                                "folder; `rait run` writes it")
            self.validation = read_records(held) if self.track.pool.validation else None
            return read_records(path)
        settings = replace(self.track.pool, seed=self.config.seed)
        try:
            records, validation = load(settings)
        except SettingsError as err:  # e.g. a sample larger than the data: at the setting's line
            raise self.config.error((*self.keys, "pool", err.field), err.message) from err
        except RaitError as err:
            raise self.config.error((*self.keys, "pool"), str(err)) from err
        if not records:
            raise self.config.error((*self.keys, "pool"), f"the pool is empty ({settings.data})")
        self.validation = validation or None
        return records

    def write_pool(self) -> tuple[str, Path]:
        """(key, path) of the pool file: the checked records (and the validation split) written as `rait data load`
        writes them (`rait.data.stage.run`), keyed by the file's hash (same records, same bytes); `rait report`
        keeps the run's own."""
        from rait.artifacts import write_manifest
        from rait.data import write_records

        path, settings = self.dir / POOL_FILE, asdict(replace(self.track.pool, seed=self.config.seed))
        if not self.stages.cached_only:
            write_records(path, self.records)
            write_manifest(path, stage="data", settings=settings)
            if self.validation:
                write_records(self.dir / VALIDATION_FILE, self.validation)
                write_manifest(self.dir / VALIDATION_FILE, stage="data", settings=settings,
                               extra={"split": "validation"})
        return sha256_file(path), path

    def _probe_settings(self, task: str) -> tuple[Any, Any, list]:
        """The track's probe settings (seeded by the run), what they are for the pool's `task` (the stage key's
        part) and, for MCQA, its shots."""
        from rait.data import load_source

        probe = self.track.probe
        if probe.seed is None:
            probe = replace(probe, seed=self.config.seed)
        settings = self.config.settings((*self.keys, "probe"), lambda **_: probe.for_task(task), probe.given())
        return probe, settings, load_source(self.track.exemplars) if task == "mcqa" and settings.shots else []

    def _probe_parts(self, pool_key: str) -> dict:
        _, task_settings, shots = self.probe_setup
        return {"pool": pool_key, "model": self.model_sha, "task": self.records[0].task,
                "settings": asdict(task_settings), "exemplars": [r.id for r in shots]}

    def probe(self, pool_key: str, records: list) -> tuple[str, Path, list]:
        from rait.probe import table_summary
        from rait.probe.stage import run as probe

        settings, _, shots = self.probe_setup
        table_path = self.dir / "probe" / "table.parquet"
        parts = self._probe_parts(pool_key)

        def compute(folder: Path) -> dict:
            table = self.stages.launch(probe, settings=settings, records=records, out=table_path, model=self.model_path,
                                       exemplars=shots, inputs={"records": self.dir / POOL_FILE})
            return table_summary(table)

        key, _ = self.stages.run(f"{self.track.name}: probe", table_path.parent, parts, compute)
        return key, table_path, shots

    def diagnose(self, test: TestSet, records: list, reference: list[dict]) -> dict:
        """How well the probe's μ on a test set's items predicts Init-Basic's greedy correctness there.

        The test items are probed with the track's probe settings; AUROC of μ for correct vs not
        correct, with an item-bootstrap interval. A low AUROC means the model's own knowledge signal,
        which every RAIT method selects by, does not tell what it will get right on these items.
        """
        from rait.evaluate.metrics import auroc_ci, average_precision

        probe_key, table = self.probe_items(test, records)
        folder = self.dir / "diagnose" / test.name
        parts = self._diagnose_parts(probe_key, reference)

        def compute(folder: Path) -> dict:
            mu = table["mu"].loc[[row["id"] for row in reference]]
            outcomes = [row["outcome"] for row in reference]
            correct = [m for m, o in zip(mu, outcomes) if o == "correct"]
            other = [m for m, o in zip(mu, outcomes) if o != "correct"]
            result = {"n": len(outcomes), "init_basic_correct": len(correct),
                      "mean_mu_correct": float(sum(correct) / len(correct)) if correct else None,
                      "mean_mu_not_correct": float(sum(other) / len(other)) if other else None}
            if correct and other:
                interval = auroc_ci(outcomes, mu.to_numpy(), n_boot=self.config.eval.n_boot, seed=self.config.seed)
                result["auroc"] = {"value": interval.estimate, "low": interval.low, "high": interval.high}
                result["average_precision"] = average_precision(outcomes, mu.to_numpy())
            return result

        _, result = self.stages.run(f"{self.track.name}: diagnose {test.name}", folder, parts, compute)
        return {"track": self.track.name, "test_set": test.name, "domain": test.domain, **result}

    @staticmethod
    def _diagnose_parts(probe_key: str, reference: list[dict]) -> dict:
        return {"probe": probe_key, "reference": identity_key([row["outcome"] for row in reference])}

    def _probe_items_parts(self, records: list) -> dict:
        _, task_settings, shots = self._probe_settings(records[0].task)
        return {"items": identity_key([r.id for r in records]), "model": self.model_sha,
                "settings": asdict(task_settings), "exemplars": [r.id for r in shots]}

    def probe_items(self, test: TestSet, records: list):
        """(key, table by id): the test set's items probed with the track's probe settings (μ, σ per item); once
        per run, for the diagnosis and self-consistency alike."""
        if test.name in self.item_probes:
            return self.item_probes[test.name]
        from rait.data import write_records
        from rait.probe.stage import run as probe
        from rait.probe.table import read_table

        settings, _, shots = self._probe_settings(records[0].task)
        folder = self.dir / "probe_items" / test.name
        parts = self._probe_items_parts(records)

        def compute(folder: Path) -> dict:
            write_records(folder / "items.jsonl", records)
            self.stages.launch(probe, settings=settings, records=records, out=folder / "table.parquet",
                               model=self.model_path, exemplars=shots, inputs={"records": folder / "items.jsonl"})
            return {}

        key, _ = self.stages.run(f"{self.track.name}: probe {test.name}", folder, parts, compute)
        self.item_probes[test.name] = key, read_table(folder / "table.parquet").set_index("id")
        return self.item_probes[test.name]

    def _p_ik_parts(self, probe_key: str) -> dict:
        return {"probe": probe_key, "model": self.model_sha, "tau": self.track.build.tau, "seed": self.config.seed,
                "items": {test.name: identity_key([r.id for r in items]) for test, items in self.tests}}

    def p_ik(self, probe_key: str, table_path: Path, records: list) -> tuple[str, dict[str, dict[str, float]]]:
        """P(IK) scores of every validation and test item: a logistic regression on the question's last hidden
        state, trained on the pool's knowledge table (known = μ ≥ τ, the build's split)."""
        from rait.evaluate.abstain import p_ik_scores
        from rait.probe.table import read_table

        tau = self.track.build.tau
        folder = self.dir / "p_ik"
        parts = self._p_ik_parts(probe_key)

        def compute(folder: Path) -> dict:
            scores, known = p_ik_scores(self.model_path, records, read_table(table_path), tau,
                                        {test.name: items for test, items in self.tests}, seed=self.config.seed)
            return {"scores": scores, "pool": len(records), "known": known}

        key, result = self.stages.run(f"{self.track.name}: p_ik", folder, parts, compute)
        return key, result["scores"]

    def no_training(self, method: str, confidence: dict[str, dict[str, float]], references: dict) -> list[dict]:
        """Rows of an abstention rule on Init-Basic's answers: refuse below a threshold chosen on validation."""
        from rait.evaluate.abstain import choose_threshold, rule_result

        validation = references[VALIDATION][1]
        threshold = choose_threshold([row["outcome"] for row in validation],
                                     [confidence[VALIDATION][row["id"]] for row in validation],
                                     [row["outcome"] for row in validation])
        rows = []
        for test, _ in self.tests:
            reference = references[test.name][1]
            scores = [confidence[test.name][row["id"]] for row in reference]
            outcomes, summary, (coverage, risk) = rule_result(reference, scores, threshold, reference,
                                                              self.config.eval.n_boot, self.config.seed)
            self.curves += [{"track": self.track.name, "test_set": test.name, "confidence": METHODS[method].label,
                             "coverage": c, "risk": r} for c, r in zip(coverage, risk)]
            rows.append({"track": self.track.name, "test_set": test.name, "domain": test.domain,
                         "method": METHODS[method].label, **summary, "outcome_rows": outcomes})
        return rows

    def _rehearse_parts(self, probe_key: str) -> dict:
        return {"probe": probe_key, "settings": learning_identity(asdict(self.track.rehearsal))}

    def rehearse(self, probe_key: str, table_path: Path, records: list, shots: list) -> tuple[str, Path]:
        from rait.rehearse import flow_summary
        from rait.rehearse import run as rehearse

        settings = self.track.rehearsal
        folder = self.dir / "rehearse"
        parts = self._rehearse_parts(probe_key)

        def compute(folder: Path) -> dict:
            result = rehearse(settings, table_path, records, folder, model=self.model_path, exemplars=shots)
            return {"rehearsal_samples": result.rehearsal_samples, "updates": result.updates,
                    "flow": flow_summary(result.flow)}

        key, _ = self.stages.run(f"{self.track.name}: rehearse", folder, parts, compute)
        return key, folder / "flow_table.jsonl"

    def _grads_setup(self, probe_key: str) -> tuple[Any, dict]:
        """The gradient stage's settings (the build's prompt, system prompt and refusal) and its key's parts."""
        build = self.track.build
        settings = replace(self.track.grads, prompt=build.prompt, system=build.system, refusal=build.refusal)
        return settings, {"probe": probe_key, "settings": learning_identity(settings.as_dict())}

    def grads(self, probe_key: str, table_path: Path, pool_path: Path) -> tuple[str, Path]:
        """GRAIT's gradient store; it renders the pool's rows as the build will (`GradsSettings`)."""
        from rait.grads.stage import run as grads

        settings, parts = self._grads_setup(probe_key)
        folder = self.dir / "grads"

        def compute(folder: Path) -> dict:
            shared = replace(settings, warmup=self.stages.per_process(settings.warmup))
            store = self.stages.launch(grads, settings=shared, records_path=pool_path, out=folder,
                                       model=str(self.model_path), table_path=table_path)
            return {"store": str(store)}

        key, _ = self.stages.run(f"{self.track.name}: grads", folder, parts, compute)
        return key, folder / "store"

    def _build_setup(self, table_key: str, grads_key: str | None, methods: list[str], seed: int) -> tuple[Any, dict]:
        settings = replace(self.track.build, methods=methods, seed=seed)
        return settings, {"table": table_key, "grads": grads_key, "build": asdict(settings)}

    def build(self, table_key: str, table_path: Path, pool_path: Path, methods: list[str],
              grads: tuple[str, Path] | None, seed: int, runs: Path) -> dict[str, Path]:
        from rait.select import run as build

        settings, parts = self._build_setup(table_key, grads[0] if grads else None, methods, seed)
        folder = runs / "build"

        def compute(folder: Path) -> dict:
            summary = build(settings, table_path, pool_path, folder, gradients=grads[1] if grads else None)
            return {name: {"taken": m["report"]["taken"], "warnings": m["report"].get("warnings", [])}
                    for name, m in summary["methods"].items()}

        _, result = self.stages.run(f"{self.track.name}: build{self._seed_label(seed)}", folder, parts, compute)
        return _training_sets(folder, result)

    def _train_setup(self, method: str, data_sha: str | None, seed: int, start_key: str | None) -> tuple[Any, dict]:
        """A method's training settings (the seed is the loop's: `owned_by_the_run`) and its key's parts: the
        training data's hash, the model, the recipe and, for GRPO-RAIT, the key of the training it continues."""
        settings, recipe = kind_of(method).setup(method, self, seed, start_key)
        return settings, {"data": data_sha, "model": self.model_sha, "train": learning_identity(recipe)}

    def train(self, method: str, data: Path, seed: int, runs: Path,
              start: tuple[str, Path] | None = None) -> tuple[str, Path]:
        """A method's model, trained as its kind trains (`rait.pipeline.kinds`); `start`: the key and folder of the
        training it continues."""
        kind = kind_of(method)
        settings, parts = self._train_setup(method, sha256_file(data), seed, start[0] if start else None)
        fit = kind.entry(start[1] if start else None)
        folder = runs / "train" / method

        def compute(folder: Path) -> dict:
            if kind.on_processes:
                shared = kind.per_process(settings, self.stages.per_process)
                result = self.stages.launch(fit, settings=shared, data=data, out=folder, model=self.model_path)
            else:
                result = fit(settings, data, folder, model=self.model_path)
            return {"samples": result.samples, "optimizer_steps": result.optimizer_steps, "updates": result.updates,
                    "train_loss": result.train_loss}

        key, _ = self.stages.run(self._train_name(method, seed), folder, parts, compute)
        return key, folder

    def evaluate(self, models: list[ModelToEvaluate], folder: Path, references: dict) -> list[dict]:
        """Evaluate each model on every test set into `folder`; a model `skipped` has its evaluations skipped.

        The base model comes first in the first call: its BASIC outcomes become `references`
        (Init-Basic, the THS reference). Each row carries its outcomes under "outcome_rows".

        The base model is loaded once for the stage; each trained LoRA model is its adapter
        merged into it for its turn (`rait.evaluate.suite.EvalModels`), and only if one of
        its evaluations is not cached.
        """
        from rait.evaluate.suite import EvalModels

        rows: list[dict] = []
        models_of_stage = EvalModels(self.model_path)
        for label, model_key, spec, prompts, skipped in models:
            if skipped:
                for test, _ in self.tests:
                    for prompt in prompts:
                        self.stages.skip(self._eval_name(label, test.name, prompt, folder), skipped)
                continue
            with ExitStack() as in_use:
                loaded: list = []

                def model(spec=spec, in_use=in_use, loaded=loaded) -> tuple:
                    if not loaded:
                        loaded.extend(in_use.enter_context(models_of_stage.use(spec)))
                    return tuple(loaded)

                rows += self._evaluate_model(label, model_key, prompts, model, references, folder, spec)
        return rows

    def _eval_setup(self, model_key: str | None, records: list, prompt: str, reference_key: str | None
                    ) -> tuple[Any, dict]:
        """An evaluation's settings and its key's parts: the model's key, the items, the settings and the key of
        Init-Basic's evaluation on the same items (the THS reference)."""
        settings = self.config.eval.settings(prompt, records[0].task, self.config.seed)
        return settings, {"model": model_key, "items": identity_key([r.id for r in records]),
                          "settings": settings.as_dict(), "reference": reference_key}

    @staticmethod
    def _eval_folder(eval_dir: Path, test: str, label: str, prompt: str) -> Path:
        return eval_dir / test / label.replace(" ", "_").replace("/", "") / prompt

    def _evaluate_model(self, label: str, model_key: str, prompts: list[str], model: Callable[[], tuple],
                        references: dict, eval_dir: Path, spec: str | Path) -> list[dict]:
        """One model on every test set under each of its prompts; Init-Basic's outcomes become `references`.

        On one process `model()` is the model loaded once for the stage; on several, each process loads `spec`."""
        from rait.evaluate.suite import run as evaluate_stage

        rows = []
        for test, records in self.tests:
            for prompt in prompts:
                folder = self._eval_folder(eval_dir, test.name, label, prompt)
                reference = references.get(test.name)
                settings, parts = self._eval_setup(model_key, records, prompt, reference[0] if reference else None)

                def compute(folder: Path, settings=settings, records=records, reference=reference,
                            description=f"eval {test.name} / {prompt}") -> dict:
                    return self.stages.launch(evaluate_stage, settings=settings, records=records, out=folder,
                                              model=model() if self.stages.processes == 1 else str(spec),
                                              reference_rows=reference[1] if reference else None,
                                              description=description)[1]

                key, summary = self.stages.run(self._eval_name(label, test.name, prompt, eval_dir), folder, parts,
                                               compute)
                outcomes = read_jsonl(folder / "outcomes.jsonl")
                if reference is None and prompt == REFERENCE_PROMPT:
                    references[test.name] = (key, outcomes)
                if label == BASE_LABEL:
                    name = f"Init-{prompt.capitalize()}"
                else:
                    name = label if prompt == prompts[0] else f"{label} ({prompt})"
                rows.append({"track": self.track.name, "test_set": test.name, "domain": test.domain,
                             "method": name, **summary, "outcome_rows": outcomes})
        return rows

    # ------------------------------------------------------------ the whole track

    def prepare(self) -> None:
        """Load the pool and the test sets and check the methods: cheap, so a bad config fails before any work."""
        methods = self.config.methods_of(self.track)
        untrained = [m for m in methods if not METHODS[m].trains]
        for method in methods:
            if (start := kind_of(method).start(self.config)) is not None and start not in methods:
                raise self.config.error(("grpo", "start_from"), f"{METHODS[method].label} starts from {start!r}'s "
                                        f"adapter, which track {self.track.name!r} does not train: add it to the "
                                        "methods")
        if untrained and not self.track.pool.validation:
            raise self.config.error((*self.keys, "pool"), f"method {untrained[0]!r} chooses its threshold on a "
                                    "validation split: set pool.validation (questions held out of the pool)")
        self.validation: list | None = None
        self.item_probes: dict[str, tuple] = {}
        self.items: list[dict] = []
        self.knowledge: dict = {}
        self.records = self.pool()
        self.pool_key = (sha256_file(self.dir / POOL_FILE) if self.stages.cached_only  # the run's own pool
                         else sha256_jsonl(record.to_dict() for record in self.records))  # as write_pool will write it
        for kind in self._kinds(methods):  # e.g. GRPO-RAIT's questions, checked before any work
            kind.check(self)
        self.probe_setup = self._probe_settings(self.records[0].task)  # a field the task does not use fails here
        self._check_batches(methods)
        self.tests = []
        if self.validation:
            self.tests.append((TestSet(name=VALIDATION, data=str(self.dir / VALIDATION_FILE), domain="VAL"),
                               self.validation))
        for i, test in enumerate(self.track.test_sets):
            try:
                records = load_test_records(test, self.config.seed)
            except SettingsError as err:  # e.g. a sample larger than the test set: at the setting's line
                raise self.config.error((*self.keys, "test_sets", i, err.field), err.message) from err
            except RaitError as err:
                raise self.config.error((*self.keys, "test_sets", i), str(err)) from err
            if not records:
                raise self.config.error((*self.keys, "test_sets", i), f"test set {test.name!r} is empty")
            if self.validation and (shared := {r.id for r in records} & {r.id for r in self.validation}):
                raise self.config.error((*self.keys, "test_sets", i), f"test set {test.name!r} shares {len(shared)} "
                                        f"question(s) with the validation split (e.g. {min(shared)!r}): choices made "
                                        "on validation would see test items")
            if shared := {r.id for r in records} & {r.id for r in self.records}:
                raise self.config.error((*self.keys, "test_sets", i), f"test set {test.name!r} shares {len(shared)} "
                                        f"of its {len(records)} question(s) with the pool (e.g. {min(shared)!r}): the "
                                        "methods train on the pool, so these items would score what was trained on; "
                                        "test on other questions")
            self.tests.append((test, records))
        self._check_validation_sets()

    def _check_validation_sets(self) -> None:
        """A validation set (domain VAL) shares no question with a test set: choices made on it would see test items."""
        ids = {test.name: {r.id for r in records} for test, records in self.tests}  # names are unique
        validation = [test.name for test, _ in self.tests if test.domain == "VAL"]
        for i, test in enumerate(self.track.test_sets):
            for other in validation if test.domain != "VAL" else ():
                if shared := ids[test.name] & ids[other]:
                    raise self.config.error((*self.keys, "test_sets", i), f"test set {test.name!r} shares "
                                            f"{len(shared)} question(s) with the validation set {other!r} (e.g. "
                                            f"{min(shared)!r}): choices made on validation would see test items")

    def _check_batches(self, methods: list[str]) -> None:
        """On several processes, the SFT and DPO recipes' and the warm-up's global batches must split over them
        (`split_batch`)."""
        if self.stages.processes == 1:
            return
        batches = [batch for kind in self._kinds(methods) if (batch := kind.batch(self.config, self)) is not None]
        if any(METHODS[m].needs_gradients for m in methods):
            warm = self.track.grads.warmup
            batches.append(((*self.keys, "grads", "warmup"), warm.batch_size, warm.grad_accum))
        for where, batch_size, grad_accum in batches:
            try:
                split_batch(batch_size, grad_accum, self.stages.processes)
            except RaitError as err:
                raise self.config.error(where, str(err)) from err

    @staticmethod
    def _kinds(methods: list[str]) -> list[Kind]:
        """The kinds of `methods`, each once, in the registry's order of kinds."""
        return [kind for name, kind in KINDS.items() if any(METHODS[m].kind == name for m in methods)]

    def _methods(self) -> tuple[list[str], list[str], list[str]]:
        """The track's methods, those that train (a kind that may continue another's adapter last), and what the
        build selects: every method that trains on its own selection, then those others train on (DPO-RAIT's
        pairs)."""
        methods = self.config.methods_of(self.track)
        trained = [m for m in methods if kind_of(m).trains and not kind_of(m).last] + [
            m for m in methods if kind_of(m).trains and kind_of(m).last]
        built = [m for m in trained if kind_of(m).builds]
        for method in trained:
            built += [m for m in kind_of(method).selections(method, self.config) if m not in built]
        return methods, trained, built

    def _base_prompts(self) -> list[str]:
        return [REFERENCE_PROMPT] + [p for p in self.config.eval.prompts if p != REFERENCE_PROMPT]

    def _runs(self, seed: int) -> Path:
        """The folder of one seed's builds, trainings and evaluations."""
        return self.dir / f"seed-{seed}" if self.config.seeds else self.dir

    def _train_name(self, method: str, seed: int) -> str:
        return f"{self.track.name}: train {method}{self._seed_label(seed)}"

    def _eval_name(self, label: str, test: str, prompt: str, eval_dir: Path) -> str:
        where = "" if eval_dir == self.dir / "eval" else f" ({eval_dir.parent.name})"
        return f"{self.track.name}: eval {label} / {test} / {prompt}{where}"

    def plan(self, previous: dict[str, float]) -> list[PlannedStage]:
        """The stages `run` goes through, in its order, each with its key where it can be known now (`RunPlan`);
        `previous`: seconds per stage of the folder's last run. It follows `run`'s branching step by step and keys
        each stage with the same `_*_parts`/`_*_setup` methods; `Stages.check` holds the run to it."""
        name = self.track.name
        methods, trained, built = self._methods()
        stages: list[PlannedStage] = []

        def add(stage_name: str, folder: Path, parts: dict | None, after: str | None = None,
                skipped: str | None = None) -> PlannedStage:
            key = identity_key(parts) if parts is not None else None
            record = finished(folder, key)
            seconds = record.get("seconds") if record else previous.get(stage_name)
            stages.append(PlannedStage(stage_name, folder, parts, key, record is not None, after if key is None
                                       else None, skipped, seconds))
            return stages[-1]

        probe = add(f"{name}: probe", self.dir / "probe", self._probe_parts(self.pool_key))
        table_key = probe.key
        if any(METHODS[m].needs_flow for m in built):
            table_key = add(f"{name}: rehearse", self.dir / "rehearse", self._rehearse_parts(probe.key)).key
        grads = (add(f"{name}: grads", self.dir / "grads", self._grads_setup(probe.key)[1])
                 if any(METHODS[m].needs_gradients for m in built) else None)
        references: dict[str, PlannedStage] = {}
        self._plan_evals(add, BASE_LABEL, self.model_sha, self._base_prompts(), self.dir / "eval", references)
        probed: dict[str, str] = {}
        for test, records in self.tests if self.track.diagnose else []:
            probed[test.name] = add(f"{name}: probe {test.name}", self.dir / "probe_items" / test.name,
                                    self._probe_items_parts(records)).key
            reference = references[test.name]
            outcomes = (read_jsonl(reference.folder / "outcomes.jsonl") if reference.cached else None)
            add(f"{name}: diagnose {test.name}", self.dir / "diagnose" / test.name,
                self._diagnose_parts(probed[test.name], outcomes) if outcomes is not None else None, reference.name)
        for method in (m for m in methods if not METHODS[m].trains):
            if method != "self_consistency":
                add(f"{name}: p_ik", self.dir / "p_ik", self._p_ik_parts(probe.key))
                continue
            for test, records in self.tests:
                if test.name not in probed:
                    probed[test.name] = add(f"{name}: probe {test.name}", self.dir / "probe_items" / test.name,
                                            self._probe_items_parts(records)).key
        for seed in (self.config.seeds or [self.config.seed]) if trained else []:
            runs = self._runs(seed)
            build = add(f"{name}: build{self._seed_label(seed)}", runs / "build",
                        self._build_setup(table_key, grads.key if grads else None, built, seed)[1])
            record = finished(build.folder, build.key)
            datasets = _training_sets(build.folder, record.get("result") or {}) if record else None
            keys: dict[str, str | None] = {}
            skipped: dict[str, str] = {}
            for method in trained:
                kind, train_name = kind_of(method), self._train_name(method, seed)
                data = kind.data(method, self.config, runs, datasets or {}, self.dir / POOL_FILE)
                from_pool = data == self.dir / POOL_FILE  # its hash is known before the pool is written
                start = kind.start(self.config)
                why = None
                if start is not None and start not in keys:
                    why = "the method it starts from trained nothing"
                elif datasets is not None and not from_pool and not _has_rows(data):
                    why = "selected no samples"
                data_sha = (None if why or not (from_pool or datasets is not None)  # else: the build has not run
                            else self.pool_key if from_pool else sha256_file(data))
                start_key = keys.get(start) if start is not None else None
                _, parts = self._train_setup(method, data_sha, seed, start_key)  # a bad recipe fails here
                if why:
                    add(train_name, runs / "train" / method, None, skipped=why)
                    skipped[method] = f"no model: {why}"
                    continue
                known = data_sha is not None and (start is None or start_key is not None)
                trained_stage = add(train_name, runs / "train" / method, parts if known else None,
                                    after=build.name if data_sha is None else self._train_name(start, seed))
                keys[method] = trained_stage.key
            for method in trained:
                self._plan_evals(add, METHODS[method].label, keys.get(method), self.config.eval.method_prompts,
                                 runs / "eval", references, self._train_name(method, seed), skipped.get(method))
        return stages

    def _plan_evals(self, add: Callable, label: str, model_key: str | None, prompts: list[str], eval_dir: Path,
                    references: dict, after: str | None = None, skipped: str | None = None) -> None:
        """The planned evaluations of one model, as `evaluate` runs them; the untrained model's BASIC ones become
        `references`."""
        for test, records in self.tests:
            for prompt in prompts:
                reference = references.get(test.name)
                _, parts = self._eval_setup(model_key, records, prompt, reference.key if reference else None)
                stage = add(self._eval_name(label, test.name, prompt, eval_dir),
                            self._eval_folder(eval_dir, test.name, label, prompt),
                            parts if model_key is not None and not skipped else None, after, skipped)
                if reference is None and prompt == REFERENCE_PROMPT:
                    references[test.name] = stage

    def run(self) -> tuple[list[dict], list[dict]]:
        """The track's report rows and its paired comparisons (`comparisons`)."""
        methods, trained, built = self._methods()
        (pool_key, pool_path), records = self.write_pool(), self.records
        probe_key, table_path, shots = self.probe(pool_key, records)
        table_key, build_table = probe_key, table_path
        if any(METHODS[m].needs_flow for m in built):
            table_key, build_table = self.rehearse(probe_key, table_path, records, shots)
        grads = self.grads(probe_key, table_path, pool_path) if any(METHODS[m].needs_gradients for m in built) else None
        base_prompts = self._base_prompts()
        references: dict = {}
        rows = self.evaluate([ModelToEvaluate(BASE_LABEL, self.model_sha, str(self.model_path), base_prompts)],
                             self.dir / "eval",
                             references)
        self.diagnosis = [self.diagnose(test, records, references[test.name][1]) for test, records in self.tests
                          ] if self.track.diagnose else []
        self.curves: list[dict] = []
        for method in (m for m in methods if not METHODS[m].trains):
            if method == "self_consistency":
                confidence = {test.name: self.probe_items(test, items)[1]["sigma"].to_dict()
                              for test, items in self.tests}
            else:
                confidence = self.p_ik(probe_key, table_path, records)[1]
            rows += self.no_training(method, confidence, references)
        self.fixed_rows, self.references = rows, references
        self.rewards: list[dict] = []
        seeds = (self.config.seeds or [self.config.seed]) if trained else []
        first_datasets: dict = {}
        by_seed: list[list[dict]] = []
        for seed in seeds:
            runs = self._runs(seed)
            datasets = self.build(table_key, build_table, pool_path, built, grads, seed, runs)
            if seed == seeds[0]:
                first_datasets = datasets  # the report's pool view shows the first seed's selection
            models, keys = [], {}
            for method in trained:
                kind = kind_of(method)
                data = kind.data(method, self.config, runs, datasets, pool_path)
                start = None
                if (started_from := kind.start(self.config)) is not None:
                    start = keys.get(started_from)
                    if start is None:
                        models.append(self._skip(method, seed, "the method it starts from trained nothing"))
                        continue
                if not _has_rows(data):
                    models.append(self._skip(method, seed, "selected no samples"))
                    continue
                key, folder = keys[method] = self.train(method, data, seed, runs, start)
                self.rewards += [{"track": self.track.name, "seed": seed if self.config.seeds else None, **step}
                                 for step in kind.rewards(folder)]
                models.append(ModelToEvaluate(METHODS[method].label, key, str(folder), self.config.eval.method_prompts))
            evaluated = self.evaluate(models, runs / "eval", references)
            by_seed.append([row | {"seed": seed} for row in evaluated] if self.config.seeds else evaluated)
        self.seed_rows = by_seed
        self.knowledge = self._knowledge(build_table, records, first_datasets)
        return self.combine(by_seed)

    def combine(self, by_seed: list[list[dict]]) -> tuple[list[dict], list[dict]]:
        """The track's rows (the untrained model's and the rules', then each trained model's: over the seeds when
        there are several) without their outcomes, and its paired comparisons (`rait.pipeline.kinds.comparisons`)."""
        if len(by_seed) <= 1:
            model_rows = by_seed[0] if by_seed else []
            self.by_seed = [_without_outcomes(row) for row in model_rows]
        else:
            model_rows = self._over_seeds(by_seed, self.references)
        rows = self.fixed_rows + model_rows
        self.items = explorer_items(rows)
        return [_without_outcomes(row) for row in rows], self._comparisons(rows, self.references)

    def _skip(self, method: str, seed: int, why: str) -> ModelToEvaluate:
        """A method that trains nothing: its training is a planned stage skipped, and so are its evaluations, in
        their turn (`evaluate`)."""
        self.stages.skip(self._train_name(method, seed), why)
        return ModelToEvaluate(METHODS[method].label, None, "", self.config.eval.method_prompts, f"no model: {why}")

    def _knowledge(self, table_path: Path, records: list, datasets: dict) -> dict:
        """The report's view of the pool: μ, σ (and Δμ) from the table the build read, and each method's selection
        (`rait.report.knowledge`)."""
        from rait.artifacts import iter_jsonl_objects
        from rait.probe.table import read_table
        from rait.report.knowledge import pool_knowledge

        selections = {METHODS[m].label: [row for _, row in iter_jsonl_objects(path)] for m, path in datasets.items()
                      if path is not None and Path(path).is_file()}
        return pool_knowledge(self.track.name, read_table(table_path), records, selections)

    def _over_seeds(self, by_seed: list[list[dict]], references: dict) -> list[dict]:
        """One row per method and test set: means over the seeds, intervals over items and seeds."""
        from rait.evaluate.runner import summarize_seeds

        ev, rows = self.config.eval, []
        keyed = [{(r["test_set"], r["method"]): r for r in rows_of_seed} for rows_of_seed in by_seed]
        for first in by_seed[0]:
            key = (first["test_set"], first["method"])
            runs = [seed_rows[key] for seed_rows in keyed if key in seed_rows]
            reference = references[first["test_set"]][1]
            summary = summarize_seeds([run["outcome_rows"] for run in runs], reference, n_boot=ev.n_boot,
                                      seed=self.config.seed)
            rows.append({key: first[key] for key in ("track", "test_set", "domain", "method")} | summary
                        | {"outcome_runs": [run["outcome_rows"] for run in runs]})
        self.by_seed = [_without_outcomes(row) for rows_of_seed in by_seed for row in rows_of_seed]
        return rows

    def _comparisons(self, rows: list[dict], references: dict) -> list[dict]:
        """Paired comparisons on the same items (`rait.pipeline.kinds.comparisons`), each method's seeds pooled, and
        each model's outcome flow against Init-Basic (`rait.evaluate.runner.outcome_flow`)."""
        from rait.evaluate.runner import compare_seeds, outcome_flow

        ev, result = self.config.eval, []
        runs = {(row["test_set"], row["method"]): row.get("outcome_runs") or [row["outcome_rows"]] for row in rows}
        for test, _ in self.tests:
            reference = references[test.name][1]
            for method in [m for (name, m) in runs if name == test.name and m != REFERENCE]:
                flow = outcome_flow(runs[test.name, method], reference)
                result.append({"track": self.track.name, "test_set": test.name, "domain": test.domain,
                               "a": method, "b": REFERENCE, "kind": "flow", **flow})
            for a, b in comparisons():
                if (test.name, a) in runs and (test.name, b) in runs:
                    diff = compare_seeds(runs[test.name, a], runs[test.name, b], reference, ev.n_boot, self.config.seed)
                    result.append({"track": self.track.name, "test_set": test.name, "domain": test.domain,
                                   "a": a, "b": b, "kind": "paired",
                                   **{f"{k}_{part}": v for k, d in diff.items() for part, v in d.items()}})
        return result


def _has_rows(data: Path | None) -> bool:
    return data is not None and data.is_file() and data.stat().st_size > 0


def _training_sets(folder: Path, built: dict) -> dict[str, Path]:
    """The training sets of a build (its stage result) that hold at least one sample, by method."""
    return {name: folder / f"{name}.jsonl" for name in built if sum(built[name]["taken"].values())}


def _without_outcomes(row: dict) -> dict:
    return {key: value for key, value in row.items() if key not in ("outcome_rows", "outcome_runs")}


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
        _read_record(record, "stage record")


def _wall_note(wall: float, computed: float) -> dict[str, str]:
    return {"wall time": f"{wall / 60:.1f} min, of which {computed / 60:.1f} min in stages computed by this run"}


def _run_notes(log: Path) -> dict[str, str]:
    """The wall-time note of the run that wrote `log` (its pipeline.json), for its rebuilt report."""
    record = _read_record(log, "run log")
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
