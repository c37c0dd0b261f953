"""GRPO-RAIT (rait.train.grpo): the three-way reward, the checks before any work, a two-step run on the tiny model."""

from __future__ import annotations

import json

import pytest

from rait.data import write_records
from rait.data.records import QARecord
from rait.errors import DataError, SettingsError
from rait.train import LoraSettings, TrainSettings, load_trained
from rait.train.grpo import GRPOSettings, OutcomeReward, grpo_dataset, run

FAST = TrainSettings(lora=LoraSettings(r=4, alpha=8, dropout=0.0), max_steps=2, batch_size=4, grad_accum=1,
                     warmup=0.0, learning_rate=1e-3)
CAPITAL = QARecord(id="q1", question="What is the capital of France?", source="facts", split="train",
                   answer="Paris", aliases=["City of Light"])
LETTERS = QARecord(id="m1", question="2 + 2 = ?", source="mmlu", split="train", choices=["3", "4", "5", "6"],
                   gold="B")


def test_the_reward_ranks_correct_over_refused_over_wrong_by_rait_scorer():
    reward = OutcomeReward({"q1": CAPITAL, "m1": LETTERS}, {"correct": 1.0, "refused": 0.0, "wrong": -1.0})
    completions = ["Paris.", "It is the City of Light", "I don't know.", "Lyon", "", "The answer is B", "A"]
    ids = ["q1"] * 5 + ["m1"] * 2
    shares = {}
    rewards = reward(prompts=[None] * 7, completions=completions, id=ids,
                     log_metric=lambda name, value: shares.__setitem__(name, value))
    assert rewards == [1.0, 1.0, 0.0, -1.0, -1.0, 1.0, -1.0]  # gold, alias, refusal, wrong, empty; MCQA right, wrong
    assert shares == pytest.approx({"share_correct": 3 / 7, "share_refused": 1 / 7, "share_wrong": 3 / 7})
    chat = [[{"role": "assistant", "content": text}] for text in ("Paris", "I don't know")]  # TRL's conversational form
    assert reward(prompts=[None] * 2, completions=chat, id=["q1", "q1"]) == [1.0, 0.0]
    # the weights and the refusal rule are the config's: "I'm not sure" refuses under "keywords", not "paper"
    weighted = OutcomeReward({"q1": CAPITAL}, {"correct": 2.0, "refused": 0.5, "wrong": -3.0}, refusal_mode="keywords")
    assert weighted(prompts=[None] * 3, completions=["Paris", "I'm not sure", "Rome"], id=["q1"] * 3) == [2.0, 0.5, -3.0]
    assert reward(prompts=[None], completions=["I'm not sure"], id=["q1"]) == [-1.0]


def test_bad_settings_and_questions_without_gold_are_refused_before_any_work(tmp_path):
    with pytest.raises(SettingsError, match="num_generations"):
        GRPOSettings(num_generations=1, train=FAST)
    with pytest.raises(SettingsError, match="multiple of num_generations"):
        GRPOSettings(num_generations=3, train=FAST)
    with pytest.raises(SettingsError, match="correct > refused > wrong"):
        GRPOSettings(rewards={"correct": 1.0, "refused": -2.0, "wrong": -1.0}, train=FAST)
    with pytest.raises(SettingsError, match="rewards"):
        GRPOSettings(rewards={"correct": 1.0, "wrong": -1.0}, train=FAST)
    no_gold = QARecord(id="q2", question="Who?", source="facts", split="train")
    with pytest.raises(DataError) as err:
        grpo_dataset([CAPITAL, no_gold], GRPOSettings(train=FAST), "pool.jsonl")
    assert (err.value.line, err.value.field) == (2, "answer")
    bad_letter = QARecord(id="m2", question="?", source="mmlu", split="train", choices=["a", "b"], gold="7")
    with pytest.raises(DataError, match="gold letter"):
        grpo_dataset([bad_letter], GRPOSettings(train=FAST))
    rows = grpo_dataset([CAPITAL], GRPOSettings(train=FAST))[0]
    assert rows["id"] == "q1" and rows["prompt"][-1]["role"] == "user" and "France" in rows["prompt"][-1]["content"]


