"""The warm-up LoRA run whose weights and Adam state define GRAIT's gradient features.

GRAIT (via LESS) trains a LoRA adapter for a few epochs on a "rehearsal" set of questions
the model already answers confidently (1000 random MMLU questions whose gold probability
exceeds 0.99), then takes every pool question's gradient at that adapter, preconditioned
by the run's Adam moments (LESS, Xia et al. 2024; docs/grait.md). Defaults follow the release:
LoRA r = 128, α = 512, dropout 0.1 on q/k/v/o, lr 2e-5, linear schedule with 3 % warm-up,
4 epochs, batch 1 × 32 accumulation, AdamW, seed 0.

Deliberate differences: the rehearsal rows use the same prompt and chat template as the
final training set (the release warms up in LESS's Tulu format with the BASIC prompt, see
docs/grait.md), and the moments are saved by parameter name (adam.py).
Training is `rait.train`'s trainer (per-sample token-mean loss, the loss the features use).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import pandas as pd

from rait.artifacts import write_json
from rait.data.records import QARecord
from rait.errors import RaitError
from rait.grads.adam import AdamMoments
from rait.prompts import answer_target, training_example
from rait.train.finetune import LoraSettings, TrainSettings

SUMMARY_FILE = "warmup.json"
LESS_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def warmup_settings(**overrides) -> TrainSettings:
    """GRAIT's warm-up recipe as `rait.train` settings; keyword arguments override single fields."""
    recipe = dict(method="lora", lora=LoraSettings(r=128, alpha=512, dropout=0.1, target_modules=list(LESS_TARGETS)),
                  epochs=4.0, learning_rate=2e-5, batch_size=1, grad_accum=32, lr_scheduler="linear", warmup=0.03,
                  weight_decay=0.0, max_length=2048, seed=0)
    return TrainSettings(**{**recipe, **overrides})


def rehearsal_ids(table: pd.DataFrame, n: int = 1000, min_mu: float = 0.99, seed: int = 42) -> tuple[list[str], str]:
    """Ids of the warm-up set: n drawn at random from the questions with μ > min_mu; returns (ids, note).

    MCQA tables use the raw gold-option probability (``gold_prob``) as the release does. If
    fewer than n questions pass, all that pass are used; if none pass, the n highest-μ
    questions are used instead, and the note says so.
    """
    key = "gold_prob" if "gold_prob" in table.columns and table["gold_prob"].notna().all() else "mu"
    ordered = table.assign(id=table["id"].astype(str)).sort_values("id", kind="mergesort")
    confident = ordered[ordered[key].astype(float) > min_mu]
    if len(confident) >= n:
        return list(confident.sample(n=n, random_state=seed)["id"]), f"{n} random of {len(confident)} with {key} > {min_mu}"
    if len(confident):
        return list(confident["id"]), f"all {len(confident)} with {key} > {min_mu} (fewer than {n})"
    top = ordered.sort_values(["mu", "id"], ascending=[False, True], kind="mergesort").head(n)
    return list(top["id"]), f"no question has {key} > {min_mu}: the top {len(top)} by mu instead"


def rehearsal_rows(records: Sequence[QARecord], ids: Sequence[str], prompt: str = "refuse", system: str | None = None) -> list[dict]:
    """Answer-form training rows (TRL prompt/completion) of the warm-up questions."""
    by_id = {r.id: r for r in records}
    missing = [qid for qid in ids if qid not in by_id]
    if missing:
        raise RaitError(f"warm-up question {missing[0]!r} is not among the records")
    return [training_example(by_id[qid], prompt, answer_target(by_id[qid]), system=system) for qid in ids]


def warmup(model, tokenizer, rows: Sequence[dict], out_dir: str | Path, settings: TrainSettings | None = None,
           progress: bool = False) -> Path:
    """Train a LoRA adapter on `rows` with rait's trainer; save it with its Adam moments (by name) in `out_dir`.

    `model` is the base model (no adapter). Returns `out_dir`, loadable with `load_warm_model`.
    """
    from datasets import Dataset

    from rait.train import WeightedSFTTrainer
    from rait.train.finetune import train_with_bar

    settings = settings or warmup_settings()
    if settings.method != "lora":
        raise RaitError("the warm-up trains a LoRA adapter (method 'lora')")
    if not rows:
        raise RaitError("the warm-up set is empty")
    out_dir = Path(out_dir)
    dataset = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    trainer = WeightedSFTTrainer(model, args=settings.sft_config(out_dir / "trainer", progress), train_dataset=dataset,
                                 processing_class=tokenizer, peft_config=settings.lora.peft_config())
    train_with_bar(trainer, "warm-up")
    if not trainer.is_world_process_zero():  # data-parallel ranks hold the same adapter and moments
        return out_dir
    trained = trainer.accelerator.unwrap_model(trainer.model)
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    moments = AdamMoments.from_optimizer(optimizer, trained)
    trained.save_pretrained(out_dir)
    moments.save(out_dir)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    write_json(out_dir / SUMMARY_FILE, {"settings": asdict(settings), "rows": len(rows), "optimizer_steps": moments.step,
                                        "first_loss": losses[0] if losses else None,
                                        "last_loss": losses[-1] if losses else None})
    return out_dir


def load_warm_model(base_model, adapter_dir: str | Path):
    """The base model with the warm-up adapter, trainable (gradients flow to the LoRA weights only)."""
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise RaitError(f"{adapter_dir} holds no LoRA adapter (adapter_config.json); run the warm-up first")
    return PeftModel.from_pretrained(base_model, adapter_dir, is_trainable=True)


def read_warmup_summary(adapter_dir: str | Path) -> dict:
    """What the warm-up recorded (settings, rows, steps, first and last loss); empty for foreign adapters."""
    path = Path(adapter_dir) / SUMMARY_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
