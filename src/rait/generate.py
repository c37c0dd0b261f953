"""Batched text generation shared by evaluation (greedy) and knowledge probing (sampling).

Prompts are already-rendered strings (see `rait.prompts`); results come back in the input
order. Both greedy answers and k samples per prompt go through our own prefill and decoding
loop instead of `model.generate`: the tokens every prompt of a batch opens with (chat
header, system turn, hint, few-shot exemplars) are prefilled once, keys and values go into a
preallocated static cache, and finished rows leave the batch. Greedy answers are
token-identical to `generate`'s (tests/test_generate.py; the real model in docs/eval.md);
samples come from the same distribution. What each part saves: docs/probe.md (Speed) and
docs/eval.md. Models whose sliding attention window is shorter than prompt + answer fall
back to `generate` (see `_window_shorter_than`).
Every sampling setting is explicit: we build the `GenerationConfig` ourselves instead of
inheriting the model's `generation_config.json`, whose hidden top-k/top-p would silently
change what "temperature 1.0" means (see docs/probe.md, Sampling defaults).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch
from transformers import DynamicCache, GenerationConfig, StaticCache


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
    encoded = [tokenizer(p, add_special_tokens=add_special_tokens)["input_ids"] for p in prompts]
    if settings.do_sample:
        # Sampling keeps its batches (by text length) and so its seed stream: recorded probes reproduce.
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    else:
        batches = batches_by_prefix(encoded, batch_size)
    results: list[list[str]] = [[] for _ in prompts]
    if not settings.do_sample:
        for stream in _streams(batches, encoded):
            padded = [(idx, tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, padding=True, return_tensors="pt"))
                      for idx in stream]
            padded = [(idx, enc["input_ids"].to(device), enc["attention_mask"].to(device)) for idx, enc in padded]
            if _window_shorter_than(model.config, padded[0][1].shape[1] + 2 * settings.max_new_tokens):
                answers = {}
                for idx, ids, mask in padded:
                    new = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
                    answers.update(zip(idx, new[:, ids.shape[1] :].tolist()))
                    if on_batch is not None:
                        on_batch(len(idx))
            else:
                answers = _greedy_stream(model, padded, settings.max_new_tokens, _eos_tensor(config, device), on_batch)
            for i, tokens in answers.items():
                results[i] = [tokenizer.decode(tokens, skip_special_tokens=True)]
        return results
    k = settings.num_return_sequences
    for b, idx in enumerate(batches):
        enc = tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, padding=True, return_tensors="pt")
        enc = {key: enc[key].to(device) for key in ("input_ids", "attention_mask")}
        torch.manual_seed(seed + b)
        if _window_shorter_than(model.config, enc["input_ids"].shape[1] + settings.max_new_tokens):
            new_tokens = model.generate(**enc, generation_config=config)[:, enc["input_ids"].shape[1] :]
        else:
            new_tokens = _sample_from_shared_prefill(model, enc, settings, config)
        texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        for j, i in enumerate(idx):
            results[i] = texts[j * k : (j + 1) * k]
        if on_batch is not None:
            on_batch(len(idx))
    return results


def _streams(batches: list[list[int]], sequences: Sequence[Sequence[int]]) -> list[list[list[int]]]:
    """Consecutive batches (longest first) decoded as one stream, cut where prompts fall below half the stream's longest.

    Every row of a stream attends over a cache as wide as the stream's longest prompt plus
    twice the answer length; a 300-token prompt should not pay for a 2,000-token one.
    """
    streams: list[list[list[int]]] = []
    for batch in batches:
        if streams and 2 * len(sequences[batch[0]]) >= len(sequences[streams[-1][0][0]]):
            streams[-1].append(batch)
        else:
            streams.append([batch])
    return streams


def _eos_tensor(config: GenerationConfig, device) -> torch.Tensor:
    eos_ids = config.eos_token_id
    return torch.tensor([] if eos_ids is None else eos_ids if isinstance(eos_ids, list) else [eos_ids],
                        dtype=torch.long, device=device)


@dataclass
class _Row:
    """A prompt prefilled and waiting for a place in the decoding batch."""

    index: int
    logits: torch.Tensor  # after the last prompt token
    layers: list[tuple[torch.Tensor, torch.Tensor]]  # keys and values, (heads, width, head_dim) per layer
    mask: torch.Tensor  # (width,)
    position: int  # of the last prompt token


def _greedy_stream(model, batches: list[tuple[list[int], torch.Tensor, torch.Tensor]], max_new_tokens: int,
                   eos: torch.Tensor, on_done: Callable[[int], None] | None = None) -> dict[int, list[int]]:
    """Greedy new tokens (up to the end token, included) for every prompt of `batches`, keyed by prompt index.

    `batches` are (prompt indices, left-padded ids, mask), longest first. The batch keeps
    its size while prompts wait: a row whose answer has ended is given the next prompt
    (continuous batching), so a batch no longer runs as long as its longest answer while
    its other rows idle. On a CPU a decoding step of 16 rows costs about what one row
    does (it reads every weight once; docs/eval.md), so idle rows are most of the waste.
    Prompts are prefilled a batch at a time (`prefill`: the shared prefix once) and a
    joining row's cache is copied into the freed row, right-aligned at the current write
    slot and masked before it; position ids are per row, so no row sees another's layout.
    Keys carry their rotary positions, so when the cache would overflow all rows shift
    left by the slots none of them uses. Once no prompt waits, finished rows leave the
    batch as in `_decode`.
    """
    pending = iter(batches)
    ready: list[_Row] = []

    def next_row() -> _Row | None:
        if not ready:
            batch = next(pending, None)
            if batch is None:
                return None
            idx, ids, mask = batch
            logits, cache, _, mask, positions = prefill(model, ids, mask)
            for j, i in enumerate(idx):
                ready.append(_Row(i, logits[j, -1].float(), [(layer.keys[j], layer.values[j]) for layer in cache.layers],
                                  mask[j], int(positions[j, -1])))
        return ready.pop(0)

    answers: dict[int, list[int]] = {}

    def take(slot: int, token: int) -> bool:
        """Record the prompt's next token; True if its answer has ended."""
        tokens = answers.setdefault(slot_prompt[slot], [])
        tokens.append(token)
        ended = token in eos_ids or len(tokens) == max_new_tokens
        if ended and on_done is not None:
            on_done(1)
        return ended

    eos_ids = set(eos.tolist())
    first = [next_row() for _ in range(len(batches[0][0]))]
    rows, longest = len(first), first[0].mask.shape[0]
    capacity = longest + 2 * max_new_tokens
    cache = StaticCache(config=model.config, max_cache_len=capacity)
    for layer_idx in range(len(first[0].layers)):
        cache.update(torch.stack([row.layers[layer_idx][0] for row in first]),
                     torch.stack([row.layers[layer_idx][1] for row in first]), layer_idx)
    width = longest  # the slot the next token's keys and values go to
    mask = torch.stack([row.mask for row in first]).long()
    slot_prompt = [row.index for row in first]
    token = torch.stack([row.logits for row in first]).argmax(-1)
    position = torch.tensor([row.position + 1 for row in first], device=mask.device)  # of each row's token
    live = torch.tensor([not take(slot, int(t)) for slot, t in enumerate(token.tolist())], device=mask.device)
    waiting = True
    while True:
        free = (~live).nonzero()[:, 0].tolist()
        if waiting and free:
            if width + max_new_tokens > capacity:
                width, mask = _shift_left(cache, mask, live, width, longest)
            for slot in free:
                while not live[slot]:
                    row = next_row()
                    if row is None:
                        waiting = False
                        break
                    n = row.mask.shape[0]
                    for layer, (keys, values) in zip(cache.layers, row.layers):
                        layer.keys[slot, :, width - n : width] = keys
                        layer.values[slot, :, width - n : width] = values
                    mask[slot] = 0
                    mask[slot, width - n :] = row.mask
                    slot_prompt[slot] = row.index
                    token[slot], position[slot] = row.logits.argmax(), row.position + 1
                    live[slot] = not take(slot, int(token[slot]))
                if not waiting:
                    break
            free = (~live).nonzero()[:, 0].tolist()
        if not live.any():
            return answers
        if not waiting and 4 * len(free) >= rows:
            _drop_rows(cache, live)
            keep = live.nonzero()[:, 0]
            token, mask, position, live = token[keep], mask[keep], position[keep], live[keep]
            slot_prompt = [slot_prompt[i] for i in keep.tolist()]
            rows = len(slot_prompt)
        mask = torch.cat([mask, mask.new_ones(rows, 1)], dim=-1)
        logits = model(input_ids=token[:, None], attention_mask=mask, position_ids=position[:, None],
                       past_key_values=cache, use_cache=True).logits[:, -1]
        width += 1
        token, position = logits.float().argmax(-1), position + 1
        for slot in live.nonzero()[:, 0].tolist():
            live[slot] = not take(slot, int(token[slot]))


