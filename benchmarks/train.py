"""Fine-tuning on the default model (SmolLM2-135M-Instruct, CPU): three runs behind docs/train.md.

    python benchmarks/train.py lora        # LoRA on 200 facts questions: loss curve, answers before/after
    python benchmarks/train.py overhead    # step time of WeightedSFTTrainer vs plain SFTTrainer, one process
    python benchmarks/train.py rehearsal   # probe a small facts pool, rehearse, re-probe, Δμ histogram

Results go to benchmarks/results/train_<run>.json, figures to docs/img/train_<run>*.png,
work files (adapters, tables) to runs/bench-train/ (ignored by git). Every run is seeded.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from rait.artifacts import read_manifest
from rait.data.facts import build_facts, split_facts
from rait.data.records import QARecord
from rait.data.scoring import Outcome, score_open
from rait.generate import SamplingSettings, generate
from rait.models import load_model
from rait.prompts import render, training_example

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
IMAGES = ROOT / "docs" / "img"
WORK = ROOT / "runs" / "bench-train"
SEED = 0


def facts_sample(n: int, seed: int = SEED, split: str = "train") -> list[QARecord]:
    """n questions of the facts pool's training split, drawn with `seed`."""
    records = split_facts(build_facts(seed=seed), seed)[split]
    return random.Random(seed).sample(records, n)


def greedy_answers(model, tokenizer, records: list[QARecord], max_new_tokens: int = 24) -> list[str]:
    prompts = [render(r, "basic", tokenizer) for r in records]
    outputs = generate(model, tokenizer, prompts, SamplingSettings(max_new_tokens=max_new_tokens), batch_size=16)
    return [texts[0].strip() for texts in outputs]


def accuracy(records: list[QARecord], answers: list[str]) -> float:
    outcomes = [score_open(a, r.all_answers, match_mode=r.metadata.get("match_mode", "contains")) for r, a in zip(records, answers)]
    return sum(o == Outcome.CORRECT for o in outcomes) / len(outcomes)


def environment() -> dict:
    import transformers
    import trl

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "trl": trl.__version__, "threads": torch.get_num_threads(), "device": "cpu" if not torch.cuda.is_available() else "cuda"}


def write_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"train_{name}.json"
    path.write_text(json.dumps({**result, "environment": environment()}, indent=2) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------- LoRA run


def run_lora(n: int, epochs: float) -> None:
    from matplotlib.figure import Figure

    from rait.train import TrainSettings, load_trained
    from rait.train import run as train

    records = facts_sample(n)
    held_out = random.Random(SEED).sample(split_facts(build_facts(seed=SEED), SEED)["test_id"], 100)
    rows = [{"id": r.id, **training_example(r, "basic", r.answer)} for r in records]

    base, tokenizer = load_model("default")
    before_train, before_test = greedy_answers(base, tokenizer, records), greedy_answers(base, tokenizer, held_out)
    del base

    settings = TrainSettings(epochs=epochs, seed=SEED)
    result = train(settings, rows, WORK / "lora", model="default")
    tuned, tokenizer = load_trained(WORK / "lora")
    after_train, after_test = greedy_answers(tuned, tokenizer, records), greedy_answers(tuned, tokenizer, held_out)

    steps, losses = zip(*result.losses)
    fig = Figure(figsize=(6.4, 3.4))
    ax = fig.subplots()
    ax.plot(steps, losses, marker=".")
    ax.set_xlabel("optimiser step (global batch 16)")
    ax.set_ylabel("training loss (per-sample mean CE)")
    ax.set_title(f"LoRA r={settings.lora.r} on {n} facts questions, SmolLM2-135M")
    fig.tight_layout()
    IMAGES.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMAGES / "train_lora_loss.png", dpi=120)

    changed = sum(a != b for a, b in zip(before_train, after_train))
    examples = [{"question": r.question, "gold": r.answer, "before": b, "after": a}
                for r, b, a in list(zip(records, before_train, after_train))[:8]]
    path = write_result("lora", {
        "data": f"{n} facts questions (train split, seed {SEED}), prompt 'basic', target = gold answer",
        "settings": {**settings.__dict__, "lora": settings.lora.__dict__},
        "optimizer_steps": result.optimizer_steps, "samples": result.samples, "train_loss": result.train_loss,
        "first_losses": losses[:5], "last_losses": losses[-5:], "losses": result.losses,
        "runtime_s": json.loads((WORK / "lora" / "train.json").read_text())["runtime_s"],
        "answers_changed": changed, "accuracy_train_before": accuracy(records, before_train),
        "accuracy_train_after": accuracy(records, after_train),
        "accuracy_held_out_before": accuracy(held_out, before_test), "accuracy_held_out_after": accuracy(held_out, after_test),
        "examples": examples,
    })
    print(f"wrote {path}")


