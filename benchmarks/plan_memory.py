"""`rait plan`'s memory estimate against the measured peaks of the default model's stages on CPU (docs/plan.md).

    OMP_NUM_THREADS=1 python benchmarks/plan_memory.py          # writes benchmarks/results/plan_memory_cpu.json

Each stage (probe, LoRA training, evaluation, at configs/demo.yaml's settings on a seeded sample of the facts pool)
runs in a worker process of its own, started by a process that does nothing else, which reads the worker's peak
resident memory from `resource.getrusage(RUSAGE_CHILDREN)`. The worker records its resident memory (VmRSS) right
after the model's weights are loaded (every import done by then but the stage's own late ones). What is compared:

    measured = peak RSS of the worker - its RSS after the model load
    estimate = the stage's estimate from `rait.pipeline.fit` less its weights (they are in the subtrahend)

at the sequence lengths of the sample itself (the longest prompt of the sample, as every batch pads to its longest;
the training rows' longest prompt + completion), so the comparison tests the formulas, not the default `Lengths`.
The probe's worker also loads the MiniLM embedder for the certainty σ after the generation, which the estimate
leaves out (about 90 MB of fp32 weights).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "plan_memory_cpu.json"
STAGES = ("probe", "train", "eval")
SEED = 0


def rss_bytes() -> int:
    """This process's resident memory now (VmRSS)."""
    with open("/proc/self/status", encoding="ascii") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


def record_rss_after_model_load(report: dict) -> None:
    """Note the resident memory when the first causal LM has loaded (the probe and the trainer load it themselves)."""
    import torch
    from transformers import AutoModelForCausalLM

    original = AutoModelForCausalLM.from_pretrained.__func__

    def from_pretrained(cls, *args, **kwargs):
        model = original(cls, *args, **kwargs)
        if "rss_after_load" not in report:
            with torch.no_grad():  # safetensors maps the file: read every weight once so that it is resident
                sum(float(p.sum()) for p in model.parameters())
            report["rss_after_load"] = rss_bytes()
        return model

    AutoModelForCausalLM.from_pretrained = classmethod(from_pretrained)


def demo_config():
    from rait.pipeline import PipelineConfig

    return PipelineConfig.from_yaml(ROOT / "configs" / "demo.yaml")


def records(n: int):
    from rait.data import TestSet, load_test_records

    return load_test_records(TestSet(name="pool", data="facts:train", sample=n, stratify="subject"), SEED)


def training_rows(sample):
    from rait.prompts import training_example

    return [training_example(record, "refuse", record.answer) | {"weight": 1.0} for record in sample]


def worker(stage: str, n: int, work: Path) -> dict:
    """Run one stage at the demo's settings on `n` questions; return its lengths and RSS after the model load."""
    report: dict = {}
    record_rss_after_model_load(report)
    config, sample = demo_config(), records(n)
    track = config.tracks[0]
    if stage == "probe":
        from rait.probe.stage import run

        run(track.probe, sample, work / "table.jsonl", model="default")
    elif stage == "train":
        from rait.train import run

        settings = replace(config.train_of(track), epochs=1.0)
        run(settings, training_rows(sample), work / "train", model="default", progress=False)
    else:
        from rait.evaluate.suite import load_for_eval, run

        loaded = load_for_eval("default")
        settings = replace(config.eval.settings("refuse", "oeqa", SEED), n_boot=10)
        run(settings, sample, work / "eval", model=loaded)
    report["lengths"] = token_lengths(sample)
    return report


def token_lengths(sample) -> dict[str, int]:
    """The longest rendered prompt of the sample (probe: the query prompt; eval and training: REFUSE) and the
    longest training answer, in the default model's tokens."""
    from rait.models import load_tokenizer
    from rait.prompts import render

    tokenizer = load_tokenizer("default")
    config = demo_config()

    def longest(texts):
        return max(len(tokenizer(text, add_special_tokens=False).input_ids) for text in texts)

    query = config.tracks[0].probe.for_task("oeqa").prompt
    return {"probe_prompt": longest(render(r, query, tokenizer, chat=True) for r in sample),
            "refuse_prompt": longest(render(r, "refuse", tokenizer, chat=True) for r in sample),
            "answer": longest(r.answer + tokenizer.eos_token for r in sample)}


