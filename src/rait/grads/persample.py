"""Per-sample gradients of the LoRA weights for a whole micro-batch, from one backward pass.

LESS computes one sample at a time (batch 1), which leaves > 90 % of a GPU idle
(docs/grait.md, Performance). We use the per-sample-gradient rule for linear layers
instead: a layer y = x Wᵀ has dL/dW = Σ_t g_tᵀ x_t, where x_t is the layer's input and g_t
the gradient of the loss w.r.t. its output at token t. If the batch loss is the SUM of the
samples' own losses, g_t at a token of sample b carries only sample b's loss, so the sum
over b's tokens, einsum("bto,bti->boi"), is exactly b's gradient. LoRA's A and B are plain
bias-free `nn.Linear` modules, so hooking their inputs and output gradients gives every
LoRA weight's per-sample gradient; the LoRA scaling is already inside the output gradient
of B. Each per-sample gradient is handed to a consumer as soon as its output gradient
arrives in the backward pass and can be projected and dropped at once, so no (batch ×
all-LoRA-numbers) tensor is ever held. The output head runs only where a loss reads it
(`completion_losses`). The phases carry `record_function` labels (rait.grads.forward,
.backward, .per_sample, .transform, .project) for `benchmarks/grads.py`'s time shares.

Dropout: the model runs in eval mode while gradients are taken, so LoRA dropout is off
and the features are deterministic (LESS leaves it as trained). Gradient checkpointing is
not supported (forward hooks would fire twice).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function
from trl.data_utils import common_prefix_length

GradConsumer = Callable[[str, torch.Tensor], None]


@dataclass(frozen=True)
class EncodedExample:
    """Token ids of prompt + completion and a mask of the completion tokens (the ones in the loss)."""

    input_ids: tuple[int, ...]
    completion_mask: tuple[int, ...]


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device))


def encode_example(tokenizer, prompt: str | list[dict], completion: str | list[dict], max_length: int | None = None) -> EncodedExample:
    """Tokenise a TRL prompt/completion pair the way `trl.SFTTrainer` does for training.

    Conversational pairs (lists of messages) go through the chat template, prompt with the
    generation prompt; plain strings get the EOS token appended to the completion. The
    completion starts where prompt and prompt+completion token ids diverge.
    """
    if isinstance(prompt, list):
        prompt_ids = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
        full_ids = tokenizer.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)["input_ids"]
    else:
        if not completion.endswith(tokenizer.eos_token):
            completion = completion + tokenizer.eos_token
        prompt_ids = tokenizer(prompt)["input_ids"]
        full_ids = tokenizer(prompt + completion)["input_ids"]
    start = common_prefix_length(prompt_ids, full_ids)
    mask = [0] * start + [1] * (len(full_ids) - start)
    if max_length is not None:
        full_ids, mask = full_ids[:max_length], mask[:max_length]
    if not any(mask):
        raise ValueError("the example has no completion tokens left to compute a loss on (raise max_length?)")
    return EncodedExample(tuple(full_ids), tuple(mask))


def collate(examples: Sequence[EncodedExample], pad_token_id: int) -> Batch:
    """Right-pad to the longest example; labels are -100 outside the completion."""
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        ids = torch.tensor(example.input_ids)
        input_ids[row, :n] = ids
        attention_mask[row, :n] = 1
        labels[row, :n] = torch.where(torch.tensor(example.completion_mask, dtype=torch.bool), ids, -100)
    return Batch(input_ids, attention_mask, labels)


def per_sample_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Token-mean cross-entropy of each sample over its own completion tokens, shape (batch,)."""
    return _token_means(logits[:, :-1], labels[:, 1:])


def _token_means(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each row's mean cross-entropy over its targets that are not -100; logits (batch, positions, vocab)."""
    token_loss = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=-100, reduction="none")
    return token_loss.sum(dim=1) / (targets != -100).sum(dim=1)


def loss_positions(labels: torch.Tensor) -> torch.Tensor:
    """The positions whose logits any sample's loss reads (those followed by a completion token), ascending.

    Only these need the output head: a prompt of ~60 tokens before a refusal of ~5 makes
    the head (a fifth of SmolLM2's matmul work, vocab 49,152) and its log-softmax over the
    whole sequence the largest waste of a batched backward pass.
    """
    return (labels[:, 1:] != -100).any(dim=0).nonzero().squeeze(1)


