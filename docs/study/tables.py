"""The results tables of docs/study.md and the verdicts of its decision rule 4, from the committed result
files of the test run (`docs/study/test/`, written by `collect.py`).

    python docs/study/tables.py        # prints markdown: results per test set, verdicts, comparisons, flows, times

Rule 4 (fixed in docs/study.md before the run): the best method is the one with the highest mean validation
THS over the seeds; "RAIT makes the model more truthful" on a test set iff its THS interval lies above 0; a
paired "A > B" iff the ΔTHS interval lies above 0, "A ≥ B" fails iff it lies below 0.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent / "test"
TEST_SETS = ("facts-id", "facts-ood", "nq", "validation")
# The papers' ordering, link by link: (a, b, relation claimed).
ORDERING = (("CRaFT", "CorCer-RAIT", "≥"), ("GRAIT", "CorCer-RAIT", "≥"), ("CorCer-RAIT", "Cor-RAIT", "≥"),
            ("Cor-RAIT", "Van-Tuning", ">"))
FLOW = ("refused_known", "refused_unknown", "kept_correct", "lost_to_wrong", "still_wrong", "fixed")


def read_csv(name: str) -> list[dict]:
    with open(HERE / name, encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def cell(row: dict, key: str, sign: bool = False) -> str:
    if not row.get(key):
        return "ref." if key.startswith("ths") else "–"
    value, low, high = (float(row[f"{key}{part}"]) for part in ("", "_low", "_high"))
    return f"{value:+.1f} [{low:+.1f}, {high:+.1f}]" if sign else f"{value:.1f} [{low:.1f}, {high:.1f}]"


def results_tables(results: list[dict]) -> list[str]:
    lines = []
    for test in TEST_SETS:
        rows = [r for r in results if r["test_set"] == test]
        if not rows:
            continue
        lines += ["", f"**{test}** ({rows[0]['domain']}, n = {rows[0]['n']})", "",
                  "| model | Pc | Pw | Pr | THS |", "| --- | ---: | ---: | ---: | ---: |"]
        lines += [f"| {r['method']} | {cell(r, 'pc')} | {cell(r, 'pw')} | {cell(r, 'pr')} | {cell(r, 'ths', True)} |"
                  for r in rows]
    return lines


def interval_side(low: float, high: float) -> str:
    return "above 0" if low > 0 else "below 0" if high < 0 else "spans 0"


def verdicts(results: list[dict], paired: list[dict]) -> list[str]:
    trained = [r for r in results if r["test_set"] == "validation" and r["method"] != "Init-Basic"
               and not r["method"].startswith("Init")]
    best = max(trained, key=lambda r: float(r["ths"]))["method"]
    lines = [f"- Best method by mean validation THS over the seeds: **{best}**."]
    for test in ("facts-id", "facts-ood", "nq"):
        row = next(r for r in results if r["test_set"] == test and r["method"] == best)
        side = interval_side(float(row["ths_low"]), float(row["ths_high"]))
        verdict = "more truthful" if side == "above 0" else "not shown more truthful"
        lines.append(f"- {test}: {best} THS {cell(row, 'ths', True)}, interval {side} → {verdict}.")
    for test in ("facts-id", "facts-ood"):
        for a, b, relation in ORDERING:
            c = next((c for c in paired if c["test_set"] == test and c["a"] == a and c["b"] == b), None)
            if c is None:
                continue
            side = interval_side(float(c["ths_low"]), float(c["ths_high"]))
            holds = side == "above 0" if relation == ">" else side != "below 0"
            lines.append(f"- {test}: {a} {relation} {b}? ΔTHS {float(c['ths_difference']):+.1f} "
                         f"[{float(c['ths_low']):+.1f}, {float(c['ths_high']):+.1f}] → {'holds' if holds else 'fails'}.")
    return lines


def paired_table(paired: list[dict]) -> list[str]:
    lines = ["", "| test set | a − b | ΔPc | ΔPw | ΔTHS | p |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    for c in paired:
        if c["test_set"] == "validation":
            continue
        cells = [f"{float(c[f'{k}_difference']):+.1f} [{float(c[f'{k}_low']):+.1f}, {float(c[f'{k}_high']):+.1f}]"
                 if c[f"{k}_low"] not in ("", "nan") else "–" for k in ("pc", "pw", "ths")]
        p_value = f"{float(c['ths_p_value']):.3f}" if c["ths_p_value"] not in ("", "nan") else "–"
        lines.append(f"| {c['test_set']} | {c['a']} − {c['b']} | " + " | ".join(cells) + f" | {p_value} |")
    return lines


def flow_table(flows: list[dict]) -> list[str]:
    lines = ["", "| test set | model | refused, Init-Basic right (over-refusal) | refused, Init-Basic wrong "
             "(hallucination avoided) | still wrong | kept right | right → wrong | wrong → right |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    order = ("refused_known", "refused_unknown", "still_wrong", "kept_correct", "lost_to_wrong", "fixed")
    for c in flows:
        if c["test_set"] == "validation":
            continue
        lines.append(f"| {c['test_set']} | {c['a']} | " + " | ".join(f"{float(c[k]):.1f}" for k in order) + " |")
    return lines


def diagnosis_table() -> list[str]:
    rows = json.loads((HERE / "diagnosis.json").read_text())
    lines = ["", "| test set | n | Init-Basic right | mean μ, right | mean μ, not right | AUROC of μ |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        a = r.get("auroc")
        auroc = f"{a['value']:.1f} [{a['low']:.1f}, {a['high']:.1f}]" if a else "–"
        means = [f"{r[k]:.2f}" if r[k] is not None else "–" for k in ("mean_mu_correct", "mean_mu_not_correct")]
        lines.append(f"| {r['test_set']} | {r['n']} | {r['init_basic_correct']} | " + " | ".join(means) + f" | {auroc} |")
    return lines


def relation_table(test_set: str) -> list[str]:
    """Per relation of one test set: each model's right / wrong / refused answers (items; means over seeds), and
    how many of its refusals were questions Init-Basic answered right."""
    rows = [r for r in read_csv("by_relation.csv") if r["test_set"] == test_set]
    subjects = sorted({r["subject"] for r in rows})
    models = list(dict.fromkeys(r["model"] for r in rows))
    sizes = {r["subject"]: r["n"] for r in rows}
    lines = ["", "| model | " + " | ".join(f"{s} (n = {sizes[s]}): right / wrong / refused (of them Init-Basic right)"
                                          for s in subjects) + " |", "| --- |" + " ---: |" * len(subjects)]
    for model in models:
        cells = []
        for subject in subjects:
            mine = [r for r in rows if r["model"] == model and r["subject"] == subject]
            mean = {k: sum(float(r[k]) for r in mine) / len(mine) for k in ("correct", "wrong", "refused",
                                                                           "refused_init_right")}
            cells.append(f"{mean['correct']:.1f} / {mean['wrong']:.1f} / {mean['refused']:.1f} "
                         f"({mean['refused_init_right']:.1f})")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def stage_times() -> list[str]:
    summary = json.loads((HERE / "summary.json").read_text())
    groups: dict[str, float] = {}
    for stage, entry in summary["stages"].items():
        name = stage.split(": ", 1)[1]
        marker = next((m for m in ("(seed ", "(seed-") if m in name), None)
        seed = name.split(marker)[1].rstrip(")") if marker else None
        verb = name.split()[0]
        group = verb if seed is None else f"{verb} (seed {seed})"
        if verb == "eval" and seed is None:
            group = "eval (Init-Basic, Init-Refuse)"
        if verb == "diagnose" or (verb == "probe" and name != "probe"):  # the test items' probe and its AUROC
            group = "diagnose (probe of the test items)"
        groups[group] = groups.get(group, 0.0) + (entry["seconds"] or 0.0)
    lines = ["", "| stage | minutes |", "| --- | ---: |"]
    lines += [f"| {group} | {seconds / 60:.1f} |" for group, seconds in groups.items()]
    lines.append(f"| **all stages** | **{sum(groups.values()) / 60:.1f}** |")
    return lines


def main() -> None:
    results = read_csv("results.csv")
    comparisons = read_csv("comparisons.csv")
    paired = [c for c in comparisons if c["kind"] == "paired"]
    flows = [c for c in comparisons if c["kind"] == "flow"]
    sections = [("Results (means over seeds; 95 % intervals over items and seeds)", results_tables(results)),
                ("Verdicts (rule 4)", verdicts(results, paired)), ("Paired comparisons", paired_table(paired)),
                ("Where the answers went (items, means over seeds)", flow_table(flows)),
                ("Diagnosis", diagnosis_table()),
                ("facts-ood by relation (items, means over seeds)", relation_table("facts-ood")),
                ("Stage wall times", stage_times())]
    for title, lines in sections:
        print(f"### {title}")
        print("\n".join(lines))
        print()


if __name__ == "__main__":
    main()
