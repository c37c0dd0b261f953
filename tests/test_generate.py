"""Batched generation: left padding, shared prompt prefill for k samples, the sampling loop, per-batch seeding."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    LogitsProcessorList,
    MistralConfig,
    Qwen2Config,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from rait.generate import SamplingSettings, _sample_from_shared_prefill, generate, next_token_candidates
from tiny_model import INIT_STD, build_tokenizer

PROMPTS = ["Question: who wrote the novel?\nAnswer:", "A", "The capital of India is New Delhi. The largest planet is"]
SHOTS = "Q: the capital of France?\nA: Paris\nQ: the largest planet?\nA: Jupiter\nQ: "
FEW_SHOT = [SHOTS + "who wrote Hamlet?\nA:", SHOTS + "x?\nA:", SHOTS + "the tallest mountain on Earth, by height above sea level?\nA:"]


@pytest.mark.parametrize("prompts", [PROMPTS, FEW_SHOT, FEW_SHOT[:1]], ids=["no-shared-prefix", "few-shot", "one"])
def test_k_samples_from_one_prefill_equal_plain_greedy_decoding(tiny_model, prompts):
    """top_k=1 sampling is greedy decoding, so each of the k samples must be the prompt's greedy answer,
    whatever the padding of its batch: this checks the prefilled caches (shared prefix, then each
    prompt, then the static decoding cache) and their positions."""
    model, tokenizer = tiny_model
    greedy = SamplingSettings(max_new_tokens=8)
    alone = [generate(model, tokenizer, [p], greedy, batch_size=1)[0][0] for p in prompts]
    k_samples = SamplingSettings(max_new_tokens=8, do_sample=True, top_k=1, num_return_sequences=3)
    batched = generate(model, tokenizer, prompts, k_samples, batch_size=3)
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


OTHER_ARCHITECTURES = {
    "qwen2": lambda common: Qwen2Config(**common),
    "gemma2": lambda common: Gemma2Config(**common, head_dim=16, sliding_window=4096),
    # a window shorter than prompt + answer: sampled by `generate` (padding would sit inside the window)
    "mistral-window-16": lambda common: MistralConfig(**common, sliding_window=16),
}


@pytest.mark.parametrize("architecture", OTHER_ARCHITECTURES)
def test_k_samples_equal_greedy_decoding_on_other_architectures(architecture):
    tokenizer = build_tokenizer()
    tokenizer.padding_side = "left"
    common = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, initializer_range=INIT_STD,
                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(OTHER_ARCHITECTURES[architecture](common)).eval()
    greedy = SamplingSettings(max_new_tokens=8)
    alone = [generate(model, tokenizer, [p], greedy, batch_size=1)[0][0] for p in FEW_SHOT]
    k_samples = SamplingSettings(max_new_tokens=8, do_sample=True, top_k=1, num_return_sequences=3)
    assert generate(model, tokenizer, FEW_SHOT, k_samples, batch_size=3) == [[answer] * 3 for answer in alone]


@pytest.mark.parametrize("prompt, step", [(0, 0), (1, 3)])
def test_rows_leave_the_batch_at_their_end_without_changing_the_others(tiny_model, prompt, step):
    """Make one prompt's greedy token at `step` the end-of-sequence token: its k rows end there and
    are dropped from the batch, and every prompt's samples must still be what `generate` gives alone."""
    model, tokenizer = tiny_model
    greedy = SamplingSettings(max_new_tokens=8)
    enc = tokenizer(FEW_SHOT, return_tensors="pt", padding=True)
    config = greedy.to_generation_config(tokenizer)

    def new_tokens(prompt):
        inputs = tokenizer(prompt, return_tensors="pt")
        tokens = model.generate(**inputs, generation_config=config)[0, inputs["input_ids"].shape[1] :].tolist()
        return tokens + [config.pad_token_id] * (8 - len(tokens))

    config.eos_token_id = [new_tokens(FEW_SHOT[prompt])[step]]
    alone = [new_tokens(p) for p in FEW_SHOT]
    assert alone[prompt][step + 1 :] == [config.pad_token_id] * (7 - step)
    k_samples = SamplingSettings(max_new_tokens=8, do_sample=True, top_k=1, num_return_sequences=3)
    rows = _sample_from_shared_prefill(model, enc, k_samples, config).tolist()
    assert rows == [tokens for tokens in alone for _ in range(3)]


@pytest.mark.parametrize("top_k, top_p, temperature", [(50, 0.9, 1.0), (0, 0.7, 0.5), (5, 1.0, 2.0), (0, 1.0, 1.0)])
def test_next_token_candidates_are_generates_distribution(top_k, top_p, temperature):
    """The candidates' probabilities, put back into the vocabulary, equal the softmax of the scores
    that transformers' own temperature, top-k and top-p warpers leave."""
    torch.manual_seed(0)
    logits = torch.randn(6, 300) * 3
    settings = SamplingSettings(do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p)
    warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)])
    if top_k:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p))
    expected = warpers(None, logits.clone()).softmax(-1)
    probs, vocab_ids = next_token_candidates(logits, settings)
    full = probs if vocab_ids is None else torch.zeros_like(logits).scatter(-1, vocab_ids, probs)
    torch.testing.assert_close(full / full.sum(-1, keepdim=True), expected)
    if top_k:
        assert probs.shape == (6, top_k)
