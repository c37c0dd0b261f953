"""Compare a one-process `rait run` with a `--processes N` run of the same config: stage times and agreement.

    rait run configs/demo.yaml --out runs/demo_p1
    rait run configs/demo.yaml --out runs/demo_p2 --processes 2
    python docs/distributed/compare_runs.py runs/demo_p1 runs/demo_p2 > docs/distributed/demo_pipelines.json

Agreement: the results table (every column but the seconds), each track's knowledge table byte for byte, every
evaluation's answers item by item, and each SFT adapter's largest difference beside its largest value.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
from safetensors.torch import load_file


def outputs(path: Path) -> list[str]:
    return [json.loads(line)["output"] for line in path.read_text(encoding="utf-8").splitlines()]


def compare(one: Path, many: Path) -> dict:
    logs = [json.loads((run / "pipeline.json").read_text()) for run in (one, many)]
    results = [pd.read_csv(run / "results.csv").drop(columns=["seconds"], errors="ignore") for run in (one, many)]
    agreement: dict = {"results_equal_but_seconds": bool(results[0].equals(results[1])), "probe_tables": {},
                       "evaluations": {}, "adapters": {}}
    for table in sorted(one.glob("*/probe/table.parquet")):
        agreement["probe_tables"][table.parts[-3]] = table.read_bytes() == (many / table.relative_to(one)).read_bytes()
    for path in sorted(one.glob("*/eval/*/*/*/outcomes.jsonl")):
        a, b = outputs(path), outputs(many / path.relative_to(one))
        agreement["evaluations"][str(path.parent.relative_to(one))] = {
            "items": len(a), "outputs_differing": sum(x != y for x, y in zip(a, b))}
    for path in sorted(one.glob("*/train/*/adapter/adapter_model.safetensors")):
        a, b = load_file(path), load_file(many / path.relative_to(one))
        agreement["adapters"][str(path.parent.parent.relative_to(one))] = {
            "max_abs_difference": max((a[k] - b[k]).abs().max().item() for k in a),
            "max_abs_value": max(a[k].abs().max().item() for k in a)}
    return {"processes": [log.get("processes", 1) for log in logs],
            "wall_seconds": [log["wall_seconds"] for log in logs],
            "stages": [{"stage": x["stage"], "seconds": [x["seconds"], y["seconds"]], "same_key": x["key"] == y["key"]}
                       for x, y in zip(*(log["stages"] for log in logs))],
            "agreement": agreement}


if __name__ == "__main__":
    print(json.dumps(compare(Path(sys.argv[1]), Path(sys.argv[2])), indent=2))