def completion_losses(model: nn.Module, batch: Batch) -> torch.Tensor:
    """`per_sample_losses` of the model on `batch`, with logits computed at `loss_positions` only.

    Uses transformers' `logits_to_keep` (a 1-D tensor keeps those positions of every row), so
    every loss term is the same as with full logits; the terms not computed are those no
    loss reads.
    """
    positions = loss_positions(batch.labels)
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, logits_to_keep=positions).logits
    if logits.shape[1] != len(positions):
        raise ValueError(f"{type(model).__name__} ignored logits_to_keep (got {logits.shape[1]} positions, "
                         f"asked for {len(positions)})")
    return _token_means(logits, batch.labels[:, positions + 1])  # every completion token is at a kept position


def lora_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The bias-free Linear modules holding every trainable weight, keyed by the weight's parameter name.

    Fails when a trainable parameter is not such a weight (a bias, an embedding adapter,
    DoRA magnitudes...): its per-sample gradient would silently be missing.
    """
    linears = {}
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module.weight.requires_grad:
            if module.bias is not None and module.bias.requires_grad:
                raise ValueError(f"{module_name}: trainable biases are not supported")
            linears[f"{module_name}.weight"] = module
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    uncovered = [name for name in trainable if name not in linears]
    if uncovered:
        raise ValueError(f"trainable parameters that are not Linear weights: {uncovered[:3]} (only plain LoRA is supported)")
    if not linears:
        raise ValueError("the model has no trainable Linear weights (load it with a LoRA adapter, is_trainable=True)")
    return linears


class PerSampleGradients:
    """Context manager: while active, each backward pass hands `consume(name, grad)` the
    per-sample gradient (batch, out, in) of every trainable Linear weight, in float32 (or float64).

    Set `token_mask` (batch, tokens) before the forward pass: inputs at padding positions are
    zeroed so padding can never leak into a sample's gradient.
    """

    def __init__(self, model: nn.Module, consume: GradConsumer):
        self.model = model
        self.consume = consume
        self.linears = lora_linears(model)
        self.token_mask: torch.Tensor | None = None
        self._handles: list = []
        self._was_training = model.training

    def __enter__(self) -> PerSampleGradients:
        self.model.eval()
        for name, module in self.linears.items():
            self._handles.append(module.register_forward_hook(self._forward_hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.model.train(self._was_training)

    def _forward_hook(self, name: str):
        def hook(module, inputs, output):
            dtype = torch.promote_types(inputs[0].dtype, torch.float32)  # bf16 models: sum in fp32
            x = inputs[0].to(dtype)
            if self.token_mask is not None:
                x = x * self.token_mask[..., None].to(dtype)

            def on_output_grad(g: torch.Tensor) -> None:
                with record_function("rait.grads.per_sample"):
                    grad = torch.einsum("bto,bti->boi", g.to(dtype), x)
                self.consume(name, grad)

            output.register_hook(on_output_grad)

        return hook


def backward_per_sample(model: nn.Module, capture: PerSampleGradients, batch: Batch) -> torch.Tensor:
    """One forward + backward of `batch` under `capture`; returns the per-sample losses.

    The backward pass runs on the SUM of the per-sample token-mean losses, so every sample's
    gradient is its own (not divided by the batch size). The summed `.grad` that autograd
    also accumulates on the LoRA weights is discarded.
    """
    capture.token_mask = batch.attention_mask
    with record_function("rait.grads.forward"):
        losses = completion_losses(model, batch)
    with record_function("rait.grads.backward"):
        losses.sum().backward()
    for module in capture.linears.values():
        module.weight.grad = None
    capture.token_mask = None
    return losses.detach()


def per_sample_grads(model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
    """Every trainable weight's per-sample gradient, {name: (batch, *weight.shape)}; for tests and small models."""
    grads: dict[str, torch.Tensor] = {}

    def keep(name: str, g: torch.Tensor) -> None:  # a module called twice contributes twice
        grads[name] = grads[name] + g if name in grads else g

    with PerSampleGradients(model, keep) as capture:
        backward_per_sample(model, capture, batch)
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    return {name: grads[name] for name in names}
