"""The recipe-search table of docs/study.md, from the committed result files of each grid point.

    python docs/study/grid.py        # prints the markdown table and the pick by the rule fixed in docs/study.md

Each `search-<point>/results.csv` holds one grid point's validation rows (seed 0). The rule: the highest
mean validation THS of Cor-RAIT, CRaFT and GRAIT; points within 1 THS point of the best go to the cheaper
recipe (fewer samples, then fewer epochs).
"""

from __future__ import annotations

import csv
from pathlib import Path

HERE = Path(__file__).resolve().parent
METHODS = ("Cor-RAIT", "CRaFT", "GRAIT")
# point -> (what changed from the starting recipe, samples per method, epochs)
POINTS = {
    "start": ("starting recipe: lr 5e-4, 2 epochs, 120 samples, IdK share 0.4, LoRA on all 30 layers, τ 0.5, gold targets", 120, 2),
    "lr2e-4": ("learning rate 2e-4", 120, 2),
    "lr1e-3": ("learning rate 1e-3", 120, 2),
    "epochs3": ("3 epochs", 120, 3),
    "n60": ("60 samples per method", 60, 2),
    "n240": ("240 samples per method", 240, 2),
    "idk0.2": ("IdK share 0.2", 120, 2),
    "top8": ("LoRA on the top 8 layers only", 120, 2),
    "tau0.4": ("τ 0.4", 120, 2),
    "tau0.6": ("τ 0.6", 120, 2),
    "sampled": ("vanilla targets: the model's own most frequent correct sample", 120, 2),
    "n240-tau0.4": ("240 samples and τ 0.4: the two best single changes combined", 240, 2),
}


def read_point(folder: Path) -> dict[str, dict[str, float]]:
    with open(folder / "results.csv", encoding="utf-8") as fh:
        return {row["method"]: row for row in csv.DictReader(fh) if row["test_set"] == "validation"}


def grid() -> list[dict]:
    rows = []
    for folder in sorted(HERE.glob("search-*")):
        point = folder.name.removeprefix("search-")
        if not (folder / "results.csv").exists():
            continue
        changed, samples, epochs = POINTS.get(point, (point, 0, 0))
        results = read_point(folder)
        ths = {m: float(results[m]["ths"]) for m in METHODS}
        rows.append({"point": point, "changed": changed, "samples": samples, "epochs": epochs, "results": results,
                     "ths": ths, "mean": sum(ths.values()) / len(ths)})
    order = list(POINTS)
    return sorted(rows, key=lambda r: order.index(r["point"]) if r["point"] in order else len(order))


def pick(rows: list[dict]) -> dict:
    best = max(r["mean"] for r in rows)
    near = [r for r in rows if r["mean"] >= best - 1.0]
    return min(near, key=lambda r: (r["samples"], r["epochs"], -r["mean"]))


def cell(row: dict) -> str:
    return f"{float(row['ths']):+.1f} [{float(row['ths_low']):.1f}, {float(row['ths_high']):.1f}]"


def markdown(rows: list[dict]) -> str:
    lines = ["| grid point | change from the start | " + " | ".join(f"{m} THS" for m in METHODS) + " | mean |",
             "| --- | --- | " + " | ".join("---:" for _ in METHODS) + " | ---: |"]
    for r in rows:
        lines.append(f"| `{r['point']}` | {r['changed']} | " + " | ".join(cell(r["results"][m]) for m in METHODS)
                     + f" | {r['mean']:+.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    rows = grid()
    print(markdown(rows))
    chosen = pick(rows)
    print(f"\nPick by the rule: `{chosen['point']}` (mean validation THS {chosen['mean']:+.1f})")