def test_two_grpo_steps_write_an_adapter_that_rait_eval_loads(tiny_model_dir, tmp_path):
    from test_cli import run as cli

    pool = tmp_path / "pool.jsonl"
    write_records(pool, [CAPITAL, QARecord(id="q3", question="What is the capital of Spain?", source="facts",
                                           split="train", answer="Madrid")])
    settings = GRPOSettings(num_generations=2, max_completion_length=4, save_steps=1, train=FAST)
    result = run(settings, pool, tmp_path / "out", model=tiny_model_dir, progress=False)
    assert result.optimizer_steps == 2
    summary = json.loads((tmp_path / "out" / "train.json").read_text())
    assert summary["objective"] == "grpo" and summary["saved"] == "adapter"
    assert not list((tmp_path / "out").glob("checkpoint-*"))  # spent once the adapter is saved
    rewards = [json.loads(line) for line in (tmp_path / "out" / "rewards.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rewards] == [1, 2]
    for row in rewards:
        assert row["correct"] + row["refused"] + row["wrong"] == pytest.approx(1.0)
        assert row["reward"] == pytest.approx(row["correct"] - row["wrong"])  # +1 / 0 / -1
        assert row["generation_seconds"] + row["update_seconds"] == pytest.approx(row["seconds"], abs=2e-3)
        assert 0 < row["generation_seconds"] < row["seconds"]
    model, _ = load_trained(tmp_path / "out")
    assert model is not None
    test = tmp_path / "test.jsonl"
    write_records(test, [CAPITAL])
    assert cli(["eval", "--data", str(test), "--model", str(tmp_path / "out"), "--max-new-tokens", "3",
                "--out", str(tmp_path / "eval")]) == 0
    assert (tmp_path / "eval" / "outcomes.jsonl").is_file()


def test_a_killed_grpo_run_resumes_from_its_last_checkpoint(tiny_model_dir, tmp_path, monkeypatch):
    import rait.train.grpo as grpo

    pool = tmp_path / "pool.jsonl"
    write_records(pool, [CAPITAL])
    settings = GRPOSettings(num_generations=2, max_completion_length=4, save_steps=1, train=FAST)
    with pytest.raises(DataError, match="a step takes 2"):  # one question, two per step: no step
        run(settings, pool, tmp_path / "out", model=tiny_model_dir, progress=False)
    write_records(pool, [CAPITAL, LETTERS])
    real = grpo.make_trainer_class

    def killed_in_step_two():
        class Killed(real()):
            def training_step(self, *args, **kwargs):
                if self.state.global_step == 1:
                    raise KeyboardInterrupt
                return super().training_step(*args, **kwargs)
        return Killed

    monkeypatch.setattr(grpo, "make_trainer_class", killed_in_step_two)
    with pytest.raises(KeyboardInterrupt):
        run(settings, pool, tmp_path / "out", model=tiny_model_dir, progress=False)
    assert (tmp_path / "out" / "checkpoint-1").is_dir() and not (tmp_path / "out" / "train.json").exists()
    monkeypatch.setattr(grpo, "make_trainer_class", real)
    result = run(settings, pool, tmp_path / "out", model=tiny_model_dir, progress=False)
    summary = json.loads((tmp_path / "out" / "train.json").read_text())
    assert result.optimizer_steps == 2 and summary["resumed_from"] == "checkpoint-1"
    assert [json.loads(line)["step"] for line in (tmp_path / "out" / "rewards.jsonl").read_text().splitlines()] == [1, 2]


def test_rait_train_objective_grpo_from_the_command_line(tiny_model_dir, tmp_path):
    from test_cli import run as cli

    pool = tmp_path / "pool.jsonl"
    write_records(pool, [CAPITAL, LETTERS])
    assert cli(["train", "--objective", "grpo", "--data", str(pool), "--model", str(tiny_model_dir), "--max-steps", "1",
                "--batch-size", "2", "--grad-accum", "1", "--num-generations", "2", "--max-completion-length", "3",
                "--lora-r", "4", "--target-modules", "q_proj", "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "train.json").read_text())
    assert summary["objective"] == "grpo" and summary["optimizer_steps"] == 1 and summary["grpo"]["beta"] == 0.0
    assert cli(["train", "--objective", "grpo", "--data", str(pool), "--model", str(tiny_model_dir),
                "--num-generations", "1", "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()
