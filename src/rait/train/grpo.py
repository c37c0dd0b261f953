"""Refusal-aware reinforcement learning: TRL's `GRPOTrainer` with LoRA and a three-way reward (issue 21).

The policy answers each training question G times under the SFT methods' prompt (REFUSE); rait's own scorer
(`rait.data.scoring.score_record`, as the evaluation scores: the papers' answer matching and refusal detection) sorts every completion
into correct, refused or wrong, and the reward ranks them correct > refused > wrong: +1 / 0 / −1 by default,
TruthRL's ternary reward (Wei et al. 2025, "TruthRL: Incentivizing Truthful LLMs via Reinforcement Learning",
arXiv 2509.25760). GRPO's advantage is each completion's reward against its group's mean, so a question the model
always answers right, or always wrong, teaches nothing; one it sometimes knows teaches to answer where right
answers come up and to refuse where wrong ones do.

The questions are the training pool's (the questions every SFT method selects from), their gold answers come
with them as dataset columns, and the output has the layout of `rait train` (`adapter/`, `train.json`), so
`load_trained`, `rait eval` and `rait run`'s evaluation read it unchanged. Per optimiser step the reward's mean and
the shares of correct, refused and wrong completions are logged (`train.json`'s log history, and `rewards.jsonl`
beside it), with the step's seconds split into generation (sampling and scoring the completions) and update.
Generation goes through TRL's own path (`generate`); `use_vllm` is passed to TRL unchanged and is untested here
(no vLLM install, no GPU: docs/grpo.md).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rait.data import read_records
from rait.data.records import QARecord
from rait.data.scoring import score_record
from rait.errors import DataError, RaitError, SettingsError, check_count, check_number
from rait.models import DEFAULT_SPEC
from rait.prompts import build_messages
from rait.train.finetune import (TrainSettings, UpdateCounter, _load_base, _remove_unfinished_saves,
                                 check_target_modules, train_and_save)

OUTCOMES = ("correct", "refused", "wrong")
# GRPO-RAIT's fine-tune unless the config says otherwise: a fixed number of steps at a constant, small learning rate
# (TRL's GRPO default is 1e-6; LoRA takes larger steps), 8 completions per step (2 questions x G = 4).
GRPO_TRAIN: dict[str, Any] = {"learning_rate": 1e-5, "max_steps": 50, "batch_size": 8, "grad_accum": 1,
                              "warmup": 0.0, "lr_scheduler": "constant"}
REWARDS_FILE = "rewards.jsonl"
MAX_COMPLETION_LENGTH = 4096  # a completion is a short answer (default 24 tokens); far more only exhausts memory


@dataclass
class GRPOSettings:
    """GRPO-RAIT's recipe. `num_generations` (G) completions per question, `max_completion_length` tokens each,
    sampled at `temperature`; `beta` is the KL penalty to the starting policy (TRL's default 0: none); `rewards` the
    reward of a correct, refused and wrong completion; `start_from` an SFT method whose adapter training continues
    (TruthRL compares RL from the base model and from an SFT model), else a fresh LoRA adapter on the base model.
    `train` holds the LoRA, learning rate, steps and batch: `batch_size` counts completions, so it must be a
    multiple of G (`batch_size / G` questions per step). `save_steps`: a checkpoint every so many steps, which a
    killed run resumes from. `prompt`, `system`, `refusal_mode` and `match_mode` are the build's and the
    evaluation's (filled in by `rait run`)."""

    num_generations: int = 4
    max_completion_length: int = 24
    temperature: float = 1.0
    beta: float = 0.0
    rewards: dict[str, float] = field(default_factory=lambda: {"correct": 1.0, "refused": 0.0, "wrong": -1.0})
    start_from: str | None = None
    max_questions: int | None = None
    save_steps: int = 25
    use_vllm: bool = False
    prompt: str = "refuse"
    system: str | None = None
    refusal_mode: str = "paper"
    match_mode: str | None = None
    train: TrainSettings = field(default_factory=lambda: TrainSettings(**GRPO_TRAIN))

    def __post_init__(self) -> None:
        if isinstance(self.train, dict):
            self.train = TrainSettings(**self.train)
        check_count("num_generations", self.num_generations, 2)  # a group of one has no advantage to learn from
        check_count("max_completion_length", self.max_completion_length, 1, MAX_COMPLETION_LENGTH)
        check_count("save_steps", self.save_steps, 1)
        check_number("temperature", self.temperature, 0, low_open=True)
        check_number("beta", self.beta, 0)
        if self.max_questions is not None:
            check_count("max_questions", self.max_questions, 1)
        unknown = sorted(set(self.rewards) - set(OUTCOMES))
        if unknown or len(self.rewards) != len(OUTCOMES):
            raise SettingsError("rewards", f"give a reward for each of {', '.join(OUTCOMES)} (got {sorted(self.rewards)})")
        for outcome, value in self.rewards.items():
            check_number(f"rewards.{outcome}", value)
        if not self.rewards["correct"] > self.rewards["refused"] > self.rewards["wrong"]:
            raise SettingsError("rewards", "a refusal-aware reward ranks correct > refused > wrong "
                                f"(got {self.rewards})")
        per_step = self.train.batch_size * self.train.grad_accum
        if per_step % self.num_generations:
            raise SettingsError("train.batch_size", f"completions per step ({per_step} = batch_size x grad_accum) must "
                                f"be a multiple of num_generations ({self.num_generations}): every question's group "
                                "is scored together")


class OutcomeReward:
    """The reward function TRL calls: one reward per completion, from rait's scorer on the question's record.

    TRL passes the dataset's columns as keyword lists (here `id`); `log_metric` logs the shares of correct, refused
    and wrong completions of each batch beside TRL's own reward mean."""

    def __init__(self, records: dict[str, QARecord], rewards: dict[str, float], refusal_mode: str = "paper",
                 match_mode: str | None = None):
        self.records, self.rewards = records, rewards
        self.refusal_mode, self.match_mode = refusal_mode, match_mode
        self.__name__ = "outcome_reward"  # TRL names a reward function's metrics after it

    def outcomes(self, ids: list[str], completions: list) -> list[str]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]  # conversational or plain
        found = [str(score_record(self.records[i], text, self.refusal_mode, self.match_mode))
                 for i, text in zip(ids, texts)]
        return ["wrong" if outcome == "unparsed" else outcome for outcome in found]  # no letter is no right answer

    def __call__(self, prompts: list, completions: list, id: list[str], log_metric=None, **_: Any) -> list[float]:
        outcomes = self.outcomes(id, completions)
        if log_metric is not None:
            for name in OUTCOMES:
                log_metric(f"share_{name}", outcomes.count(name) / len(outcomes))
        return [self.rewards[outcome] for outcome in outcomes]