def estimates(lengths: dict[str, int], n: int) -> dict[str, dict]:
    """`rait.pipeline.fit`'s estimate of each stage at the measured lengths, in bytes, less the weights."""
    from rait.pipeline.fit import Device, Lengths, plan

    config = demo_config()
    config.tracks[0].pool = replace(config.tracks[0].pool, sample=n)
    by_stage = {}
    for stage, prompt in (("probe", lengths["probe_prompt"]), ("train", lengths["refuse_prompt"]),
                          ("eval", lengths["refuse_prompt"])):
        chosen = next(e for e in plan(config, device=Device("cpu"), lengths=Lengths(oeqa_prompt=prompt,
                                                                                    answer=lengths["answer"]))
                      if e.stage == stage)
        parts = {name: size for name, size in chosen.parts.items() if name != "weights"}
        by_stage[stage] = {"what": chosen.what, "parts": parts, "bytes": sum(parts.values())}
    return by_stage


# How the worker's allocator runs. "rait": rait's default (`rait.models.memory`: glibc keeps what torch frees, so the
# resident size is the high-water mark of its heap). "live": glibc maps every block above 64 KiB on its own and
# unmaps it when freed, so the resident size follows the live tensors, which is what the estimate counts.
ALLOCATORS = {"rait": {}, "live": {"RAIT_KEEP_MEMORY": "0", "MALLOC_MMAP_THRESHOLD_": "65536"}}


def measure(stage: str, n: int, allocator: str) -> dict:
    """The worker's peak RSS, read by a process that started nothing else (RUSAGE_CHILDREN is a maximum over them)."""
    with tempfile.TemporaryDirectory() as work:
        report_file = Path(work) / "report.json"
        start = time.perf_counter()
        env = {key: value for key, value in os.environ.items() if key not in ALLOCATORS["live"]}
        subprocess.run([sys.executable, __file__, "--worker", stage, "--n", str(n), "--work", work,
                        "--report", str(report_file)], check=True, env=env | ALLOCATORS[allocator])
        seconds = time.perf_counter() - start
        report = json.loads(report_file.read_text())
    report["peak_rss"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    report["seconds"] = round(seconds, 1)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=64, help="questions of the facts pool per stage")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--worker")
    parser.add_argument("--measure")
    parser.add_argument("--allocator", choices=tuple(ALLOCATORS), default="live")
    parser.add_argument("--work", type=Path)
    parser.add_argument("--report", type=Path)
    args = parser.parse_args()
    if args.worker:
        args.report.write_text(json.dumps(worker(args.worker, args.n, args.work)))
        return
    if args.measure:
        print(json.dumps(measure(args.measure, args.n, args.allocator)))
        return
    rows = []
    for stage in args.stages.split(","):
        for allocator in ALLOCATORS:
            # a fresh measuring process per stage, so that each maximum is that stage's alone
            measured = json.loads(subprocess.run(
                [sys.executable, __file__, "--measure", stage, "--n", str(args.n), "--allocator", allocator],
                check=True, capture_output=True, text=True).stdout)
            estimate = estimates(measured["lengths"], args.n)[stage]
            delta = measured["peak_rss"] - measured["rss_after_load"]
            rows.append({"stage": stage, "allocator": allocator, "what": estimate["what"],
                         "lengths": measured["lengths"], "rss_after_load_mb": round(measured["rss_after_load"] / 2**20),
                         "peak_rss_mb": round(measured["peak_rss"] / 2**20), "measured_mb": round(delta / 2**20),
                         "estimated_mb": round(estimate["bytes"] / 2**20),
                         "estimate_parts_mb": {k: round(v / 2**20) for k, v in estimate["parts"].items()},
                         "ratio_estimated_to_measured": round(estimate["bytes"] / delta, 3),
                         "seconds": measured["seconds"]})
            print(json.dumps(rows[-1]), flush=True)
    args.out.write_text(json.dumps({
        "command": "OMP_NUM_THREADS=1 python benchmarks/plan_memory.py" + (f" --n {args.n}" if args.n != 64 else ""),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpu_threads": 1},
        "questions": args.n, "compared": "peak RSS - RSS after the model load vs the estimate less the weights",
        "allocators": {"rait": "rait's default: glibc keeps freed memory (rait.models.memory)",
                       "live": "RAIT_KEEP_MEMORY=0 MALLOC_MMAP_THRESHOLD_=65536: resident size follows live tensors"},
        "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
