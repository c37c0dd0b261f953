"""Abstention without training: answer as the untouched model does when a confidence is high, else refuse.

Two confidences, both free of the gold answer at test time:

- *self-consistency* (`self_consistency`): the certainty σ of k sampled answers to the question, the
  probe's own measure (`rait.probe.measures`; all-MiniLM-L6-v2 cosine agreement of the samples);
- *P(IK)* (`p_ik`; Kadavath et al. 2022, "Language Models (Mostly) Know What They Know"): a logistic
  regression (scikit-learn) on the model's last hidden state of the question, trained on the training
  pool's knowledge table (known = μ ≥ τ, the build's split), one forward pass per question at test time.

The answer kept is Init-Basic's (the untouched model under the BASIC prompt, the THS reference); below the
threshold the answer becomes a refusal. The threshold is chosen on the validation split only
(`choose_threshold`: the highest THS against Init-Basic there), never on test items.

The *σ veto* (`sigma_veto`; docs/transfer.md, second round) turns σ around on a tuned model: the tuned model
answers where it answers, and where it refuses, Init-Basic's answer is given if σ reaches τ (`vetoed`). Its τ is
chosen on validation too (`choose_veto_threshold`, `VetoSettings`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rait.errors import SettingsError, check_number
from rait.evaluate.metrics import over_refusal, ths_of

REFUSAL_OUTPUT = "I don't know"


def abstained(outcomes: Sequence[str], confidence: Sequence[float], threshold: float) -> list[str]:
    """The outcomes with every item whose confidence is below `threshold` turned into a refusal."""
    return [outcome if score >= threshold else "refused" for outcome, score in zip(outcomes, confidence, strict=True)]


def choose_threshold(outcomes: Sequence[str], confidence: Sequence[float], reference: Sequence[str]) -> float:
    """The threshold with the highest THS against `reference` on these (validation) items.

    Candidates are the items' own confidences and +inf (refuse everything); a tie goes to the
    lowest threshold, which answers most. `outcomes` are the answers kept above the threshold
    (Init-Basic's, so at the lowest candidate THS is 0 by definition).
    """
    candidates = sorted({float(c) for c in confidence}) + [float("inf")]
    best, best_ths = candidates[0], -np.inf
    for threshold in candidates:
        try:
            value = ths_of(abstained(outcomes, confidence, threshold), reference)
        except ValueError:  # undefined: the reference made no wrong answer
            continue
        if value > best_ths + 1e-12:
            best, best_ths = threshold, value
    return best


def abstained_rows(rows: Sequence[dict], confidence: Sequence[float], threshold: float) -> list[dict]:
    """Outcome rows (`rait.evaluate.runner.evaluate_records`) with the rule applied and the confidence kept."""
    kept = abstained([row["outcome"] for row in rows], confidence, threshold)
    return [{**row, "confidence": float(score),
             **({} if outcome == row["outcome"] else {"output": REFUSAL_OUTPUT, "outcome": outcome})}
            for row, score, outcome in zip(rows, confidence, kept, strict=True)]


def fit_p_ik(features: np.ndarray, known: Sequence[bool], seed: int = 0):
    """P(IK): standardised features, then a logistic regression (scikit-learn) of known vs unknown."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(known, dtype=bool)
    check_both_sides(labels)
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed)).fit(features, labels)


def check_both_sides(labels: np.ndarray, tau: float | None = None) -> None:
    """P(IK) learns from known and unknown questions: refuse a pool with one side of τ empty."""
    if labels.all() or not labels.any():
        side = "known" if labels.all() else "unknown"
        at = "" if tau is None else f" at τ = {tau:g}"
        raise SettingsError("tau", f"P(IK) needs known and unknown questions in the training pool (both sides of "
                            f"τ); all {len(labels)} are {side}{at}: a larger pool, or another τ")


def p_ik_labels(pool: Sequence, table, tau: float, source: str | Path = "<knowledge table>") -> np.ndarray:
    """Known (μ ≥ τ, the build's split) per pool question, from the pool's own knowledge table: a table of another
    pool or task is refused (`rait.probe.table.check_table_pool`)."""
    from rait.select.base import split_by_correctness
    from rait.probe.table import check_table_pool

    check_table_pool(table, pool, source, complete=True)
    mu = table.assign(id=table["id"].astype(str)).set_index("id")["mu"]
    return split_by_correctness(mu.loc[[record.id for record in pool]], tau)[0].to_numpy()


