"""Preference RAIT: TRL's `DPOTrainer` with LoRA on the answer-vs-refusal pairs a build exports.

The pairs (`rait.select.build.preference_pairs`, `<build>/dpo/<method>.jsonl`) prefer the gold answer
over "I don't know" for a question the model knows and "I don't know" over the model's own wrong answer
for one it does not, as Idk-DPO does (Cheng et al. 2024, "Can AI Assistants Know What They Don't Know?").
Which questions are paired is a builder's selection (CRaFT's by default in `rait run`). The output has
the layout of `rait train` (`adapter/`, `train.json`), so `load_trained`, `rait eval` and `rait run`'s
evaluation read it unchanged. The reference policy is the base model itself (the adapter switched
off), TRL's default under peft.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rait.artifacts import identity_key, read_jsonl
from rait.errors import DataError, check_count, check_number
from rait.models import DEFAULT_SPEC, portable_spec
from rait.train.finetune import (TrainSettings, UpdateCounter, _load_base, _remove_unfinished_saves,
                                 check_target_modules, remove_checkpoints, resume_point, train_and_save)

PAIR_COLUMNS = ("prompt", "chosen", "rejected")


@dataclass
class DPOSettings:
    """Preference tuning: which method's selection gives the pairs (a build method's name, checked by `rait run`'s
    config against the registry), DPO's β, and the LoRA fine-tune (`train`)."""

    pairs_from: str = "craft"
    beta: float = 0.1
    max_pairs: int | None = None
    train: TrainSettings = field(default_factory=TrainSettings)

    def __post_init__(self) -> None:
        check_number("beta", self.beta, 0, low_open=True)
        if self.max_pairs is not None:
            check_count("max_pairs", self.max_pairs, 1)
        if isinstance(self.train, dict):
            self.train = TrainSettings(**self.train)


def run(settings: DPOSettings, data: str | Path, out: str | Path, *, model: str | Path | None = DEFAULT_SPEC,
        progress: bool = True):
    """DPO on a pairs file (TRL conversational prompt/chosen/rejected rows); saves like `rait.train.run`."""
    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    data, out = Path(data), Path(out)
    rows = read_jsonl(data) if data.is_file() else []
    if not rows:
        raise DataError(data, "no preference pairs (the build exports them as dpo/<method>.jsonl)")
    for line, row in enumerate(rows, start=1):
        missing = [key for key in PAIR_COLUMNS if not row.get(key)]
        if missing:
            raise DataError(data, "a preference pair needs a prompt, a chosen and a rejected answer", line=line,
                            field=missing[0])
    rows = rows[: settings.max_pairs]
    dataset = Dataset.from_list([{key: row[key] for key in PAIR_COLUMNS} for row in rows])
    train = settings.train
    _remove_unfinished_saves(out)
    check_target_modules(model, train.lora)
    resume = resume_point(out, train, {"pairs": identity_key(dataset.to_list()), "beta": settings.beta,
                                           "model": portable_spec(model)})
    base, tokenizer = _load_base(model, train.method)
    counter = UpdateCounter()
    # bf16 only where the GPU has it, as for SFT (rait.train.weighted): TRL's configs default to bf16.
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    trainer = DPOTrainer(base, args=train.trainer_config(DPOConfig, out, progress, beta=settings.beta, bf16=bf16),
                         train_dataset=dataset, processing_class=tokenizer, peft_config=train.lora.peft_config(),
                         callbacks=[counter])
    extra: dict[str, Any] = {"objective": "dpo", "beta": settings.beta, "pairs_from": settings.pairs_from,
                             "resumed_from": Path(resume).name if resume else None}
    result = train_and_save(trainer, train, out, model=model, data_path=data, counter=counter, extra=extra,
                            resume_from_checkpoint=resume)
    if trainer.accelerator.is_main_process:
        remove_checkpoints(out)
    return result
