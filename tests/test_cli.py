"""The command line: happy paths on small inputs, and bad input -> one line, exit 2, no artifact."""

import json
import os
import subprocess
import sys

import pytest

from rait.cli import main
from rait.data import QARecord, read_records, write_records


def run(argv):
    """Run the CLI in-process; return its exit status (0 when it returns normally)."""
    try:
        main(argv)
    except SystemExit as exit_:
        return exit_.code
    return 0


def _records():
    return [
        QARecord(id="o1", question="What is the capital of France?", source="facts", split="test", answer="Paris"),
        QARecord(id="o2", question="Who wrote Hamlet?", source="facts", split="test", answer="Shakespeare"),
        QARecord(id="m1", question="2 + 2 = ?", source="toy", split="test", subject="math",
                 choices=["3", "4", "5", "6"], gold="B", metadata={"subject_name": "math"}),
    ]


def test_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "rait", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("data", "model", "probe", "build", "train", "eval", "run"):
        assert command in out


@pytest.mark.usefixtures("shipped_data")
def test_data_load_writes_records_and_manifest(tmp_path):
    out = tmp_path / "mmlu_dev.jsonl"
    assert run(["data", "load", "mmlu:dev", "--out", str(out), "--limit", "7"]) == 0
    records = read_records(out)
    assert len(records) == 7 and all(r.task == "mcqa" for r in records)
    manifest = json.loads((tmp_path / "mmlu_dev.jsonl.manifest.json").read_text())
    assert manifest["settings"]["data"] == "mmlu:dev"


