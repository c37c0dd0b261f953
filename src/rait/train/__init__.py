"""Fine-tuning: weighted LoRA / QLoRA / full SFT on TRL, and loading the result back.

- `run(settings, data, out, model=...)`: fine-tune on prompt/completion rows (optional
  ``weight``); `load_trained(path)` gives ``(model, tokenizer)`` of a `run` output folder back.
- `WeightedSFTTrainer` / `WeightedSFTConfig`: TRL's SFTTrainer with per-sample loss weights.

This is the trainer library of every stage that fine-tunes: the train stage itself, CRaFT's
rehearsal (`rait.rehearse`) and GRAIT's warm-up (`rait.grads.warmup`).
"""

from __future__ import annotations

from rait.train.finetune import (
    LoraSettings,
    TrainResult,
    TrainSettings,
    adapter_merged,
    learning_identity,
    load_trained,
    load_with_adapter,
    lora_base,
    read_training_rows,
    run,
)
from rait.train.weighted import WeightedSFTConfig, WeightedSFTTrainer, sample_losses

__all__ = [
    "LoraSettings",
    "TrainResult",
    "TrainSettings",
    "WeightedSFTConfig",
    "WeightedSFTTrainer",
    "adapter_merged",
    "learning_identity",
    "load_trained",
    "load_with_adapter",
    "lora_base",
    "read_training_rows",
    "run",
    "sample_losses",
]
