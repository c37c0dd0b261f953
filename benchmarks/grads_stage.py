"""Time the study-size gradient stage with an earlier rait and with this one, on the same box, and compare the stores.

    git worktree add WORKTREE <earlier commit>
    python benchmarks/grads_stage.py --before-src WORKTREE/src [--out runs/grads-stage]

The study's pool and gradient settings (configs/study_facts.yaml, track `facts`): facts:train less its
150 validation questions, both label forms of each (2 × 1,031 samples), d = 1024, batch 16, the warm-up
LoRA (r 16 on q/k/v/o). One warm-up adapter is trained first and shared, so both sides compute the
features of the same adapter; its 64 rehearsal questions are drawn at random from the pool (the study
draws them by μ from its probe: which questions they are does not change the cost). Then
`rait grads --adapter` runs over the pool with each rait in its own process, alternating `--rounds`
times, and the two stores are compared: max abs difference of the normalised features and the
Spearman of I_O1 (each refusal-form feature against their mean, GRAIT's score).
Results: benchmarks/results/grads_stage_smollm2_cpu.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from scipy.stats import spearmanr

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parent.parent


def study_track() -> dict:
    config = yaml.safe_load((ROOT / "configs" / "study_facts.yaml").read_text(encoding="utf-8"))
    return next(t for t in config["tracks"] if t["name"] == "facts")


def prepare(out: Path) -> tuple[Path, Path, dict]:
    """The study's pool as JSONL and one warm-up adapter with its Adam moments (kept across reruns)."""
    from rait.data.stage import DataSettings
    from rait.data.stage import run as data_stage
    from rait.grads import GradsSettings
    from rait.grads.warmup import rehearsal_rows, warmup
    from rait.models import load_model

    track = study_track()
    pool = data_stage(DataSettings(**track["pool"]), out / "pool.jsonl", validation_out=out / "validation.jsonl")
    settings = GradsSettings(**track["grads"])
    adapter = out / "warmup"
    if not (adapter / "adapter_config.json").is_file():
        ids = random.Random(0).sample([r.id for r in pool.records], settings.n_rehearsal)
        model, tokenizer = load_model("default")
        warmup(model, tokenizer, rehearsal_rows(pool.records, ids, prompt=settings.prompt), adapter,
               settings.warmup)
    return pool.path, adapter, track["grads"]


def run_side(src: str, pool: Path, adapter: Path, grads: dict, out: Path) -> float:
    """`rait grads --adapter` over the pool with the rait at `src`, from scratch; returns wall seconds."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "rait", "grads", "--records", str(pool), "--out", str(out), "--adapter", str(adapter),
               "--dims", ",".join(map(str, grads["dims"])), "--batch-size", str(grads["batch_size"])]
    start = time.perf_counter()
    subprocess.run(command, env={**os.environ, "PYTHONPATH": src}, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def compare(before: Path, after: Path, d: int) -> dict:
    from rait.grads.store import load_features

    out = {}
    for form in ("answer", "refusal"):
        ids_b, x_b = load_features(before, form, d)
        ids_a, x_a = load_features(after, form, d)
        assert ids_b == ids_a, "the two stores hold different questions"
        x_b, x_a = np.asarray(x_b, dtype=np.float64), np.asarray(x_a, dtype=np.float64)
        out[form] = {"max_abs_difference": float(np.abs(x_b - x_a).max()),
                     "spearman_o1": round(float(spearmanr(x_b @ x_b.mean(0), x_a @ x_a.mean(0)).statistic), 6)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before-src", required=True, help="an earlier rait's src/ folder (e.g. a git worktree)")
    parser.add_argument("--out", default="runs/grads-stage")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pool, adapter, grads = prepare(out)
    from grads import source_name

    paths = {"before": Path(args.before_src).resolve(), "after": ROOT / "src"}
    sources = {side: source_name(path) for side, path in paths.items()}
    seconds: dict[str, list[float]] = {"before": [], "after": []}
    for _ in range(args.rounds):
        for side, src in paths.items():
            seconds[side].append(round(run_side(str(src), pool, adapter, grads, out / side), 1))
            print(side, seconds[side][-1], "s", flush=True)
    n = sum(1 for _ in pool.open(encoding="utf-8"))
    result = {"what": "study-size gradient stage (rait grads --adapter, model load included)", "pool_questions": n,
              "samples": 2 * n, "settings": {"dims": grads["dims"], "batch_size": grads["batch_size"],
                                              "warmup_lora": grads["warmup"]["lora"]},
              "threads": os.cpu_count(), "sources": sources, "seconds": seconds,
              "after_over_before_speed": round(float(np.median(seconds["before"]) / np.median(seconds["after"])), 3),
              "stores": compare(out / "before" / "store", out / "after" / "store", max(grads["dims"]))}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "grads_stage_smollm2_cpu.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# The study-size gradient stage, before and after (SmolLM2, CPU, {result['threads']} cores)", "",
             f"{n} pool questions x 2 label forms = {2 * n} samples, d = {grads['dims']}, batch {grads['batch_size']}, "
             "one shared warm-up adapter; wall time of `rait grads --adapter` per run, model load included.", "",
             "| | before | after |", "| --- | --- | --- |",
             f"| seconds | {', '.join(map(str, seconds['before']))} | {', '.join(map(str, seconds['after']))} |",
             f"| samples/s (median) | {2 * n / np.median(seconds['before']):.2f} | {2 * n / np.median(seconds['after']):.2f} |", "",
             f"Speed after / before: **{result['after_over_before_speed']}x**.", "",
             "Stores against each other (normalised features, float32 on disk):", "",
             "| form | max abs difference | Spearman of I_O1 |", "| --- | --- | --- |"]
    lines += [f"| {form} | {row['max_abs_difference']:.2e} | {row['spearman_o1']} |" for form, row in result["stores"].items()]
    (RESULTS / "grads_stage_smollm2_cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