def training_questions(records: list[QARecord], settings: GRPOSettings,
                       source: Path | str = "<records>") -> list[QARecord]:
    """The questions GRPO trains on (the first `max_questions`), checked for what it needs before any work:
    enough for one step, and each with what the reward needs (`grpo_dataset`). `rait run` calls it on a track's
    pool before its first stage."""
    if not records:
        raise DataError(source, "no questions to train on")
    records = records[: settings.max_questions]
    per_step = settings.train.batch_size * settings.train.grad_accum // settings.num_generations
    if len(records) < per_step:
        raise DataError(source, f"{len(records)} question(s), but a step takes {per_step} (batch_size x "
                        "grad_accum / num_generations): no step could be taken")
    grpo_dataset(records, settings, source)
    return records


def grpo_dataset(records: list[QARecord], settings: GRPOSettings, source: Path | str = "<records>"):
    """TRL conversational prompt rows (the build's prompt) with each question's id, checked for what the reward
    needs: gold answers (open QA) or a gold letter among the options (MCQA)."""
    from datasets import Dataset

    rows = []
    for line, record in enumerate(records, start=1):
        if record.task == "oeqa" and not record.all_answers:
            raise DataError(source, "an open question needs gold answers for the reward", line=line, field="answer")
        if record.task == "mcqa" and (not record.gold or record.gold not in record.letters):
            raise DataError(source, f"a multiple-choice question needs a gold letter among {record.letters!r} for "
                            "the reward's parser", line=line, field="gold")
        rows.append({"id": record.id, "prompt": build_messages(record, settings.prompt, system=settings.system)})
    return Dataset.from_list(rows)


