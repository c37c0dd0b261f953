"""Copy the small result files of a finished study or search run into the repository (no run folders, no
weights), with every stage's wall time in `summary.json`.

    python docs/study/collect.py runs/study docs/study/test
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

FILES = ("results.md", "results.csv", "results_by_seed.csv", "comparisons.md", "comparisons.csv", "diagnosis.md",
         "diagnosis.json", "pc_pw.png")


def collect(run: Path, dest: Path) -> dict:
    dest.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        if (run / name).exists():
            shutil.copy(run / name, dest / name)
    pipeline = json.loads((run / "pipeline.json").read_text())
    summary = {"wall_seconds": pipeline["wall_seconds"],
               "stages": {s["stage"]: {"seconds": s["seconds"], "cached": s["cached"]} for s in pipeline["stages"]}}
    for stage in sorted(run.glob("*/*/stage.json")) + sorted(run.glob("*/seed-*/build/stage.json")):
        name = "/".join(stage.relative_to(run).parts[:-1])
        if name.endswith(("probe", "rehearse", "build")):
            summary[f"{name} result"] = json.loads(stage.read_text())["result"]
    (dest / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


if __name__ == "__main__":
    collect(Path(sys.argv[1]), Path(sys.argv[2]))
