"""The tables of docs/grpo.md from the committed results of `rait run configs/study_facts_grpo.yaml`.

    python docs/grpo/table.py

Reads `docs/grpo/study/` (results.csv, comparisons.csv, abstention.csv and each seed's rewards.jsonl) and prints
the test table (Pc, Pw, Pr, THS with 95 % intervals over items and seeds), GRPO-RAIT against Cor-RAIT on the
same items, where the answers went, and the training: outcome shares by stretch of steps and each step's seconds
split into generation and update. It first checks that the run's Cor-RAIT rows are the study's
(`docs/study/test/results.csv`) to the last digit: the same trained models, evaluated again.
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

STUDY = Path(__file__).resolve().parent / "study"
SFT_STUDY = Path(__file__).resolve().parents[1] / "study" / "test" / "results.csv"
TEST_SETS = ("validation", "facts-id", "facts-ood", "nq")
MODELS = ("Init-Basic", "Init-Refuse", "Cor-RAIT", "GRPO-RAIT")


def read(name: str | Path) -> list[dict]:
    with open(STUDY / name, encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def interval(row: dict, key: str, sign: bool = False) -> str:
    if not row.get(key):
        return "ref."
    value, low, high = (float(row[f"{key}{part}"]) for part in ("", "_low", "_high"))
    return f"{value:+.1f} [{low:+.1f}, {high:+.1f}]" if sign else f"{value:.1f} [{low:.1f}, {high:.1f}]"


def main() -> None:
    results, comparisons = read("results.csv"), read("comparisons.csv")
    metrics = [f"{key}{part}" for key in ("pc", "pw", "pr", "ths") for part in ("", "_low", "_high")]
    study = {r["test_set"]: r for r in read(SFT_STUDY) if r["method"] == "Cor-RAIT"}
    for row in (r for r in results if r["method"] == "Cor-RAIT"):
        assert [row[k] for k in metrics] == [study[row["test_set"]][k] for k in metrics], row["test_set"]
    abstention = {(r["test_set"], r["method"]): r for r in read("abstention.csv")}
    print("| test set | model | Pc | Pw | Pr | THS | over-refusal |\n| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for test in TEST_SETS:
        rows = {r["method"]: r for r in results if r["test_set"] == test}
        for model in MODELS:
            row = rows[model]
            over = abstention.get((test, model), {}).get("over_refusal") or "–"
            over = f"{float(over):.1f}" if over != "–" else over
            print(f"| {test} ({row['domain']}) | {model} | {interval(row, 'pc')} | {interval(row, 'pw')} | "
                  f"{interval(row, 'pr')} | {interval(row, 'ths', True)} | {over} |")
    print("\n| test set | a − b | ΔPc | ΔPw | ΔTHS | p (ΔTHS) |\n| --- | --- | ---: | ---: | ---: | ---: |")
    for c in comparisons:
        if c["kind"] == "paired" and c["a"] == "GRPO-RAIT" and c["b"] in ("Init-Basic", "Cor-RAIT"):
            cells = [f"{float(c[f'{k}_difference']):+.1f} [{float(c[f'{k}_low']):+.1f}, {float(c[f'{k}_high']):+.1f}]"
                     for k in ("pc", "pw", "ths")]
            print(f"| {c['test_set']} | {c['a']} − {c['b']} | " + " | ".join(cells) + f" | {float(c['ths_p_value']):.3f} |")
    print("\n| test set | model | refused known | refused unknown | kept correct | lost to wrong | still wrong | fixed |\n"
          "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for c in comparisons:
        if c["kind"] == "flow" and c["a"] in ("Cor-RAIT", "GRPO-RAIT"):
            counts = [f"{float(c[k]):.1f}" for k in ("refused_known", "refused_unknown", "kept_correct", "lost_to_wrong",
                                                     "still_wrong", "fixed")]
            print(f"| {c['test_set']} | {c['a']} | " + " | ".join(counts) + " |")
    print("\n| seed | steps | correct / refused / wrong, steps 1–20 | steps 41–60 | s per step | generation | update | "
          "all steps, s |\n| ---: | ---: | --- | --- | ---: | ---: | ---: | ---: |")
    for path in sorted(STUDY.glob("rewards_seed*.jsonl")):
        steps = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]

        def shares(part: list[dict]) -> str:
            return " / ".join(f"{statistics.mean(s[k] for s in part):.2f}" for k in ("correct", "refused", "wrong"))

        mean = {k: statistics.mean(s[k] for s in steps) for k in ("seconds", "generation_seconds", "update_seconds")}
        print(f"| {path.stem.removeprefix('rewards_seed')} | {len(steps)} | {shares(steps[:20])} | {shares(steps[-20:])} | "
              f"{mean['seconds']:.1f} | {mean['generation_seconds']:.1f} | {mean['update_seconds']:.1f} | "
              f"{sum(s['seconds'] for s in steps):.0f} |")


if __name__ == "__main__":
    main()
