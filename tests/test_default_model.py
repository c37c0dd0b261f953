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