@pytest.mark.parametrize(
    "line, field",
    [
        ('{"id": "x", "question": "q", "source": "s", "split": "t", "choices": ["a", "b"], "gold": "C"}', "gold"),
        ('{"id": "x", "question": "q", "source": "s", "split": "t"}', "answer"),
        ('{"id": "x", "question": "q", "source": "s", ', None),
    ],
)
def test_bad_record_is_one_line_naming_file_line_and_field(tmp_path, capsys, line, field):
    bad = tmp_path / "bad.jsonl"
    good = json.dumps(_records()[0].to_dict())
    bad.write_text(good + "\n" + line + "\n")
    assert run(["data", "validate", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{bad}:2" in err
    if field:
        assert f"field '{field}'" in err


def test_empty_file_and_no_half_written_output(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    out_dir = tmp_path / "split"
    assert run(["data", "split", str(empty), "--out-dir", str(out_dir)]) == 2
    assert "empty" in capsys.readouterr().err
    assert not out_dir.exists() or not any(out_dir.iterdir())


@pytest.mark.usefixtures("shipped_data")
def test_split_command_is_deterministic(tmp_path):
    source = tmp_path / "all.jsonl"
    assert run(["data", "load", "nq:dev", "--out", str(source), "--limit", "50"]) == 0
    for name in ("a", "b"):
        assert run(["data", "split", str(source), "--out-dir", str(tmp_path / name), "--test-size", "10", "--seed", "3"]) == 0
    assert (tmp_path / "a" / "test.jsonl").read_bytes() == (tmp_path / "b" / "test.jsonl").read_bytes()
    assert len(read_records(tmp_path / "a" / "test.jsonl")) == 10


def test_facts_command_writes_three_splits(tmp_path):
    assert run(["data", "facts", "--out", str(tmp_path), "--seed", "0"]) == 0
    for name in ("train", "test_id", "test_ood"):
        assert read_records(tmp_path / f"{name}.jsonl")


def test_wrong_model_path_is_a_clear_error(tmp_path, capsys):
    assert run(["model", "info", str(tmp_path / "nowhere")]) == 2
    assert "model folder not found" in capsys.readouterr().err


def test_unknown_dataset_spec(tmp_path, capsys):
    assert run(["data", "load", "squad:dev", "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "squad" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()


def test_eval_then_reference_gives_ths(tmp_path, tiny_model_dir):
    data = tmp_path / "test.jsonl"
    write_records(data, _records())
    common = ["--model", str(tiny_model_dir), "--data", str(data), "--max-new-tokens", "4", "--n-boot", "50"]
    assert run(["eval", *common, "--prompt", "basic", "--out", str(tmp_path / "basic")]) == 0
    assert run(["eval", *common, "--prompt", "refuse", "--out", str(tmp_path / "refuse"),
                "--reference", str(tmp_path / "basic")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "refuse" / "outcomes.jsonl").read_text().splitlines()]
    assert [row["id"] for row in rows] == ["o1", "o2", "m1"]
    assert {row["outcome"] for row in rows} <= {"correct", "wrong", "refused", "unparsed"}
    metrics = json.loads((tmp_path / "refuse" / "metrics.json").read_text())
    assert sum(metrics[k]["value"] for k in ("pc", "pw", "pr", "pu")) == pytest.approx(100)
    basic = json.loads((tmp_path / "basic" / "metrics.json").read_text())
    assert "ths" not in basic
    if basic["pw"]["value"] == 0:
        assert metrics["ths"] is None  # undefined: the reference made no wrong answer
    else:
        assert metrics["ths"]["low"] <= metrics["ths"]["value"] <= metrics["ths"]["high"]


def test_build_command_writes_each_method(tmp_path):
    import pandas as pd

    from rait.probe.table import write_table

    records = [QARecord(id=f"q{i}", question=f"Question {i}?", source="facts", split="train", answer=f"A{i}")
               for i in range(10)]
    write_records(tmp_path / "pool.jsonl", records)
    mu = [1.0, 0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1, 0.0]
    table = pd.DataFrame({"id": [r.id for r in records], "task": "oeqa", "mu": mu, "sigma": [0.5] * 10})
    write_table(table, tmp_path / "table.jsonl")
    out = tmp_path / "built"
    assert run(["build", "--table", str(tmp_path / "table.jsonl"), "--records", str(tmp_path / "pool.jsonl"),
                "--out", str(out), "--method", "cor_rait", "--method", "van_tuning", "--n-total", "5"]) == 0
    rows = [json.loads(line) for line in (out / "cor_rait.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and sum(row["kind"] == "idk" for row in rows) == 1
    assert all(row["completion"][0]["content"] == "I don't know" for row in rows if row["kind"] == "idk")
    assert (out / "van_tuning.jsonl").exists() and (out / "summary.md").exists()


def test_build_without_flow_refuses_craft(tmp_path, capsys):
    import pandas as pd

    from rait.probe.table import write_table

    write_records(tmp_path / "pool.jsonl", _records()[:2])
    write_table(pd.DataFrame({"id": ["o1", "o2"], "task": "oeqa", "mu": [1.0, 0.0], "sigma": [0.5, 0.5]}),
                tmp_path / "table.jsonl")
    assert run(["build", "--table", str(tmp_path / "table.jsonl"), "--records", str(tmp_path / "pool.jsonl"),
                "--out", str(tmp_path / "b"), "--method", "craft"]) == 2
    assert "delta_mu" in capsys.readouterr().err


def test_eval_rerun_reuses_the_cached_run(tmp_path, tiny_model_dir):
    data = tmp_path / "test.jsonl"
    write_records(data, _records())
    argv = ["eval", "--model", str(tiny_model_dir), "--data", str(data), "--max-new-tokens", "3", "--n-boot", "20",
            "--prompt", "basic", "--out", str(tmp_path / "run")]
    assert run(argv) == 0
    first = (tmp_path / "run" / "metrics.json").read_text()
    assert run(argv) == 0
    assert (tmp_path / "run" / "metrics.json").read_text() == first  # same seconds: reused, not recomputed
    # the answers are cached, the metrics follow the reference: THS appears once a reference is named
    outcomes = (tmp_path / "run" / "outcomes.jsonl").read_text()
    assert run(argv[:-1] + [str(tmp_path / "ref")]) == 0
    assert run(argv + ["--reference", str(tmp_path / "ref")]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "ths" in metrics and "ths" not in json.loads(first) and metrics["seconds"] == json.loads(first)["seconds"]
    assert (tmp_path / "run" / "outcomes.jsonl").read_text() == outcomes


def test_probe_command_writes_a_knowledge_table(tmp_path, tiny_model_dir):
    from rait.probe.table import read_table

    def mcqa(i, split):
        return QARecord(id=f"{split}{i}", question=f"Pick {i}", source="toy", split=split, subject="toy",
                        choices=["w", "x", "y", "z"], gold="ABCD"[i % 4], metadata={"subject_name": "toy"})

    write_records(tmp_path / "pool.jsonl", [mcqa(i, "test") for i in range(5)])
    write_records(tmp_path / "shots.jsonl", [mcqa(i, "val") for i in range(2)])
    out = tmp_path / "table.parquet"
    assert run(["probe", "--model", str(tiny_model_dir), "--data", str(tmp_path / "pool.jsonl"), "--out", str(out),
                "--exemplars", str(tmp_path / "shots.jsonl"), "--shots", "2"]) == 0
    table = read_table(out)
    assert list(table["id"]) == [f"test{i}" for i in range(5)]
    assert table["mu"].between(0, 1).all() and (table["sigma"] <= 0).all()


def test_train_then_eval_the_trained_model(tmp_path, tiny_model_dir):
    from rait.prompts import training_example

    rows = []
    for i, record in enumerate(_records()[:2] * 4):
        target = "I don't know" if i % 2 else record.answer
        rows.append({"id": f"{record.id}-{i}", "weight": 1.0 + i % 2, **training_example(record, "refuse", target)})
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "trained"
    assert run(["train", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(out), "--epochs", "1",
                "--batch-size", "4", "--grad-accum", "1", "--lora-r", "4", "--lora-alpha", "8", "--lr", "1e-2"]) == 0
    assert (out / "train.json").exists()
    write_records(tmp_path / "test.jsonl", _records()[:2])
    assert run(["eval", "--model", str(out), "--data", str(tmp_path / "test.jsonl"), "--max-new-tokens", "3",
                "--n-boot", "10", "--out", str(tmp_path / "eval")]) == 0
    manifest = json.loads((tmp_path / "eval" / "outcomes.jsonl.manifest.json").read_text())
    assert manifest["model"]["trained"] == str(out)


def test_bad_training_weight_is_a_clear_error(tmp_path, capsys, tiny_model_dir):
    from rait.prompts import training_example

    rows = [{"id": "a", "weight": 1.0, **training_example(_records()[0], "refuse", "Paris")},
            {"id": "b", "weight": -1.0, **training_example(_records()[1], "refuse", "Shakespeare")}]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert run(["train", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert "train.jsonl:2" in err and "weight" in err
    assert not (tmp_path / "t" / "train.json").exists()


def test_grads_then_build_grait(tmp_path, tiny_model_dir):
    import pandas as pd

    from rait.probe.table import write_table

    records = [QARecord(id=f"q{i}", question=f"What is item {i}?", source="facts", split="train", answer=f"thing {i}")
               for i in range(8)]
    write_records(tmp_path / "pool.jsonl", records)
    mu = [1.0, 1.0, 0.9, 0.8, 0.2, 0.1, 0.0, 0.0]
    write_table(pd.DataFrame({"id": [r.id for r in records], "task": "oeqa", "mu": mu, "sigma": [0.5] * 8}),
                tmp_path / "table.jsonl")
    assert run(["grads", "--model", str(tiny_model_dir), "--records", str(tmp_path / "pool.jsonl"),
                "--table", str(tmp_path / "table.jsonl"), "--out", str(tmp_path / "g"), "--dims", "64",
                "--n-rehearsal", "4", "--warmup-epochs", "1", "--batch-size", "4"]) == 0
    assert run(["build", "--table", str(tmp_path / "table.jsonl"), "--records", str(tmp_path / "pool.jsonl"),
                "--out", str(tmp_path / "b"), "--method", "grait", "--grads", str(tmp_path / "g" / "store"),
                "--n-vanilla", "3", "--n-idk", "2"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "b" / "grait.jsonl").read_text().splitlines()]
    idk = [row for row in rows if row["kind"] == "idk"]
    assert len(idk) == 2 and sum(row["weight"] for row in idk) == pytest.approx(1.0)  # N_idk / 2
    assert all(row["weight"] == 1 for row in rows if row["kind"] == "vanilla")


def test_eval_applies_abstention_by_confidence_choosing_or_taking_the_threshold(tmp_path, tiny_model_dir):
    records = [QARecord(id=f"q{i}", question=f"What is item {i}?", source="facts", split="test", answer=f"thing {i}")
               for i in range(4)]
    write_records(tmp_path / "items.jsonl", records)
    (tmp_path / "conf.jsonl").write_text("".join(json.dumps({"id": f"q{i}", "confidence": i / 4}) + "\n"
                                                 for i in range(4)))
    common = ["eval", "--data", str(tmp_path / "items.jsonl"), "--model", str(tiny_model_dir), "--prompt", "basic",
              "--max-new-tokens", "3", "--n-boot", "20", "--confidence", str(tmp_path / "conf.jsonl")]
    assert run(common + ["--out", str(tmp_path / "val")]) == 0
    chosen = json.loads((tmp_path / "val" / "abstain" / "metrics.json").read_text())
    assert chosen["threshold_chosen_on_these_items"] and "aurc" in chosen
    assert run(common + ["--threshold", "0.5", "--out", str(tmp_path / "test")]) == 0
    applied = json.loads((tmp_path / "test" / "abstain" / "metrics.json").read_text())
    outcomes = [json.loads(line) for line in (tmp_path / "test" / "abstain" / "outcomes.jsonl").read_text().splitlines()]
    assert applied["threshold"] == 0.5 and not applied["threshold_chosen_on_these_items"]
    assert [row["outcome"] for row in outcomes][:2] == ["refused", "refused"]  # confidence 0 and 0.25


def test_pik_scores_items_for_eval(tmp_path, tiny_model_dir, capsys):
    import pandas as pd

    from rait.probe.table import write_table

    pool = [QARecord(id=f"p{i}", question=f"What is item {i}?", source="facts", split="train", answer=f"thing {i}")
            for i in range(8)]
    write_records(tmp_path / "pool.jsonl", pool)
    write_table(pd.DataFrame({"id": [r.id for r in pool], "task": "oeqa", "mu": [1.0, 0.0] * 4, "sigma": 0.5}),
                tmp_path / "table.jsonl")
    write_records(tmp_path / "items.jsonl", pool[:3])
    common = ["pik", "--table", str(tmp_path / "table.jsonl"), "--records", str(tmp_path / "pool.jsonl"),
              "--items", str(tmp_path / "items.jsonl"), "--model", str(tiny_model_dir)]
    assert run(common + ["--out", str(tmp_path / "pik.jsonl")]) == 0
    scores = [json.loads(line) for line in (tmp_path / "pik.jsonl").read_text().splitlines()]
    assert [row["id"] for row in scores] == ["p0", "p1", "p2"] and all(0 <= row["confidence"] <= 1 for row in scores)
    assert run(common + ["--tau", "0.0", "--out", str(tmp_path / "one.jsonl")]) == 2  # every question known
    assert "both sides" in capsys.readouterr().err and not (tmp_path / "one.jsonl").exists()
    assert run(["eval", "--data", str(tmp_path / "items.jsonl"), "--model", str(tiny_model_dir), "--confidence",
                str(tmp_path / "pik.jsonl"), "--threshold", "1.5", "--out", str(tmp_path / "e")]) == 2
    assert "--threshold" in capsys.readouterr().err


def test_train_with_the_dpo_objective_writes_a_loadable_adapter(tmp_path, tiny_model_dir, capsys):
    pair = {"prompt": [{"role": "user", "content": "What is it?"}], "chosen": [{"role": "assistant", "content": "it"}],
            "rejected": [{"role": "assistant", "content": "I don't know"}]}
    (tmp_path / "pairs.jsonl").write_text(json.dumps(pair) + "\n" + json.dumps(pair) + "\n")
    common = ["train", "--data", str(tmp_path / "pairs.jsonl"), "--model", str(tiny_model_dir), "--objective", "dpo",
              "--lora-r", "4", "--lora-alpha", "8", "--epochs", "1", "--batch-size", "2", "--grad-accum", "1"]
    assert run(common + ["--beta", "0", "--out", str(tmp_path / "bad")]) == 2
    assert "--beta" in capsys.readouterr().err and not (tmp_path / "bad" / "train.json").exists()
    assert run(common + ["--out", str(tmp_path / "dpo")]) == 0
    assert json.loads((tmp_path / "dpo" / "train.json").read_text())["objective"] == "dpo"


def test_rehearse_takes_the_same_training_options_as_train(tmp_path, monkeypatch):
    """Issue 16: `rait rehearse` hard-coded LoRA r 64 / alpha 16 / dropout 0.1 on all linear layers; its
    training options are now `rait train`'s, defined once."""
    from types import SimpleNamespace

    import pandas as pd

    import rait.rehearse
    from rait.probe.table import write_table

    seen = {}

    def rehearse(settings, *args, **kwargs):
        seen["settings"] = settings
        return SimpleNamespace(rehearsal_samples=1, updates=1, out_dir=tmp_path / "r")

    monkeypatch.setattr(rait.rehearse, "run", rehearse)
    records = [QARecord(id="q0", question="What is it?", source="facts", split="train", answer="it")]
    write_records(tmp_path / "pool.jsonl", records)
    write_table(pd.DataFrame({"id": ["q0"], "task": "oeqa", "mu": [1.0], "sigma": [1.0]}), tmp_path / "t.jsonl")
    assert run(["rehearse", "--table", str(tmp_path / "t.jsonl"), "--data", str(tmp_path / "pool.jsonl"),
         "--out", str(tmp_path / "r"), "--lora-r", "8", "--lora-alpha", "32", "--lora-dropout", "0.0",
         "--target-modules", "q_proj,v_proj", "--epochs", "2", "--n", "5", "--seed", "3"]) == 0
    settings = seen["settings"]
    assert (settings.n, settings.seed, settings.train.seed, settings.train.epochs) == (5, 3, 3, 2.0)
    lora = settings.train.lora
    assert (lora.r, lora.alpha, lora.dropout, lora.target_modules) == (8, 32, 0.0, ["q_proj", "v_proj"])
    help_text = subprocess.run([sys.executable, "-m", "rait", "rehearse", "--help"], capture_output=True, text=True,
                               check=True).stdout
    assert "--lora-r" in help_text and "--target-modules" in help_text


@pytest.mark.parametrize("objective", ["sft", "dpo", "grpo"])
def test_train_starts_from_its_objectives_recipe_and_sets_only_the_given_options(tmp_path, monkeypatch, objective):
    """Issue 32: `rait train --objective grpo` trained with the SFT defaults (lr 2e-4, 3 epochs, accumulation 2)
    while `rait run` used GRPO-RAIT's recipe; DPO's beta default was restated in the CLI."""
    from dataclasses import asdict
    from types import SimpleNamespace

    import rait.train
    import rait.train.grpo
    import rait.train.preference
    from rait.train import TrainSettings
    from rait.train.grpo import GRPOSettings
    from rait.train.preference import DPOSettings

    seen = {}

    def fit(settings, *args, **kwargs):
        seen["settings"] = settings
        return SimpleNamespace(samples=1, optimizer_steps=1, train_loss=0.0, out_dir=tmp_path / "t")

    module = {"sft": rait.train, "dpo": rait.train.preference, "grpo": rait.train.grpo}[objective]
    monkeypatch.setattr(module, "run", fit)
    records = [QARecord(id="q0", question="What is it?", source="facts", split="train", answer="it")]
    write_records(tmp_path / "data.jsonl", records)
    command = ["train", "--data", str(tmp_path / "data.jsonl"), "--objective", objective, "--seed", "5"]
    assert run(command + ["--out", str(tmp_path / "a")]) == 0
    settings = seen["settings"]
    train = settings if objective == "sft" else settings.train
    recipe = {"sft": TrainSettings(), "dpo": TrainSettings(), "grpo": GRPOSettings().train}[objective]
    assert asdict(train) == asdict(recipe) | {"seed": 5}
    if objective != "sft":
        assert settings.beta == {"dpo": DPOSettings, "grpo": GRPOSettings}[objective].beta
    assert run(command + ["--out", str(tmp_path / "b"), "--lr", "3e-5", "--lora-r", "8", "--max-steps", "7"]) == 0
    train = seen["settings"] if objective == "sft" else seen["settings"].train
    assert asdict(train) == asdict(recipe) | {"seed": 5, "learning_rate": 3e-5, "max_steps": 7,
                                              "lora": asdict(recipe.lora) | {"r": 8}}


# Each command's settings classes, and the options whose names differ from their fields (field paths)
COMMAND_SETTINGS = {
    "data load": ("rait.data.stage:DataSettings",),
    "probe": ("rait.probe.stage:ProbeSettings", "rait.data.stage:DataSettings"),
    "grads": ("rait.grads:GradsSettings",),
    "build": ("rait.select:BuildSettings",),
    "train": ("rait.train:TrainSettings",),
    "rehearse": ("rait.rehearse:RehearseSettings", "rait.train:TrainSettings"),
    "eval": ("rait.evaluate.runner:EvalSettings", "rait.data.stage:DataSettings"),
    "pik": ("rait.select:BuildSettings",),
}
RENAMED = {"lora_r": "lora.r", "lora_alpha": "lora.alpha", "lora_dropout": "lora.dropout",
           "target_modules": "lora.target_modules", "lr": "learning_rate", "warmup_epochs": "warmup.epochs"}


def test_every_cli_default_is_its_settings_default():
    """Issue 32: a default is written once, in the settings dataclass; an option that shows one shows that one
    (None: the command leaves the setting to the class)."""
    import dataclasses
    import importlib

    import typer.main

    from rait.cli import app

    def commands(group, prefix=""):
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                yield from commands(command, f"{prefix}{name} ")
            else:
                yield prefix + name, command

    def default_of(settings, path: str):
        for part in path.split("."):
            fields = {f.name: f for f in dataclasses.fields(settings)}
            if part not in fields:
                return dataclasses.MISSING
            settings = getattr(settings, part)
        return settings

    by_name = dict(commands(typer.main.get_command(app)))
    assert set(COMMAND_SETTINGS) <= set(by_name)
    checked = 0
    for name, paths in COMMAND_SETTINGS.items():
        instances = []
        for path in paths:
            module, cls = path.split(":")
            settings = getattr(importlib.import_module(module), cls)
            required = [f.name for f in dataclasses.fields(settings) if f.default is dataclasses.MISSING
                        and f.default_factory is dataclasses.MISSING]
            instances.append(settings(**{field: "nq:dev" for field in required}))
        for param in by_name[name].params:
            if param.name in ("seed", "data") or param.default is None:
                continue
            field = RENAMED.get(param.name, param.name)
            default = next((d for s in instances if (d := default_of(s, field)) is not dataclasses.MISSING),
                           dataclasses.MISSING)
            if default is dataclasses.MISSING:
                continue
            if isinstance(default, tuple):  # a comma list on the command line
                default = ",".join(map(str, default))
            assert param.default == default, f"rait {name} --{param.name}: {param.default!r} vs {default!r}"
            checked += 1
    assert checked >= 30


@pytest.mark.parametrize("signum, code, name", [(2, 130, "Ctrl-C"), (15, 143, "SIGTERM")])
def test_an_interrupted_probe_exits_non_zero_keeps_its_finished_shards_and_says_how_to_resume(
        tmp_path, tiny_model_dir, signum, code, name):
    """Typer hands an interrupt back as a return code; `main` must turn it into the exit status (it once
    exited 0, so `rait probe ... && rait build ...` carried on without a table)."""
    import os
    import signal
    import time

    from rait.probe.shards import default_work_dir

    records = [QARecord(id=f"q{i}", question=f"What is item {i}?", source="toy", split="train", answer=f"a{i}")
               for i in range(4000)]  # minutes of probing: the signal must land mid-run even on a loaded box
    write_records(tmp_path / "pool.jsonl", records)
    out = tmp_path / "table.parquet"
    process = subprocess.Popen(
        [sys.executable, "-m", "rait", "probe", "--model", str(tiny_model_dir), "--data", str(tmp_path / "pool.jsonl"),
         "--out", str(out), "--k", "2", "--max-new-tokens", "8", "--shard-size", "4", "--batch-size", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
        # as in a terminal: a test run started in the background (`cmd &`) inherits SIGINT ignored, and Python
        # then never raises KeyboardInterrupt (the probe ran to the end and exited 0)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    work = default_work_dir(out)
    deadline = time.monotonic() + 600  # generous: a loaded CI box may take minutes to import torch
    while not list(work.glob("shard-*.json")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert process.poll() is None, "the probe ended before it could be interrupted"
    assert list(work.glob("shard-*.json")), "no shard finished within the deadline"
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == code
    last = stderr.strip().splitlines()[-1]
    assert f"interrupted ({name})" in last and "run the same command again to resume" in last
    assert "Traceback" not in stderr
    assert not out.exists() and list(work.glob("shard-*.json"))


@pytest.mark.parametrize("case", ["probe_over_pool", "split_into_own_folder", "load_over_source", "train_over_data",
                                  "eval_over_reference", "build_over_table", "grads_over_records"])
def test_an_output_that_would_overwrite_an_input_is_refused_before_any_work(tmp_path, tiny_model_dir, capsys, case):
    """Issue 17: `rait probe --data pool.jsonl --out pool.jsonl` replaced the pool with the table and `rait data
    split train.jsonl --out-dir .` replaced the input with part of itself. Now: one line naming the input, exit 2,
    every file byte for byte as it was."""
    model, records = str(tiny_model_dir), [r for r in _records() if r.task == "oeqa"]
    pool = tmp_path / "pool.jsonl"
    write_records(pool, records)
    argv, victim = {
        "probe_over_pool": (["probe", "--model", model, "--data", str(pool), "--out", str(pool)], pool),
        "split_into_own_folder": (["data", "split", str(tmp_path / "train.jsonl"), "--out-dir", str(tmp_path)],
                                  tmp_path / "train.jsonl"),
        "load_over_source": (["data", "load", f"jsonl:{pool}", "--out", str(pool)], pool),
        "train_over_data": (["train", "--data", str(tmp_path / "train.json"), "--out", str(tmp_path), "--model", model],
                            tmp_path / "train.json"),  # training rows named like train's own summary file
        "eval_over_reference": (["eval", "--data", str(pool), "--model", model, "--out", str(tmp_path),
                                 "--reference", str(tmp_path)], tmp_path / "outcomes.jsonl"),
        "build_over_table": (["build", "--table", str(tmp_path / "cor_rait.jsonl"), "--records", str(pool),
                              "--out", str(tmp_path)], tmp_path / "cor_rait.jsonl"),
        "grads_over_records": (["grads", "--records", str(tmp_path / "store"), "--out", str(tmp_path), "--model", model],
                               tmp_path / "store"),
    }[case]
    if not victim.exists():
        write_records(victim, records)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert run(argv) == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert str(victim.resolve()) in err and "would overwrite this input" in err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


QUIET_RUN = """
model: {model}
methods: [cor_rait]
train: {{epochs: 1, batch_size: 4, grad_accum: 1, lora: {{r: 4, alpha: 8, dropout: 0.0, layers: [1], target_modules: [q_proj]}}}}
eval: {{batch_size: 8, n_boot: 20, max_new_tokens: {{oeqa: 3}}}}
tracks:
  - name: facts
    pool: {{data: "facts:train", sample: 8}}
    probe: {{k: 2, max_new_tokens: 3, prompt: query_0shot}}
    build: {{n_total: 4}}
    test_sets: [{{name: facts-id, data: "facts:test_id", sample: 4, domain: ID}}]
"""
LIBRARY_NOISE = ("Loading weights", "Tokenizing train dataset", "Truncating train dataset", "FutureWarning",
                 "pin_memory", "warnings.warn")


def test_rait_run_keeps_library_noise_out_of_the_terminal_and_in_its_log(tmp_path, tiny_model_dir):
    """Issue 19: a real process, as a user starts it: rait's stage lines in the terminal, not the libraries' bars
    and warnings, which go to <out>/rait.log; `--verbose` lets them through again."""
    config = tmp_path / "q.yaml"
    config.write_text(QUIET_RUN.format(model=tiny_model_dir))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY"):
        env.pop(name, None)
    quiet = subprocess.run([sys.executable, "-m", "rait", "run", str(config), "--out", str(tmp_path / "q")],
                           capture_output=True, text=True, env=env)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "done    facts: train cor_rait" in quiet.stderr and "done    facts: eval Cor-RAIT" in quiet.stderr
    assert not [noise for noise in LIBRARY_NOISE if noise in quiet.stderr]
    assert "\x1b" not in quiet.stderr  # a pipe gets plain lines: no control codes, no bars
    assert "FutureWarning" in (tmp_path / "q" / "rait.log").read_text()  # the trainer's deprecation, kept
    loud = subprocess.run([sys.executable, "-m", "rait", "--verbose", "run", str(config), "--out",
                           str(tmp_path / "loud")], capture_output=True, text=True, env=env)
    assert loud.returncode == 0 and "Loading weights" in loud.stderr and "Tokenizing train dataset" in loud.stderr
    # --quiet: the results table on stdout and nothing on stderr (a rerun, every stage cached)
    hushed = subprocess.run([sys.executable, "-m", "rait", "--quiet", "run", str(config), "--out", str(tmp_path / "q")],
                            capture_output=True, text=True, env=env)
    assert hushed.returncode == 0 and hushed.stderr == "" and "| Cor-RAIT |" in hushed.stdout
    wrong = subprocess.run([sys.executable, "-m", "rait", "--quiet", "run", str(tmp_path / "none.yaml")],
                           capture_output=True, text=True, env=env)
    assert wrong.returncode == 2 and "error:" in wrong.stderr  # errors are printed under --quiet too


def test_rait_run_on_a_terminal_draws_one_live_view(tmp_path, tiny_model_dir):
    """Issue 19: under a pseudo-terminal, as a user sees it: the live view (stages as rows, the running stage's bar
    with its ETA, elapsed time), and still no library output."""
    import pty
    import re

    config = tmp_path / "q.yaml"
    config.write_text(QUIET_RUN.format(model=tiny_model_dir))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TERM": "xterm-256color", "COLUMNS": "140"}
    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "rait", "run", str(config), "--out", str(tmp_path / "o")],
                               stdin=follower, stdout=follower, stderr=follower, env=env, close_fds=True)
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 1 << 16)
        except OSError:  # the process closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    assert process.wait() == 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown.decode())
    frames = text.split("rait run ")[1:]
    assert len(frames) > 2  # redrawn in place while the run went on
    assert "▶ facts: train cor_rait" in text and "· facts: eval Cor-RAIT / facts-id / refuse" in text
    assert re.search(r"eval facts-id / basic +━+ +0/4 .*ETA", text)  # the running stage's own bar, drawn at its start
    assert "6/6 stages" in frames[-1] and "✓ facts: eval Cor-RAIT / facts-id / refuse" in frames[-1]
    assert "| Cor-RAIT |" in text
    assert not [noise for noise in LIBRARY_NOISE if noise in text]
    assert "[1mrun[0m" not in text and "done    facts" not in text  # the view replaces the plain lines
