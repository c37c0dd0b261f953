"""Batched generation: left padding, shared prompt prefill for k samples, per-batch seeding."""

from __future__ import annotations

import pytest

from rait.generate import SamplingSettings, generate

PROMPTS = ["Question: who wrote the novel?\nAnswer:", "A", "The capital of India is New Delhi. The largest planet is"]


def test_k_samples_from_one_prefill_equal_plain_greedy_decoding(tiny_model):
    """top_k=1 sampling is greedy decoding, so each of the k samples must be the prompt's greedy answer,
    whatever the padding of its batch: this checks the shared-prefill cache and its positions."""
    model, tokenizer = tiny_model
    greedy = SamplingSettings(max_new_tokens=8)
    alone = [generate(model, tokenizer, [p], greedy, batch_size=1)[0][0] for p in PROMPTS]
    k_samples = SamplingSettings(max_new_tokens=8, do_sample=True, top_k=1, num_return_sequences=3)
    batched = generate(model, tokenizer, PROMPTS, k_samples, batch_size=3)
    assert batched == [[answer] * 3 for answer in alone]


def test_sampling_depends_only_on_the_seed(tiny_model):
    model, tokenizer = tiny_model
    settings = SamplingSettings(max_new_tokens=6, do_sample=True, temperature=1.0, num_return_sequences=4)
    first = generate(model, tokenizer, PROMPTS, settings, batch_size=2, seed=3)
    assert generate(model, tokenizer, PROMPTS, settings, batch_size=2, seed=3) == first
    assert generate(model, tokenizer, PROMPTS, settings, batch_size=2, seed=4) != first
    assert all(len(samples) == 4 for samples in first)


def test_needs_left_padding(tiny_model):
    model, tokenizer = tiny_model
    tokenizer.padding_side = "right"
    with pytest.raises(ValueError, match="left"):
        generate(model, tokenizer, PROMPTS)
