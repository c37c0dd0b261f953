"""Batched text generation shared by evaluation (greedy) and knowledge probing (sampling).

Prompts are already-rendered strings (see `rait.prompts`). Batches are formed from
prompts sorted by length, left-padded, and results are returned in the input order.
With several samples per prompt, each prompt is prefilled once and its key/value cache
copied for the samples (`generate` itself would prefill every copy: with a 3-shot prompt
of ~190 tokens and ~24 new tokens, that is most of the work, k times over).
Every sampling setting is explicit: we build the `GenerationConfig` ourselves instead of
inheriting the model's `generation_config.json`, whose hidden top-k/top-p would silently
change what "temperature 1.0" means (see shared/spec/default-model.md, pitfalls).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch
from transformers import DynamicCache, GenerationConfig


@dataclass(frozen=True)
class SamplingSettings:
    """Decoding settings recorded in every manifest. `top_k=0` and `top_p=1.0` disable those filters."""

    max_new_tokens: int = 32
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    num_return_sequences: int = 1

    def to_generation_config(self, tokenizer) -> GenerationConfig:
        kwargs = dict(
            max_new_tokens=self.max_new_tokens,
            do_sample=self.do_sample,
            num_return_sequences=self.num_return_sequences,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)
        return GenerationConfig(**kwargs)

    def as_dict(self) -> dict:
        return asdict(self)


@torch.inference_mode()
def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    settings: SamplingSettings = SamplingSettings(),
    batch_size: int = 16,
    seed: int = 0,
    add_special_tokens: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> list[list[str]]:
    """Return, for each prompt, its `settings.num_return_sequences` completions (new text only).

    `add_special_tokens=False` because chat-rendered prompts already hold the template's
    special tokens; pass True for raw prompts of base models that expect a BOS token.
    Sampling is reseeded per batch (seed + batch index), so a given list of prompts and
    batch size always yields the same samples. `on_batch(n)` reports progress in prompts.
    """
    if tokenizer.padding_side != "left":
        raise ValueError("generation needs a left-padding tokenizer (set tokenizer.padding_side = 'left')")
    config = settings.to_generation_config(tokenizer)
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[list[str]] = [[] for _ in prompts]
    for b, start in enumerate(range(0, len(order), batch_size)):
        idx = order[start : start + batch_size]
        enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=add_special_tokens)
        enc = {k: v.to(device) for k, v in enc.items()}
        if settings.do_sample:
            torch.manual_seed(seed + b)
        if settings.num_return_sequences > 1 and enc["input_ids"].shape[1] > 1:
            out = _sample_from_shared_prefill(model, enc, config)
        else:
            out = model.generate(**enc, generation_config=config)
        new_tokens = out[:, enc["input_ids"].shape[1] :]
        texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        k = settings.num_return_sequences
        for j, i in enumerate(idx):
            results[i] = texts[j * k : (j + 1) * k]
        if on_batch is not None:
            on_batch(len(idx))
    return results


def _sample_from_shared_prefill(model, enc: dict, config: GenerationConfig) -> torch.Tensor:
    """`model.generate` with `num_return_sequences` = k, but the prompts are run through the model once.

    The cache of every prompt but its last token is built once, repeated k times along the
    batch (the order `generate` uses: prompt 0's k copies first), and handed to `generate`,
    which then only feeds the last prompt token and the new ones. Position ids follow
    `generate`'s own rule (count of real tokens), so the cached prefix is what it would
    have computed.
    """
    k = config.num_return_sequences
    ids, mask = enc["input_ids"], enc["attention_mask"]
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)
    cache = DynamicCache(config=model.config)
    model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1],
          past_key_values=cache, use_cache=True, logits_to_keep=1)
    cache.batch_repeat_interleave(k)
    single = GenerationConfig(**{**config.to_diff_dict(), "num_return_sequences": 1})
    return model.generate(input_ids=ids.repeat_interleave(k, 0), attention_mask=mask.repeat_interleave(k, 0),
                          past_key_values=cache, generation_config=single)
