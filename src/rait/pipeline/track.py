"""One track of `rait run`: a pool with its test sets, prepared and checked, planned, then run stage by stage.

`TrackRun.prepare` loads the pool and the test sets and checks the methods (a bad config fails before any work),
`TrackRun.plan` lists its stages with their keys (`rait.pipeline.plan`), `TrackRun.run` goes through them on the
run's `Stages` and returns the track's report rows and paired comparisons. How each kind of method trains is
`rait.pipeline.kinds`.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, NamedTuple

from rait.artifacts import identity_key, read_jsonl, sha256_file, sha256_jsonl
from rait.distributed import split_batch
from rait.errors import RaitError, SettingsError
from rait.data.testsets import TestSet, load_test_records
from rait.evaluate.suite import REFERENCE_PROMPT
from rait.pipeline.config import VALIDATION, PipelineConfig, TrackConfig
from rait.pipeline.kinds import KINDS, Kind, kind_of
from rait.pipeline.plan import PlannedStage
from rait.pipeline.rows import over_seeds, paired_comparisons, pool_view, rule_rows, veto_rows, without_outcomes
from rait.pipeline.stages import Stages, finished, recorded_seconds
from rait.report.explorer import explorer_items
from rait.select.methods import METHODS
from rait.train import learning_identity

BASE_LABEL = "Init"  # the untouched model: rows Init-Basic (the THS reference) and Init-Refuse
POOL_FILE, VALIDATION_FILE = "pool.jsonl", "validation.jsonl"  # a track's data, in its folder


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
        self.keys = ("tracks", index)  # the track's place in the config, for errors at its line
        # prepare(): the checked inputs
        self.records: list = []  # the pool
        self.validation: list | None = None  # the validation split held out of the pool
        self.pool_key = ""  # the pool file's hash, known before it is written
        self.probe_setup: tuple = ()  # (probe settings, their task's, MCQA shots)
        self.tests: list[tuple[TestSet, list]] = []  # the validation split first, then the test sets, with items
        # run(): what the report reads
        self.item_probes: dict[str, tuple] = {}  # test set -> (key, table): the test items probed once per run
        self.references: dict = {}  # test set -> (key, outcomes) of Init-Basic, the THS reference
        self.fixed_rows: list[dict] = []  # the untouched model's rows and the abstention rules'
        self.seed_rows: list[list[dict]] = []  # the trained models' rows, per seed
        self.rows: list[dict] = []
        self.comparisons: list[dict] = []
        self.by_seed: list[dict] = []
        self.diagnosis: list[dict] = []
        self.curves: list[dict] = []  # the abstention rules' risk-coverage curves
        self.rewards: list[dict] = []  # GRPO-RAIT's reward curve
        self.items: list[dict] = []  # the report's item explorer
        self.knowledge: dict = {}  # the report's pool view

    # ------------------------------------------------------------ the track: checked, planned, run

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
            seconds = record.get("seconds") if record else previous.get(stage_name, recorded_seconds(folder))
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
            if METHODS[method].confidence == "p_ik":
                add(f"{name}: p_ik", self.dir / "p_ik", self._p_ik_parts(probe.key))
                continue
            for test, records in self.tests:  # σ of every item: self-consistency and the σ veto
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
                _, parts = self._train_setup(method, data_sha, seed, start_key)
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
        confidences: dict[str, dict[str, dict[str, float]]] = {}  # rule -> test set -> item -> confidence
        for method in (m for m in methods if not METHODS[m].trains):
            if METHODS[method].confidence == "p_ik":
                confidences[method] = self.p_ik(probe_key, table_path, records)[1]
            else:  # σ of every item: self-consistency and the σ veto
                confidences[method] = {test.name: self.probe_items(test, items)[1]["sigma"].to_dict()
                                       for test, items in self.tests}
            rows += kind_of(method).untouched_rows(self, method, confidences[method], references)
        self.fixed_rows, self.references = rows, references
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
            for method in confidences:  # rules on this seed's trained models: the σ veto
                evaluated += kind_of(method).trained_rows(self, method, evaluated, confidences[method], references)
            by_seed.append([row | {"seed": seed} for row in evaluated] if self.config.seeds else evaluated)
        self.seed_rows = by_seed
        self.knowledge = pool_view(self.track.name, build_table, records, first_datasets)
        return self.combine(by_seed)

    def combine(self, by_seed: list[list[dict]]) -> tuple[list[dict], list[dict]]:
        """The track's rows (the untrained model's and the rules', then each trained model's: over the seeds when
        there are several) without their outcomes, and its paired comparisons (`rait.pipeline.kinds.comparisons`)."""
        ev, seed = self.config.eval, self.config.seed
        model_rows = (over_seeds(by_seed, self.references, ev.n_boot, seed) if len(by_seed) > 1
                      else by_seed[0] if by_seed else [])
        self.by_seed = [without_outcomes(row) for rows_of_seed in by_seed for row in rows_of_seed]
        rows = self.fixed_rows + model_rows
        self.items = explorer_items(rows)
        return [without_outcomes(row) for row in rows], paired_comparisons(self.track.name, self.tests, rows,
                                                                           self.references, ev.n_boot, seed)

    def _skip(self, method: str, seed: int, why: str) -> ModelToEvaluate:
        """A method that trains nothing: its training is a planned stage skipped, and so are its evaluations, in
        their turn (`evaluate`)."""
        self.stages.skip(self._train_name(method, seed), why)
        return ModelToEvaluate(METHODS[method].label, None, "", self.config.eval.method_prompts, f"no model: {why}")

    # ------------------------------------------------------------ its stages, each keyed by its parts

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
        """Rows of an abstention rule on Init-Basic's answers (`rait.pipeline.rows.rule_rows`); its risk-coverage
        curve joins the report's."""
        rows, curves = rule_rows(self.track.name, self.tests, METHODS[method].label, confidence, references,
                                 self.config.eval.n_boot, self.config.seed)
        self.curves += curves
        return rows

    def veto(self, method: str, evaluated: list[dict], sigma: dict[str, dict[str, float]], references: dict
             ) -> list[dict]:
        """Rows of the σ veto on one seed's model of `veto.base` (`rait.pipeline.rows.veto_rows`)."""
        return veto_rows(self.track.name, self.tests, METHODS[method].label, METHODS[self.config.veto.base].label,
                         evaluated, sigma, references, self.config.veto, self.config.eval.n_boot, self.config.seed)

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
            built = build(settings, table_path, pool_path, folder, gradients=grads[1] if grads else None)
            return {name: {"taken": report["taken"], "warnings": report.get("warnings", [])}
                    for name, report in built.reports.items()}

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
                                              description=description).metrics

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


def _has_rows(data: Path | None) -> bool:
    return data is not None and data.is_file() and data.stat().st_size > 0


def _training_sets(folder: Path, built: dict) -> dict[str, Path]:
    """The training sets of a build (its stage result) that hold at least one sample, by method."""
    return {name: folder / f"{name}.jsonl" for name in built if sum(built[name]["taken"].values())}


