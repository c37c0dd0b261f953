"""Backends: the three model operations the probe needs, behind one interface.

The probe never calls a model directly. It asks a backend for
- `sample`: k completions per prompt (open QA),
- `next_token_probs`: the next-token distribution after each prompt, read at some token
  ids (MCQA letters),
- `continuation_logprobs`: the log-probability of every token of a continuation after a
  context (MCQA cloze).
Prompts are rendered text; `add_special_tokens` says whether the tokenizer may add its
BOS (raw prompts) or not (chat-rendered prompts already hold the template's tokens).

`HFBackend` runs a transformers model in process and is the only backend rait ships: a
backend that could not be tested here (vLLM has no CPU wheel and no GPU was available) is
not offered. The probe's engines depend only on the `Backend` interface, so another
engine is a class with the three methods, `tokenizer`, `info` and `model_info`.
"""

from __future__ import annotations

from functools import cached_property
from typing import Callable, Protocol, Sequence

import numpy as np
import torch

from rait.generate import SamplingSettings, batches_by_prefix, generate, prefill

Progress = Callable[[int], None]


class Backend(Protocol):
    tokenizer: object

    @property
    def info(self) -> dict:
        """Backend, device and dtype, for manifests."""

    @property
    def model_info(self) -> dict:
        """The model's fingerprint (folder, config and weights hashes), for manifests."""

    def sample(self, prompts: Sequence[str], settings: SamplingSettings, *, batch_size: int, seed: int,
               add_special_tokens: bool, on_batch: Progress | None = None) -> list[list[str]]: ...

    def next_token_probs(self, prompts: Sequence[str], token_ids: Sequence[int], *, batch_size: int,
                         add_special_tokens: bool, on_batch: Progress | None = None) -> np.ndarray: ...

    def continuation_logprobs(self, contexts: Sequence[str], continuations: Sequence[str], *, batch_size: int,
                              add_special_tokens: bool, on_batch: Progress | None = None) -> list[np.ndarray]: ...


class HFBackend:
    """A transformers causal LM and its left-padding tokenizer, batched by prompt length."""

    def __init__(self, model, tokenizer):
        if tokenizer.padding_side != "left":
            raise ValueError("the probe needs a left-padding tokenizer (load it with rait.models.load_tokenizer)")
        self.model, self.tokenizer = model, tokenizer
        self.device = next(model.parameters()).device

    @property
    def info(self) -> dict:
        import transformers

        return {"backend": "hf", "device": self.device.type, "dtype": str(self.model.dtype).removeprefix("torch."),
                "torch": torch.__version__, "transformers": transformers.__version__}

    @cached_property
    def model_info(self) -> dict:
        """Fingerprint of the folder the model was loaded from. A model changed in memory
        after loading (e.g. merged LoRA weights) is not what that folder holds: save it
        and load it again, or pass the probe an explicit `model_info`."""
        from rait.models import model_fingerprint

        return model_fingerprint(self.model.name_or_path)

    def sample(self, prompts, settings, *, batch_size, seed, add_special_tokens, on_batch=None):
        return generate(self.model, self.tokenizer, prompts, settings, batch_size=batch_size, seed=seed,
                        add_special_tokens=add_special_tokens, on_batch=on_batch)

    @torch.inference_mode()
    def next_token_probs(self, prompts, token_ids, *, batch_size, add_special_tokens, on_batch=None):
        """Softmax over the whole vocabulary after each prompt, at `token_ids`: shape (prompts, ids).

        One forward pass per batch with `logits_to_keep=1`, so the LM head runs on the last
        position only.
        """
        encoded = [self.tokenizer(p, add_special_tokens=add_special_tokens)["input_ids"] for p in prompts]
        out = np.empty((len(prompts), len(token_ids)))
        for idx in batches_by_prefix(encoded, batch_size):
            logits = self._forward([encoded[i] for i in idx], logits_to_keep=1)[:, -1]
            probs = torch.softmax(logits.float(), dim=-1)[:, list(token_ids)]
            out[idx] = probs.double().cpu().numpy()
            if on_batch is not None:
                on_batch(len(idx))
        return out

    @torch.inference_mode()
    def continuation_logprobs(self, contexts, continuations, *, batch_size, add_special_tokens, on_batch=None):
        """Per-token log-probabilities of each continuation after its context.

        Context and continuation are tokenized separately and joined, so the continuation's
        tokens are the same whatever precedes them. Left padding puts every continuation at
        the end of its row, so the LM head is applied only to the last (longest
        continuation + 1) positions (`logits_to_keep`), not to the context.
        """
        pairs = []
        for context, continuation in zip(contexts, continuations, strict=True):
            cont = self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
            if not cont:
                raise ValueError(f"empty continuation after context ending {context[-40:]!r}")
            pairs.append((self.tokenizer(context, add_special_tokens=add_special_tokens)["input_ids"], cont))
        out: list[np.ndarray] = [np.empty(0)] * len(pairs)
        for idx in batches_by_prefix([c + t for c, t in pairs], batch_size):
            longest = max(len(pairs[i][1]) for i in idx)
            logits = self._forward([pairs[i][0] + pairs[i][1] for i in idx], logits_to_keep=longest + 1)
            logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # position t predicts token t + 1
            for row, i in enumerate(idx):
                target = torch.tensor(pairs[i][1], device=logprobs.device)
                picked = logprobs[row, longest - len(target):].gather(-1, target[:, None])[:, 0]
                out[i] = picked.double().cpu().numpy()
            if on_batch is not None:
                on_batch(len(idx))
        return out

    def _forward(self, sequences: list[list[int]], logits_to_keep: int) -> torch.Tensor:
        """Logits of the last `logits_to_keep` positions of the sequences, batched by `rait.generate.prefill`.

        The tokens all sequences open with (the k shots) run once; position ids count real
        tokens only, so a padded row sees the positions it would see alone.
        """
        batch = self.tokenizer.pad({"input_ids": sequences}, padding=True, return_tensors="pt")
        return prefill(self.model, batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device),
                       logits_to_keep=logits_to_keep)[0]


def load_backend(model_path=None, device: str | None = None, dtype: str | None = None) -> HFBackend:
    """The transformers backend on the model folder (or "default"), loaded with `rait.models.load_model`."""
    from rait.models import load_model

    return HFBackend(*load_model(model_path, dtype=dtype, device=device))