def _shift_left(cache: StaticCache, mask: torch.Tensor, live: torch.Tensor, width: int, longest: int):
    """Move every row's slots left by as many as no live row uses, keeping at least `longest` slots.

    Returns the new write slot and mask. Each row's content ends at the write slot, so a
    shift by the smallest masked margin among live rows frees room for another answer.
    """
    used = mask[live].argmax(-1)  # each live row's first unmasked slot
    shift = min(int(used.min()) if len(used) else width, width - longest)
    if shift <= 0:
        return width, mask
    for layer in cache.layers:
        for tensor in (layer.keys, layer.values):
            tensor[:, :, : width - shift] = tensor[:, :, shift:width].clone()
        layer.cumulative_length.fill_(width - shift)
        if hasattr(layer, "cumulative_length_int"):
            layer.cumulative_length_int = width - shift
    return width - shift, mask[:, shift:]


def batches_by_prefix(sequences: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Indices in batches that share a long prefix where they can, of similar length otherwise.

    k-shot questions of one subject share their shots (most of a 5-shot MMLU prompt), the
    options of one question share the whole context, and evaluation prompts share the chat
    header, system turn and hint; `prefill` runs a shared prefix once. Sorted by tokens, such
    sequences are neighbours: a run of neighbours sharing at least half of the shorter one is
    batched together; the rest are batched by length, as mixing a 300- and a 2,000-token
    prompt would pad the short one to 2,000 (measured: 100 random MMLU questions, 1.8 per
    subject, 1.6x slower when batched by tokens alone). Within a group, batches hold
    prompts of similar length. Longest batches first, so memory errors come early.
    """
    def share_half(a, b) -> bool:
        return 2 * len(os.path.commonprefix([a, b])) >= min(len(a), len(b))

    runs: list[list[int]] = []
    for i in sorted(range(len(sequences)), key=lambda i: list(sequences[i])):
        if runs and share_half(sequences[runs[-1][0]], sequences[i]):
            runs[-1].append(i)
        else:
            runs.append([i])
    groups = [run for run in runs if len(run) > 1] + [[i for run in runs if len(run) == 1 for i in run]]
    batches = []
    for group in groups:
        group.sort(key=lambda i: -len(sequences[i]))
        batches += [group[start:start + batch_size] for start in range(0, len(group), batch_size)]
    return sorted(batches, key=lambda batch: -len(sequences[batch[0]]))


def _window_shorter_than(config, length: int) -> bool:
    """Whether some layer attends to a sliding window of fewer than `length` positions (Mistral, Gemma 2/3).

    Our prefill puts padding between the shared prefix and the rest of each prompt, and a
    window counts cache positions, padding included; such models sample with `generate`.
    """
    text = config.get_text_config(decoder=True)
    window = getattr(text, "sliding_window", None)
    layer_types = getattr(text, "layer_types", None)
    return window is not None and window < length and (layer_types is None or "sliding_attention" in layer_types)


def _sample_from_shared_prefill(model, enc: dict, settings: SamplingSettings, config: GenerationConfig) -> torch.Tensor:
    """k samples per prompt, as `generate(num_return_sequences=k)` draws them, but much cheaper.

    Returns the new tokens, (prompts * k, max_new_tokens), padded after the end of each
    sample; prompt 0's k samples come first, as in `generate`. `generate` prefills each of
    the k copies of a prompt; here each prompt is prefilled once (`prefill`: the few-shot
    exemplars once per batch) and its cache copied k times. Decoding is `_decode`.
    """
    k = settings.num_return_sequences
    logits, prompt_cache, ids, mask, positions = prefill(model, enc["input_ids"], enc["attention_mask"])
    logits = logits[:, -1].float()
    cache = StaticCache(config=model.config, max_cache_len=ids.shape[1] + settings.max_new_tokens)
    for layer_idx, layer in enumerate(prompt_cache.layers):
        cache.update(layer.keys.repeat_interleave(k, 0), layer.values.repeat_interleave(k, 0), layer_idx)
    del prompt_cache
    eos = _eos_tensor(config, ids.device)
    return _decode(model, cache, logits.repeat_interleave(k, 0), mask.repeat_interleave(k, 0),
                   positions[:, -1:].repeat_interleave(k, 0), settings, eos, config.pad_token_id)


def _decode(model, cache: StaticCache, logits: torch.Tensor, mask: torch.Tensor, position: torch.Tensor,
            settings: SamplingSettings, eos: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """Draw up to `max_new_tokens` tokens per row from `logits` onwards; rows stop at an end-of-sequence token.

    What `generate`'s sampling loop does (logits in fp32 whatever the model's dtype), with
    two differences that matter on a CPU at 160 rows (16 prompts x 10 samples) and a 49k
    vocabulary, where they were most of the time: keys and values go into a preallocated
    `StaticCache` (the default dynamic cache copies itself at every step), and a token is
    drawn among the top-k candidates only
    (`generate` sorts and samples the whole vocabulary; same distribution, see
    `next_token_candidates`). Finished rows are dropped from the batch once they are a
    quarter of it: a batch otherwise runs until its longest sample ends.
    """
    rows = logits.shape[0]
    new_tokens = torch.full((rows, settings.max_new_tokens), pad_token_id, dtype=torch.long, device=logits.device)
    live = torch.arange(rows, device=logits.device)
    running = torch.ones(rows, dtype=torch.bool, device=logits.device)
    for step in range(settings.max_new_tokens):
        probs, vocab_ids = next_token_candidates(logits, settings)
        choice = torch.multinomial(probs, 1) if settings.do_sample else probs.argmax(-1, keepdim=True)
        token = choice if vocab_ids is None else vocab_ids.gather(-1, choice)
        new_tokens[live[running], step] = token[running, 0]
        running &= ~torch.isin(token[:, 0], eos)
        if step == settings.max_new_tokens - 1 or not running.any():
            break
        if (~running).sum() * 4 >= len(running):
            _drop_rows(cache, running)
            live, token, mask, position = live[running], token[running], mask[running], position[running]
            running = running[running]
        mask = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=-1)
        position = position + 1
        logits = model(input_ids=token, attention_mask=mask, position_ids=position, past_key_values=cache,
                       use_cache=True).logits[:, -1].float()
    return new_tokens


def _drop_rows(cache: StaticCache, keep: torch.Tensor) -> None:
    """Keep only the rows in the boolean `keep`, in place.

    Rows move up within the preallocated tensors, one row at a time (kept rows only ever
    move to a lower index, so no row is overwritten before it is read), and each layer's
    tensors become views of their first rows. A fresh, smaller cache would cost more than
    the rows it saves: on a CPU, allocating and zeroing a 1.6 GB cache is page faults.
    """
    kept = keep.nonzero()[:, 0].tolist()
    moves = [(dst, src) for dst, src in enumerate(kept) if dst != src]
    for layer in cache.layers:
        for tensor in (layer.keys, layer.values):
            for dst, src in moves:
                tensor[dst].copy_(tensor[src])
        layer.keys, layer.values = layer.keys[: len(kept)], layer.values[: len(kept)]


def next_token_candidates(logits: torch.Tensor, settings: SamplingSettings) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The next-token distribution of `generate` (temperature, then top-k, then top-p), on its support only.

    Returns probabilities (rows, candidates) and the candidates' vocabulary ids, or None
    when every token is a candidate (ids = positions). Greedy decoding keeps the raw logits,
    whose argmax is the greedy token.
    """
    if not settings.do_sample:
        return logits, None
    vocab_ids = None
    if settings.top_k:
        logits, vocab_ids = logits.topk(min(settings.top_k, logits.shape[-1]), dim=-1)
    elif settings.top_p < 1.0:
        logits, vocab_ids = logits.sort(dim=-1, descending=True)
    probs = (logits / settings.temperature).softmax(-1)
    if settings.top_p < 1.0:
        mass_before = probs.cumsum(-1) - probs
        probs = probs.masked_fill(mass_before >= settings.top_p, 0.0)
    return probs, vocab_ids


