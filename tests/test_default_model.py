"""Smoke test of the real default model (SmolLM2-135M-Instruct). Slow: converts it on first use (~20-50 s)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rait.data.records import QARecord
from rait.generate import SamplingSettings, generate
from rait.models import load_model, model_fingerprint
from rait.models.default import GGUF_FILE, SOURCE_FILE
from rait.prompts import render

pytestmark = pytest.mark.slow


def test_default_model_answers_a_chat_question():
    model, tokenizer = load_model("default")
    record = QARecord(id="paris", question="What is the capital of France?", source="smoke", split="test", answer="Paris")
    prompt = render(record, "basic", tokenizer)
    [[answer]] = generate(model, tokenizer, [prompt], SamplingSettings(max_new_tokens=12))
    assert answer.strip()
    assert "Paris" in answer


def test_default_model_folder_records_its_source():
    fingerprint = model_fingerprint("default")
    source = json.loads((Path(fingerprint["path"]) / SOURCE_FILE).read_text())
    assert source["gguf_file"] == GGUF_FILE
    assert len(source["gguf_sha256"]) == 64
    assert fingerprint["weight_files"] == ["model.safetensors"]


@pytest.mark.usefixtures("shipped_data")
@pytest.mark.parametrize("prompt", ["basic", "refuse"])
def test_greedy_answers_of_the_default_model_equal_batched_generate(prompt):
    """Evaluation's decoding loop (shared prefix, continuous batching) against `model.generate` on the
    same batches of real prompts; the full 200 facts + 100 NQ check is `benchmarks/eval.py --equality`."""
    from rait.data import TestSet, load_test_records

    model, tokenizer = load_model("default")
    records = (load_test_records(TestSet("facts", "facts:test_id", sample=24, stratify="subject"), seed=1)
               + load_test_records(TestSet("nq", "nq:dev", sample=12), seed=1))
    prompts = [render(r, prompt, tokenizer) for r in records]
    settings = SamplingSettings(max_new_tokens=24)
    config = settings.to_generation_config(tokenizer)
    expected = []
    for start in range(0, len(prompts), 6):
        enc = tokenizer(prompts[start : start + 6], return_tensors="pt", padding=True, add_special_tokens=False)
        new = model.generate(**enc, generation_config=config)[:, enc["input_ids"].shape[1] :]
        expected += tokenizer.batch_decode(new, skip_special_tokens=True)
    ours = generate(model, tokenizer, prompts, settings, batch_size=6)
    assert [answer for [answer] in ours] == expected
