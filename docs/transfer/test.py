"""The transfer test run of docs/transfer.md: the search's pick and the study's recipe, three seeds, test sets once.

    python docs/transfer/test.py run [--out runs/transfer-search]   # each recipe not yet in docs/transfer/
    python docs/transfer/test.py compare                            # paired comparisons and transitions

Each recipe is `configs/transfer_facts.yaml` with the `build:` and trained method of its search point (the pick by
`search.py`'s rule, and `study6`, the study's recipe), run into the search's folder so that the probe and the
untouched model's rows are shared. After each run the small result files and every trained model's per-item
outcomes (test set, seed, id, outcome) are copied to `docs/transfer/test-<point>/`, since the next recipe's
run replaces them. `compare` computes the pick minus the study's recipe on the same items (paired over items,
each recipe's seeds on their own; `rait.evaluate.runner.compare_seeds`) and where the answers of each went,
relation by relation, against Init-Basic (`outcome_flow`).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BASE = ROOT / "configs" / "transfer_facts.yaml"
sys.path.insert(0, str(HERE))
import search  # noqa: E402

STUDY = "study6"
TESTS = ("facts-id", "facts-id-wide", "facts-ood", "nq", "validation", "validation-ood", "general")


def recipes() -> list[str]:
    chosen = search.pick(search.table())
    if chosen is None:
        raise SystemExit("the search has no pick yet (docs/transfer/search.py)")
    return list(dict.fromkeys([chosen["point"], STUDY]))


def _outcomes(folder: Path) -> list[dict]:
    path = folder / "outcomes.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def run(out: Path) -> None:
    from rait.select.methods import METHODS

    base = yaml.safe_load(BASE.read_text(encoding="utf-8"))
    seeds = base["seeds"]
    for point in recipes():
        folder = HERE / f"test-{point}"
        if (folder / "results.csv").exists():
            continue
        method = search.run_point(base, point, out, "test-")
        folder.mkdir(exist_ok=True)
        label = METHODS[method].label
        with open(folder / "outcomes.csv", "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["test_set", "model", "seed", "id", "subject", "outcome"])
            for test in TESTS:
                reference = out / "facts" / "eval" / test / "Init" / "basic"
                for row in _outcomes(reference):
                    writer.writerow([test, "Init-Basic", "", row["id"], row["subject"], row["outcome"]])
                for seed in seeds:
                    trained = out / "facts" / f"seed-{seed}" / "eval" / test / label / "refuse"
                    for row in _outcomes(trained):
                        writer.writerow([test, label, seed, row["id"], row["subject"], row["outcome"]])
        search.copy_results(out, folder)  # last: results.csv marks the recipe done


def _read(point: str) -> dict:
    """test set -> {"reference": rows, "runs": [rows per seed], "label": the trained model's row label}."""
    by_test: dict = defaultdict(lambda: {"reference": [], "runs": defaultdict(list)})
    with open(HERE / f"test-{point}" / "outcomes.csv", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            entry = by_test[row["test_set"]]
            record = {"id": row["id"], "subject": row["subject"], "outcome": row["outcome"], "task": "oeqa", "source": ""}
            if row["model"] == "Init-Basic":
                entry["reference"].append(record)
            else:
                entry["runs"][row["seed"]].append(record)
                entry["label"] = row["model"]
    return {test: {**entry, "runs": [entry["runs"][s] for s in sorted(entry["runs"])]} for test, entry in by_test.items()}


def compare() -> str:
    from rait.evaluate.runner import compare_seeds, outcome_flow

    points = recipes()
    data = {point: _read(point) for point in points}
    lines = []
    if len(points) == 2:
        pick, study = points
        lines += [f"## {pick} minus {STUDY} (paired over items, seeds on their own)", "",
                  "| test set | ΔPc | ΔPw | ΔTHS | p (THS) |", "| --- | ---: | ---: | ---: | ---: |"]
        for test in TESTS:
            a, b = data[pick][test], data[study][test]
            result = compare_seeds(a["runs"], b["runs"], a["reference"])
            cells = [f"{result[k]['difference']:+.1f} [{result[k]['low']:+.1f}, {result[k]['high']:+.1f}]"
                     for k in ("pc", "pw", "ths")]
            lines.append(f"| {test} | " + " | ".join(cells) + f" | {result['ths']['p_value']:.3f} |")
        lines.append("")
    for point in points:
        lines += [f"## Where {point}'s answers went against Init-Basic, by relation (items, mean over seeds)", "",
                  "| test set | relation | n | refused but known | refused and unknown | kept | lost to wrong | "
                  "still wrong | fixed |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for test in ("facts-ood", "facts-id", "validation-ood"):
            entry = data[point][test]
            for subject in sorted({r["subject"] for r in entry["reference"]}):
                keep = [i for i, r in enumerate(entry["reference"]) if r["subject"] == subject]
                flow = outcome_flow([[run[i] for i in keep] for run in entry["runs"]],
                                    [entry["reference"][i] for i in keep])
                lines.append(f"| {test} | {subject} | {len(keep)} | " + " | ".join(
                    f"{flow[k]:.1f}" for k in ("refused_known", "refused_unknown", "kept_correct", "lost_to_wrong",
                                               "still_wrong", "fixed")) + " |")
        lines.append("")
    text = "\n".join(lines)
    (HERE / "test-comparison.md").write_text(text + "\n", encoding="utf-8")
    return text


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["run", "compare"])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "transfer-search")
    args = parser.parse_args(argv)
    if args.step == "run":
        run(args.out)
    print(compare())


if __name__ == "__main__":
    main(sys.argv[1:])
