"""Benchmark GRAIT's gradient stage, and run a small GRAIT data build end to end.

speed: our batched per-sample LoRA features (Adam-preconditioned, CountSketch-projected,
    normalised) against a LESS-style loop (batch 1 forward + backward, then flatten all LoRA
    grads, no Adam, no projection) and a plain batched forward + backward, in one run:
    samples/s, peak memory, MFU, and the agreement (Spearman) of I_O1 computed from our
    projected features with I_O1 from the exact (unprojected) Adam features.

    python benchmarks/grads.py speed --config smollm2 --device cpu
    python benchmarks/grads.py speed --config llama3-8b --device cuda   # random-init Llama-3-8B shape, bf16
    python benchmarks/grads.py speed --config smollm2 --device cpu --before-src WORKTREE/src  # before/after
        (WORKTREE: `git worktree add WORKTREE <earlier commit>`; alternating runs, each in its own process)

build: a real GRAIT training set on SmolLM2 from a small facts pool: greedy knowledge table,
    warm-up LoRA, gradient store, GRAIT selection and weights (`rait.select.run`).

    python benchmarks/grads.py build --pool 72

Results go to benchmarks/results/grads_<what>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from scipy.stats import spearmanr

from rait.grads import (
    AdamMoments,
    CountSketchProjector,
    EncodedExample,
    FeatureExtractor,
    GradientTransform,
    collate,
    encode_example,
    per_sample_losses,
)
import rait
from rait.grads import persample

# `--before-src` runs this script against an earlier rait: these are absent there, and so are its phases
completion_losses = getattr(persample, "completion_losses", None)
loss_positions = getattr(persample, "loss_positions", None)

RESULTS = Path(__file__).parent / "results"
DIMS = (1024, 2048, 4096, 8192)
LESS_LORA = dict(r=128, lora_alpha=512, lora_dropout=0.1, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
LLAMA3_8B = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192, rope_theta=500000.0)
PEAK_TFLOPS = {"cuda": 989.0, "cpu": 0.173}  # H100 SXM dense bf16; this CPU's measured fp32 matmul


# ---------------------------------------------------------------- measuring


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: torch.device) -> float:
    """Peak GPU memory allocated since the last reset, or the process's peak RSS so far on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def timed(device: torch.device, fn) -> tuple[float, object]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


# ---------------------------------------------------------------- models and samples


def lora_params(model) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def compute_params(model) -> int:
    """Parameters that do matmul work per token (all but the input embedding lookup; tied heads count once)."""
    base = model.get_base_model()
    embed = base.get_input_embeddings().weight
    total = sum(p.numel() for n, p in base.named_parameters() if "lora_" not in n)
    tied = base.get_output_embeddings().weight is embed
    return total if tied else total - embed.numel()