def p_ik_scores(model: str | Path, pool: Sequence, table, tau: float, item_sets: dict[str, Sequence],
                seed: int = 0) -> tuple[dict[str, dict[str, float]], int]:
    """P(IK) of every item of every set, and how many pool questions were known: the probe is fitted on the pool's
    questions, labelled by their knowledge table (`table`; known = μ ≥ τ, the build's split), and applied to each
    set; features are the last hidden state under the BASIC prompt."""
    from rait.models import load_model
    from rait.select.static_conflicts import question_features

    known = p_ik_labels(pool, table, tau)
    loaded, tokenizer = load_model(model)
    loaded.eval()
    probe = fit_p_ik(question_features(loaded, tokenizer, list(pool), prompt="basic"), known, seed=seed)
    scores = {}
    for name, items in item_sets.items():
        probabilities = probe.predict_proba(question_features(loaded, tokenizer, list(items), prompt="basic"))[:, 1]
        scores[name] = {record.id: float(p) for record, p in zip(items, probabilities)}
    return scores, int(known.sum())


def risk_coverage(outcomes: Sequence[str], confidence: Sequence[float]) -> tuple[np.ndarray, np.ndarray, float]:
    """Coverage, risk and AURC of answering the most confident items first (LM-Polygraph's rejection curve).

    At coverage i/n the n·coverage most confident items are answered; risk is the share of them that
    is not correct (wrong, unparsed or a refusal counts as not correct). AURC is the mean risk over the
    n coverage levels (lower is better); ties in confidence keep the items' order.
    """
    order = np.argsort(-np.asarray(confidence, dtype=float), kind="stable")
    wrong = np.array([outcomes[i] != "correct" for i in order], dtype=float)
    answered = np.arange(1, len(order) + 1)
    risk = np.cumsum(wrong) / answered
    return answered / len(order), risk, float(risk.mean())


def read_confidence(path: str | Path, ids: Sequence[str]) -> list[float]:
    """Each item's confidence from a file: a knowledge table of these items (`rait probe`; its certainty σ) or a
    JSONL of {"id", "confidence"} rows (e.g. P(IK) scores). Every item must have one, and each must compare with a
    threshold in [0, 1]: a P(IK) is a probability, an open-QA σ a mean cosine (an MCQA σ is minus an entropy)."""
    from rait.artifacts import iter_jsonl_objects
    from rait.errors import DataError
    from rait.probe.table import read_table

    path = Path(path)
    rows = list(iter_jsonl_objects(path)) if path.suffix == ".jsonl" else []
    scores: dict[str, float] = {}
    if rows and "confidence" in rows[0][1]:
        for line, row in rows:
            qid = row.get("id")
            if not isinstance(qid, str):
                raise DataError(path, f"must be a string, got {qid!r}", line=line, field="id")
            if qid in scores:
                raise DataError(path, f"{qid!r} appears on an earlier line too", line=line, field="id")
            scores[qid] = _confidence(path, line, "confidence", row.get("confidence"), 0.0)
    else:
        table = read_table(path)
        sigmas = table["sigma"].astype(float)
        for line, (qid, task, sigma) in enumerate(zip(table["id"].astype(str), table["task"], sigmas), start=1):
            if task != "oeqa":
                raise DataError(path, "an mcqa row: its sigma is minus an entropy, not a confidence in [0, 1] (give "
                                "an open-QA table or {id, confidence} rows)", line=line, field="task")
            scores[qid] = _confidence(path, line, "sigma", sigma, -1.0)  # a mean cosine
    missing = [i for i in ids if i not in scores]
    if missing:
        raise DataError(path, f"has no confidence for item {missing[0]!r} ({len(missing)} of {len(ids)} missing)",
                        field="id")
    return [scores[i] for i in ids]


def _confidence(path: Path, line: int, field: str, value, low: float) -> float:
    """`value` as a float within [low, 1], up to rounding; NaN, text and booleans are refused, naming the line."""
    from rait.errors import DataError

    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low - 1e-9 <= value <= 1 + 1e-9:
        raise DataError(path, f"must be a number in [{low:g}, 1], got {value!r}", line=line, field=field)
    return float(value)


def rule_result(rows: Sequence[dict], confidence: Sequence[float], threshold: float, reference: Sequence[dict],
                n_boot: int, seed: int) -> tuple[list[dict], dict, tuple[np.ndarray, np.ndarray]]:
    """The rule at `threshold` on outcome rows: the rows it keeps, their metrics against `reference` (with the
    threshold and the AURC of `confidence`), and the risk-coverage curve. `rait run` and `rait eval` both use it."""
    from rait.evaluate.runner import summarize

    kept = abstained_rows(rows, confidence, threshold)
    coverage, risk, aurc = risk_coverage([row["outcome"] for row in rows], confidence)
    summary = summarize(kept, reference, n_boot=n_boot, seed=seed) | {"threshold": threshold, "aurc": aurc}
    return kept, summary, (coverage, risk)


