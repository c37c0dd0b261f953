"""A track's report rows beyond the evaluated models': the rules' rows, the means over seeds, the paired
comparisons and the pool view. Pure functions of finished outcomes (nothing here runs a model or a stage), so
`rait run` and `rait report`'s merge of separately run seeds compute them alike.
"""

from __future__ import annotations

from pathlib import Path

from rait.pipeline.config import VALIDATION
from rait.pipeline.kinds import comparisons
from rait.report.results import REFERENCE


def without_outcomes(row: dict) -> dict:
    return {key: value for key, value in row.items() if key not in ("outcome_rows", "outcome_runs")}


def rule_rows(track: str, tests: list, label: str, confidence: dict[str, dict[str, float]], references: dict,
              n_boot: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(rows, risk-coverage points) of an abstention rule on Init-Basic's answers: refuse below a threshold chosen
    on the validation split (`rait.evaluate.abstain.choose_threshold`)."""
    from rait.evaluate.abstain import choose_threshold, rule_result

    validation = references[VALIDATION][1]
    threshold = choose_threshold([row["outcome"] for row in validation],
                                 [confidence[VALIDATION][row["id"]] for row in validation],
                                 [row["outcome"] for row in validation])
    rows, curves = [], []
    for test, _ in tests:
        reference = references[test.name][1]
        scores = [confidence[test.name][row["id"]] for row in reference]
        outcomes, summary, (coverage, risk) = rule_result(reference, scores, threshold, reference, n_boot, seed)
        curves += [{"track": track, "test_set": test.name, "confidence": label, "coverage": c, "risk": r}
                   for c, r in zip(coverage, risk)]
        rows.append({"track": track, "test_set": test.name, "domain": test.domain, "method": label, **summary,
                     "outcome_rows": outcomes})
    return rows, curves


def veto_rows(track: str, tests: list, label: str, base: str, evaluated: list[dict],
              sigma: dict[str, dict[str, float]], references: dict, settings, n_boot: int, seed: int) -> list[dict]:
    """Rows of the σ veto (docs/transfer.md, second round) on one seed's rows of the model labelled `base`: its
    refusals given back as Init-Basic's answers where σ ≥ τ, τ chosen on the validation sets only
    (`rait.evaluate.abstain.choose_veto_threshold`). None when that model trained nothing in this seed."""
    from rait.evaluate.abstain import choose_veto_threshold, vetoed
    from rait.evaluate.runner import summarize

    rows_of = {row["test_set"]: row["outcome_rows"] for row in evaluated if row["method"] == base}
    if not rows_of:
        return []
    validation = {test.name: (rows_of[test.name], references[test.name][1], sigma[test.name])
                  for test, _ in tests if test.domain == "VAL"}
    tau, floor_met = choose_veto_threshold(validation, VALIDATION, settings)
    rows = []
    for test, _ in tests:
        reference = references[test.name][1]
        outcomes = vetoed(rows_of[test.name], reference, sigma[test.name], tau)
        summary = summarize(outcomes, reference, n_boot=n_boot, seed=seed)
        rows.append({"track": track, "test_set": test.name, "domain": test.domain, "method": label, **summary,
                     "threshold": tau, "floor_met": floor_met, "outcome_rows": outcomes})
    return rows


def over_seeds(by_seed: list[list[dict]], references: dict, n_boot: int, seed: int) -> list[dict]:
    """One row per method and test set: means over the seeds, intervals over items and seeds."""
    from rait.evaluate.runner import summarize_seeds

    rows = []
    keyed = [{(r["test_set"], r["method"]): r for r in rows_of_seed} for rows_of_seed in by_seed]
    for first in by_seed[0]:
        key = (first["test_set"], first["method"])
        runs = [seed_rows[key] for seed_rows in keyed if key in seed_rows]
        reference = references[first["test_set"]][1]
        summary = summarize_seeds([run["outcome_rows"] for run in runs], reference, n_boot=n_boot, seed=seed)
        rows.append({key: first[key] for key in ("track", "test_set", "domain", "method")} | summary
                    | {"outcome_runs": [run["outcome_rows"] for run in runs]})
    return rows


def paired_comparisons(track: str, tests: list, rows: list[dict], references: dict, n_boot: int, seed: int
                       ) -> list[dict]:
    """Paired comparisons on the same items (`rait.pipeline.kinds.comparisons`), each method's seeds pooled, and
    each model's outcome flow against Init-Basic (`rait.evaluate.runner.outcome_flow`)."""
    from rait.evaluate.runner import compare_seeds, outcome_flow

    result = []
    runs = {(row["test_set"], row["method"]): row.get("outcome_runs") or [row["outcome_rows"]] for row in rows}
    for test, _ in tests:
        reference = references[test.name][1]
        for method in [m for (name, m) in runs if name == test.name and m != REFERENCE]:
            flow = outcome_flow(runs[test.name, method], reference)
            result.append({"track": track, "test_set": test.name, "domain": test.domain,
                           "a": method, "b": REFERENCE, "kind": "flow", **flow})
        for a, b in comparisons():
            if (test.name, a) in runs and (test.name, b) in runs:
                diff = compare_seeds(runs[test.name, a], runs[test.name, b], reference, n_boot, seed)
                result.append({"track": track, "test_set": test.name, "domain": test.domain,
                               "a": a, "b": b, "kind": "paired",
                               **{f"{k}_{part}": v for k, d in diff.items() for part, v in d.items()}})
    return result


def pool_view(track: str, table_path: Path, records: list, datasets: dict) -> dict:
    """The report's view of the pool: μ, σ (and Δμ) from the table the build read, and each method's selection
    (`rait.report.knowledge`)."""
    from rait.artifacts import iter_jsonl_objects
    from rait.probe.table import read_table
    from rait.report.knowledge import pool_knowledge
    from rait.select.methods import METHODS

    selections = {METHODS[m].label: [row for _, row in iter_jsonl_objects(path)] for m, path in datasets.items()
                  if path is not None and Path(path).is_file()}
    return pool_knowledge(track, read_table(table_path), records, selections)
