"""DPO-RAIT's learning-rate search on the facts validation split, from the committed result files.

    python docs/baselines/dpo_grid.py          # the markdown table and the pick
    python docs/baselines/dpo_grid.py --lr     # only the chosen learning rate (for the test run's config)

Each `search-dpo-lr<lr>/results.csv` holds one grid point's validation rows (seed 0; `rait run
configs/study_dpo_search.yaml` with `dpo.train.learning_rate` set to <lr>). The rule, fixed before the
first point ran (docs/baselines.md, "DPO-RAIT's recipe"): the highest validation THS of DPO-RAIT; points
within 1 THS point of the best go to the smaller learning rate (the smaller step away from the model).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
METHOD = "DPO-RAIT"


def grid() -> list[dict]:
    rows = []
    for folder in HERE.glob("search-dpo-lr*"):
        if not (folder / "results.csv").exists():
            continue
        with open(folder / "results.csv", encoding="utf-8") as fh:
            found = [r for r in csv.DictReader(fh) if r["test_set"] == "validation" and r["method"] == METHOD]
        if found:
            rows.append({"lr": float(folder.name.removeprefix("search-dpo-lr")), "row": found[0],
                         "ths": float(found[0]["ths"])})
    return sorted(rows, key=lambda r: r["lr"])


def pick(rows: list[dict]) -> dict:
    best = max(r["ths"] for r in rows)
    return min((r for r in rows if r["ths"] >= best - 1.0), key=lambda r: r["lr"])


def markdown(rows: list[dict]) -> str:
    lines = ["| learning rate | Pc | Pw | Pr | THS vs Init-Basic |", "| ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        row = r["row"]
        lines.append(f"| {r['lr']:g} | {float(row['pc']):.1f} | {float(row['pw']):.1f} | {float(row['pr']):.1f} | "
                     f"{r['ths']:+.1f} [{float(row['ths_low']):.1f}, {float(row['ths_high']):.1f}] |")
    return "\n".join(lines)


if __name__ == "__main__":
    rows = grid()
    chosen = pick(rows)
    if sys.argv[1:] == ["--lr"]:
        print(f"{chosen['lr']:g}")
    else:
        print(markdown(rows))
        print(f"\nPick by the rule: learning rate {chosen['lr']:g} (validation THS {chosen['ths']:+.1f})")
