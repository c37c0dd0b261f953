"""Copy the small result files of a finished study or search run into the repository (no run folders, no
weights), with every stage's wall time in `summary.json`.

    python docs/study/collect.py runs/study docs/study/test
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

from rait.select.methods import METHODS

# A method's evaluation folder is its report label without spaces and slashes ("CRaFT_wo_Cer").
LABELS = {label.replace(" ", "_").replace("/", ""): label for label in (m.label for m in METHODS.values())}
FILES = ("results.md", "results.csv", "results_by_seed.csv", "comparisons.md", "comparisons.csv", "diagnosis.md",
         "diagnosis.json", "pc_pw.png")


def by_relation(run: Path) -> list[dict]:
    """Outcome counts per test set, relation (`subject`), model and seed, with each model's refusals split by
    what Init-Basic did on the same item (right: over-refusal; wrong: hallucination avoided)."""
    rows = []
    for track in sorted(p for p in run.iterdir() if (p / "eval").is_dir()):
        for test in sorted((track / "eval").iterdir()):
            reference = {r["id"]: r["outcome"] for r in _read(test / "Init" / "basic" / "outcomes.jsonl")}
            runs = [("Init-Basic", None, test / "Init" / "basic"), ("Init-Refuse", None, test / "Init" / "refuse")]
            for seed_dir in sorted(track.glob("seed-*")):
                seed = int(seed_dir.name.removeprefix("seed-"))
                runs += [(LABELS[m.name], seed, m / "refuse") for m in sorted((seed_dir / "eval" / test.name).glob("*"))]
            for model, seed, folder in runs:
                if not (folder / "outcomes.jsonl").is_file():
                    continue
                counts: dict[str, dict] = {}
                for r in _read(folder / "outcomes.jsonl"):
                    c = counts.setdefault(r["subject"], {"n": 0, "correct": 0, "wrong": 0, "refused": 0,
                                                         "refused_init_right": 0, "refused_init_wrong": 0})
                    c["n"] += 1
                    c[r["outcome"]] += 1
                    if r["outcome"] == "refused":
                        c["refused_init_right" if reference[r["id"]] == "correct" else "refused_init_wrong"] += 1
                rows += [{"test_set": test.name, "subject": subject, "model": model, "seed": seed, **c}
                         for subject, c in sorted(counts.items())]
    return rows


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


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
    relations = by_relation(run)
    with open(dest / "by_relation.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(relations[0]))
        writer.writeheader()
        writer.writerows(relations)
    return summary


if __name__ == "__main__":
    collect(Path(sys.argv[1]), Path(sys.argv[2]))
