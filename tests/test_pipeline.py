"""`rait run` end to end on the tiny model: every method, both task families, the report, caching."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from rait.cli import main
from rait.errors import DataError, SettingsError
from rait.pipeline import ALL_METHODS, PipelineConfig, resolve, run_pipeline
from rait.select.methods import METHODS

REPORT_FILES = ("results.csv", "results.md", "report.html", "pc_pw.png", "ths.png", "pipeline.json")


def run(argv) -> int:
    try:
        main(argv)
    except SystemExit as exit_:
        return exit_.code or 0
    return 0


def config_text(model: Path, mcqa_total: int = 5) -> str:
    """Two tracks on real data, tiny sizes: MMLU -> ARC-Challenge with every method, facts -> NQ with CRaFT."""
    return f"""
model: {model}
title: tiny pipeline
methods: {list(ALL_METHODS)}
train: {{epochs: 1, batch_size: 4, grad_accum: 1, lora: {{r: 4, alpha: 8, dropout: 0.0, layers: [1], target_modules: [q_proj, v_proj, down_proj]}}}}
eval: {{batch_size: 8, n_boot: 20, max_new_tokens: {{oeqa: 4, mcqa: 3}}}}
tracks:
  - name: mmlu
    pool: {{data: "mmlu:dev", sample: 12}}
    probe: {{shots: 1, batch_size: 4}}
    rehearsal: {{n: 4, gold_prob_min: 0.0, train: {{batch_size: 2, warmup: 0}}}}
    grads: {{n_rehearsal: 4, warmup: {{epochs: 1, batch_size: 4, grad_accum: 1, lora: {{r: 4, alpha: 16}}}},
             dims: [32], batch_size: 4}}
    build: {{n_total: {mcqa_total}, tau: 0.26, refusal: "I don't know."}}
    test_sets:
      - {{name: mmlu-val, data: "mmlu:val", sample: 4, domain: ID}}
      - {{name: arc-c, data: "arc-c:test", sample: 4, domain: OOD}}
  - name: facts
    methods: [cor_rait, craft]
    pool: {{data: "facts:train", sample: 6}}
    probe: {{k: 2, max_new_tokens: 3, prompt: query_0shot}}
    rehearsal: {{n: 2, mu_min: 0.0, sigma_min: 0.0, train: {{batch_size: 1, warmup: 0}}}}
    build: {{n_total: 4, tau: 0.5}}
    test_sets:
      - {{name: facts-id, data: "facts:test_id", sample: 3, domain: ID}}
      - {{name: nq, data: "nq:dev", sample: 3, domain: OOD}}
