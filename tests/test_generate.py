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

from rait.generate import (
    SamplingSettings,
    _eos_tensor,
    _greedy_stream,
    _sample_from_shared_prefill,
    batches_by_prefix,
    generate,
    next_token_candidates,
)
from tiny_model import INIT_STD, build_tokenizer

pytestmark = pytest.mark.numerics  # floats computed two ways: run again on a second kernel path (Makefile)

PROMPTS = ["Question: who wrote the novel?\nAnswer:", "A", "The capital of India is New Delhi. The largest planet is"]
SHOTS = "Q: the capital of France?\nA: Paris\nQ: the largest planet?\nA: Jupiter\nQ: "
FEW_SHOT = [SHOTS + "who wrote Hamlet?\nA:", SHOTS + "x?\nA:", SHOTS + "the tallest mountain on Earth, by height above sea level?\nA:"]
# Shared header, then questions from 1 to ~20 tokens: one padded batch of mixed lengths.
MIXED = [SHOTS + q + "\nA:" for q in ("a", "who painted the ceiling of the chapel?", "b c", "the longest river in Africa, "
                                       "measured from its most distant source to the sea?", "why", "what is 2 + 2?")]
GREEDY = SamplingSettings(max_new_tokens=8)


def generate_alone(model, tokenizer, prompts, config=None) -> list[list[int]]:
    """`model.generate`'s greedy new tokens for each prompt on its own (no padding), padded to 8 tokens."""
    config = config or GREEDY.to_generation_config(tokenizer)
    rows = []
    for prompt in prompts:
        inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        tokens = model.generate(**inputs, generation_config=config)[0, inputs["input_ids"].shape[1] :].tolist()
        rows.append(tokens + [config.pad_token_id] * (8 - len(tokens)))
    return rows


def texts_alone(model, tokenizer, prompts) -> list[list[str]]:
    return [[tokenizer.decode(row, skip_special_tokens=True)] for row in generate_alone(model, tokenizer, prompts)]


@pytest.mark.parametrize("prompts", [PROMPTS, FEW_SHOT, FEW_SHOT[:1], MIXED],
                         ids=["no-shared-prefix", "few-shot", "one", "mixed-lengths"])
@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_greedy_answers_equal_generate(tiny_model, prompts, batch_size):
    """Greedy answers through our loop (shared prefix once, static cache, rows leaving) are `generate`'s."""
    model, tokenizer = tiny_model
    assert generate(model, tokenizer, prompts, GREEDY, batch_size=batch_size) == texts_alone(model, tokenizer, prompts)


def test_greedy_does_not_call_generate(tiny_model, monkeypatch):
    """The greedy path is our loop, not a fallback to `model.generate` (which the test above compares against)."""
    model, tokenizer = tiny_model
    monkeypatch.setattr(model, "generate", lambda *args, **kwargs: pytest.fail("model.generate was called"))
    assert len(generate(model, tokenizer, MIXED, GREEDY, batch_size=4)) == len(MIXED)


@pytest.mark.parametrize("prompts", [PROMPTS, FEW_SHOT, FEW_SHOT[:1]], ids=["no-shared-prefix", "few-shot", "one"])
def test_k_samples_from_one_prefill_equal_plain_greedy_decoding(tiny_model, prompts):
    """top_k=1 sampling is greedy decoding, so each of the k samples must be the prompt's greedy answer,
    whatever the padding of its batch: this checks the prefilled caches (shared prefix, then each
    prompt, then the static decoding cache) and their positions."""
    model, tokenizer = tiny_model
    alone = [answer for [answer] in texts_alone(model, tokenizer, prompts)]
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
    alone = [answer for [answer] in texts_alone(model, tokenizer, FEW_SHOT + MIXED)]
    assert generate(model, tokenizer, FEW_SHOT + MIXED, GREEDY, batch_size=4) == [[answer] for answer in alone]
    k_samples = SamplingSettings(max_new_tokens=8, do_sample=True, top_k=1, num_return_sequences=3)
    assert generate(model, tokenizer, FEW_SHOT, k_samples, batch_size=3) == [[answer] * 3 for answer in alone[:3]]


