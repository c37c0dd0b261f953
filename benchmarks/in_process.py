"""Benchmark: `rait run`'s stages after an in-process probe against the same stages with the probe cached (issue 34).

`rait run` keeps one process for the whole pipeline. Issue 34 measured the demo's stages after the probe at ~4x
the time they take when the probe is already cached, so whatever the probe leaves in the process slowed every
later stage. This runs the config twice, one after the other, on the same machine:

1. from scratch in `<out>/scratch` (the probe runs in the process that then evaluates and trains);
2. in `<out>/cached`, a new folder holding only a copy of run 1's pool and probe stages, so that its probe is found
   cached and everything after it runs in a process that never probed.

Stages 2..n are the same work in both (same keys, same seed), so their wall times compare directly. Reported per
stage and in total: seconds in each run (from each run's `pipeline.json`), the ratio scratch / cached, and each
run's peak resident memory, thread count, page faults and system time. The issue's target: the total after the
probe within 1.25x.

The pair runs once per allocator setting (`--memory`): `keep`, rait's (`rait.models.memory`: freed memory stays in
the process), and `default`, glibc's own (`RAIT_KEEP_MEMORY=0`), one after the other in this one invocation, so
the two compare on the same machine state.

    python benchmarks/in_process.py                 # the demo, both settings -> benchmarks/results/in_process_cpu.json
    python benchmarks/in_process.py --config configs/x.yaml --memory keep --tag x
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from kernel_paths import cpu_name  # benchmarks/kernel_paths.py, next to this script
from probe import RESULTS, save  # benchmarks/probe.py


def watch(process: subprocess.Popen, samples: list[dict], every: float = 2.0) -> None:
    """Sample the process's resident memory (MiB) and thread count until it ends (Linux /proc)."""
    status = Path(f"/proc/{process.pid}/status")
    while process.poll() is None:
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            samples.append({"rss_mib": int(fields["VmRSS"].split()[0]) // 1024, "threads": int(fields["Threads"])})
        except (OSError, KeyError, ValueError):
            pass
        time.sleep(every)


def run(config: Path, out: Path, memory: str) -> dict:
    """One `rait run` in a fresh process: its wall time, its stages' seconds, its peaks and its page faults."""
    samples: list[dict] = []
    env = {**os.environ, "RAIT_KEEP_MEMORY": "1" if memory == "keep" else "0"}
    start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    process = subprocess.Popen([sys.executable, "-m", "rait", "run", str(config), "--out", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    watcher = threading.Thread(target=watch, args=(process, samples), daemon=True)
    watcher.start()
    output = process.communicate()[0]
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if process.returncode:
        raise SystemExit(f"rait run {config} --out {out} failed:\n{output[-3000:]}")
    stages = json.loads((out / "pipeline.json").read_text(encoding="utf-8"))["stages"]
    return {"wall_s": round(wall, 1),
            "stages": {s["stage"]: {"seconds": s["seconds"], "cached": s["cached"]} for s in stages},
            "peak_rss_mib": max((s["rss_mib"] for s in samples), default=None),
            "peak_threads": max((s["threads"] for s in samples), default=None),
            "page_faults": after.ru_minflt - before.ru_minflt, "system_s": round(after.ru_stime - before.ru_stime, 1),
            "user_s": round(after.ru_utime - before.ru_utime, 1)}


def pair(config: Path, out: Path, memory: str) -> dict:
    """The config from scratch, then with only its pool and probe stages copied into a new folder."""
    shutil.rmtree(out, ignore_errors=True)
    scratch, cached = out / "scratch", out / "cached"
    first = run(config, scratch, memory)
    for track in (p for p in scratch.iterdir() if (p / "probe" / "stage.json").is_file()):
        (cached / track.name).mkdir(parents=True)
        shutil.copytree(track / "probe", cached / track.name / "probe")
        for stage_file in track.glob("pool*"):
            shutil.copy2(stage_file, cached / track.name / stage_file.name)
    second = run(config, cached, memory)

    after_probe = [name for name, stage in second["stages"].items()
                   if not stage["cached"] and name in first["stages"] and not first["stages"][name]["cached"]]
    if not after_probe:
        raise SystemExit("no stage ran in both runs")
    rows = {name: {"scratch_s": first["stages"][name]["seconds"], "cached_s": second["stages"][name]["seconds"]}
            for name in after_probe}
    for row in rows.values():
        row["ratio"] = round(row["scratch_s"] / row["cached_s"], 2) if row["cached_s"] else None
    total_scratch = sum(r["scratch_s"] for r in rows.values())
    total_cached = sum(r["cached_s"] for r in rows.values())
    return {"probe_s": {name: s["seconds"] for name, s in first["stages"].items() if name.endswith(": probe")},
            "stages": rows,
            "after_probe_s": {"scratch": round(total_scratch, 1), "cached": round(total_cached, 1),
                              "ratio": round(total_scratch / total_cached, 3)},
            "runs": {"scratch": {k: v for k, v in first.items() if k != "stages"},
                     "cached": {k: v for k, v in second.items() if k != "stages"}}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("configs/demo.yaml"))
    parser.add_argument("--out", type=Path, default=Path("runs/bench_in_process"))
    parser.add_argument("--memory", nargs="+", choices=("default", "keep"), default=["default", "keep"])
    parser.add_argument("--tag", default="cpu", help="result file: benchmarks/results/in_process_<tag>.json")
    args = parser.parse_args()

    result = {"benchmark": "stages after an in-process probe vs. the same stages with the probe cached, per allocator "
                           "setting", "config": str(args.config), "device": cpu_name()}
    for memory in args.memory:
        result[memory] = pair(args.config, args.out / memory, memory)
    if {"default", "keep"} <= result.keys():
        result["keep_vs_default"] = {
            run: round(result["keep"]["runs"][run]["wall_s"] / result["default"]["runs"][run]["wall_s"], 3)
            for run in ("scratch", "cached")}
    save(result, RESULTS / f"in_process_{args.tag}.json")


if __name__ == "__main__":
    main()