def make_trainer_class():
    """`GRPOTrainer` timing each step's generation (sampling and scoring the completions) against the rest."""
    from trl import GRPOTrainer

    class TimedGRPOTrainer(GRPOTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.generation_seconds = 0.0

        def _generate_and_score_completions(self, *args, **kwargs):
            start = time.perf_counter()
            try:
                return super()._generate_and_score_completions(*args, **kwargs)
            finally:
                self.generation_seconds += time.perf_counter() - start

    return TimedGRPOTrainer


def run(settings: GRPOSettings, records_path: str | Path, out: str | Path, *,
        model: str | Path | None = DEFAULT_SPEC, start_adapter: str | Path | None = None, progress: bool = True):
    """GRPO on a pool's questions; saves like `rait.train.run` (plus `rewards.jsonl`). `start_adapter`: the
    `rait train` output whose adapter training continues (`settings.start_from`'s, found by `rait run`)."""
    import torch
    from peft import PeftModel
    from transformers import TrainerCallback
    from transformers.trainer_utils import get_last_checkpoint
    from trl import GRPOConfig

    records_path, out = Path(records_path), Path(out)
    records = training_questions(read_records(records_path), settings, records_path)
    dataset = grpo_dataset(records, settings, records_path)
    train = settings.train
    _remove_unfinished_saves(out)
    check_target_modules(model, train.lora)
    base, tokenizer = _load_base(model, train.method)
    peft_config = train.lora.peft_config()
    if start_adapter is not None:
        adapter = Path(start_adapter) / "adapter"
        if not (adapter / "adapter_config.json").is_file():
            raise RaitError(f"{start_adapter}: no LoRA adapter to start from (adapter/adapter_config.json)")
        base, peft_config = PeftModel.from_pretrained(base, adapter, is_trainable=True), None
    reward = OutcomeReward({r.id: r for r in records}, settings.rewards, settings.refusal_mode, settings.match_mode)
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    args = train.trainer_config(
        GRPOConfig, out, progress, bf16=bf16, num_generations=settings.num_generations,
        max_completion_length=settings.max_completion_length, temperature=settings.temperature, beta=settings.beta,
        use_vllm=settings.use_vllm, save_strategy="steps", save_steps=settings.save_steps, save_only_model=False,
        log_completions=False)
    counter = UpdateCounter()
    trainer_class = make_trainer_class()
    step_log: list[dict[str, float]] = []

    class StepTimes(TrainerCallback):
        """Each optimiser step's seconds, split into generation and the rest (the update)."""

        def on_step_begin(self, args, state, control, **kwargs):
            self.start, self.generated = time.perf_counter(), trainer.generation_seconds

        def on_step_end(self, args, state, control, **kwargs):
            total = time.perf_counter() - self.start
            generation = trainer.generation_seconds - self.generated
            step_log.append({"step": state.global_step, "seconds": total, "generation_seconds": generation,
                             "update_seconds": total - generation})

    trainer = trainer_class(base, reward_funcs=[reward], args=args, train_dataset=dataset, processing_class=tokenizer,
                            peft_config=peft_config, callbacks=[counter, StepTimes()])
    resume = get_last_checkpoint(str(out)) if out.is_dir() else None
    extra: dict[str, Any] = {"objective": "grpo", "grpo": {k: v for k, v in asdict(settings).items() if k != "train"},
                             "start_adapter": str(start_adapter) if start_adapter else None,
                             "resumed_from": Path(resume).name if resume else None, "step_times": step_log}
    result = train_and_save(trainer, train, out, model=model, data_path=records_path, counter=counter,
                            extra=extra, resume_from_checkpoint=resume)
    if trainer.accelerator.is_main_process:
        write_rewards(out)
        for checkpoint in out.glob("checkpoint-*"):  # finished: the adapter is saved, the checkpoints are spent
            shutil.rmtree(checkpoint, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    return result


def write_rewards(out_dir: Path) -> Path:
    """`rewards.jsonl`: per logged step, the reward's mean and the shares of correct, refused and wrong completions,
    and the step's seconds (generation and update), from `train.json`."""
    summary = json.loads((out_dir / "train.json").read_text(encoding="utf-8"))
    times = {entry["step"]: entry for entry in summary.get("step_times", [])}
    lines = []
    for entry in summary["log_history"]:
        if "reward" not in entry:
            continue
        step = int(entry["step"])
        row = {"step": step, "reward": entry["reward"],
               **{name: entry.get(f"share_{name}") for name in OUTCOMES}}
        if step in times:
            row |= {key: round(times[step][key], 3) for key in ("seconds", "generation_seconds", "update_seconds")}
        lines.append(json.dumps(row))
    path = out_dir / REWARDS_FILE
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path