def end_tokens_config(model, tokenizer, prompts, ends: dict[int, int]):
    """A greedy config whose end tokens are the chosen prompts' greedy tokens at the chosen steps."""
    config = GREEDY.to_generation_config(tokenizer)
    plain = generate_alone(model, tokenizer, prompts, config)
    config.eos_token_id = [plain[prompt][step] for prompt, step in ends.items()]
    return config


@pytest.mark.parametrize("ends", [{0: 0}, {1: 3}, {0: 0, 2: 3, 1: 5}], ids=["first-at-0", "middle-at-3", "three-steps"])
def test_top1_samples_leave_the_batch_at_their_end_without_changing_the_others(tiny_model, ends):
    """Make some prompts' greedy token at a chosen step an end-of-sequence token: their k rows end
    there and are dropped from the batch, and each of every prompt's k top-1 samples must still be
    what `generate` gives for it alone, with the same end tokens."""
    model, tokenizer = tiny_model
    enc = tokenizer(FEW_SHOT, return_tensors="pt", padding=True, add_special_tokens=False)
    config = end_tokens_config(model, tokenizer, FEW_SHOT, ends)
    alone = generate_alone(model, tokenizer, FEW_SHOT, config)
    for prompt, step in ends.items():
        assert alone[prompt][step + 1 :] == [config.pad_token_id] * (7 - step)
    k_samples = SamplingSettings(max_new_tokens=8, do_sample=True, top_k=1, num_return_sequences=3)
    rows = _sample_from_shared_prefill(model, enc, k_samples, config).tolist()
    assert rows == [tokens for tokens in alone for _ in range(3)]


# Prompts of one length: every row's cache is as wide as the longest, so a shift that frees more
# slots than the live rows leave unused would cut a live row's first keys.
SAME_LENGTH = [SHOTS + letter + "?\nA:" for letter in "abcdefghijklmnop"]


@pytest.mark.parametrize("batch_size", [1, 2, 3, 16])
@pytest.mark.parametrize("prompts, ends", [
    (FEW_SHOT + MIXED + PROMPTS[:2], {0: 0}), (FEW_SHOT + MIXED + PROMPTS[:2], {1: 3}),
    (FEW_SHOT + MIXED + PROMPTS[:2], {0: 0, 2: 3, 4: 5, 7: 1}), (SAME_LENGTH, {0: 0, 3: 2, 5: 6, 9: 1}),
], ids=["first-at-0", "one-at-3", "four-steps", "same-length"])
def test_greedy_rows_end_and_others_take_their_place_without_changing_any_answer(tiny_model, prompts, ends, batch_size):
    """Greedy rows end at chosen steps; a waiting prompt takes the freed row (its cache copied in,
    right-aligned at the write slot), the cache shifts left when it would overflow, and rows leave
    once no prompt waits. Every prompt's answer must be what `generate` gives for it alone."""
    model, tokenizer = tiny_model
    config = end_tokens_config(model, tokenizer, prompts, ends)
    alone = generate_alone(model, tokenizer, prompts, config)
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    batches = []
    for idx in batches_by_prefix(encoded, batch_size):
        enc = tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, padding=True, return_tensors="pt")
        batches.append((idx, enc["input_ids"], enc["attention_mask"]))
    done = []
    answers = _greedy_stream(model, batches, 8, _eos_tensor(config, "cpu"), done.append)
    padded = {i: tokens + [config.pad_token_id] * (8 - len(tokens)) for i, tokens in answers.items()}
    assert [padded[i] for i in range(len(prompts))] == alone
    assert len(done) == len(prompts)


def test_batches_group_prompts_that_share_their_shots_and_the_rest_by_length():
    shots_a, shots_b = list(range(100, 140)), list(range(200, 240))
    sequences = [shots_a + [1, 2], [7] * 30, shots_b + [3], shots_a + [4], [8] * 5, shots_b + [5, 6, 7], [9] * 29]
    batches = batches_by_prefix(sequences, batch_size=2)
    assert sorted(i for batch in batches for i in batch) == list(range(7))
    assert sorted(map(sorted, batches)) == [[0, 3], [1, 6], [2, 5], [4]]  # shots together; 30 and 29 tokens
    assert [len(sequences[batch[0]]) for batch in batches] == sorted((len(sequences[b[0]]) for b in batches), reverse=True)


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
