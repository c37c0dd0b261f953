"""Fine-tuning: weighted LoRA / QLoRA / full SFT on TRL, loading the result back, and CRaFT's rehearsal.

- `train(data, out_dir, model, settings)`: fine-tune on prompt/completion rows (optional
  ``weight``); `load_trained(out_dir)` gives ``(model, tokenizer)`` back.
- `WeightedSFTTrainer` / `WeightedSFTConfig`: TRL's SFTTrainer with per-sample loss weights.
- `select_rehearsal`, `rehearse`, `rehearse_table`: CRaFT's rehearsal fine-tune, re-probe and
  knowledge flow (Δμ by id); `rehearse_table` re-probes with the settings of the table's manifest.
"""

from __future__ import annotations

from rait.train.finetune import (
    LoraSettings,
    TrainResult,
    TrainSettings,
    adapter_merged,
    load_trained,
    lora_base,
    read_training_rows,
    train,
)
from rait.train.rehearsal import (
    RehearsalFilter,
    RehearsalResult,
    flow_summary,
    knowledge_probe,
    plot_delta_mu,
    probe_settings,
    rehearse,
    rehearse_table,
    select_rehearsal,
)
from rait.train.weighted import WeightedSFTConfig, WeightedSFTTrainer, sample_losses

__all__ = [
    "LoraSettings",
    "RehearsalFilter",
    "RehearsalResult",
    "TrainResult",
    "TrainSettings",
    "WeightedSFTConfig",
    "WeightedSFTTrainer",
    "adapter_merged",
    "flow_summary",
    "knowledge_probe",
    "load_trained",
    "lora_base",
    "plot_delta_mu",
    "probe_settings",
    "read_training_rows",
    "rehearse",
    "rehearse_table",
    "sample_losses",
    "select_rehearsal",
    "train",
]