"""


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory, tiny_model_dir, shipped_data):
    folder = tmp_path_factory.mktemp("pipeline")
    config = folder / "tiny.yaml"
    config.write_text(config_text(tiny_model_dir))
    PLANS_BEFORE[config] = resolve(PipelineConfig.from_yaml(config), folder / "out")
    assert run(["run", str(config), "--out", str(folder / "out")]) == 0
    return folder, config


PLANS_BEFORE: dict = {}  # config -> its plan resolved before its first run


def stage_log(out: Path) -> dict[str, bool]:
    """Whether each stage run (not skipped) came from the cache."""
    return {s["stage"]: s["cached"] for s in json.loads((out / "pipeline.json").read_text())["stages"]
            if not s.get("skipped")}


def assert_planned(config: Path, out: Path, before=None) -> None:
    """The plan of `config` (`rait.pipeline.resolve`, as `rait run --dry-run` prints it) is the stages `rait run`
    went through, in its order, under the same keys, and the ones it skipped (a method that selected nothing: its
    training and evaluations); resolved again after the run, every stage is cached. `before`: the plan resolved
    before the run, whose known keys must be the ones the run used."""
    log = json.loads((out / "pipeline.json").read_text())["stages"]
    skipped = {s["stage"] for s in log if s.get("skipped")}
    plan = resolve(PipelineConfig.from_yaml(config), out)
    assert plan.names() == [s["stage"] for s in log]  # one walk, in the run's order
    assert [(stage.name, stage.key) for stage in plan.stages if stage.name not in skipped] == [
        (s["stage"], s["key"]) for s in log if not s.get("skipped")]
    assert all(stage.cached for stage in plan.stages if stage.name not in skipped)
    assert {stage.name for stage in plan.stages if stage.skipped} == skipped
    if before is not None:
        keys = {s["stage"]: s["key"] for s in log}
        assert before.names() == plan.names()
        known = [stage for stage in before.stages if stage.key]
        assert known and all(stage.key == keys[stage.name] for stage in known)
        assert all(stage.after in keys for stage in before.stages if not stage.key)


def test_every_method_is_trained_evaluated_and_reported(pipeline_run):
    folder, _ = pipeline_run
    out = folder / "out"
    for name in REPORT_FILES:
        assert (out / name).is_file(), name
    assert len((out / "results.csv").read_text().splitlines()) > 1
    table = (out / "results.md").read_text()
    for method in ("Init-Basic", "Init-Refuse", "Van-Tuning", "Cor-RAIT", "CorCer-RAIT", "CRaFT w/o Cer", "CRaFT",
                   "R-Tuning", "GRAIT"):
        assert method in table, method
    log = stage_log(out)
    assert not any(log.values())  # a first run computes everything
    assert_planned(folder / "tiny.yaml", out, PLANS_BEFORE[folder / "tiny.yaml"])
    grads = json.loads((out / "mmlu" / "grads" / "stage.json").read_text())["parts"]["settings"]
    assert (grads["prompt"], grads["refusal"]) == ("refuse", "I don't know.")  # the build's, handed to the stage
    for stage in ("mmlu: probe", "mmlu: rehearse", "mmlu: grads", "mmlu: build", "facts: probe", "facts: rehearse"):
        assert stage in log
    assert "facts: grads" not in log  # GRAIT is not among the facts track's methods
    for method in ALL_METHODS:
        assert (out / "mmlu" / "train" / method / "train.json").is_file(), method
    grait = [json.loads(line) for line in (out / "mmlu" / "build" / "grait.jsonl").read_text().splitlines()]
    idk = [r["weight"] for r in grait if r["kind"] == "idk"]
    assert idk and sum(idk) == pytest.approx(len(idk) / 2)  # GRAIT's adaptive weights reach training
    assert (out / "facts" / "rehearse" / "flow_table.jsonl").is_file()
    abstention = (out / "abstention.csv").read_text().splitlines()  # the metrics beyond Table 2 reach the report
    assert "over_refusal" in abstention[0] and "quadrant_truthful" in abstention[0]
    assert len(abstention) == len((out / "results.csv").read_text().splitlines())


def test_a_rerun_is_cached_and_a_change_recomputes_only_what_depends_on_it(pipeline_run, tiny_model_dir):
    folder, config = pipeline_run
    out = folder / "out"
    results = (out / "results.csv").read_text()
    assert run(["run", str(config), "--out", str(out)]) == 0
    assert all(stage_log(out).values())
    assert (out / "results.csv").read_text() == results

    built = {m: (out / "mmlu" / "build" / f"{m}.jsonl").read_text() for m in ALL_METHODS}
    config.write_text(config_text(tiny_model_dir, mcqa_total=6))
    build = resolve(PipelineConfig.from_yaml(config), out).by_name()["mmlu: build"]
    earlier = json.loads((out / "mmlu" / "build" / "stage.json").read_text())["seconds"]
    assert not build.cached and build.seconds == earlier  # its time under the old settings: the dry run's estimate
    assert run(["run", str(config), "--out", str(out)]) == 0
    log = stage_log(out)
    recomputed = {stage for stage, cached in log.items() if not cached}
    assert "mmlu: build" in recomputed
    changed = {m for m in ALL_METHODS if (out / "mmlu" / "build" / f"{m}.jsonl").read_text() != built[m]}
    assert "van_tuning" in changed  # a random draw of n_total from the whole pool
    assert {s for s in recomputed if s.startswith("mmlu: train")} == {f"mmlu: train {m}" for m in changed}
    assert not any(s.startswith("facts") for s in recomputed)  # the other track is untouched
    assert not {"mmlu: probe", "mmlu: rehearse", "mmlu: grads"} & recomputed
    assert not any("Init" in s for s in recomputed)  # the base model's evaluations stay


def test_dry_run_prints_the_plan_without_loading_a_model_or_writing(pipeline_run, tmp_path, monkeypatch, capsys):
    """Issue 32: `rait run --dry-run` prints every stage with its key and state; it loads no model (a load would
    raise here) and writes nothing, into a new folder or a finished run's."""
    import transformers

    folder, config = pipeline_run

    def no_model(*args, **kwargs):
        raise AssertionError("the dry run loaded a model")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_model)
    fresh = tmp_path / "fresh"
    assert run(["run", str(config), "--out", str(fresh), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    plan = resolve(PipelineConfig.from_yaml(config), fresh)
    assert not fresh.exists()
    for stage in plan.stages:
        assert stage.name in printed and (stage.key is None or stage.key in printed), stage.name
    assert f"0 cached, {len(plan.stages)} to run, 0 skipped" in printed
    finished = {p: p.stat().st_mtime_ns for p in (folder / "out").rglob("*")}
    assert run(["run", str(config), "--out", str(folder / "out"), "--dry-run"]) == 0
    assert ", 0 to run," in capsys.readouterr().out  # the fixture's run finished every stage
    assert {p: p.stat().st_mtime_ns for p in (folder / "out").rglob("*")} == finished


def test_the_plan_estimates_a_stage_from_its_earlier_time_or_its_kind(tmp_path):
    """A stage to run takes what it took in the folder's earlier run, else the mean of the timed stages of its kind
    (another seed's training); one with neither is counted as not estimable."""
    from rait.pipeline import PlannedStage, RunPlan

    plan = RunPlan("c", tmp_path, "m", (
        PlannedStage("t: train cor_rait (seed 0)", tmp_path, key="a", cached=True, seconds=100.0),
        PlannedStage("t: train cor_rait (seed 1)", tmp_path, key="b"),
        PlannedStage("t: eval Cor-RAIT / facts-id / refuse (seed-1)", tmp_path, after="t: train cor_rait (seed 1)",
                     seconds=32.0),
        PlannedStage("t: probe facts-id", tmp_path, key="c"),
        PlannedStage("t: train craft (seed 1)", tmp_path, skipped="selected no samples")))
    assert plan.estimates() == {"t: train cor_rait (seed 1)": 100.0,
                                "t: eval Cor-RAIT / facts-id / refuse (seed-1)": 32.0}
    assert plan.summary().startswith("1 cached, 3 to run, 1 skipped; about 2.2 min for 2 of the 3 to run")
    assert plan.summary().endswith(", 1 not estimable yet")


def test_a_stage_the_plan_does_not_hold_stops_the_run(tmp_path):
    """`rait run` executes its plan: a stage run under another key than the planned one (or one the plan lacks) is
    a bug in rait, and stops the run before the stage computes anything."""
    from rich.console import Console

    from rait.artifacts import identity_key
    from rait.pipeline import PlannedStage, RunPlan
    from rait.pipeline.stages import Stages
    from rait.pipeline.view import StageLines

    stages = Stages(StageLines(Console(quiet=True)))
    stages.follow(RunPlan("c", tmp_path, "m", (PlannedStage("s", tmp_path / "s", {"a": 1}, identity_key({"a": 1})),
                                               PlannedStage("t", tmp_path / "t", after="s"))))
    assert stages.run("s", tmp_path / "s", {"a": 1}, lambda folder: {"ok": 1})[1] == {"ok": 1}
    assert stages.run("t", tmp_path / "t", {"b": 2}, lambda folder: {})[0]  # its key was not known before "s"
    for name, parts in (("s", {"a": 2}), ("u", {"a": 1})):
        with pytest.raises(RuntimeError, match="not in the run's plan"):
            stages.run(name, tmp_path / name, parts, lambda folder: pytest.fail("computed"))


def test_a_killed_stage_is_resumed_and_a_stale_one_is_redone(tmp_path):
    from rich.console import Console

    from rait.pipeline.stages import Stages
    from rait.pipeline.view import StageLines

    stages, calls = Stages(StageLines(Console(quiet=True))), []

    def compute(folder: Path) -> dict:
        calls.append(sorted(p.name for p in folder.iterdir()))
        (folder / "partial").write_text("work")
        return {"ok": 1}

    folder = tmp_path / "stage"
    folder.mkdir()
    (folder / "stage.key").write_text(Stages.__module__)  # a partial folder from other settings
    (folder / "old").write_text("stale")
    key, result = stages.run("s", folder, {"a": 1}, compute)
    assert result == {"ok": 1} and calls[-1] == ["stage.key"]  # stale work removed first
    (folder / "stage.json").unlink()  # killed before it finished: same key, partial work kept
    stages.run("s", folder, {"a": 1}, compute)
    assert "partial" in calls[-1]
    assert stages.run("s", folder, {"a": 1}, compute) == (key, {"ok": 1}) and len(calls) == 2


@pytest.mark.parametrize("text, line, field", [
    ("tracks: []\n", 1, "tracks"),
    ("model: x\ntracks:\n  - name: a\n    pool: {data: 'nq:dev'}\n    test_sets: [{name: t, data: 'nq:dev'}]\n    probs: {}\n",
     6, "tracks.0.probs"),
    ("tracks:\n  - name: a\n    test_sets: [{name: t, data: 'nq:dev'}]\n", 2, "tracks.0.pool"),
    ("tracks:\n  - name: a\n    pool: {data: 'nq:dev'}\n    test_sets:\n      - {name: t, dataa: 'nq:dev'}\n", 5,
     "tracks.0.test_sets.0.dataa"),
])
def test_a_bad_config_names_file_line_and_field(tmp_path, text, line, field):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        PipelineConfig.from_yaml(path)
    assert err.value.line == line and err.value.field == field and str(path) in str(err.value)


_TRACK = "tracks:\n  - name: a\n    pool: {data: 'nq:dev'}\n    test_sets: [{name: t, data: 'nq:dev'}]\n"


@pytest.mark.parametrize("text, line, field, words", [
    ("eval: {n_boot: 0}\n" + _TRACK, 1, "eval.n_boot", ">= 1, got 0"),
    ("eval: {batch_size: 2.5}\n" + _TRACK, 1, "eval.batch_size", "whole number"),
    (_TRACK + "    build: {n_total: -4}\n", 5, "tracks.0.build.n_total", ">= 1, got -4"),
    (_TRACK + "    build: {idk_share: 1.5}\n", 5, "tracks.0.build.idk_share", "between 0 and 1"),
    (_TRACK + "    build: {tau: 2}\n", 5, "tracks.0.build.tau", "between 0 and 1"),
    (_TRACK + "    rehearsal: {n: two}\n", 5, "tracks.0.rehearsal.n", "got 'two'"),
    ("dpo: {beta: 0}\n" + _TRACK, 1, "dpo.beta", "> 0, got 0"),
    ("dpo:\n  pairs_from: craft2\n" + _TRACK, 2, "dpo.pairs_from", "unknown method 'craft2'"),
    ("dpo:\n  pairs_from: p_ik\n" + _TRACK, 2, "dpo.pairs_from", "builds no training set"),
    ("tracks:\n  - name: a\n    pool: {data: 'nq:dev', sample: 0}\n    test_sets: [{name: t, data: 'nq:dev'}]\n", 3,
     "tracks.0.pool.sample", ">= 1"),
])
def test_a_size_or_share_out_of_range_is_reported_at_its_line(tmp_path, text, line, field, words):
    """Issue 17: these failed late (after probing) or not at all (n_boot 0 wrote NaN into metrics.json)."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        PipelineConfig.from_yaml(path)
    assert err.value.line == line and err.value.field == field and words in str(err.value)


@pytest.mark.usefixtures("shipped_data")
@pytest.mark.parametrize("track, line, words", [
    ("    pool: {data: 'mmlu:dev', sample: 4}\n    probe: {shotz: 1}\n"
     "    test_sets: [{name: t, data: 'mmlu:val', sample: 2}]\n", 6, ["shotz"]),
    ("    pool: {data: 'mmlu:dev', sample: 4}\n    probe: {k: 4}\n"
     "    test_sets: [{name: t, data: 'mmlu:val', sample: 2}]\n", 6, ["tracks.0.probe.k", "open-QA setting"]),
    ("    pool: {data: 'nq:dev', sample: 4}\n    test_sets:\n"
     "      - {name: t, data: 'mmlu:val', sample: 4, stratify: subject}\n", 7, ["tracks.0.test_sets.0"]),
])
def test_a_bad_setting_or_sample_is_reported_at_its_line_before_any_work(tmp_path, tiny_model_dir, capsys, track,
                                                                           line, words):
    path = tmp_path / "bad.yaml"
    path.write_text(f"model: {tiny_model_dir}\nmethods: [cor_rait]\ntracks:\n  - name: a\n" + track)
    assert run(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{path}:{line}" in err and all(w in err for w in words)
    assert not (tmp_path / "out" / "a" / "probe").exists()


@pytest.mark.parametrize("text, line, field", [
    ("train: {epochs: 1, seed: 5}\n" + _TRACK, 1, "train.seed"),
    ("dpo:\n  train: {seed: 5}\n" + _TRACK, 2, "dpo.train.seed"),
    ("grpo:\n  train:\n    seed: 5\n" + _TRACK, 3, "grpo.train.seed"),
    (_TRACK + "    train: {seed: 5}\n", 5, "tracks.0.train.seed"),
])
def test_a_training_seed_beside_the_runs_loop_is_refused_for_every_kind(tmp_path, text, line, field):
    """Issue 32: SFT let `train.seed` override the per-seed loop (every seed of `seeds` trained one model) while DPO
    and GRPO let the loop win. The loop owns the methods' seeds, for every kind."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        PipelineConfig.from_yaml(path)
    assert (err.value.line, err.value.field) == (line, field) and "seeded by the run's `seed`" in str(err.value)


def test_a_rehearsal_keeps_its_own_seed(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(_TRACK + "    rehearsal: {train: {seed: 5}}\n")
    assert PipelineConfig.from_yaml(path).tracks[0].rehearsal.train.seed == 5


def test_the_eval_section_sets_every_evaluation_setting(tmp_path):
    """Issue 32: match_mode, system and chat could not be set from YAML (`eval:` was its own class); its defaults
    are EvalSettings' own."""
    from rait.evaluate.runner import EvalSettings

    path = tmp_path / "eval.yaml"
    path.write_text("eval: {match_mode: word, system: Answer briefly., chat: false, max_new_tokens: {oeqa: 5}}\n"
                    + _TRACK)
    settings = PipelineConfig.from_yaml(path).eval.settings("basic", "oeqa", 3)
    assert settings == EvalSettings(prompt="basic", match_mode="word", system="Answer briefly.", chat=False,
                                    max_new_tokens=5, seed=3)
    path.write_text(_TRACK)
    assert PipelineConfig.from_yaml(path).eval.settings("refuse", "mcqa", 0) == EvalSettings()
    path.write_text("eval:\n  match_mode: fuzzy\n" + _TRACK)
    with pytest.raises(DataError) as err:
        PipelineConfig.from_yaml(path)
    assert (err.value.line, err.value.field) == (2, "eval.match_mode")


def test_train_is_read_as_settings_and_a_training_key_hashes_the_whole_recipe(tmp_path):
    """Issue 32: every `train:` is `TrainSettings` once loaded, the track's over the global one (`lora` merged key
    by key), and an SFT training's key hashes the complete recipe with the loop's seed, as DPO's, GRPO's and the
    rehearsal's keys do. A recipe written out at its defaults keys like one left to them; the mapping as written
    used to be the key, so a changed default in rait would have left such trainings cached."""
    from dataclasses import asdict, replace
    from types import SimpleNamespace

    from rait.pipeline.kinds import kind_of
    from rait.train import TrainSettings, learning_identity

    defaults, path = TrainSettings(), tmp_path / "c.yaml"
    keys = {}
    for name, top in (("left", ""), ("written", f"train: {{grad_accum: {defaults.grad_accum}, "
                                                  f"lora: {{r: {defaults.lora.r}}}}}\n")):
        path.write_text(top + _TRACK)
        config = PipelineConfig.from_yaml(path)
        track = config.tracks[0]
        assert track.train == config.train == replace(defaults, seed=config.seed)
        settings, parts = kind_of("cor_rait").setup("cor_rait", SimpleNamespace(config=config, track=track), 5, None)
        assert settings == replace(defaults, seed=5) and parts == asdict(settings)
        keys[name] = learning_identity(parts)
    assert keys["left"] == keys["written"]
    path.write_text("seed: 2\ntrain: {epochs: 3, lora: {r: 8, alpha: 4}}\n" + _TRACK
                    + "    train: {learning_rate: 1.0e-3, lora: {alpha: 16}}\n")
    config = PipelineConfig.from_yaml(path)
    merged = config.train_of(config.tracks[0])
    assert (merged.epochs, merged.learning_rate, merged.lora.r, merged.lora.alpha, merged.seed) == (3, 1e-3, 8, 16, 2)
    assert (config.train.learning_rate, config.train.lora.alpha) == (defaults.learning_rate, 4)


def test_the_eval_section_is_evaluation_settings_less_what_the_run_sets(tmp_path):
    """Issue 32: `eval:` is `EvalSettings` (a subclass adding which prompts to evaluate), so every evaluation
    setting is a YAML key with EvalSettings' default, written once; `prompt` and `seed` are the run's. One
    `max_new_tokens` is every task's budget, a mapping one per task; an evaluation gets its task's number, so its
    stage key is what it was when the section took only the mapping."""
    from dataclasses import fields

    from rait.evaluate.runner import MAX_NEW_TOKENS, EvalSettings
    from rait.pipeline.config import EvalConfig

    config = EvalConfig()
    assert {f.name for f in fields(EvalSettings)} <= {f.name for f in fields(EvalConfig)}
    assert all(getattr(config, f.name) == f.default for f in fields(EvalSettings))
    path = tmp_path / "eval.yaml"
    path.write_text("eval: {max_new_tokens: 7, refusal_mode: keywords, n_boot: 30}\n" + _TRACK)
    section = PipelineConfig.from_yaml(path).eval
    for task in ("oeqa", "mcqa"):
        assert section.settings("refuse", task, 2) == EvalSettings(max_new_tokens=7, refusal_mode="keywords",
                                                                   n_boot=30, seed=2)
    assert EvalSettings(max_new_tokens={"oeqa": 9}).tokens_for("oeqa") == 9
    assert EvalSettings(max_new_tokens={"oeqa": 9}).tokens_for("mcqa") == MAX_NEW_TOKENS["mcqa"]
    assert EvalSettings(max_new_tokens=4).tokens_for("mcqa") == 4
    with pytest.raises(SettingsError, match="unknown task 'qa'") as err:
        EvalSettings(max_new_tokens={"qa": 9})
    assert err.value.field == "max_new_tokens.qa"


def test_the_shipped_configs_parse():
    root = Path(__file__).resolve().parents[1] / "configs"
    assert {"demo.yaml", "demo_mcqa.yaml", "paper_mmlu.yaml", "paper_triviaqa.yaml", "study_facts.yaml"} <= {p.name for p in root.glob("*.yaml")}
    for path in sorted(root.glob("*.yaml")):
        config = PipelineConfig.from_yaml(path)
        assert config.tracks, path
        assert all(m in METHODS for m in config.methods), path


def test_run_pipeline_returns_report_rows_with_ths(pipeline_run):
    folder, config = pipeline_run
    rows = run_pipeline(PipelineConfig.from_yaml(config), folder / "out")
    init_refuse = [r for r in rows if r["method"] == "Init-Refuse"]
    assert init_refuse and all("ths" in r for r in init_refuse)
    assert all("ths" not in r for r in rows if r["method"] == "Init-Basic")  # the reference itself


@pytest.mark.usefixtures("shipped_data")
def test_max_chars_drops_long_questions_before_sampling():
    from rait.data import TestSet, load_test_records, record_chars

    short = load_test_records(TestSet(name="t", data="mmlu:val", sample=20, max_chars=300), seed=0)
    assert len(short) == 20 and all(record_chars(r) <= 300 for r in short)
    everything = load_test_records(TestSet(name="t", data="mmlu:val"), seed=0)
    assert max(record_chars(r) for r in everything) > 300  # the filter has work to do


def test_trained_models_evaluated_on_one_base_load_answer_as_when_loaded_alone(pipeline_run):
    """The stage merges each method's adapter into one loaded base in turn; CRaFT, evaluated after four
    other adapters came and went, must answer exactly as its own `load_trained` model does."""
    from rait.evaluate.runner import EvalSettings, evaluate_records
    from rait.data import TestSet, load_test_records
    from rait.train import load_trained

    folder, _ = pipeline_run
    out = folder / "out" / "mmlu"
    rows = [json.loads(line) for line in (out / "eval" / "mmlu-val" / "CRaFT" / "refuse" / "outcomes.jsonl")
            .read_text().splitlines()]
    records = load_test_records(TestSet("mmlu-val", "mmlu:val", sample=4), seed=0)
    assert [r.id for r in records] == [row["id"] for row in rows]
    model, tokenizer = load_trained(out / "train" / "craft")
    alone = evaluate_records(model, tokenizer, records, EvalSettings(prompt="refuse", batch_size=8, max_new_tokens=3))
    assert [row["output"] for row in alone] == [row["output"] for row in rows]


def test_an_evaluation_stage_loads_its_base_model_once(pipeline_run, monkeypatch):
    import rait.models

    from rait.evaluate.suite import EvalModels

    folder, _ = pipeline_run
    loads = []
    real_load = rait.models.load_model
    monkeypatch.setattr(rait.models, "load_model", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    train_dir = folder / "out" / "mmlu" / "train"
    base = json.loads((train_dir / "craft" / "train.json").read_text())["base_model"]
    models = EvalModels(base)
    seen = []
    for spec in [base, train_dir / "craft", train_dir / "van_tuning", base]:
        with models.use(spec) as (model, _, fingerprint):
            seen.append(("trained" in fingerprint, type(model).__name__))
    assert len(loads) == 1
    assert seen == [(False, "LlamaForCausalLM"), (True, "PeftModelForCausalLM"), (True, "PeftModelForCausalLM"),
                    (False, "LlamaForCausalLM")]


@pytest.mark.usefixtures("shipped_data")
def test_the_study_config_runs_at_tiny_size_with_seeds_validation_and_comparisons(tmp_path, tiny_model_dir):
    """configs/study_facts.yaml with its structure kept (validation split, three test sets, training
    seeds, every method) and only its sizes cut, on the tiny model."""
    import yaml

    study = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "study_facts.yaml").read_text())
    study.update(model=str(tiny_model_dir), seeds=[0, 1],
                 train={"epochs": 1, "batch_size": 4, "grad_accum": 1,
                        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "layers": [1], "target_modules": ["q_proj"]}},
                 eval={**study["eval"], "n_boot": 20, "max_new_tokens": {"oeqa": 3}})
    track = study["tracks"][0]
    track["pool"] |= {"validation": 6, "sample": 8}
    track["probe"] |= {"k": 2, "max_new_tokens": 3}
    track["rehearsal"] |= {"n": 2, "mu_min": 0.0, "sigma_min": 0.0, "train": {"batch_size": 1, "warmup": 0}}
    track["grads"] = {"n_rehearsal": 2, "warmup": {"epochs": 1, "batch_size": 2, "grad_accum": 1, "lora": {"r": 4}},
                      "dims": [16], "batch_size": 4}
    track["build"] |= {"n_total": 5, "tau": 0.5}
    for test in track["test_sets"]:
        test["sample"] = 3
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(study))
    before = resolve(PipelineConfig.from_yaml(config), tmp_path / "out")
    assert run(["run", str(config), "--out", str(tmp_path / "out")]) == 0

    out = tmp_path / "out"
    pool = [json.loads(line)["id"] for line in (out / "facts" / "pool.jsonl").read_text().splitlines()]
    validation = [json.loads(line)["id"] for line in (out / "facts" / "validation.jsonl").read_text().splitlines()]
    assert len(pool) == 8 and len(validation) == 6 and not set(pool) & set(validation)
    # one data stage: `rait data load` with the track's pool settings writes the same bytes
    alone = tmp_path / "alone.jsonl"
    assert run(["data", "load", "facts:train", "--out", str(alone), "--validation", "6", "--sample", "8",
                "--stratify", "subject"]) == 0
    assert alone.read_bytes() == (out / "facts" / "pool.jsonl").read_bytes()
    assert (tmp_path / "alone.validation.jsonl").read_bytes() == (out / "facts" / "validation.jsonl").read_bytes()
    for seed in (0, 1):
        assert (out / "facts" / f"seed-{seed}" / "train" / "cor_rait" / "train.json").is_file()
    assert_planned(config, out, before)
    results = (out / "results.csv").read_text()
    assert "validation" in results and "VAL" in results
    by_seed = (out / "results_by_seed.csv").read_text().splitlines()
    header = by_seed[0].split(",")
    seeds = {line.split(",")[header.index("seed")] for line in by_seed[1:]}
    assert seeds == {"0", "1"}
    comparisons = (out / "comparisons.md").read_text()
    # the tiny model knows nothing, so methods that need known questions may select nothing and be skipped
    assert "| Cor-RAIT | Van-Tuning |" in comparisons and "| Van-Tuning | Init-Basic |" in comparisons
    assert "facts-ood (OOD)" in comparisons and "validation (VAL)" in comparisons
    diagnosis = json.loads((out / "diagnosis.json").read_text())
    assert [row["test_set"] for row in diagnosis] == ["validation", "facts-id", "facts-ood", "nq"]
    assert all(row["n"] == (6 if row["test_set"] == "validation" else 3) for row in diagnosis)
    assert (out / "facts" / "probe_items" / "facts-ood" / "table.parquet").is_file()


