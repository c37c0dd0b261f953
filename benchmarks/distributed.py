"""Benchmark: real stages on one process and on N processes (torchrun), same inputs, side by side in one run.

Issue 20's must-show: the probe of 200 facts questions on the default model (the demo's probe settings:
0-shot query prompt, k = 10, 16 new tokens) and the greedy evaluation of facts-ID (BASIC prompt, 24 new
tokens, batch 64), each run as `rait probe` / `rait eval` on one process and under
`python -m torch.distributed.run --standalone --nproc_per_node N`; and LoRA training, weighted SFT and DPO, on
64 facts questions (SFT: the answer, every third item "I don't know" at weight 2; DPO: the answer over "I don't
know") with the same global batch of 8 (micro-batch 8 on one process, 8/N on each of N). Reported per stage and
process count: the command's wall time (start-up and model loading included) and, for the probe, the probe's
own time from its manifest; and whether the artifacts agree: the knowledge table byte for byte, the
evaluation's outputs item by item, the adapters' largest difference beside their largest weight and the
training losses. On a 2-core CPU two processes share the same cores (each gets one thread): expect no speed-up.

    python benchmarks/distributed.py                       # -> benchmarks/results/distributed_cpu.json
    python benchmarks/distributed.py --stages sft dpo      # only these: the file's other stages are kept
    python benchmarks/distributed.py --processes 4 --device-tag cuda   # on a 4-GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from probe import RESULTS, device_name, model_label, save  # benchmarks/probe.py, next to this script

STAGES = {
    "probe": ["probe", "--data", "facts:train", "--sample", "200", "--prompt", "query_0shot", "--k", "10",
              "--max-new-tokens", "16"],
    "eval": ["eval", "--data", "facts:test_id", "--prompt", "basic", "--max-new-tokens", "24", "--batch-size", "64",
             "--n-boot", "200"],
    "sft": ["train", "--epochs", "1", "--grad-accum", "1", "--lora-dropout", "0", "--lr", "1e-4", "--seed", "0"],
    "dpo": ["train", "--objective", "dpo", "--epochs", "1", "--grad-accum", "1", "--lora-dropout", "0", "--lr", "1e-4",
            "--seed", "0"],
}
TRAINING = {"sft", "dpo"}
GLOBAL_BATCH, TRAIN_QUESTIONS = 8, 64


def command(processes: int, args: list[str]) -> list[str]:
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] if processes > 1 else []
    return [sys.executable, *launcher, "-m", "rait", *args]


def training_data(stage: str, folder: Path) -> Path:
    """SFT rows or DPO pairs on the first facts training questions, as `rait build` writes them."""
    from rait.data.stage import DataSettings, load
    from rait.prompts import training_example

    records = load(DataSettings(data="facts:train", limit=TRAIN_QUESTIONS))[0]
    rows = []
    for i, record in enumerate(records):
        refuse = i % 3 == 0
        row = training_example(record, "refuse", "I don't know" if refuse else record.answer)
        if stage == "sft":
            rows.append({**row, "weight": 2.0 if refuse else 1.0})
        else:
            rows.append({"prompt": row["prompt"], "chosen": [{"role": "assistant", "content": record.answer}],
                         "rejected": [{"role": "assistant", "content": "I don't know"}]})
    path = folder / f"{stage}.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def run_stage(stage: str, processes: int, model: str, folder: Path) -> dict:
    out = folder / (f"{stage}-{processes}" + (".parquet" if stage == "probe" else ""))
    extra = []
    if stage in TRAINING:
        extra = ["--data", str(training_data(stage, folder)), "--batch-size", str(GLOBAL_BATCH // processes)]
    start = time.perf_counter()
    result = subprocess.run(command(processes, [*STAGES[stage], *extra, "--model", model, "--out", str(out)]),
                            capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{stage} on {processes} process(es) failed:\n{result.stderr[-3000:]}")
    row = {"processes": processes, "wall_seconds": round(wall, 1)}
    if stage == "probe":
        timing = json.loads(Path(f"{out}.manifest.json").read_text())["timing"]
        row |= {"probe_seconds": round(timing["wall_seconds_this_run"], 1), "recorded_processes": timing["processes"]}
    elif stage in TRAINING:
        summary = json.loads((out / "train.json").read_text())
        row |= {"train_loss": summary["train_loss"], "optimizer_steps": summary["optimizer_steps"],
                "recorded_processes": json.loads((out / "train.json.manifest.json").read_text())["processes"]}
    else:
        row["recorded_processes"] = json.loads((out / "outcomes.jsonl.manifest.json").read_text())["processes"]
    return row | {"out": out}


def agreement(stage: str, one: Path, many: Path) -> dict:
    if stage == "probe":
        return {"table_byte_identical": one.read_bytes() == many.read_bytes()}
    if stage in TRAINING:
        from safetensors.torch import load_file

        adapters = [load_file(path / "adapter" / "adapter_model.safetensors") for path in (one, many)]
        difference = max((adapters[0][key] - adapters[1][key]).abs().max().item() for key in adapters[0])
        return {"adapter_max_abs_difference": difference,
                "adapter_max_abs_weight": max(v.abs().max().item() for v in adapters[0].values()),
                "lora_b_max_abs_update": max(v.abs().max().item() for k, v in adapters[0].items() if "lora_B" in k)}
    rows = [[json.loads(line) for line in (path / "outcomes.jsonl").read_text().splitlines()] for path in (one, many)]
    assert [r["id"] for r in rows[0]] == [r["id"] for r in rows[1]]
    return {"items": len(rows[0]), "outputs_differing": sum(a["output"] != b["output"] for a, b in zip(*rows)),
            "outcomes_differing": sum(a["outcome"] != b["outcome"] for a, b in zip(*rows))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--model", default="default")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    parser.add_argument("--device-tag", default="cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    result = {"benchmark": "stages on one process and under torchrun", "model": model_label(args.model),
              "device": args.device_tag, "device_name": device_name(args.device_tag),
              "cpu_cores": os.cpu_count(), "torch": torch.__version__, "stages": {}}
    out = args.out or RESULTS / f"distributed_{args.device_tag}.json"
    if out.is_file() and set(args.stages) != set(STAGES):  # a part rerun: the file keeps the stages not run now
        result["stages"] = json.loads(out.read_text(encoding="utf-8"))["stages"]
    with tempfile.TemporaryDirectory(prefix="rait-distributed-") as folder:
        for stage in args.stages:
            rows = [run_stage(stage, n, args.model, Path(folder)) for n in (1, args.processes)]
            result["stages"][stage] = {"settings": STAGES[stage], "agreement": agreement(stage, rows[0]["out"], rows[1]["out"]),
                                       "runs": [{k: v for k, v in row.items() if k != "out"} for row in rows],
                                       "wall_ratio_many_over_one": round(rows[1]["wall_seconds"] / rows[0]["wall_seconds"], 2)}
    save(result, out)


if __name__ == "__main__":
    main()