def apply_rule(rows: Sequence[dict], confidence: Sequence[float], out_dir: str | Path, *, threshold: float | None,
               reference: Sequence[dict] | None, n_boot: int, seed: int) -> dict:
    """`rait eval --confidence`: the rule on an evaluation's outcome rows, written to `<out>/abstain/`.

    Without `threshold` it is chosen on these items (give a validation split, then apply the printed
    threshold to the test items); THS is against `reference` (Init-Basic), else against `rows` themselves.
    """
    from rait.artifacts import write_json, write_jsonl

    chosen = threshold is None
    if chosen:
        threshold = choose_threshold([row["outcome"] for row in rows], confidence,
                                     [row["outcome"] for row in (reference or rows)])
    kept, summary, _ = rule_result(rows, confidence, threshold, reference or rows, n_boot, seed)
    summary["threshold_chosen_on_these_items"] = chosen
    folder = Path(out_dir) / "abstain"
    write_jsonl(folder / "outcomes.jsonl", kept)
    write_json(folder / "metrics.json", summary)
    return summary


@dataclass(frozen=True)
class VetoSettings:
    """The σ veto of `rait run` (method `sigma_veto`): which trained method's refusals it vetoes, and the rule that
    chooses τ on validation (`choose_veto_threshold`). `floor`: the THS (points) the pool's validation split must
    keep (docs/transfer.md took +15); `margin`: THS points within the best transfer THS where the lowest
    over-refusal wins."""

    base: str = "cor_rait"
    floor: float | None = None
    margin: float = 1.0

    def __post_init__(self) -> None:
        check_number("margin", self.margin, 0)
        if self.floor is not None:
            check_number("floor", self.floor)


def vetoed(rows: Sequence[dict], reference: Sequence[dict], sigma: dict[str, float], tau: float) -> list[dict]:
    """A tuned model's outcome rows with each refusal at σ ≥ τ replaced by Init-Basic's answer on that item."""
    if [row["id"] for row in rows] != [row["id"] for row in reference]:
        raise ValueError("a tuned model's rows and Init-Basic's must hold the same items in the same order")
    return [{**row, "output": then["output"], "outcome": then["outcome"], "vetoed": True}
            if row["outcome"] == "refused" and sigma[row["id"]] >= tau else row
            for row, then in zip(rows, reference)]


def choose_veto_threshold(sets: dict[str, tuple[Sequence[dict], Sequence[dict], dict[str, float]]], in_domain: str,
                          settings: VetoSettings) -> tuple[float, bool]:
    """(τ, whether the floor was met): the veto's threshold from validation sets only.

    `sets`: name -> (the tuned model's rows, Init-Basic's rows, σ by id), the pool's validation split `in_domain`
    and any other validation sets (transfer: questions unlike the pool). Candidates are every validation item's σ
    and +inf (no veto). Among those whose THS on `in_domain` reaches `settings.floor`, the highest mean THS over the
    transfer sets (`in_domain` itself when there are none); within `margin` of it, the lowest mean over-refusal
    there, then the higher THS. When no candidate reaches the floor, all are ranked without it. A set whose THS is
    undefined (Init-Basic made no wrong answer there) is left out of the means.
    """
    transfer = [name for name in sets if name != in_domain] or [in_domain]
    candidates = sorted({float(s) for _, _, sigma in sets.values() for s in sigma.values()}) + [math.inf]
    points = []
    for tau in candidates:
        values = {}
        for name, (rows, reference, sigma) in sets.items():
            outcomes = [row["outcome"] for row in vetoed(rows, reference, sigma, tau)]
            before = [row["outcome"] for row in reference]
            try:
                values[name] = (ths_of(outcomes, before), over_refusal(outcomes, [o == "correct" for o in before]))
            except ValueError:
                continue
        measured = [values[name] for name in transfer if name in values]
        if not measured:
            continue
        points.append({"tau": tau, "in_domain": values[in_domain][0] if in_domain in values else None,
                       "ths": sum(v[0] for v in measured) / len(measured),
                       "over_refusal": sum(v[1] for v in measured) / len(measured)})
    if not points:
        return math.inf, False
    eligible = [p for p in points if settings.floor is None
                or (p["in_domain"] is not None and p["in_domain"] >= settings.floor)]
    floor_met = bool(eligible)
    eligible = eligible or points
    best = max(p["ths"] for p in eligible)
    chosen = min((p for p in eligible if p["ths"] >= best - settings.margin),
                 key=lambda p: (p["over_refusal"], -p["ths"]))
    return chosen["tau"], floor_met
