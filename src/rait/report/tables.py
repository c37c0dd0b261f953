"""The run's tables beside the report: per-seed numbers, the knowledge-signal diagnosis, the paired comparisons.

`rait run` and `rait report` write them into the run folder (results_by_seed.csv, diagnosis.md/.json,
comparisons.md/.csv); docs/report.md shows each.
"""

from __future__ import annotations

from pathlib import Path

from rait.artifacts import write_json
from rait.report.results import METRICS, REFERENCE


def write_by_seed(rows: list[dict], path: Path) -> None:
    """One CSV line per trained model, test set and seed: the numbers behind the means over seeds, and the
    threshold of a rule chosen per seed (the σ veto's τ) where there is one."""
    import pandas as pd

    flat = []
    thresholds = any("threshold" in row for row in rows)
    for row in rows:
        entry = {key: row.get(key) for key in ("track", "test_set", "domain", "method", "seed", "n")}
        for key in METRICS:
            metric = row.get(key) or {}
            entry |= {key: metric.get("value"), f"{key}_low": metric.get("low"), f"{key}_high": metric.get("high")}
        if thresholds:
            entry["threshold"] = row.get("threshold")
        flat.append(entry)
    pd.DataFrame(flat).to_csv(path, index=False)


def write_diagnosis(rows: list[dict], out_dir: Path) -> None:
    """diagnosis.md/.json: per test set, how well the probe's μ predicts Init-Basic's greedy correctness."""
    write_json(out_dir / "diagnosis.json", rows)
    lines = ["# Does the model's knowledge signal predict its answers?", "",
             "Test items probed like the pool; AUROC of μ for Init-Basic correct vs not (50 = chance), 95 % interval; "
             "AP of μ at ranking the correct ones first (chance = the share correct).",
             "", "| test set | n | Init-Basic correct | mean μ, correct | mean μ, not correct | AUROC of μ | AP of μ |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        auroc = row.get("auroc")
        cell = f"{auroc['value']:.1f} [{auroc['low']:.1f}, {auroc['high']:.1f}]" if auroc else "–"
        means = [f"{row[k]:.2f}" if row[k] is not None else "–" for k in ("mean_mu_correct", "mean_mu_not_correct")]
        ap = f"{row['average_precision']:.1f}" if row.get("average_precision") is not None else "–"
        lines.append(f"| {row['test_set']} ({row['domain']}) | {row['n']} | {row['init_basic_correct']} | "
                     + " | ".join(means) + f" | {cell} | {ap} |")
    (out_dir / "diagnosis.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_comparisons(comparisons: list[dict], out_dir: Path) -> None:
    """comparisons.csv (every number) and comparisons.md: paired differences, then where each model's answers went."""
    import pandas as pd

    pd.DataFrame(comparisons).to_csv(out_dir / "comparisons.csv", index=False)
    lines = ["# Paired comparisons", "", "a minus b on the same items; 95 % intervals over items (and seeds); "
             "two-sided bootstrap p-value of ΔTHS.", "",
             "| test set | a | b | ΔPc | ΔPw | ΔTHS | p (ΔTHS) |", "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for c in (c for c in comparisons if c["kind"] == "paired"):
        cells = [f"{c[f'{k}_difference']:.1f} [{c[f'{k}_low']:.1f}, {c[f'{k}_high']:.1f}]"
                 if c[f"{k}_low"] == c[f"{k}_low"] else "–" for k in ("pc", "pw", "ths")]  # – : undefined (NaN)
        p_value = f"{c['ths_p_value']:.3f}" if c["ths_p_value"] == c["ths_p_value"] else "–"
        lines.append(f"| {c['test_set']} ({c['domain']}) | {c['a']} | {c['b']} | " + " | ".join(cells) + f" | {p_value} |")
    lines += ["", f"# Where the answers went, against {REFERENCE} (items; means over seeds)", "",
              "| test set | model | refused known | refused unknown | kept correct | lost to wrong | still wrong | fixed |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for c in (c for c in comparisons if c["kind"] == "flow"):
        counts = [f"{c[k]:.1f}".removesuffix(".0") for k in ("refused_known", "refused_unknown", "kept_correct",
                                                             "lost_to_wrong", "still_wrong", "fixed")]
        lines.append(f"| {c['test_set']} ({c['domain']}) | {c['a']} | " + " | ".join(counts) + " |")
    (out_dir / "comparisons.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