def prefill(model, ids: torch.Tensor, mask: torch.Tensor, logits_to_keep: int = 1):
    """Run a left-padded batch through the model, the tokens all its rows open with only once.

    Few-shot prompts share their exemplars (3-shot open QA: 168 of ~190 tokens; 5-shot
    MMLU: all but the question, for questions of one subject); those tokens are run for one
    row and their cache copied to the others. The batch is laid out as [shared prefix,
    padding, rest of the row], with position ids that count real tokens only, so every row
    sees what it would see alone. Returns the logits of the last `logits_to_keep` positions
    (all real tokens of every row), the cache, and the laid-out ids, mask and positions.
    """
    if _window_shorter_than(model.config, ids.shape[1]):
        shared = 0  # the padding after a shared prefix would sit inside the window
    else:
        ids, mask, shared = _shared_prefix_first(ids, mask, keep=logits_to_keep)
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)
    cache = DynamicCache(config=model.config)
    if shared:
        model(input_ids=ids[:1, :shared], position_ids=positions[:1, :shared], past_key_values=cache,
              use_cache=True, logits_to_keep=1)
        cache.batch_repeat_interleave(ids.shape[0])
    logits = model(input_ids=ids[:, shared:], attention_mask=mask, position_ids=positions[:, shared:],
                   past_key_values=cache, use_cache=True, logits_to_keep=logits_to_keep).logits
    return logits, cache, ids, mask, positions


def _shared_prefix_first(ids: torch.Tensor, mask: torch.Tensor, keep: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Move the left padding of a batch behind the tokens all its rows start with.

    Returns the new ids and mask and the length of that shared prefix, capped so every
    row keeps its last `keep` tokens out of it (the positions whose logits are wanted).
    """
    lengths = mask.sum(-1).tolist()
    rows = [row[len(row) - n :] for row, n in zip(ids, lengths)]
    limit = max(min(lengths) - keep, 0)
    shared = len(os.path.commonprefix([row[:limit].tolist() for row in rows]))
    if shared == 0:
        return ids, mask, 0
    width = ids.shape[1]
    new_ids, new_mask = ids.clone(), torch.zeros_like(mask)
    for i, (row, n) in enumerate(zip(rows, lengths)):
        new_ids[i, :shared] = row[:shared]
        new_ids[i, shared : width - n + shared] = ids[i, : width - n]
        new_ids[i, width - n + shared :] = row[shared:]
        new_mask[i, :shared] = 1
        new_mask[i, width - n + shared :] = 1
    return new_ids, new_mask, shared
