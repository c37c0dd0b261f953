"""The transfer search of docs/transfer.md: every grid point on the validation sets, then the pick by the rule.

    python docs/transfer/search.py run [--out runs/transfer-search]   # each point not yet in docs/transfer/
    python docs/transfer/search.py table                              # the table and the pick, from the files
    python docs/transfer/search.py diversity                          # the diversity curve over 3 seeds

Each point is `configs/transfer_search.yaml` with its `build:` changed, run into one folder so that the pool,
the probe and the untouched model's rows are shared (resumable; a finished point is skipped). Its small result
files are copied to `docs/transfer/search-<point>/`. The rule (fixed in docs/transfer.md before any point ran):
among the trained rows whose in-domain validation THS is at least +15, the highest mean THS over the two
out-of-domain validation sets (validation-ood, general); within 1 point of it, the lowest over-refusal there.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BASE = ROOT / "configs" / "transfer_search.yaml"
STUDY_RELATIONS = ["country_capital", "country_continent", "country_currency", "city_country", "element_symbol",
                   "element_number"]
OUT_OF_DOMAIN = ("validation-ood", "general")
FLOOR_IN_DOMAIN = 15.0


def _wide_relations() -> list[str]:
    from rait.data.facts import WIDE_RELATIONS

    return [*STUDY_RELATIONS, *WIDE_RELATIONS]


def _nested(n: int) -> list[str]:
    """The first n of one seeded order of the 16 relations: 2 ⊂ 4 ⊂ 8 ⊂ 16."""
    order = _wide_relations()
    random.Random("transfer/diversity").shuffle(order)
    return order[:n]


def _nested_with_both_sides(n: int) -> list[str]:
    """The first n of one seeded order of the relations with both sides: at least 10 % of the ceiling's questions
    known (μ ≥ 0.5, docs/transfer/ceiling.json), so that every point can fill its 240 samples."""
    known = json.loads((HERE / "ceiling.json").read_text(encoding="utf-8"))["known_mu"]
    order = [name for name in _wide_relations() if known.get(name, 0) >= 0.1]
    random.Random("transfer/diversity-both-sides").shuffle(order)
    return order[:n]


# Points added after the first nine had run, to measure the diversity curve at a fixed sample count (the balanced
# div points trained on 3, 7 and 65 samples): analysis only, never eligible for the pick (decided before they ran).
ANALYSIS_ONLY = ("div2-known", "div4-known", "div7-known")


def points() -> dict[str, tuple[str, dict, str]]:
    """point -> (what it changes, the build settings it adds to the base config's, the trained method)."""
    points = {
        "study6": ("the study's six relations only (the study's recipe on this pool)", {"subjects": STUDY_RELATIONS}),
        "study6-balance": ("the study's six relations, balanced by relation",
                           {"subjects": STUDY_RELATIONS, "balance": "subject"}),
        "wide": ("all 16 relations", {}),
        "wide-balance": ("all 16 relations, balanced by relation", {"balance": "subject"}),
        "div2-balance": ("2 relations, balanced", {"subjects": _nested(2), "balance": "subject"}),
        "div4-balance": ("4 relations, balanced", {"subjects": _nested(4), "balance": "subject"}),
        "div8-balance": ("8 relations, balanced", {"subjects": _nested(8), "balance": "subject"}),
        "wide-balance-idk0.2": ("all 16, balanced, IdK share 0.2", {"balance": "subject", "idk_share": 0.2}),
    }
    for n in (2, 4, 7):
        points[f"div{n}-known"] = (f"{n} relations with both sides, unbalanced (analysis only)",
                                   {"subjects": _nested_with_both_sides(n)})
    points = {name: (*entry, "cor_rait") for name, entry in points.items()}
    points["wide-balance-consistency"] = ("all 16, balanced, Consistency-RAIT (IdK only where the samples disagree)",
                                          {"balance": "subject"}, "consistency_rait")
    return points


RESULT_FILES = ("results.csv", "results.md", "abstention.csv", "comparisons.md", "summary.json")


def run_point(base: dict, point: str, out: Path, tag: str) -> str:
    """`rait run` of `base` with the point's `build:` and trained method, into `out`; returns the method."""
    _, build, method = points()[point]
    config = dict(base, title=f"{base['title']}: {point}", methods=[method, *base["methods"][1:]])
    config["tracks"] = [dict(base["tracks"][0], build={**base["tracks"][0]["build"], **build})]
    path = out.parent / f"{out.name}-{tag}{point}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    print(f"== {point}", flush=True)
    subprocess.run([sys.executable, "-m", "rait", "run", str(path), "--out", str(out)], check=True)
    return method


def copy_results(out: Path, folder: Path) -> None:
    folder.mkdir(exist_ok=True)
    for name in RESULT_FILES:
        if (out / name).exists():
            shutil.copy(out / name, folder / name)


def run(out: Path) -> None:
    base = yaml.safe_load(BASE.read_text(encoding="utf-8"))
    for point in points():
        folder = HERE / f"search-{point}"
        if not (folder / "results.csv").exists():
            run_point(base, point, out, "")
            copy_results(out, folder)


def _rows(folder: Path, name: str) -> list[dict]:
    with open(folder / name, encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def table() -> list[dict]:
    rows = []
    from rait.select.methods import METHODS

    for point, (changed, _, trained) in points().items():
        folder = HERE / f"search-{point}"
        if not (folder / "results.csv").exists():
            continue
        results = {(r["test_set"], r["method"]): r for r in _rows(folder, "results.csv")}
        abstention = {(r["test_set"], r["method"]): r for r in _rows(folder, "abstention.csv")}
        for method in (METHODS[trained].label, "Self-consistency (σ)", "P(IK)"):
            if ("validation", method) not in results:
                continue
            ths = {t: float(results[(t, method)]["ths"]) for t in ("validation", *OUT_OF_DOMAIN)}
            over = [float(abstention[(t, method)]["over_refusal"]) for t in OUT_OF_DOMAIN]
            rows.append({"point": point, "changed": changed, "method": method, "trained": method == METHODS[trained].label,
                         "ths": ths, "results": results,
                         "ood_mean": sum(ths[t] for t in OUT_OF_DOMAIN) / 2, "over_refusal": sum(over) / 2})
    return rows


def pick(rows: list[dict]) -> dict | None:
    eligible = [r for r in rows if r["trained"] and r["point"] not in ANALYSIS_ONLY
                and r["ths"]["validation"] >= FLOOR_IN_DOMAIN]
    if not eligible:
        return None
    best = max(r["ood_mean"] for r in eligible)
    return min((r for r in eligible if r["ood_mean"] >= best - 1.0), key=lambda r: r["over_refusal"])


def markdown(rows: list[dict]) -> str:
    def cell(r: dict, test: str) -> str:
        row = r["results"][(test, r["method"])]
        return f"{float(row['ths']):+.1f} [{float(row['ths_low']):+.1f}, {float(row['ths_high']):+.1f}]"

    lines = ["| point | change | method | validation (ID) THS | validation-ood THS | general THS | OOD mean | "
             "over-refusal OOD |", "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    seen = set()
    for r in rows:
        if not r["trained"] and r["method"] in seen:
            continue  # the training-free rules are the same at every point
        seen.add(r["method"])
        lines.append(f"| `{r['point']}` | {r['changed']} | {r['method']} | {cell(r, 'validation')} | "
                     f"{cell(r, 'validation-ood')} | {cell(r, 'general')} | {r['ood_mean']:+.1f} | "
                     f"{r['over_refusal']:.0f} % |")
    return "\n".join(lines)


# The diversity curve over three seeds (docs/transfer.md, "Not done yet"): the div*-known points trained on seeds
# 0, 1 and 2 into docs/transfer/diversity-<point>/; the 16-relation point is the test run's `wide` (the same
# pool, probe and validation sets, seeds 0-2: docs/transfer/test-wide/). Analysis only, like the points.
DIVERSITY = {2: "div2-known", 4: "div4-known", 7: "div7-known"}
SEEDS = [0, 1, 2]


def run_diversity(out: Path) -> None:
    base = yaml.safe_load(BASE.read_text(encoding="utf-8")) | {"seeds": SEEDS}
    base["title"] = base["title"].replace("(seed 0)", "(seeds 0, 1, 2)")
    for point in DIVERSITY.values():
        folder = HERE / f"diversity-{point}"
        if not (folder / "results.csv").exists():
            run_point(base, point, out, "seeds-")
            copy_results(out, folder)
            sizes = {seed: json.loads((out / "facts" / f"seed-{seed}" / "build" / "stage.json").read_text(
                encoding="utf-8"))["result"]["cor_rait"]["taken"] for seed in SEEDS}
            (folder / "sizes.json").write_text(json.dumps(sizes, indent=1) + "\n", encoding="utf-8")


def diversity_rows() -> dict[int, dict]:
    """Per number of relations: Cor-RAIT's result and abstention rows by validation set, and the set sizes."""
    from rait.select.methods import METHODS

    folders = {n: HERE / f"diversity-{point}" for n, point in DIVERSITY.items()} | {16: HERE / "test-wide"}
    method = METHODS["cor_rait"].label
    rows = {}
    for n, folder in folders.items():
        if (folder / "results.csv").exists():
            rows[n] = {"results": {r["test_set"]: r for r in _rows(folder, "results.csv") if r["method"] == method},
                       "abstention": {r["test_set"]: r for r in _rows(folder, "abstention.csv") if r["method"] == method},
                       "sizes": json.loads((folder / "sizes.json").read_text(encoding="utf-8"))
                       if (folder / "sizes.json").exists() else {}}
    return rows


def diversity_figure(path: Path) -> None:
    """The curve as a figure: THS on each validation set (95 % interval over items and seeds) and the OOD
    over-refusal, against the number of training relations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = diversity_rows()
    counts = sorted(rows)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for offset, test in zip((-0.15, 0.0, 0.15), ("validation", *OUT_OF_DOMAIN)):
        ths = [float(rows[n]["results"][test]["ths"]) for n in counts]
        low = [t - float(rows[n]["results"][test]["ths_low"]) for t, n in zip(ths, counts)]
        high = [float(rows[n]["results"][test]["ths_high"]) - t for t, n in zip(ths, counts)]
        left.errorbar([c * (1 + offset / 4) for c in counts], ths, yerr=[low, high], marker="o", capsize=3,
                      label=test + (" (in domain)" if test == "validation" else ""))
    left.axhline(0, color="grey", lw=0.8)
    left.set(xscale="log", xticks=counts, xticklabels=counts, xlabel="training relations",
             ylabel="THS vs Init-Basic", title="Cor-RAIT, 3 seeds")
    left.legend(fontsize=8)
    over = [sum(float(rows[n]["abstention"][t]["over_refusal"]) for t in OUT_OF_DOMAIN) / 2 for n in counts]
    right.plot(counts, over, marker="o")
    right.axhline(30, color="grey", lw=0.8, ls="--")
    right.set(xscale="log", xticks=counts, xticklabels=counts, ylim=(0, 100), xlabel="training relations",
              ylabel="% of known OOD items refused", title="Over-refusal (issue's goal: at most 30 %)")
    for ax in (left, right):
        ax.minorticks_off()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def diversity_table() -> str:
    """The curve: validation THS (ID), each OOD validation set's, their mean and the OOD over-refusal, per count."""
    lines = ["| relations | samples per seed | validation THS | validation-OOD THS | general THS | OOD mean | over-refusal OOD |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for n, row in diversity_rows().items():
        results, abstention, sizes = row["results"], row["abstention"], row["sizes"]
        cells = [f"{float(results[t]['ths']):+.1f} [{float(results[t]['ths_low']):+.1f}, {float(results[t]['ths_high']):+.1f}]"
                 for t in ("validation", *OUT_OF_DOMAIN)]
        ood = sum(float(results[t]["ths"]) for t in OUT_OF_DOMAIN) / 2
        over = sum(float(abstention[t]["over_refusal"]) for t in OUT_OF_DOMAIN) / 2
        samples = "/".join(str(sum(taken.values())) for taken in sizes.values())
        lines.append(f"| {n} | {samples} | {' | '.join(cells)} | {ood:+.1f} | {over:.0f} % |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["run", "table", "diversity"])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "transfer-search")
    args = parser.parse_args(argv)
    if args.step == "diversity":
        run_diversity(args.out)
        diversity_figure(HERE / "diversity.png")
        print(diversity_table())
        return
    if args.step == "run":
        run(args.out)
    rows = table()
    print(markdown(rows))
    chosen = pick(rows)
    print("\nPick by the rule: " + (f"`{chosen['point']}`" if chosen else "none reaches the in-domain floor"))


if __name__ == "__main__":
    main(sys.argv[1:])
