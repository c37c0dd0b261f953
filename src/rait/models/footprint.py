"""Peak-memory estimates of a model's stages from its `config.json` alone (`rait plan`, and `rait run`'s check).

The model is built on the meta device (no weights are read or allocated), so an 8B config is measured on a laptop.
Every function returns bytes and is a plain product of the shape and the setting it names; docs/plan.md writes the
formulas out. Activations follow the accounting of Korthikanti et al. 2022, "Reducing Activation Recomputation in
Large Transformer Models" (arXiv:2205.05198, section 4.1: the tensors each layer keeps for its backward pass),
redone for a Llama block (RMSNorm, grouped-query attention, SwiGLU MLP, no dropout) instead of GPT's; with full
activation checkpointing (their section 5) each layer keeps only its input and one layer's activations are
recomputed at a time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

GIB = 2**30
# AdamW as transformers runs it: fp32 master weight, its gradient, two fp32 moments.
ADAM_BYTES_PER_TRAINABLE = 4 + 4 + 8
# NF4 with double quantisation (QLoRA, Dettmers et al. 2023): 4 bits, an 8-bit scale per 64 weights, an fp32 scale
# per 256 of those.
NF4_BYTES_PER_PARAMETER = 0.5 + 1 / 64 + 4 / (64 * 256)
# TRL's fused LM head scores tokens in tiles of this many tokens by this many vocabulary entries (trl.kernels),
# so training never holds a whole (tokens, vocabulary) logits tensor. On CUDA its Triton kernel works inside the one
# fp32 tile buffer; without Triton (a CPU) the backward's torch fallback (`_backward_tile`) holds nine tile-sized
# fp32 tensors at once: the buffer, the scaled logits, z, log p, p, the gradient, the target mask as floats, its
# difference with p and that times the incoming gradient.
LM_HEAD_TILE = (4096, 32768)
LM_HEAD_TILES = {"cuda": 1, "cpu": 9}
_LAYER_LINEAR = re.compile(r"\.layers\.0\.(?:.+\.)?([^.]+)$")


@dataclass(frozen=True)
class ModelShape:
    """What the estimates need of a decoder-only transformer; `linears` maps each linear layer of one decoder
    layer (by its leaf name, as LoRA's target_modules names it) to its (in, out) features."""

    parameters: int
    layer_linear_parameters: int  # in all decoder layers' linear layers: what QLoRA quantises
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    linears: dict[str, tuple[int, int]]


def read_shape(config) -> ModelShape:
    """The shape of a model from its config (a `PretrainedConfig`, or a folder or `config.json` path), built on the
    meta device: parameters are counted, never allocated."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    if isinstance(config, (str, Path)):
        path = Path(config)
        config = AutoConfig.from_pretrained(path.parent if path.is_file() else path, local_files_only=True)
    with init_empty_weights():
        skeleton = AutoModelForCausalLM.from_config(config)
    linears = {}
    for name, module in skeleton.named_modules():
        if isinstance(module, torch.nn.Linear) and (match := _LAYER_LINEAR.search(name)):
            linears[match.group(1)] = (module.in_features, module.out_features)
    text = config.get_text_config()
    heads = text.num_attention_heads
    layer_linear = sum(m.weight.numel() for n, m in skeleton.named_modules()
                       if isinstance(m, torch.nn.Linear) and ".layers." in n)
    parameters = sum(p.numel() for p in skeleton.parameters())
    head, embedding = skeleton.get_output_embeddings(), skeleton.get_input_embeddings()
    if text.tie_word_embeddings and head is not None and head.weight is not embedding.weight:
        parameters -= head.weight.numel()  # tied once the weights load; the meta skeleton keeps two
    return ModelShape(
        parameters=parameters,
        layer_linear_parameters=layer_linear,
        layers=text.num_hidden_layers, hidden=text.hidden_size, intermediate=text.intermediate_size, heads=heads,
        kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=getattr(text, "head_dim", None) or text.hidden_size // heads, vocab=text.vocab_size,
        linears=linears)


def weight_bytes(shape: ModelShape, bytes_per_parameter: float) -> float:
    """The weights held at one width (fp32 4, bf16 2)."""
    return shape.parameters * bytes_per_parameter


def qlora_weight_bytes(shape: ModelShape) -> float:
    """A QLoRA base: the decoder layers' linear weights in NF4, embeddings, head and norms in bf16."""
    return (shape.layer_linear_parameters * NF4_BYTES_PER_PARAMETER
            + (shape.parameters - shape.layer_linear_parameters) * 2)


def lora_parameters(shape: ModelShape, r: int, targets: str | list[str], layers: list[int] | None) -> int:
    """Trainable parameters of LoRA adapters of rank `r`: r x (in + out) per targeted linear layer, in every decoder
    layer or in `layers` ("all-linear": every linear layer of the decoder layers, as peft resolves it)."""
    names = list(shape.linears) if targets == "all-linear" else [t for t in targets if t in shape.linears]
    adapted = shape.layers if layers is None else len(set(layers))
    return adapted * sum(r * sum(shape.linears[name]) for name in names)


def optimizer_state_bytes(trainable: int) -> float:
    """AdamW's training state of `trainable` parameters: fp32 master copy, gradient and two moments (16 bytes each).
    For full fine-tuning the master copy is the model itself (rait trains it in fp32)."""
    return trainable * ADAM_BYTES_PER_TRAINABLE


def layer_activation_bytes(shape: ModelShape, tokens: int, sequence: int, width: int, attention_scores: bool,
                           lora_r: int = 0, lora_targets: int = 0) -> float:
    """What one decoder layer keeps for its backward pass over `tokens` tokens (sequences of `sequence`), at
    activation width `width` bytes (bf16 2, fp32 4): the Llama form of Korthikanti et al.'s sbh(34 + 5as/h).

    Per token: both RMSNorms keep their input in fp32 (4h each; they compute in fp32); attention keeps its
    projections' input (h), rotated q and k (a·d + g·d), v (g·d), the attention output and o_proj's input (2·a·d);
    the MLP keeps its projections' input (h), gate, SiLU(gate), up and down_proj's input (4f); each LoRA branch its
    rank-r intermediate. `attention_scores`: an attention without a fused kernel (eager, or SDPA's math path on a
    CPU) also keeps the softmax, heads x sequence per token; flash and memory-efficient kernels keep none."""
    s = shape
    per_token = 2 * 4 * s.hidden + width * (
        s.hidden + (s.heads + s.kv_heads) * s.head_dim + s.kv_heads * s.head_dim + 2 * s.heads * s.head_dim
        + s.hidden + 4 * s.intermediate + lora_r * lora_targets)
    if attention_scores:
        per_token += width * s.heads * sequence
    return tokens * per_token


def training_activation_bytes(shape: ModelShape, batch: int, sequence: int, width: int, *, checkpointing: bool,
                              attention_scores: bool, lowest_trained_layer: int = 0, lora_r: int = 0,
                              lora_targets: int = 0, head_tiles: int = 1) -> float:
    """Activations of one micro-batch's forward pass, kept for its backward.

    Layers below `lowest_trained_layer` keep nothing: no gradient flows into them (LoRA on the top layers only).
    Without checkpointing every trained layer keeps `layer_activation_bytes`; with it each keeps only its input
    (width x h per token, Korthikanti et al.'s 2sbh at 16 bits) and one layer's activations exist at a time, during
    its recomputation. The LM head's share is `head_tiles` tiles of the fused head (`LM_HEAD_TILES`) and the final
    hidden state in fp32."""
    tokens = batch * sequence
    kept_layers = shape.layers - lowest_trained_layer
    one_layer = layer_activation_bytes(shape, tokens, sequence, width, attention_scores, lora_r, lora_targets)
    if checkpointing:
        layers = kept_layers * tokens * width * shape.hidden + one_layer
    else:
        layers = kept_layers * one_layer
    tile = min(tokens, LM_HEAD_TILE[0]) * min(shape.vocab, LM_HEAD_TILE[1]) * 4
    head = head_tiles * tile + tokens * shape.hidden * 4
    return layers + head


def kv_cache_bytes(shape: ModelShape, sequences: int, length: int, width: int) -> float:
    """Keys and values of every layer for `sequences` sequences of `length` tokens: 2 x layers x g·d per token."""
    return 2 * shape.layers * shape.kv_heads * shape.head_dim * sequences * length * width


def generation_peak_bytes(shape: ModelShape, sequences: int, prompt: int, new_tokens: int, width: int,
                          attention_scores: bool, prefill_cache_kept: bool = False) -> float:
    """Working memory of sampling `new_tokens` after a `prompt` for `sequences` sequences at once, beyond the
    weights: the KV cache at full length, plus the largest transient of the prefill (one layer's MLP intermediates,
    gate, up and their product, 3f per token, or the attention scores where no fused kernel runs), plus the fp32
    logits of the last position of every sequence. `prefill_cache_kept`: the prompt's own cache stays while the
    full-length one is filled from it (rait's greedy stream hands each row its prefill cache, `rait.generate`)."""
    tokens = sequences * prompt
    transient = width * tokens * max(3 * shape.intermediate, shape.heads * prompt if attention_scores else 0)
    prefill_cache = kv_cache_bytes(shape, sequences, prompt, width) if prefill_cache_kept else 0
    return (kv_cache_bytes(shape, sequences, prompt + new_tokens, width) + prefill_cache + transient
            + sequences * shape.vocab * 4 * 2)
