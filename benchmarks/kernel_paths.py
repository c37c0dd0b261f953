"""Which environment switches move this CPU's floats onto another kernel path (issue 34).

A test that asserts exact float equality between two computations holds only where both run the same kernels.
BLAS (MKL) picks its kernel by the CPU, the shape and the thread count; ATen's vectorised kernels (softmax,
reductions) by the CPU's instruction set. To catch on one machine a test that would fail on another CPU,
`make test` runs the numerics-sensitive tests (marker `numerics`) a second time under a switch that changes the
results here. This measures, for each candidate switch, which operations of the kind rait computes give other
bits than the default path, each in a fresh process: a GEMM (a batch of activations through a linear layer), the
same layer on one row (a GEMV path), a dense ±1 projection of three rows and of one row alone, a softmax over the
default model's vocabulary and a long sum. The inputs come from numpy's generator, which no switch touches.

    python benchmarks/kernel_paths.py          # -> benchmarks/results/kernel_paths_cpu.json
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from probe import RESULTS, save  # benchmarks/probe.py, next to this script

SWITCHES = ["", "MKL_CBWR=COMPATIBLE", "MKL_CBWR=AVX2", "MKL_ENABLE_INSTRUCTIONS=AVX2", "ONEDNN_MAX_CPU_ISA=AVX2",
            "ATEN_CPU_CAPABILITY=avx2", "ATEN_CPU_CAPABILITY=default", "MKL_CBWR=COMPATIBLE ATEN_CPU_CAPABILITY=avx2"]

PROBE = r"""
import hashlib, json
import numpy as np, torch
g = np.random.default_rng(0)
normal = lambda *shape: torch.from_numpy(g.standard_normal(shape).astype(np.float32))
x, signs = normal(3, 1000), torch.from_numpy((g.integers(0, 2, (1000, 256)) * 2 - 1).astype(np.float32))
a, w, logits, v = normal(64, 576), normal(1536, 576), normal(8, 49152), normal(100000)
out = {"linear, 64 rows": torch.nn.functional.linear(a, w), "linear, 1 row": torch.nn.functional.linear(a[:1], w),
       "projection, 3 rows": x @ signs, "projection, 1 row": x[1:2] @ signs,
       "softmax, 49152": torch.softmax(logits, -1), "sum, 100000": v.sum().reshape(1)}
print(json.dumps({"bits": {k: hashlib.sha256(t.numpy().tobytes()).hexdigest()[:12] for k, t in out.items()},
                  "row alone = row in batch": {"linear": torch.equal(out["linear, 1 row"], out["linear, 64 rows"][:1]),
                                               "projection": torch.equal(out["projection, 1 row"], out["projection, 3 rows"][1:2])}}))
"""


def measure(switch: str) -> dict:
    env = {**os.environ, **dict(item.split("=", 1) for item in switch.split())}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.machine())


def main() -> None:
    runs = {switch or "(default)": measure(switch) for switch in SWITCHES}
    default = runs["(default)"]["bits"]
    rows = {switch: {"changed": sorted(op for op, bits in run["bits"].items() if bits != default[op]),
                     "row alone = row in batch": run["row alone = row in batch"]}
            for switch, run in runs.items()}
    import torch

    save({"benchmark": "operations whose bits change under each kernel switch, against the default path",
          "cpu": cpu_name(), "torch": torch.__version__,
          "cpu_capability": torch.backends.cpu.get_cpu_capability(), "switches": rows},
         RESULTS / "kernel_paths_cpu.json")


if __name__ == "__main__":
    main()