# ---------------------------------------------------------------- overhead


class StepTimer(TrainerCallback):
    """Records the wall time of every optimiser step."""

    def __init__(self):
        self.times: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self.start)


def run_overhead(rounds: int, steps: int, batch_size: int) -> None:
    """Alternate plain and weighted runs of `steps` optimiser steps on the same rows; compare step times."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from rait.train import LoraSettings, WeightedSFTConfig, WeightedSFTTrainer

    records = facts_sample(batch_size * steps)
    rows = [training_example(r, "basic", r.answer) for r in records]
    rng = random.Random(SEED)
    weighted_rows = [{**row, "weight": rng.uniform(0.25, 2.0)} for row in rows]
    common = dict(per_device_train_batch_size=batch_size, max_steps=steps, learning_rate=2e-4, logging_steps=steps,
                  save_strategy="no", report_to="none", disable_tqdm=True, seed=SEED, bf16=False,
                  activation_checkpointing=False)
    times: dict[str, list[float]] = {"plain": [], "weighted": []}
    for round_ in range(rounds):
        for kind in ("plain", "weighted") if round_ % 2 == 0 else ("weighted", "plain"):
            model, tokenizer = load_model("default")
            timer = StepTimer()
            if kind == "plain":
                trainer = SFTTrainer(model, args=SFTConfig(output_dir=str(WORK / "overhead"), **common),
                                     train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                                     peft_config=LoraSettings().peft_config(), callbacks=[timer])
            else:
                trainer = WeightedSFTTrainer(model, args=WeightedSFTConfig(output_dir=str(WORK / "overhead"), **common),
                                             train_dataset=Dataset.from_list(weighted_rows), processing_class=tokenizer,
                                             peft_config=LoraSettings().peft_config(), callbacks=[timer])
            trainer.train()
            times[kind] += timer.times[1:]  # the first step of a run warms up allocators
            print(kind, [round(t, 3) for t in timer.times])
    median = {kind: statistics.median(t) for kind, t in times.items()}
    path = write_result("overhead", {
        "setup": f"SmolLM2-135M LoRA r=64 all-linear, batch {batch_size} facts questions, {rounds} rounds x {steps} steps "
                 "per trainer, alternating order, first step of each run dropped",
        "median_step_s": median, "mean_step_s": {k: statistics.mean(t) for k, t in times.items()},
        "overhead_percent": 100 * (median["weighted"] / median["plain"] - 1), "step_times_s": times,
    })
    print(f"wrote {path}: overhead {100 * (median['weighted'] / median['plain'] - 1):+.1f} %")


# ---------------------------------------------------------------- rehearsal


def run_rehearsal(n_pool: int, k: int, max_new_tokens: int, mu_min: float, sigma_min: float, batch_size: int) -> None:
    """Rehearsal on a small facts pool. SmolLM2 answers in sentences sampled at T = 1, so the
    paper's filter (μ ≥ 0.995 and σ ≥ 0.995) passes almost nothing; the thresholds are options."""
    from rait.probe import OpenSettings, probe_open, read_table
    from rait.probe.backends import HFBackend
    from rait.rehearse import RehearseSettings, plot_delta_mu
    from rait.rehearse import run as rehearse
    from rait.train import TrainSettings

    pool = facts_sample(n_pool)
    table_path = WORK / "rehearsal" / "initial_table.jsonl"
    settings = OpenSettings(prompt="query_0shot", k=k, max_new_tokens=max_new_tokens, seed=SEED)
    if not table_path.is_file():
        model, tokenizer = load_model("default")
        probe_open(HFBackend(model, tokenizer), pool, table_path, settings=settings)
        del model

    table = read_table(table_path)
    passing = {"paper filter (mu >= 0.995, sigma >= 0.995)": int(((table["mu"] >= 0.995) & (table["sigma"] >= 0.995)).sum()),
               f"used filter (mu >= {mu_min}, sigma >= {sigma_min})": int(((table["mu"] >= mu_min) & (table["sigma"] >= sigma_min)).sum())}
    train_settings = TrainSettings(seed=SEED, batch_size=batch_size, grad_accum=1)
    start = time.perf_counter()
    settings = RehearseSettings(mu_min=mu_min, sigma_min=sigma_min, seed=SEED, train=train_settings)
    result = rehearse(settings, table_path, pool, WORK / "rehearsal" / "run", model="default")
    rehearse_s = time.perf_counter() - start
    plot_delta_mu(result.flow, IMAGES / "train_rehearsal_delta_mu.png",
                  title=f"Knowledge flow, SmolLM2-135M, {n_pool} facts questions ({result.rehearsal_samples} rehearsed)")
    summary = json.loads((result.out_dir / "flow_summary.json").read_text())
    known = set(json.loads(line)["id"] for line in (result.out_dir / "rehearsal_data.jsonl").read_text().splitlines())
    flow = result.flow
    train_log = json.loads((result.out_dir / "model" / "train.json").read_text())["log_history"]
    path = write_result("rehearsal", {
        "pool": f"{n_pool} facts questions (train split, seed {SEED})", "probe": settings.as_dict(),
        "questions_passing": passing, "train_settings": {**train_settings.__dict__, "lora": train_settings.lora.__dict__},
        "rehearsal_samples": result.rehearsal_samples, "optimizer_steps": result.optimizer_steps, "updates": result.updates,
        "rehearsal_losses": [e["loss"] for e in train_log if "loss" in e],
        "flow_summary": summary, "initial_probe_s": round(read_manifest(table_path)["timing"]["compute_seconds"], 1),
        "rehearse_and_reprobe_s": round(rehearse_s, 1),
        "mean_mu_before": float(flow["mu"].mean()), "mean_mu_after": float(flow["mu_rehearsal"].mean()),
        "mean_delta_mu_rehearsed": float(flow[flow["id"].isin(known)]["delta_mu"].mean()),
        "mean_delta_mu_not_rehearsed": float(flow[~flow["id"].isin(known)]["delta_mu"].mean()),
    })
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="run", required=True)
    lora = sub.add_parser("lora")
    lora.add_argument("--n", type=int, default=200)
    lora.add_argument("--epochs", type=float, default=2)
    overhead = sub.add_parser("overhead")
    overhead.add_argument("--rounds", type=int, default=4)
    overhead.add_argument("--steps", type=int, default=6)
    overhead.add_argument("--batch-size", type=int, default=8)
    rehearsal = sub.add_parser("rehearsal")
    rehearsal.add_argument("--pool", type=int, default=100)
    rehearsal.add_argument("--k", type=int, default=10)
    rehearsal.add_argument("--max-new-tokens", type=int, default=24)
    rehearsal.add_argument("--mu-min", type=float, default=0.7)
    rehearsal.add_argument("--sigma-min", type=float, default=0.7)
    rehearsal.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's; use 1 when other jobs share the cores)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.run == "lora":
        run_lora(args.n, args.epochs)
    elif args.run == "overhead":
        run_overhead(args.rounds, args.steps, args.batch_size)
    else:
        run_rehearsal(args.pool, args.k, args.max_new_tokens, args.mu_min, args.sigma_min, args.batch_size)


if __name__ == "__main__":
    main()
