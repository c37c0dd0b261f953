"""Preference RAIT (rait.train.preference): DPO with LoRA on answer-vs-refusal pairs, saved like `rait train`."""

from __future__ import annotations

import json

import pytest

from rait.errors import DataError, RaitError
from rait.train import LoraSettings, TrainSettings, load_trained
from rait.train.preference import DPOSettings, run

FAST = TrainSettings(lora=LoraSettings(r=4, alpha=8, dropout=0.0), epochs=1, batch_size=2, grad_accum=1, warmup=0.0,
                     learning_rate=1e-3)


def pairs(n: int) -> list[dict]:
    return [{"id": f"q{i}", "kind": "idk", "prompt": [{"role": "user", "content": f"What is item {i}?"}],
             "chosen": [{"role": "assistant", "content": "I don't know"}],
             "rejected": [{"role": "assistant", "content": f"thing {i + 1}"}]} for i in range(n)]


def test_dpo_trains_an_adapter_that_loads_like_a_trained_model(tiny_model_dir, tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in pairs(4)))
    result = run(DPOSettings(pairs_from="cor_rait", train=FAST), data, tmp_path / "out", model=tiny_model_dir,
                 progress=False)
    assert (result.samples, result.optimizer_steps, result.updates) == (4, 2, 2)
    summary = json.loads((tmp_path / "out" / "train.json").read_text())
    assert (summary["objective"], summary["pairs_from"], summary["saved"]) == ("dpo", "cor_rait", "adapter")
    model, _ = load_trained(tmp_path / "out")
    assert model is not None


def test_bad_pairs_and_settings_are_refused(tiny_model_dir, tmp_path):
    data = tmp_path / "pairs.jsonl"
    rows = pairs(2)
    rows[1]["rejected"] = []
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(DataError) as err:
        run(DPOSettings(train=FAST), data, tmp_path / "out", model=tiny_model_dir, progress=False)
    assert (err.value.line, err.value.field) == (2, "rejected")
    with pytest.raises(DataError, match="no preference pairs"):
        run(DPOSettings(train=FAST), tmp_path / "none.jsonl", tmp_path / "out", model=tiny_model_dir)
    with pytest.raises(RaitError, match="beta"):
        DPOSettings(beta=0)