def load_config_model(config: str, device: torch.device):
    """(model with the LESS LoRA, tokenizer or None, dtype)."""
    if config == "smollm2":
        from rait.models import load_model

        model, tokenizer = load_model("default", dtype=torch.float32, device=device)
        dtype = torch.float32
    else:
        from transformers import LlamaConfig, LlamaForCausalLM

        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        shape = LLAMA3_8B if config == "llama3-8b" else dict(vocab_size=512, hidden_size=64, intermediate_size=128,
                                                              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
        torch.manual_seed(0)
        default = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        with torch.device(device):
            model = LlamaForCausalLM(LlamaConfig(**shape, tie_word_embeddings=False))
        torch.set_default_dtype(default)
        tokenizer = None
    torch.manual_seed(0)  # the same LoRA initialisation in every run (before/after runs compare one adapter)
    model = get_peft_model(model, LoraConfig(**LESS_LORA))
    return model, tokenizer, dtype


def facts_samples(tokenizer, n: int) -> list[EncodedExample]:
    """Refusal-form samples of real facts questions (GRAIT's refusal form), rendered with the chat template."""
    from rait.data.facts import build_facts
    from rait.prompts import training_example

    records = build_facts(["country_capital", "country_continent", "element_symbol"], per_relation=n // 3 + 1, seed=0)[:n]
    rows = [training_example(r, "refuse", "I don't know") for r in records]
    return [encode_example(tokenizer, row["prompt"], row["completion"]) for row in rows]


def synthetic_samples(vocab: int, n: int, tokens: int = 128, n_answers: int = 4) -> list[EncodedExample]:
    """Random prompts of tokens/2 tokens, each followed by one of a few shared answers; loss on the answer half."""
    g = torch.Generator().manual_seed(0)
    half = tokens // 2
    answers = torch.randint(0, vocab, (n_answers, tokens - half), generator=g)
    samples = []
    for i in range(n):
        ids = torch.cat([torch.randint(0, vocab, (half,), generator=g), answers[i % n_answers]]).tolist()
        samples.append(EncodedExample(tuple(ids), (0,) * half + (1,) * (tokens - half)))
    return samples


def batches(samples: list[EncodedExample], size: int, device: torch.device):
    return [collate(samples[i : i + size], 0).to(device) for i in range(0, len(samples), size)]


def warm_moments(model, samples: list[EncodedExample], device: torch.device, steps: int = 4, batch_size: int = 4) -> AdamMoments:
    """A few real AdamW steps on the pool, so the Adam features use moments of the adapter they are taken at."""
    optimizer = torch.optim.AdamW(list(lora_params(model).values()), lr=1e-4, weight_decay=0.0)
    model.train()
    for batch in batches(samples, batch_size, device)[:steps]:
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        per_sample_losses(logits, batch.labels).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    return AdamMoments.from_optimizer(optimizer, model)


# ---------------------------------------------------------------- the three ways of getting gradients


def plain_forward_backward(model, batch_list) -> None:
    """What one batched training step costs without optimiser, with logits at every position (as a trainer)."""
    for batch in batch_list:
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        per_sample_losses(logits, batch.labels).sum().backward()
        model.zero_grad(set_to_none=True)


def plain_loss_positions(model, batch_list) -> None:
    """The same with the head only where a loss reads it (as our features): their throughput ceiling."""
    for batch in batch_list:
        completion_losses(model, batch).sum().backward()
        model.zero_grad(set_to_none=True)


def less_loop(model, samples, device, keep: int) -> list[torch.Tensor]:
    """LESS collect_grad_reps at batch 1: forward, backward, flatten every LoRA grad. Keeps the first `keep` vectors."""
    params = list(lora_params(model).values())
    kept = []
    for i, sample in enumerate(samples):
        batch = collate([sample], 0).to(device)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        per_sample_losses(logits, batch.labels).sum().backward()
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        model.zero_grad(set_to_none=True)
        if i < keep:
            kept.append(flat.float())
    return kept


def our_features(model, batch_list, transform, projector) -> dict[int, torch.Tensor]:
    """Our stage minus disk writes: per-sample grads → Adam → CountSketch → L2-normalised, {d: (n, d)}.

    The transform and projector are made once, as the stage makes them once per store (the sketch's
    hashes and the moments on the device are cached in them)."""
    out: dict[int, list[torch.Tensor]] = {d: [] for d in projector.dims}
    with FeatureExtractor(model, transform, projector) as extract:
        for batch in batch_list:
            sketches = extract(batch)
            with torch.profiler.record_function("rait.grads.normalise"):
                for d, x in sketches.items():
                    out[d].append(torch.nn.functional.normalize(x.float(), dim=1))
    return {d: torch.cat(parts) for d, parts in out.items()}


PHASES = ("forward", "backward", "per_sample", "transform", "project", "normalise")


def phase_shares(model, batch_list, transform, projector, flops: dict[str, float]) -> dict | None:
    """Each phase's share of our features' time (torch.profiler, on `batch_list`), and the FLOP rate of the matmul ones.

    `backward` is the autograd pass without the per-sample, transform and projection hooks run
    inside it. None when the rait under test has no phase labels (an earlier version)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        seconds, _ = timed(torch.device("cpu"), lambda: our_features(model, batch_list, transform, projector))
    totals = {e.key.removeprefix("rait.grads."): e.cpu_time_total / 1e6 for e in prof.key_averages()
              if e.key.startswith("rait.grads.")}
    if "forward" not in totals:
        return None
    totals["backward"] -= sum(totals.get(k, 0.0) for k in ("per_sample", "transform", "project"))
    out = {}
    for phase in PHASES:
        t = totals.get(phase, 0.0)
        out[phase] = {"seconds": round(t, 3), "share": round(t / seconds, 3)}
        if phase in flops and t > 0:
            out[phase]["tflops"] = round(flops[phase] / t / 1e12, 4)
    out["other"] = {"seconds": round(seconds - sum(totals.get(p, 0.0) for p in PHASES), 3),
                    "share": round(1 - sum(totals.get(p, 0.0) for p in PHASES) / seconds, 3)}
    return {"profiled_seconds": round(seconds, 3), "samples": sum(b.input_ids.shape[0] for b in batch_list), "phases": out}


def phase_flops(model, batch_list) -> dict[str, float]:
    """Matmul FLOPs of each phase over `batch_list`, from the padded shapes the kernels see.

    Forward: 2 × body parameters × tokens, plus 2 × head parameters × kept positions; the backward
    of frozen weights is the same again (input gradients only) plus the LoRA weights' gradients,
    which the per-sample phase computes (2 × LoRA numbers × tokens), and which autograd also sums
    into `.grad` (discarded) in the backward."""
    base = model.get_base_model()
    head = base.get_output_embeddings().weight.numel()
    embed = base.get_input_embeddings().weight
    body = sum(p.numel() for n, p in base.named_parameters() if "lora_" not in n) - embed.numel()
    if base.get_output_embeddings().weight is not embed:
        body -= head
    lora = sum(p.numel() for p in lora_params(model).values())
    tokens = sum(b.input_ids.numel() for b in batch_list)
    kept = sum(b.input_ids.shape[0] * len(loss_positions(b.labels)) for b in batch_list)
    forward = 2 * body * tokens + 2 * head * kept + 2 * lora * tokens
    return {"forward": forward, "backward": forward + 2 * lora * tokens, "per_sample": 2 * lora * tokens}


def exact_adam_features(model, flat_grads: list[torch.Tensor], moments: AdamMoments) -> torch.Tensor:
    """Unprojected, normalised Adam features of the loop's gradients, (n, all LoRA numbers)."""
    transform = GradientTransform("adam", moments)
    params = lora_params(model)
    rows = []
    for flat in flat_grads:
        parts = torch.split(flat, [p.numel() for p in params.values()])
        rows.append(torch.cat([transform(n, part.reshape(1, *p.shape)).reshape(-1)
                               for (n, p), part in zip(params.items(), parts)]))
    return torch.nn.functional.normalize(torch.stack(rows), dim=1)


def influence_o1(features: torch.Tensor) -> np.ndarray:
    features = features.double()
    return (features @ features.mean(dim=0)).cpu().numpy()


# ---------------------------------------------------------------- speed


def run_speed(args) -> dict:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer, dtype = load_config_model(args.config, device)
    if args.config == "smollm2":
        samples = facts_samples(tokenizer, args.pool)
    else:
        samples = synthetic_samples(model.config.vocab_size, args.pool, args.tokens)
    n_exact = min(args.exact, len(samples))
    batch_list = batches(samples, args.batch_size, device)
    tokens = float(np.mean([len(s.input_ids) for s in samples]))
    flops_per_sample = 4 * compute_params(model) * tokens
    moments = warm_moments(model, samples, device)
    model.eval()
    n_lora = sum(p.numel() for p in lora_params(model).values())

    def rate(seconds: float, n: int) -> dict:
        per_s = n / seconds
        return {"seconds": round(seconds, 3), "samples": n, "samples_per_s": round(per_s, 2),
                "tflops": round(per_s * flops_per_sample / 1e12, 3),
                "mfu": round(per_s * flops_per_sample / (args.peak_tflops * 1e12), 4)}

    results = {}
    plain_forward_backward(model, batch_list[:1])  # warm-up: kernels, allocator
    reset_peak(device)
    seconds, _ = timed(device, lambda: plain_forward_backward(model, batch_list))
    results["plain_batched_forward_backward"] = rate(seconds, len(samples)) | {"peak_memory_gib": round(peak_gib(device), 2)}

    if completion_losses is not None:
        plain_loss_positions(model, batch_list[:1])
        reset_peak(device)
        seconds, _ = timed(device, lambda: plain_loss_positions(model, batch_list))
        results["plain_batched_loss_positions"] = rate(seconds, len(samples)) | {"peak_memory_gib": round(peak_gib(device), 2)}

    transform, projector = GradientTransform("adam", moments), CountSketchProjector(DIMS)
    our_features(model, batch_list[:1], transform, projector)
    reset_peak(device)
    seconds, ours = timed(device, lambda: our_features(model, batch_list, transform, projector))
    results["ours_batched_adam_countsketch"] = rate(seconds, len(samples)) | {"peak_memory_gib": round(peak_gib(device), 2)}

    less_loop(model, samples[:1], device, keep=0)
    reset_peak(device)
    n_loop = min(len(samples), args.loop_samples)
    seconds, exact_grads = timed(device, lambda: less_loop(model, samples[:n_loop], device, keep=n_exact))
    results["less_loop_batch1_no_projection"] = rate(seconds, n_loop) | {"peak_memory_gib": round(peak_gib(device), 2)}

    shares = None
    if device.type == "cpu" and loss_positions is not None:
        profiled = batch_list[: args.profile_batches]
        shares = phase_shares(model, profiled, transform, projector, phase_flops(model, profiled))

    exact = exact_adam_features(model, exact_grads, moments)
    exact_o1 = influence_o1(exact)
    exact_cos = (exact.double() @ exact.double().T).cpu().numpy()
    agreement = {}
    for d in DIMS:
        projected = ours[d][:n_exact]
        cos = (projected.double() @ projected.double().T).cpu().numpy()
        off = ~np.eye(n_exact, dtype=bool)
        agreement[d] = {"spearman_o1": round(float(spearmanr(influence_o1(projected), exact_o1).statistic), 4),
                        "max_abs_cosine_error": round(float(np.abs(cos - exact_cos)[off].max()), 4),
                        "mean_abs_cosine_error": round(float(np.abs(cos - exact_cos)[off].mean()), 4)}
    speedup = results["ours_batched_adam_countsketch"]["samples_per_s"] / results["less_loop_batch1_no_projection"]["samples_per_s"]
    return {
        "what": "speed", "config": args.config, "device": str(device), "rait_source": source_name(Path(rait.__file__).parent.parent),
        "device_name": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(), "dtype": str(dtype).removeprefix("torch."), "torch": torch.__version__,
        "lora": {k: v for k, v in LESS_LORA.items()}, "lora_numbers_per_sample": n_lora,
        "pool": len(samples), "mean_tokens": round(tokens, 1), "batch_size": args.batch_size,
        "flops_per_sample_tflop": round(flops_per_sample / 1e12, 5), "peak_tflops": args.peak_tflops,
        "results": results, "speedup_vs_loop": round(speedup, 2), "phases": shares,
        "agreement": {"pool": n_exact, "gradient_type": "adam", "projector": "countsketch", "by_d": agreement},
        "memory_note": ("torch.cuda.max_memory_allocated per phase" if device.type == "cuda" else
                        "process peak RSS so far (monotone: phases run in the order listed)"),
    }


def speed_markdown(r: dict) -> str:
    lines = [f"# Gradient features: {r['config']} on {r['device']} ({r['device_name']}, {r['dtype']}, {r['threads']} threads)", "",
             f"LoRA r={r['lora']['r']}, alpha={r['lora']['lora_alpha']} on {'/'.join(m[0] for m in r['lora']['target_modules'])}: "
             f"{r['lora_numbers_per_sample']:,} numbers per sample. Pool {r['pool']} samples, mean {r['mean_tokens']} tokens, "
             f"batch {r['batch_size']}. FLOPs/sample = 4 x compute params x tokens = {r['flops_per_sample_tflop']} TFLOP; "
             f"MFU against {r['peak_tflops']} TFLOP/s.", "",
             "| what | samples/s | TFLOP/s | MFU | peak memory (GiB) |", "| --- | --- | --- | --- | --- |"]
    for name, row in r["results"].items():
        lines.append(f"| {name} | {row['samples_per_s']} | {row['tflops']} | {row['mfu']:.1%} | {row['peak_memory_gib']} |")
    lines += ["", f"Ours / LESS loop: **{r['speedup_vs_loop']}x** (ours includes Adam preconditioning, projection to "
              f"{', '.join(map(str, DIMS))} and normalisation; the loop has neither).", "",
              f"Agreement on {r['agreement']['pool']} samples (Adam features, CountSketch vs exact):", "",
              "| d | Spearman of I_O1 | max abs cosine error | mean abs cosine error |", "| --- | --- | --- | --- |"]
    for d, row in r["agreement"]["by_d"].items():
        lines.append(f"| {d} | {row['spearman_o1']} | {row['max_abs_cosine_error']} | {row['mean_abs_cosine_error']} |")
    lines += ["", f"Memory: {r['memory_note']}.", "",
              "MFU counts the nominal 4 x compute params x tokens per sample in every row, as MFU is defined; the rows "
              "that run the head only where a loss reads it do fewer FLOPs, and their hardware rate is in the phase table."]
    if r.get("phases"):
        p = r["phases"]
        lines += ["", f"Where our features' time goes ({p['samples']} samples under torch.profiler, {p['profiled_seconds']} s; "
                  "matmul FLOPs from the padded shapes):", "", "| phase | seconds | share | TFLOP/s | of the fp32 matmul rate |",
                  "| --- | --- | --- | --- | --- |"]
        for name, row in p["phases"].items():
            rate = row.get("tflops")
            of_peak = f"{rate / r['peak_tflops']:.0%}" if rate else ""
            lines.append(f"| {name} | {row['seconds']} | {row['share']:.1%} | {rate or ''} | {of_peak} |")
    return "\n".join(lines) + "\n"


def source_name(src: Path) -> str:
    """A rait source folder by its git commit (a worktree of an earlier one, or this checkout), not by its path."""
    import subprocess

    head = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--", "."], capture_output=True, text=True)
    if head.returncode:
        return "a rait source outside git"
    return f"commit {head.stdout.strip()}" + (" with uncommitted changes" if dirty.stdout.strip() else "")


def before_after(args) -> dict:
    """Alternate runs of this script against an earlier rait (`--before-src`) and this one, `--rounds` times each.

    Each run is its own process on the same box; the medians per phase and their ratio are reported."""
    import os
    import subprocess
    import sys
    import tempfile

    here = Path(__file__).resolve()
    paths = {"before": Path(args.before_src).resolve(), "after": here.parent.parent / "src"}
    sources = {side: source_name(path) for side, path in paths.items()}
    own = ("--before-src", "--rounds")
    argv = sys.argv[2:]
    forwarded = [a for i, a in enumerate(argv) if not a.startswith(own) and (i == 0 or argv[i - 1] not in own)]
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for side, src in paths.items():
                out = Path(tmp) / f"{side}-{round_}.json"
                env = {**os.environ, "PYTHONPATH": str(src)}
                subprocess.run([sys.executable, str(here), "speed", *forwarded, "--json-out", str(out)], env=env, check=True)
                runs[side].append(json.loads(out.read_text()))
    summary = {}
    for phase in runs["after"][0]["results"]:
        rates = {side: [r["results"][phase]["samples_per_s"] for r in runs[side] if phase in r["results"]] for side in runs}
        row = {f"{side}_samples_per_s": [float(x) for x in rates[side]] for side in runs}
        if rates["before"]:
            row["after_over_before"] = round(float(np.median(rates["after"]) / np.median(rates["before"])), 3)
        summary[phase] = row
    speedups = {side: [r["speedup_vs_loop"] for r in runs[side]] for side in runs}
    return runs["after"][-1] | {"before_after": {"sources": sources, "rounds": args.rounds, "by_phase": summary,
                                                 "ours_over_less_loop": speedups, "before_runs": runs["before"]}}


def before_after_markdown(r: dict) -> str:
    b = r["before_after"]
    lines = ["", f"## Before and after, same box, {b['rounds']} alternating rounds (each a fresh process)", "",
             f"Before: {b['sources']['before']}; after: {b['sources']['after']}. Samples/s per round; ratio of the medians.", "",
             "| what | before | after | after / before |", "| --- | --- | --- | --- |"]
    for phase, row in b["by_phase"].items():
        before = ", ".join(map(str, row["before_samples_per_s"])) or "(not in the earlier code)"
        lines.append(f"| {phase} | {before} | {', '.join(map(str, row['after_samples_per_s']))} | {row.get('after_over_before', '')} |")
    lines.append(f"| ours / LESS loop | {', '.join(map(str, b['ours_over_less_loop']['before']))} | "
                 f"{', '.join(map(str, b['ours_over_less_loop']['after']))} | |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- end-to-end build on SmolLM2


def greedy_knowledge_table(records, batch_size: int = 16):
    """A cheap knowledge table: μ = 1 if the model's greedy answer (BASIC prompt) matches, else 0."""
    import pandas as pd

    from rait.data.scoring import match_answer
    from rait.generate import SamplingSettings, generate
    from rait.models import load_model
    from rait.prompts import render

    model, tokenizer = load_model("default")
    prompts = [render(r, "basic", tokenizer) for r in records]
    outputs = generate(model, tokenizer, prompts, SamplingSettings(max_new_tokens=24), batch_size=batch_size)
    correct = [match_answer(out[0], r.all_answers, mode="word") for r, out in zip(records, outputs)]
    return pd.DataFrame({"id": [r.id for r in records], "task": "oeqa", "mu": [float(c) for c in correct], "sigma": 0.0})


def run_build(args) -> dict:
    from rait.data import write_records
    from rait.data.facts import build_facts
    from rait.grads import GradsSettings, GradientFeatures
    from rait.grads.stage import run as grads_stage
    from rait.grads.warmup import warmup_settings
    from rait.probe.table import read_table, write_table
    from rait.select import BuildSettings
    from rait.select import run as build_sets
    from rait.select.grait import GRAIT

    out = Path(args.out_dir)
    relations = ["country_capital", "country_continent", "element_symbol"]
    records = build_facts(relations, per_relation=args.pool // len(relations), seed=0)
    write_records(out / "pool.jsonl", records)
    timings_path = out / "timings.json"  # kept across resumed runs, so the report shows the real compute times
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    if (out / "knowledge.jsonl").is_file():  # a rerun resumes: table, warm-up and gradient store are kept
        table = read_table(out / "knowledge.jsonl")
    else:
        seconds, table = timed(torch.device("cpu"), lambda: greedy_knowledge_table(records))
        timings["knowledge_table_s"] = round(seconds, 1)
        write_table(table, out / "knowledge.jsonl")
        timings_path.write_text(json.dumps(timings))

    warm = warmup_settings(epochs=2.0, grad_accum=4, batch_size=1)  # 2 shared CPU cores: fewer epochs than 4
    grads = GradsSettings(gradient_type="adam", dims=(1024, 8192), batch_size=8, warmup=warm,
                          n_rehearsal=args.rehearsal)
    seconds, store = timed(torch.device("cpu"), lambda: grads_stage(
        grads, out / "pool.jsonl", out / "grads", model="default", table_path=out / "knowledge.jsonl"))
    timings.setdefault("warmup_and_gradients_s", round(seconds, 1))
    timings_path.write_text(json.dumps(timings))
    n_ik, n_idk = int((table["mu"] >= 0.5).sum()), int((table["mu"] < 0.5).sum())
    n_vanilla, n_idk_sel = n_ik // 2, n_idk // 4
    summary = build_sets(BuildSettings(methods=["grait", "cor_rait"], n_vanilla=n_vanilla, n_idk=n_idk_sel, exports=()),
                         out / "knowledge.jsonl", out / "pool.jsonl", out / "build", gradients=store).summary

    features = GradientFeatures.load(store, 8192)
    rules = {rule: GRAIT(features, n_vanilla=n_vanilla, n_idk=n_idk_sel, rule=rule).fit(table)
             for rule in ("o1_topk", "greedy_then_bottom", "random")}
    small = GRAIT(GradientFeatures.load(store, 1024), n_vanilla=n_vanilla, n_idk=n_idk_sel).fit(table)
    scores = rules["o1_topk"].scores_
    by_id = {r.id: r for r in records}
    top = scores.sort_values("influence_o1", ascending=False)
    warm_summary = json.loads((out / "grads" / "warmup" / "warmup.json").read_text())
    report = summary["methods"]["grait"]["report"] | {"features": str(Path(store).relative_to(out))}
    return {
        "what": "build", "model": "SmolLM2-135M-Instruct (default)", "pool": len(records), "relations": relations,
        "knowledge": {"rule": "greedy answer under the BASIC prompt, word match: mu in {0, 1}",
                      "ik": n_ik, "idk": n_idk, "greedy_accuracy": round(float(table["mu"].mean()), 3)},
        "warmup": {k: warm_summary[k] for k in ("rows", "optimizer_steps", "first_loss", "last_loss")} | {
            "lora": f"r={warm.lora.r}, alpha={warm.lora.alpha}, {'/'.join(m[0] for m in warm.lora.target_modules)}",
            "lr": warm.learning_rate, "epochs": warm.epochs, "batch": f"{warm.batch_size} x {warm.grad_accum}"},
        "gradients": grads.as_dict(), "timings": timings,
        "selection": {"n_vanilla": n_vanilla, "n_idk": n_idk_sel,
                      "report": report,
                      "overlap_o1_topk_vs_greedy_then_bottom": len(set(rules["o1_topk"].idk_ids_) & set(rules["greedy_then_bottom"].idk_ids_)),
                      "overlap_o1_topk_vs_random": len(set(rules["o1_topk"].idk_ids_) & set(rules["random"].idk_ids_)),
                      "spearman_o1_d1024_vs_d8192": round(float(spearmanr(small.scores_["influence_o1"], scores["influence_o1"]).statistic), 4),
                      "same_selection_d1024": small.idk_ids_ == rules["o1_topk"].idk_ids_},
        "highest_o1": [{"question": by_id[i].question, "I_O1": round(v, 4)} for i, v in zip(top["id"][:5], top["influence_o1"][:5])],
        "lowest_o1": [{"question": by_id[i].question, "I_O1": round(v, 4)} for i, v in zip(top["id"][-5:], top["influence_o1"][-5:])],
        "files (relative to --out-dir)": {k: str(Path(v).relative_to(out)) for k, v in summary["methods"]["grait"]["files"].items()},
    }


def build_markdown(r: dict) -> str:
    s = r["selection"]
    w = s["report"]["weights"]
    lines = [f"# GRAIT data build on {r['model']}", "",
             f"- pool: {r['pool']} facts questions ({', '.join(r['relations'])}); knowledge table: {r['knowledge']['rule']}; "
             f"ik {r['knowledge']['ik']}, idk {r['knowledge']['idk']} (greedy accuracy {r['knowledge']['greedy_accuracy']})",
             f"- warm-up: {r['warmup']['rows']} rehearsal rows, {r['warmup']['lora']}, lr {r['warmup']['lr']}, "
             f"{r['warmup']['epochs']} epochs, batch {r['warmup']['batch']}: {r['warmup']['optimizer_steps']} steps, "
             f"loss {r['warmup']['first_loss']:.3f} -> {r['warmup']['last_loss']:.3f}",
             f"- gradients: {r['gradients']['gradient_type']}, {r['gradients']['projector']} to {r['gradients']['dims']}, "
             "both label forms of every usable question",
             "- time (2 shared CPU cores): " + ", ".join(f"{k.removesuffix('_s')} {v} s" for k, v in r["timings"].items()),
             f"- selection: {s['n_vanilla']} vanilla + {s['n_idk']} IdK ({s['report']['how']['idk']}); weights sum "
             f"{w['sum']:.3f} (= N_idk/2), range {w['min']:.3f}-{w['max']:.3f}, effective n {w['effective_n']:.2f}",
             f"- IdK overlap of o1_topk with greedy_then_bottom: {s['overlap_o1_topk_vs_greedy_then_bottom']}/{s['n_idk']}, "
             f"with random: {s['overlap_o1_topk_vs_random']}/{s['n_idk']}",
             f"- I_O1 Spearman d=1024 vs d=8192: {s['spearman_o1_d1024_vs_d8192']}; same top-k selection: {s['same_selection_d1024']}",
             "", "Highest I_O1 (most aligned with the mean IdK refusal gradient):", ""]
    lines += [f"- {q['question']} ({q['I_O1']})" for q in r["highest_o1"]]
    lines += ["", "Lowest I_O1:", ""] + [f"- {q['question']} ({q['I_O1']})" for q in r["lowest_o1"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    speed = sub.add_parser("speed")
    speed.add_argument("--config", choices=["smollm2", "llama3-8b", "tiny"], default="smollm2")
    speed.add_argument("--device", default="cpu")
    speed.add_argument("--pool", type=int, default=None, help="samples (default 48 on CPU, 512 on CUDA)")
    speed.add_argument("--exact", type=int, default=None, help="samples for the exact-gradient agreement (default 32 / 16)")
    speed.add_argument("--loop-samples", type=int, default=None, help="samples timed in the batch-1 loop (default: the pool on CPU, 64 on CUDA)")
    speed.add_argument("--batch-size", type=int, default=None, help="default 8 on CPU, 32 on CUDA")
    speed.add_argument("--tokens", type=int, default=128, help="tokens per synthetic sample (llama3-8b, tiny)")
    speed.add_argument("--threads", type=int, default=None)
    speed.add_argument("--peak-tflops", type=float, default=None)
    speed.add_argument("--profile-batches", type=int, default=2, help="batches profiled for the phase shares (CPU)")
    speed.add_argument("--before-src", default=None, help="an earlier rait's src/ folder (e.g. a git worktree): "
                       "alternate runs of both, each in its own process")
    speed.add_argument("--rounds", type=int, default=2, help="rounds of before/after runs with --before-src")
    speed.add_argument("--json-out", default=None, help="write this run's JSON here only (used by --before-src)")
    build = sub.add_parser("build")
    build.add_argument("--pool", type=int, default=72)
    build.add_argument("--rehearsal", type=int, default=16)
    build.add_argument("--out-dir", default="runs/grait-build")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.command == "speed":
        cuda = args.device.startswith("cuda")
        args.pool = args.pool or (512 if cuda else 48)
        args.exact = args.exact or (16 if cuda else 32)
        args.loop_samples = args.loop_samples or (64 if cuda else args.pool)
        args.batch_size = args.batch_size or (32 if cuda else 8)
        args.peak_tflops = args.peak_tflops or PEAK_TFLOPS["cuda" if cuda else "cpu"]
        name = f"grads_{args.config}_{args.device.split(':')[0]}"
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(run_speed(args)))
            return
        if args.before_src:
            result = before_after(args)
            text = speed_markdown(result) + before_after_markdown(result)
        else:
            result = run_speed(args)
            text = speed_markdown(result)
    else:
        result, name = run_build(args), "grads_build_smollm2"
        text = build_markdown(result)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