def test_a_recipe_search_may_have_no_test_set_only_a_validation_split(tmp_path):
    text = "tracks:\n  - name: a\n    pool: {data: 'facts:train'%s}\n    test_sets: []\n"
    (tmp_path / "search.yaml").write_text(text % ", validation: 10")
    assert PipelineConfig.from_yaml(tmp_path / "search.yaml").tracks[0].test_sets == []
    (tmp_path / "bad.yaml").write_text(text % "")
    with pytest.raises(DataError, match="non-empty"):
        PipelineConfig.from_yaml(tmp_path / "bad.yaml")


ABSTAIN_RUN = """
model: {model}
methods: [cor_rait, self_consistency, p_ik, dpo_rait]
train: {{epochs: 1, batch_size: 4, grad_accum: 1, lora: {{r: 4, alpha: 8, dropout: 0.0, layers: [1], target_modules: [q_proj]}}}}
dpo: {{pairs_from: cor_rait, beta: 0.1, train: {{batch_size: 2}}}}
eval: {{batch_size: 8, n_boot: 20, max_new_tokens: {{oeqa: 3}}}}
tracks:
  - name: facts
    pool: {{data: "facts:train", sample: 8, validation: 6}}
    probe: {{k: 2, max_new_tokens: 3, prompt: query_0shot}}
    build: {{n_total: 4}}
    test_sets:
      - {{name: facts-id, data: "facts:test_id", sample: 4, domain: ID}}
"""


