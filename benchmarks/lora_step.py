"""One LoRA training step of a random-init model of a given shape, its peak memory against `rait plan`'s estimate.

    python benchmarks/lora_step.py --shape llama3-8b --device cuda --out DIR   # Llama-3-8B shape, bf16, one GPU
    python benchmarks/lora_step.py --shape tiny --device cpu --out DIR         # the same code at toy size

The model is built from a config.json alone (tests/fixtures/llama3_8b: Meta-Llama-3-8B's public shape) with random
weights, so nothing is downloaded. The step is the trainer's: peft LoRA (configs/paper_mmlu.yaml's r 64, alpha 16,
dropout 0.1 on every linear layer), activation checkpointing, TRL's fused LM head (as `WeightedSFTTrainer` calls
it), AdamW. On CUDA the measured peak is `torch.cuda.max_memory_allocated` (every tensor, weights included) and the
estimate is `rait.pipeline.fit`'s training stage total for the same batch and length; on a CPU only the mechanics
are checked (the resident size is not the estimate's quantity: docs/plan.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {"llama3-8b": ROOT / "tests" / "fixtures" / "llama3_8b"}
TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512)


def model_config(shape: str):
    from transformers import AutoConfig, LlamaConfig

    return LlamaConfig(**TINY) if shape == "tiny" else AutoConfig.from_pretrained(SHAPES[shape])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=("llama3-8b", "tiny"), default="llama3-8b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-size", type=int, default=4, help="paper_mmlu.yaml's micro-batch")
    parser.add_argument("--tokens", type=int, default=512, help="tokens per row (5-shot MCQA rows reach this)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from rait.models.footprint import GIB, read_shape
    from rait.pipeline.fit import Device, training_parts
    from rait.train import LoraSettings, TrainSettings

    config = model_config(args.shape)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # rait's dtypes (rait.models.loading)
    torch.manual_seed(0)
    start = time.perf_counter()
    with device:
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    add_fused_lm_head(model)
    settings = TrainSettings(lora=LoraSettings(r=64, alpha=16, dropout=0.1, target_modules="all-linear"),
                             batch_size=args.batch_size, gradient_checkpointing=True)
    model = get_peft_model(model, settings.lora.peft_config())
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    built = time.perf_counter() - start

    ids = torch.randint(0, config.vocab_size, (args.batch_size, args.tokens), device=device)
    labels = ids.clone()
    labels[:, : args.tokens // 2] = -100  # the prompt half carries no loss, as in SFT rows
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        loss = -model(input_ids=ids, labels=labels, fused_lm_head=True).log_probs.sum() / (labels != -100).sum()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start

    shape = read_shape(config)
    parts, what = training_parts(shape, Device("cuda" if device.type == "cuda" else "cpu"), settings,
                                  args.batch_size, args.tokens)
    result = {
        "benchmark": "one LoRA step with activation checkpointing, random-init weights", "shape": args.shape,
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu", "dtype": str(dtype),
        "parameters": shape.parameters, "what": what, "loss": float(loss.detach()), "build_s": round(built, 1),
        "step_s": round(seconds, 2),
        "estimate_gib": {name: round(size / GIB, 3) for name, size in parts.items()},
        "estimated_peak_gib": round(sum(parts.values()) / GIB, 3),
    }
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
        result |= {"measured_peak_gib": round(peak / GIB, 3),
                   "ratio_estimated_to_measured": round(sum(parts.values()) / peak, 3)}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"lora_step_{args.shape}_{device.type}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
