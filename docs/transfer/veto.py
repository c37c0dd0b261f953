"""The second round of docs/transfer.md: the tuned refusal vetoed where the untouched model's samples agree.

    python docs/transfer/veto.py probe [--out runs/transfer-search]   # σ of every item, into veto/sigma.csv
    python docs/transfer/veto.py analyse                              # τ on validation, the pick, the test sets
    python docs/transfer/veto.py pipeline [--out runs/transfer-search] # the pick as `rait run`'s sigma_veto

No model is trained here. The tuned models are the test run's (`wide` and `study6`, three seeds; their per-item
outcomes are in `docs/transfer/test-<recipe>/outcomes.csv`). `probe` runs `configs/transfer_facts.yaml` with
`self_consistency` as its only method into the search's folder, so every validation and test item gets the
untouched model's σ (10 samples, the track's probe settings; everything else is cached there), and copies the σ
of each item to `veto/sigma.csv`. `analyse` reads only committed files.

The rule (fixed in docs/transfer.md before these numbers existed): where the tuned model refuses and σ ≥ τ, the
answer is Init-Basic's; τ per seed among the validation items' σ and +∞ (no veto), by the search's rule: in-domain
validation THS ≥ +15, then the highest mean THS over validation-OOD and general, within 1 point the lowest mean
over-refusal there. The recipe whose veto is picked is chosen by the same rule on the means over seeds.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BASE = ROOT / "configs" / "transfer_facts.yaml"
FOLDER = HERE / "veto"
sys.path.insert(0, str(HERE))
import search  # noqa: E402
import test  # noqa: E402

RECIPES = ("wide", "study6")
IN_DOMAIN = "validation"
OUT_OF_DOMAIN = search.OUT_OF_DOMAIN
VALIDATION = (IN_DOMAIN, *OUT_OF_DOMAIN)
TESTS = ("facts-id", "facts-id-wide", "facts-ood", "nq")
NO_VETO = math.inf


def probe(out: Path) -> None:
    """σ of every validation and test item (the untouched model's samples), written to veto/sigma.csv."""
    import pandas as pd

    base = yaml.safe_load(BASE.read_text(encoding="utf-8"))
    config = {key: value for key, value in base.items() if key != "train"}
    config |= {"title": "Transfer, second round: σ of every item (self-consistency)", "methods": ["self_consistency"]}
    path = out.parent / f"{out.name}-veto.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    subprocess.run([sys.executable, "-m", "rait", "run", str(path), "--out", str(out)], check=True)
    FOLDER.mkdir(exist_ok=True)
    with open(FOLDER / "sigma.csv", "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["test_set", "id", "sigma"])
        for name in (*VALIDATION, *TESTS):
            table = pd.read_parquet(out / "facts" / "probe_items" / name / "table.parquet")
            for qid, sigma in zip(table["id"].astype(str), table["sigma"].astype(float)):
                writer.writerow([name, qid, repr(sigma)])


def read_sigma() -> dict[str, dict[str, float]]:
    sigma: dict[str, dict[str, float]] = {}
    with open(FOLDER / "sigma.csv", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            sigma.setdefault(row["test_set"], {})[row["id"]] = float(row["sigma"])
    return sigma


def vetoed(rows: list[dict], reference: list[dict], sigma: dict[str, float], tau: float) -> list[dict]:
    """A tuned model's outcome rows with each refusal at σ ≥ τ replaced by Init-Basic's outcome on that item."""
    if [row["id"] for row in rows] != [row["id"] for row in reference]:
        raise ValueError("a tuned model's rows and Init-Basic's must hold the same items in the same order")
    return [{**row, "outcome": then["outcome"]} if row["outcome"] == "refused" and sigma[row["id"]] >= tau else row
            for row, then in zip(rows, reference)]


def abstained(reference: list[dict], sigma: dict[str, float], tau: float) -> list[dict]:
    """The σ rule alone: Init-Basic's rows, refused where σ < τ."""
    return [row if sigma[row["id"]] >= tau else {**row, "outcome": "refused"} for row in reference]


def scores(runs: list[list[dict]], reference: list[dict]) -> dict:
    """THS (with its interval over items and seeds), Pc, Pw, Pr and over-refusal of these runs."""
    from rait.evaluate.runner import summarize_seeds

    summary = summarize_seeds(runs, reference, n_boot=1000, seed=0)
    return {"ths": summary["ths"], **{k: summary[k]["value"] for k in ("pc", "pw", "pr")},
            "over_refusal": summary["abstention"]["over_refusal"]}


def point_values(runs: list[list[dict]], reference: list[dict]) -> dict:
    """THS and over-refusal of these runs (means over runs), without intervals: what the rule compares."""
    from rait.evaluate.metrics import over_refusal, ths_of

    before = [row["outcome"] for row in reference]
    known = [outcome == "correct" for outcome in before]
    outcomes = [[row["outcome"] for row in run] for run in runs]
    return {"ths": sum(ths_of(o, before) for o in outcomes) / len(runs),
            "over_refusal": sum(over_refusal(o, known) for o in outcomes) / len(runs)}


def validation_point(by_test: dict[str, tuple[list[list[dict]], list[dict]]]) -> dict:
    """The numbers the rule reads: in-domain THS, mean THS and mean over-refusal over the two OOD sets."""
    values = {name: point_values(*by_test[name]) for name in VALIDATION}
    return {"validation": values[IN_DOMAIN]["ths"],
            "ood_mean": sum(values[n]["ths"] for n in OUT_OF_DOMAIN) / len(OUT_OF_DOMAIN),
            "over_refusal": sum(values[n]["over_refusal"] for n in OUT_OF_DOMAIN) / len(OUT_OF_DOMAIN)}


def choose(points: list[dict]) -> dict:
    """The search's rule; a set of points none of which reaches the floor is ranked without it (flagged)."""
    eligible = [p for p in points if p["validation"] >= search.FLOOR_IN_DOMAIN]
    floor_met = bool(eligible)
    eligible = eligible or points
    best = max(p["ood_mean"] for p in eligible)
    chosen = min((p for p in eligible if p["ood_mean"] >= best - 1.0), key=lambda p: (p["over_refusal"], -p["ood_mean"]))
    return chosen | {"floor_met": floor_met}


def candidates(sigma: dict[str, dict[str, float]]) -> list[float]:
    return sorted({s for name in VALIDATION for s in sigma[name].values()}) + [NO_VETO]


def tau_for_seed(data: dict, seed: int, sigma: dict) -> dict:
    points = []
    for tau in candidates(sigma):
        by_test = {name: ([vetoed(data[name]["runs"][seed], data[name]["reference"], sigma[name], tau)],
                          data[name]["reference"]) for name in VALIDATION}
        points.append(validation_point(by_test) | {"tau": tau})
    return choose(points)


def tau_alone(data: dict, sigma: dict) -> dict:
    points = []
    for tau in candidates(sigma):
        by_test = {name: ([abstained(data[name]["reference"], sigma[name], tau)], data[name]["reference"])
                   for name in VALIDATION}
        points.append(validation_point(by_test) | {"tau": tau})
    return choose(points)


def analyse() -> dict:
    from rait.evaluate.runner import compare_seeds, outcome_flow

    sigma = read_sigma()
    data = {recipe: test._read(recipe) for recipe in RECIPES}
    result: dict = {"recipes": {}}
    for recipe in RECIPES:
        chosen = [tau_for_seed(data[recipe], seed, sigma) for seed in range(len(data[recipe][IN_DOMAIN]["runs"]))]
        taus = [c["tau"] for c in chosen]
        runs = {name: [vetoed(run, data[recipe][name]["reference"], sigma[name], tau)
                       for run, tau in zip(data[recipe][name]["runs"], taus)] for name in (*VALIDATION, *TESTS)}
        result["recipes"][recipe] = {
            "taus": taus, "per_seed": chosen,
            "validation": validation_point({n: (runs[n], data[recipe][n]["reference"]) for n in VALIDATION}),
            "sets": {n: scores(runs[n], data[recipe][n]["reference"]) for n in (*VALIDATION, *TESTS)},
            "without_veto": {n: scores(data[recipe][n]["runs"], data[recipe][n]["reference"])
                             for n in (*VALIDATION, *TESTS)},
            "minus_without_veto": {n: compare_seeds(runs[n], data[recipe][n]["runs"], data[recipe][n]["reference"])["ths"]
                                   for n in TESTS},
            "minus_study6": {n: compare_seeds(runs[n], data["study6"][n]["runs"], data[recipe][n]["reference"])["ths"]
                             for n in TESTS},
            "flow_facts_ood": {subject: outcome_flow(
                [[row for row in run if row["subject"] == subject] for run in runs["facts-ood"]],
                [row for row in data[recipe]["facts-ood"]["reference"] if row["subject"] == subject])
                for subject in sorted({row["subject"] for row in data[recipe]["facts-ood"]["reference"]})},
        }
    pick = choose([result["recipes"][r]["validation"] | {"recipe": r} for r in RECIPES])
    result["pick"] = pick["recipe"]
    reference = data["wide"]
    alone = tau_alone(reference, sigma)
    result["sigma_alone"] = {"tau": alone["tau"], "floor_met": alone["floor_met"], "sets": {
        n: scores([abstained(reference[n]["reference"], sigma[n], alone["tau"])], reference[n]["reference"])
        for n in (*VALIDATION, *TESTS)}}
    result["sigma_by_relation"] = sigma_by_relation(data[result["pick"]], sigma, result["recipes"][result["pick"]]["taus"])
    FOLDER.mkdir(exist_ok=True)
    (FOLDER / "results.json").write_text(json.dumps(result, indent=1, default=float) + "\n", encoding="utf-8")
    (FOLDER / "results.md").write_text(markdown(result), encoding="utf-8")
    return result


def sigma_by_relation(data: dict, sigma: dict, taus: list[float]) -> list[dict]:
    """Why the veto moves one set and not another: per set (per relation on the OOD sets), how many questions
    Init-Basic knew, how many of those reach the pick's τ (the first seed's), and σ's AUROC for Init-Basic's
    correctness within that group (NaN where one side is empty)."""
    from rait.evaluate.metrics import auroc

    rows = []
    for name in (*VALIDATION, *TESTS):
        reference = data[name]["reference"]
        relations = sorted({r["subject"] for r in reference}) if name in ("validation-ood", "facts-ood") else [None]
        for relation in relations:
            group = [r for r in reference if relation is None or r["subject"] == relation]
            scores = [sigma[name][r["id"]] for r in group]
            known = [r["outcome"] == "correct" for r in group]
            both = 0 < sum(known) < len(known)
            rows.append({"set": name, "relation": relation, "n": len(group), "known": sum(known),
                         "known_at_tau": sum(k and s >= taus[0] for k, s in zip(known, scores)),
                         "unknown_at_tau": sum(not k and s >= taus[0] for k, s in zip(known, scores)),
                         "auroc": auroc([r["outcome"] for r in group], scores) if both else math.nan})
    return rows


def _interval(ths: dict) -> str:
    return f"{ths['value']:+.1f} [{ths['low']:+.1f}, {ths['high']:+.1f}]"


def _tau(tau: float) -> str:
    return "∞ (no veto)" if tau == NO_VETO else f"{tau:.3f}"


def markdown(result: dict) -> str:
    lines = [f"# σ veto (docs/transfer.md, second round): the pick is `{result['pick']}`", "",
             "## Validation (the rule reads these; τ per seed)", "",
             "| recipe | τ per seed | validation THS | OOD mean THS | over-refusal OOD |",
             "| --- | --- | ---: | ---: | ---: |"]
    for recipe, entry in result["recipes"].items():
        v = entry["validation"]
        lines.append(f"| {recipe} + veto | {', '.join(_tau(t) for t in entry['taus'])} | {v['validation']:+.1f} | "
                     f"{v['ood_mean']:+.1f} | {v['over_refusal']:.0f} % |")
    alone = result["sigma_alone"]
    sets = alone["sets"]
    lines.append(f"| σ rule alone (untouched model) | {_tau(alone['tau'])} | {sets[IN_DOMAIN]['ths']['value']:+.1f} | "
                 f"{sum(sets[n]['ths']['value'] for n in OUT_OF_DOMAIN) / 2:+.1f} | "
                 f"{sum(sets[n]['over_refusal'] for n in OUT_OF_DOMAIN) / 2:.0f} % |")
    if not alone["floor_met"]:
        lines.append("\nThe σ rule alone reaches the in-domain floor at no τ; its τ is ranked without the floor.")
    lines += ["", "## Every set (three seeds; intervals over items and seeds)", "",
              "| set | model | THS | Pc | Pw | Pr | over-refusal |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for name in (*VALIDATION, *TESTS):
        for recipe, entry in result["recipes"].items():
            for label, s in ((f"{recipe} + veto", entry["sets"][name]), (recipe, entry["without_veto"][name])):
                lines.append(f"| {name} | {label} | {_interval(s['ths'])} | {s['pc']:.1f} | {s['pw']:.1f} | "
                             f"{s['pr']:.1f} | {s['over_refusal']:.0f} % |")
        s = sets[name]
        lines.append(f"| {name} | σ rule alone | {_interval(s['ths'])} | {s['pc']:.1f} | {s['pw']:.1f} | "
                     f"{s['pr']:.1f} | {s['over_refusal']:.0f} % |")
    lines += ["", "## Paired ΔTHS on the test sets (items resampled jointly, each model's seeds on their own)", "",
              "| set | recipe | veto − same model without | veto − study6 without |", "| --- | --- | ---: | ---: |"]
    for name in TESTS:
        for recipe, entry in result["recipes"].items():
            a, b = entry["minus_without_veto"][name], entry["minus_study6"][name]
            lines.append(f"| {name} | {recipe} | {a['difference']:+.1f} [{a['low']:+.1f}, {a['high']:+.1f}] | "
                         f"{b['difference']:+.1f} [{b['low']:+.1f}, {b['high']:+.1f}] |")
    lines += ["", "## facts-OOD, where the pick's answers went against Init-Basic (items, mean over seeds)", "",
              "| relation | refused but known | refused and unknown | kept | lost to wrong | still wrong | fixed |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for subject, flow in result["recipes"][result["pick"]]["flow_facts_ood"].items():
        lines.append(f"| {subject} | " + " | ".join(f"{flow[k]:.1f}" for k in (
            "refused_known", "refused_unknown", "kept_correct", "lost_to_wrong", "still_wrong", "fixed")) + " |")
    lines += ["", f"## σ within each set and relation (τ = {_tau(result['recipes'][result['pick']]['taus'][0])})", "",
              "| set | relation | n | known by Init-Basic | known with σ ≥ τ | unknown with σ ≥ τ | AUROC of σ |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in result["sigma_by_relation"]:
        value = "—" if row["auroc"] != row["auroc"] else f"{row['auroc']:.1f}"
        lines.append(f"| {row['set']} | {row['relation'] or 'all'} | {row['n']} | {row['known']} | "
                     f"{row['known_at_tau']} | {row['unknown_at_tau']} | {value} |")
    return "\n".join(lines) + "\n"


def pipeline(out: Path) -> str:
    """The pick as a method of `rait run`: `sigma_veto` (`veto: {base: cor_rait, floor: 15}`, the rule above)
    beside the pick's recipe, the test run's config of that recipe with the method added, run into the search's
    folder (every item's σ and the untouched model's rows are cached there; the recipe's trainings are redone when
    a later run replaced them). Its rows go to veto/pipeline.csv, beside the analysis's numbers for the same sets."""
    import pandas as pd

    analysed = json.loads((FOLDER / "results.json").read_text(encoding="utf-8"))
    pick = analysed["pick"]
    base = yaml.safe_load(BASE.read_text(encoding="utf-8"))
    base["methods"] = [*base["methods"], "sigma_veto"]
    base["veto"] = {"base": "cor_rait", "floor": search.FLOOR_IN_DOMAIN}
    search.run_point(base, pick, out, "veto-")
    rows = pd.read_csv(out / "results.csv")
    rows = rows[rows["method"] == "σ veto"].set_index("test_set")
    by_seed = pd.read_csv(out / "results_by_seed.csv")
    taus = by_seed[by_seed["method"] == "σ veto"].groupby("seed")["threshold"].first().tolist()
    table = pd.DataFrame([{"test_set": name, "pipeline_ths": rows.loc[name, "ths"],
                           "pipeline_low": rows.loc[name, "ths_low"], "pipeline_high": rows.loc[name, "ths_high"],
                           **{f"analysis_{part}": analysed["recipes"][pick]["sets"][name]["ths"][key]
                              for part, key in (("ths", "value"), ("low", "low"), ("high", "high"))}}
                          for name in (*VALIDATION, *TESTS)])
    table.to_csv(FOLDER / "pipeline.csv", index=False)
    same = all(abs(row[f"pipeline_{p}"] - row[f"analysis_{p}"]) < 1e-9 for _, row in table.iterrows()
               for p in ("ths", "low", "high")) and taus == analysed["recipes"][pick]["taus"]
    lines = [f"# `rait run` with sigma_veto on {pick} against the analysis", "",
             f"τ per seed: pipeline {', '.join(_tau(t) for t in taus)}; analysis "
             f"{', '.join(_tau(t) for t in analysed['recipes'][pick]['taus'])}", "",
             "| set | pipeline THS | analysis THS |", "| --- | ---: | ---: |"]
    for _, row in table.iterrows():
        lines.append(f"| {row['test_set']} | {row['pipeline_ths']:+.1f} [{row['pipeline_low']:+.1f}, "
                     f"{row['pipeline_high']:+.1f}] | {row['analysis_ths']:+.1f} [{row['analysis_low']:+.1f}, "
                     f"{row['analysis_high']:+.1f}] |")
    lines += ["", "identical" if same else "DIFFERENT"]
    (FOLDER / "pipeline.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["probe", "analyse", "pipeline"])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "transfer-search")
    args = parser.parse_args(argv)
    if args.step == "probe":
        probe(args.out)
    elif args.step == "pipeline":
        print(pipeline(args.out))
    else:
        print(markdown(analyse()))


if __name__ == "__main__":
    main(sys.argv[1:])