def test_abstention_without_training_runs_beside_a_tuned_method(tmp_path, tiny_model_dir, monkeypatch):
    """Issue 18: self-consistency and P(IK) rows in the report, thresholds from validation, risk-coverage curves;
    DPO-RAIT trained on Cor-RAIT's pairs."""
    import numpy as np

    import rait.evaluate.abstain as abstain

    fit = abstain.fit_p_ik  # the tiny random model knows nothing: give P(IK) two classes to learn
    monkeypatch.setattr(abstain, "fit_p_ik", lambda features, known, seed=0: fit(features, np.arange(len(known)) % 2 == 0,
                                                                                 seed))
    config = tmp_path / "abstain.yaml"
    config.write_text(ABSTAIN_RUN.format(model=tiny_model_dir))
    out = tmp_path / "out"
    assert run(["run", str(config), "--out", str(out)]) == 0
    assert_planned(config, out)
    import pandas as pd

    results = pd.read_csv(out / "results.csv")
    rules = results[results["method"].isin(["Self-consistency (σ)", "P(IK)"])]
    assert len(rules) == 4 and rules["threshold"].notna().all() and rules["aurc"].notna().all()
    for _, same_rule in rules.groupby("method"):  # one threshold per rule, from validation
        assert same_rule["threshold"].nunique() == 1
    assert {"Cor-RAIT", "DPO-RAIT"} <= set(results["method"])
    dpo = json.loads((out / "facts" / "train" / "dpo_rait" / "train.json").read_text())
    assert (dpo["objective"], dpo["pairs_from"], dpo["samples"]) == ("dpo", "cor_rait", len(
        (out / "facts" / "build" / "dpo" / "cor_rait.jsonl").read_text().splitlines()))
    assert (out / "risk_coverage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Risk and coverage" in (out / "report.html").read_text()
    curves = pd.read_csv(out / "risk_coverage.csv")
    assert set(curves["confidence"]) == {"Self-consistency (σ)", "P(IK)"}
    comparisons = pd.read_csv(out / "comparisons.csv")
    assert {("P(IK)", "Init-Basic"), ("Self-consistency (σ)", "Cor-RAIT")} <= set(zip(comparisons["a"], comparisons["b"]))


# ABSTAIN_RUN with the σ veto over Cor-RAIT, two seeds, and a further validation set of relations unlike the pool's
VETO_RUN = ABSTAIN_RUN.replace("methods: [cor_rait, self_consistency, p_ik, dpo_rait]",
                               "methods: [cor_rait, sigma_veto]\nseeds: [0, 1]").replace(
    "dpo: {{pairs_from: cor_rait, beta: 0.1, train: {{batch_size: 2}}}}", "veto: {{base: cor_rait, floor: -100}}").replace(
    "      - {{name: facts-id,", '      - {{name: relations-val, data: "facts:validation_ood", sample: 4, domain: VAL}}\n'
    "      - {{name: facts-id,")


def test_the_sigma_veto_gives_back_its_base_models_refusals_in_rait_run(tmp_path, tiny_model_dir):
    """Issue 30: the σ veto as a method of `rait run`: its rows are Cor-RAIT's answers with each refusal at σ ≥ τ
    replaced by Init-Basic's (recomputed here from the run's own files), one τ per seed chosen on the validation
    sets, its σ probes planned, and its comparison with the model it vetoes."""
    import pandas as pd

    from rait.artifacts import read_jsonl
    from rait.evaluate.abstain import vetoed
    from rait.probe.table import read_table

    config = tmp_path / "veto.yaml"
    config.write_text(VETO_RUN.format(model=tiny_model_dir))
    out = tmp_path / "out"
    before = resolve(PipelineConfig.from_yaml(config), out)
    assert run(["run", str(config), "--out", str(out)]) == 0
    assert_planned(config, out, before)
    by_seed = pd.read_csv(out / "results_by_seed.csv")
    veto = by_seed[by_seed["method"] == "σ veto"]
    assert sorted(zip(veto["seed"], veto["test_set"])) == [
        (seed, test) for seed in (0, 1) for test in sorted(["validation", "relations-val", "facts-id"])]
    assert (veto.groupby("seed")["threshold"].nunique() == 1).all()  # one τ per seed, from validation
    for _, row in veto.iterrows():
        test = row["test_set"]
        sigma = read_table(out / "facts" / "probe_items" / test / "table.parquet").set_index("id")["sigma"].to_dict()
        kept = vetoed(read_jsonl(out / "facts" / f"seed-{row['seed']}" / "eval" / test / "Cor-RAIT" / "refuse"
                                 / "outcomes.jsonl"),
                      read_jsonl(out / "facts" / "eval" / test / "Init" / "basic" / "outcomes.jsonl"), sigma,
                      float(row["threshold"]))
        assert row["pc"] == pytest.approx(100 * sum(r["outcome"] == "correct" for r in kept) / len(kept))
        assert row["pr"] == pytest.approx(100 * sum(r["outcome"] == "refused" for r in kept) / len(kept))
    assert {"σ veto", "Cor-RAIT"} <= set(pd.read_csv(out / "results.csv")["method"])
    comparisons = pd.read_csv(out / "comparisons.csv")
    assert ("σ veto", "Cor-RAIT") in set(zip(comparisons["a"], comparisons["b"]))


def test_a_veto_whose_base_the_track_does_not_train_is_refused_at_its_line(tmp_path, tiny_model_dir, capsys):
    config = tmp_path / "veto.yaml"
    config.write_text(VETO_RUN.format(model=tiny_model_dir).replace("methods: [cor_rait, sigma_veto]",
                                                                    "methods: [craft, sigma_veto]"))
    assert run(["run", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{config}:6" in err and "cor_rait" in err and not (tmp_path / "out" / "facts" / "probe").exists()
    config.write_text(VETO_RUN.format(model=tiny_model_dir).replace("base: cor_rait", "base: dpo_rait"))
    assert run(["run", str(config), "--out", str(tmp_path / "out")]) == 2
    assert "SFT method" in capsys.readouterr().err


def test_a_validation_split_that_overlaps_a_test_set_is_refused_before_any_work(tmp_path, tiny_model_dir, capsys):
    config = tmp_path / "overlap.yaml"
    config.write_text(f"model: {tiny_model_dir}\nmethods: [cor_rait]\ntracks:\n  - name: a\n"
                      "    pool: {data: 'facts:train', sample: 4, validation: 40}\n"
                      "    test_sets: [{name: t, data: 'facts:train'}]\n")
    assert run(["run", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{config}:6" in err and "shares" in err and "validation" in err
    assert not (tmp_path / "out" / "a" / "probe").exists()


def test_a_val_domain_set_that_overlaps_a_test_set_is_refused_before_any_work(tmp_path, tiny_model_dir, capsys):
    """A further validation set (domain VAL, e.g. facts:validation_ood) is chosen on: it must not hold test items."""
    config = tmp_path / "overlap.yaml"
    config.write_text(f"model: {tiny_model_dir}\nmethods: [cor_rait]\ntracks:\n  - name: a\n"
                      "    pool: {data: 'facts:train', sample: 4}\n"
                      "    test_sets:\n"
                      "      - {name: v, data: 'facts:validation_ood', domain: VAL}\n"
                      "      - {name: t, data: 'facts:validation_ood', sample: 5, domain: OOD}\n")
    assert run(["run", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{config}:8" in err and "shares 5 question(s) with the validation set 'v'" in err
    assert not (tmp_path / "out" / "a" / "probe").exists()


def test_abstention_without_training_needs_a_validation_split(tmp_path, tiny_model_dir, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(f"model: {tiny_model_dir}\nmethods: [p_ik]\ntracks:\n  - name: a\n"
                      "    pool: {data: 'facts:train', sample: 4}\n    test_sets: [{name: t, data: 'facts:test_id'}]\n")
    assert run(["run", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{config}:5" in err and "validation" in err
    assert not (tmp_path / "out" / "a" / "probe").exists()


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _browser() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _page_in_browser(page: Path, view: str) -> str:
    """The page's DOM after its scripts ran, in headless Chromium, opened at `#view`."""
    done = subprocess.run([_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--dump-dom", f"{page.resolve().as_uri()}#{view}"], capture_output=True, text=True,
                          timeout=120)
    if done.returncode != 0 or "<html" not in done.stdout:  # the browser itself could not run here
        pytest.skip(f"chromium did not start: {done.stderr.strip()[-300:]}")
    return done.stdout


def test_the_report_explorer_shows_in_a_browser_what_the_outcome_files_hold(pipeline_run):
    """Issue 19: report.html opened in a real browser, filtered through its address, against the outcomes files."""
    if _browser() is None:
        pytest.skip("no chromium here: `make test` installs it where apt is available (make browser)")
    folder, _ = pipeline_run
    out = folder / "out"
    evals = out / "mmlu" / "eval" / "mmlu-val"
    before = {row["id"]: row["outcome"] for row in read_jsonl(evals / "Init" / "basic" / "outcomes.jsonl")}
    after = read_jsonl(evals / "Cor-RAIT" / "refuse" / "outcomes.jsonl")
    expected: dict[str, list[str]] = {}
    for row in after:  # Init-Basic's right answers are known; a method's unparsed answer counts as wrong
        then = "correct" if before[row["id"]] == "correct" else "wrong"
        now = row["outcome"] if row["outcome"] in ("correct", "refused") else "wrong"
        expected.setdefault(f"{then}-{now}", []).append(row["id"])
    for move, ids in expected.items():
        dom = _page_in_browser(out / "report.html", f"test=mmlu-val&method=Cor-RAIT&transition={move}")
        counts = {(m, t): int(n) for m, t, n in re.findall(r'data-method="([^"]+)" data-transition="([^"]+)">(\d+)<',
                                                           dom)}
        assert {t: n for (m, t), n in counts.items() if m == "Cor-RAIT" and n} == {k: len(v) for k, v in expected.items()}
        assert re.findall(r'<tr data-id="([^"]+)"', dom) == ids
        assert f"{len(ids)} of {len(after)} items of mmlu-val" in dom


def test_the_report_shows_each_pools_knowledge_and_each_methods_selection(pipeline_run):
    """Issue 19: μ/σ (and Δμ) histograms per track and, per subject, what each method selected."""
    folder, _ = pipeline_run
    out = folder / "out"
    assert (out / "knowledge_mmlu.png").is_file() and (out / "knowledge_facts.png").is_file()
    page = (out / "report.html").read_text()
    assert "<h2>The training pool</h2>" in page
    rows = read_jsonl(out / "mmlu" / "build" / "cor_rait.jsonl")
    subjects = {r["id"]: r["subject"] for r in read_jsonl(out / "mmlu" / "pool.jsonl")}
    first = subjects[rows[0]["id"]]
    vanilla = sum(1 for r in rows if subjects[r["id"]] == first and r["kind"] == "vanilla")
    idk = sum(1 for r in rows if subjects[r["id"]] == first and r["kind"] == "idk")
    table = page.split("<h3>mmlu</h3>")[1].split("</table>")[0]
    header = re.findall(r"<th>([^<]+)<br>vanilla / IdK</th>", table)
    cells = re.findall(rf"<tr><th>{re.escape(first)}</th>(.*?)</tr>", table)[0]
    counts = re.findall(r"<td>(\d+) / (\d+)</td>", cells)
    assert counts[header.index("Cor-RAIT")] == (str(vanilla), str(idk))


def test_rait_report_rebuilds_a_finished_run_and_computes_nothing(pipeline_run, tmp_path, capsys):
    """Issue 19: `rait report RUN_DIR` from the run's stored config and stages; a missing stage is an error."""
    folder, _ = pipeline_run
    copy = tmp_path / "out"
    shutil.copytree(folder / "out", copy)
    expected = (copy / "results.csv").read_text()
    for name in ("results.csv", "results.md", "report.html"):
        (copy / name).unlink()
    assert run(["report", str(copy)]) == 0
    assert (copy / "results.csv").read_text() == expected and "id=\"x-data\"" in (copy / "report.html").read_text()
    assert "run     " not in capsys.readouterr().err  # every stage was read, none computed
    shutil.rmtree(copy / "facts" / "eval" / "nq" / "Cor-RAIT")
    before = (copy / "report.html").read_text()
    assert run(["report", str(copy)]) == 2
    assert "stage 'facts: eval Cor-RAIT / nq / refuse' has not finished" in capsys.readouterr().err
    assert (copy / "report.html").read_text() == before and not (copy / "facts" / "eval" / "nq" / "Cor-RAIT").exists()
    assert run(["report", str(tmp_path)]) == 2 and "no config.yaml" in capsys.readouterr().err


SEED_RUN = """
model: {model}
seed: {seed}
methods: [cor_rait, van_tuning]
train: {{epochs: 1, batch_size: 4, grad_accum: 1, lora: {{r: 4, alpha: 8, dropout: 0.0, layers: [1], target_modules: [q_proj]}}}}
eval: {{batch_size: 8, n_boot: 50, max_new_tokens: {{oeqa: 3}}}}
tracks:
  - name: facts
    pool: {{data: {pool}}}
    probe: {{k: 2, max_new_tokens: 3, prompt: query_0shot, seed: 7}}
    build: {{n_total: 4}}
    test_sets: [{{name: facts-id, data: {test}, domain: ID}}]
"""


def test_rait_report_merges_separately_run_seeds_as_a_run_with_seeds(tmp_path, tiny_model_dir, capsys):
    """Issue 19: seeds 0 and 1 run one by one, then `rait report A B --out M`: the same rows, intervals and
    comparisons as one run of `seeds: [0, 1]` (pool, probe and test items do not depend on the run's seed here)."""
    import yaml

    for name, spec in (("pool.jsonl", "facts:train"), ("test.jsonl", "facts:test_id")):
        assert run(["data", "load", spec, "--out", str(tmp_path / name), "--sample", "8"]) == 0
    text = SEED_RUN.format(model=tiny_model_dir, pool=tmp_path / "pool.jsonl", test=tmp_path / "test.jsonl",
                           seed="SEED")
    for seed in (0, 1):
        (tmp_path / f"s{seed}.yaml").write_text(text.replace("SEED", str(seed)))
        assert run(["run", str(tmp_path / f"s{seed}.yaml"), "--out", str(tmp_path / f"s{seed}")]) == 0
    both = yaml.safe_load(text.replace("SEED", "0")) | {"seeds": [0, 1]}
    (tmp_path / "both.yaml").write_text(yaml.safe_dump(both))
    assert run(["run", str(tmp_path / "both.yaml"), "--out", str(tmp_path / "both")]) == 0
    capsys.readouterr()
    assert run(["report", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "merged")]) == 0
    assert "run     " not in capsys.readouterr().err  # read from the runs' folders, nothing computed
    merged, joint = tmp_path / "merged", tmp_path / "both"
    import pandas as pd

    for name in ("results.csv", "results_by_seed.csv", "comparisons.csv", "abstention.csv"):
        ours, theirs = (pd.read_csv(folder / name) for folder in (merged, joint))
        pd.testing.assert_frame_equal(ours.drop(columns="seconds", errors="ignore"),  # wall times differ
                                      theirs.drop(columns="seconds", errors="ignore"), obj=name)
    assert "Van-Tuning" in (merged / "results.csv").read_text()
    # each run is one seed of the rows: seed 1's Cor-RAIT answering one of 8 items right is 1 of 16 over both
    outcomes = tmp_path / "s1" / "facts" / "eval" / "facts-id" / "Cor-RAIT" / "refuse" / "outcomes.jsonl"
    rows = [json.loads(line) for line in outcomes.read_text().splitlines()]
    rows[0]["outcome"] = "correct"
    outcomes.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert run(["report", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "m1")]) == 0
    results = pd.read_csv(tmp_path / "m1" / "results.csv").set_index("method")
    assert results.loc["Cor-RAIT", "pc"] == pytest.approx(100 / 16) and results.loc["Van-Tuning", "pc"] == 0
    # only the seed may differ, and each run must be another seed
    (tmp_path / "s1" / "config.yaml").write_text(text.replace("SEED", "1").replace("n_boot: 50", "n_boot: 60"))
    assert run(["report", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "m2")]) == 2
    assert "differs from" in capsys.readouterr().err and not (tmp_path / "m2").exists()
    assert run(["report", str(tmp_path / "s0"), str(tmp_path / "s0"), "--out", str(tmp_path / "m3")]) == 2
    assert "share a seed" in capsys.readouterr().err


GRPO_RUN = """
model: {model}
methods: [cor_rait, grpo_rait]
train: {{epochs: 1, batch_size: 4, grad_accum: 1, lora: {{r: 4, alpha: 8, dropout: 0.0, layers: [1], target_modules: [q_proj]}}}}
grpo: {{num_generations: 2, max_completion_length: 3, start_from: {start},
        train: {{max_steps: 2, batch_size: 4, lora: {{r: 4, alpha: 8, dropout: 0.0, target_modules: [q_proj]}}}}}}
eval: {{batch_size: 8, n_boot: 20, max_new_tokens: {{oeqa: 3}}}}
tracks:
  - name: facts
    pool: {{data: "facts:train", sample: 8}}
    probe: {{k: 2, max_new_tokens: 3, prompt: query_0shot}}
    build: {{n_total: 4, tau: 0.0}}
    test_sets: [{{name: facts-id, data: "facts:test_id", sample: 4, domain: ID}}]
"""


def test_every_kind_of_method_trains_on_the_loops_seed(tmp_path, tiny_model_dir):
    """Issue 32: one precedence for SFT, DPO and GRPO: each seed of `seeds` is the seed each method trains with."""
    from rait.artifacts import read_manifest

    text = GRPO_RUN.format(model=tiny_model_dir, start="cor_rait").replace(
        "methods: [cor_rait, grpo_rait]", "seeds: [3, 4]\nmethods: [cor_rait, dpo_rait, grpo_rait]\n"
        "dpo: {pairs_from: cor_rait, train: {batch_size: 2, max_steps: 1}}")
    config = tmp_path / "seeds.yaml"
    config.write_text(text)
    out = tmp_path / "out"
    assert run(["run", str(config), "--out", str(out)]) == 0
    for seed in (3, 4):
        for method in ("cor_rait", "dpo_rait", "grpo_rait"):
            folder = out / "facts" / f"seed-{seed}" / "train" / method
            train = json.loads((folder / "stage.json").read_text())["parts"]["train"]
            assert (train if method == "cor_rait" else train["train"])["seed"] == seed, (method, seed)
            assert read_manifest(folder / "train.json")["seed"] == seed, (method, seed)  # what the trainer was given


def test_grpo_rait_trains_from_cor_rait_in_rait_run_and_reaches_the_report(tmp_path, tiny_model_dir):
    """Issue 21: GRPO-RAIT beside an SFT method in `rait run`, continuing Cor-RAIT's adapter; its row, its reward
    curve in the report, its stages planned; a rerun reads it from the cache."""
    config = tmp_path / "grpo.yaml"
    config.write_text(GRPO_RUN.format(model=tiny_model_dir, start="cor_rait"))
    out = tmp_path / "out"
    before = resolve(PipelineConfig.from_yaml(config), out)
    assert run(["run", str(config), "--out", str(out)]) == 0
    assert "| GRPO-RAIT |" in (out / "results.md").read_text()
    summary = json.loads((out / "facts" / "train" / "grpo_rait" / "train.json").read_text())
    assert summary["objective"] == "grpo" and summary["start_adapter"].endswith("cor_rait")
    steps = (out / "facts" / "train" / "grpo_rait" / "rewards.jsonl").read_text().splitlines()
    assert len(steps) == 2 and (out / "grpo_rewards.png").is_file()
    assert "GRPO-RAIT's training" in (out / "report.html").read_text()
    assert_planned(config, out, before)
    assert run(["run", str(config), "--out", str(out)]) == 0
    assert all(stage_log(out).values())  # every stage cached


@pytest.mark.parametrize("start, grpo_line, words", [
    ("van_tuning", 5, ["start_from", "does not train"]),
    ("p_ik", 5, ["start_from", "no SFT adapter"]),
])
def test_a_bad_grpo_start_is_refused_at_its_line(tmp_path, tiny_model_dir, capsys, start, grpo_line, words):
    config = tmp_path / "grpo.yaml"
    config.write_text(GRPO_RUN.format(model=tiny_model_dir, start=start))
    assert run(["run", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{config}:{grpo_line}" in err and all(w in err for w in words), err
    assert not (tmp_path / "out" / "facts" / "probe").exists()


def test_a_grpo_group_of_one_is_refused_at_its_line(tmp_path, tiny_model_dir, capsys):
    config = tmp_path / "grpo.yaml"
    config.write_text(GRPO_RUN.format(model=tiny_model_dir, start="cor_rait").replace("num_generations: 2",
                                                                                      "num_generations: 1"))
    assert run(["run", str(config), "--out", str(tmp_path / "out")]) == 2
    assert f"{config}:5" in (err := capsys.readouterr().err) and "num_generations" in err


def test_a_pool_too_small_for_one_grpo_step_is_refused_before_any_work(tmp_path, tiny_model_dir, capsys):
    config = tmp_path / "grpo.yaml"
    config.write_text(GRPO_RUN.format(model=tiny_model_dir, start="cor_rait").replace("sample: 8}", "sample: 1}"))
    assert run(["run", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "a step takes 2" in err and f"{config}:" in err
    assert not (tmp_path / "out" / "facts" / "probe").exists()


def test_transfer_methods_run_inside_rait_run_on_the_wide_pool(tmp_path, tiny_model_dir):
    """docs/transfer.md at tiny size: Consistency-RAIT, balance by relation and a subset of relations, trained on
    facts:train_wide, with the validation-OOD and general validation sets (domain VAL) in the report."""
    config = tmp_path / "transfer.yaml"
    config.write_text(f"""
model: {tiny_model_dir}
methods: [cor_rait, consistency_rait]
train: {{epochs: 1, batch_size: 4, grad_accum: 1, lora: {{r: 4, alpha: 8, dropout: 0.0, layers: [1], target_modules: [q_proj]}}}}
eval: {{batch_size: 8, n_boot: 20, max_new_tokens: {{oeqa: 3}}}}
tracks:
  - name: facts
    pool: {{data: "facts:train_wide", sample: 24, validation: 16, stratify: subject}}
    probe: {{k: 2, max_new_tokens: 3, prompt: query_0shot}}
    build: {{n_total: 4, tau: 0.0, idk_share: 0.0, balance: subject, subjects: [addition, multiplication, square, roman_numeral, month_translation, country_neighbour]}}
    test_sets:
      - {{name: validation-ood, data: "facts:validation_ood", sample: 4, domain: VAL}}
      - {{name: general, data: "general:validation", sample: 4, domain: VAL}}
""")
    out = tmp_path / "out"
    assert run(["run", str(config), "--out", str(out)]) == 0
    assert_planned(config, out)
    import pandas as pd

    results = pd.read_csv(out / "results.csv")
    assert {"Cor-RAIT", "Consistency-RAIT"} <= set(results["method"])
    assert set(results.loc[results["test_set"].isin(["validation-ood", "general"]), "domain"]) == {"VAL"}
    summary = json.loads((out / "facts" / "build" / "summary.json").read_text())
    pool = {json.loads(line)["id"]: json.loads(line)["subject"] for line in (out / "facts" / "pool.jsonl").read_text().splitlines()}
    for name in ("cor_rait", "consistency_rait"):
        assert summary["methods"][name]["report"]["balance"]["by"] == "subject"
        rows = [json.loads(line) for line in (out / "facts" / "build" / f"{name}.jsonl").read_text().splitlines()]
        assert rows and {pool[row["id"]] for row in rows} <= {"addition", "multiplication", "square", "roman_numeral",
                                                               "month_translation", "country_neighbour"}
