"""The study-size table of docs/baselines.md: the study's SFT rows beside self-consistency, P(IK) and DPO-RAIT.

    python docs/baselines/study_table.py

Reads the committed result files of two runs on the same pool, probe, validation split and test items:
`docs/study/test/results.csv` (configs/study_facts.yaml, every SFT method, three seeds) and
`docs/baselines/study/results.csv` (configs/study_facts_beyond.yaml). Both measure THS against the same
Init-Basic answers; the script checks that Init-Basic's row is the same number in both before printing.
"""

from __future__ import annotations

import csv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUDY, BEYOND = ROOT / "study" / "test" / "results.csv", ROOT / "baselines" / "study" / "results.csv"
TEST_SETS = ("facts-id", "facts-ood", "nq", "validation")
NEW = ("Self-consistency (σ)", "P(IK)", "DPO-RAIT")


def read(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def cell(row: dict, key: str, sign: bool = False) -> str:
    if not row.get(key):
        return "ref." if key == "ths" else "–"
    value, low, high = (float(row[f"{key}{part}"]) for part in ("", "_low", "_high"))
    return f"{value:+.1f} [{low:+.1f}, {high:+.1f}]" if sign else f"{value:.1f}"


def main() -> None:
    study, beyond = read(STUDY), read(BEYOND)
    for test in TEST_SETS:
        old = {r["method"]: r for r in study if r["test_set"] == test}
        new = {r["method"]: r for r in beyond if r["test_set"] == test}
        if not old or not new:
            continue
        for key in ("pc", "pw", "n"):
            assert old["Init-Basic"][key] == new["Init-Basic"][key], f"{test}: Init-Basic differs between the runs"
        print(f"\n**{test}** ({old['Init-Basic']['domain']}, n = {old['Init-Basic']['n']})\n")
        print("| model | run | Pc | Pw | Pr | THS |\n| --- | --- | ---: | ---: | ---: | ---: |")
        rows = [(m, "study", r) for m, r in old.items()] + [(m, "beyond", new[m]) for m in NEW if m in new]
        for method, run, row in rows:
            print(f"| {method} | {run} | {cell(row, 'pc')} | {cell(row, 'pw')} | {cell(row, 'pr')} | "
                  f"{cell(row, 'ths', True)} |")


if __name__ == "__main__":
    main()
