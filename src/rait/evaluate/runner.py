"""Evaluate a model on QA records: greedy answers, one outcome per item, metrics with CIs.

Per-item rows are kept (id, prompt name, output, outcome), like lm-eval's `--log_samples`,
so any metric can be recomputed later and two runs can be compared item by item. THS
is always computed against a reference run named by the caller (Init-Basic: the same
base model with the BASIC prompt on the same items), never "the first row".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import get_args

from rait.data.records import QARecord, Task
from rait.errors import SettingsError, check_choice, check_count
from rait.evaluate.metrics import (
    abstain_scores,
    truthfulness,
    effective_reliability,
    honesty_score,
    knowledge_quadrants,
    macro_average,
    over_refusal,
    prudence,
    rates,
    reliable_accuracy,
    seed_bootstrap_ci,
    seed_paired_bootstrap,
    ths_of,
    transition,
)
from rait.data.scoring import MatchMode, RefusalMode, score_record
from rait.generate import SamplingSettings, generate
from rait.probe.oeqa import MAX_NEW_TOKENS as MAX_ANSWER_TOKENS
from rait.prompts.render import render

# Papers: 50 new tokens for open QA. MCQA allowed 1024 there; a letter or a refusal needs
# far fewer, and 32 keeps CPU runs short while leaving room for "The answer is (B)".
MAX_NEW_TOKENS = {"oeqa": 50, "mcqa": 32}
# The papers' two evaluation prompts: BASIC (Init-Basic, the THS reference) and REFUSE (the refusal hint).
EVAL_PROMPTS = ("basic", "refuse")


@dataclass(frozen=True)
class EvalSettings:
    """The evaluation stage's settings: prompt and decoding of the greedy answers, scoring, and the bootstrap."""

    prompt: str = "refuse"
    max_new_tokens: int | dict[str, int] | None = None  # one for every task, or per task ({"oeqa": 24}); else MAX_NEW_TOKENS
    batch_size: int = 16
    refusal_mode: str = "paper"
    match_mode: str | None = None
    system: str | None = None
    chat: bool | None = None
    n_boot: int = 1000  # bootstrap resamples of every interval
    seed: int = 0  # bootstrap seed

    def __post_init__(self):
        check_choice("prompt", self.prompt, EVAL_PROMPTS)
        check_choice("refusal_mode", self.refusal_mode, get_args(RefusalMode))
        check_choice("match_mode", self.match_mode, get_args(MatchMode))
        check_count("batch_size", self.batch_size, 1)
        check_count("n_boot", self.n_boot, 1)
        budgets = self.max_new_tokens if isinstance(self.max_new_tokens, dict) else {None: self.max_new_tokens}
        for task, tokens in budgets.items():
            field = "max_new_tokens" if task is None else f"max_new_tokens.{task}"
            if task is not None and task not in get_args(Task):
                raise SettingsError(field, f"unknown task {task!r} (tasks: {', '.join(get_args(Task))})")
            if tokens is not None:  # as the probe's cap: a greedy answer is a short phrase, far longer exhausts memory
                check_count(field, tokens, 1, MAX_ANSWER_TOKENS)

    def budget(self, task: str) -> int | None:
        """The new tokens these settings give `task`'s greedy answers, None where they leave it to `MAX_NEW_TOKENS`."""
        return self.max_new_tokens.get(task) if isinstance(self.max_new_tokens, dict) else self.max_new_tokens

    def tokens_for(self, task: str) -> int:
        """The greedy answers' budget of new tokens for `task`'s records."""
        return self.budget(task) or MAX_NEW_TOKENS[task]

    def as_dict(self) -> dict:
        return asdict(self)


def score_output(record: QARecord, output: str, settings: EvalSettings) -> str:
    return str(score_record(record, output, settings.refusal_mode, settings.match_mode))


def evaluate_records(
    model,
    tokenizer,
    records: Sequence[QARecord],
    settings: EvalSettings = EvalSettings(),
    on_batch: Callable[[int], None] | None = None,
) -> list[dict]:
    """Greedy-decode every record under `settings.prompt` and score it; one row per record, in order."""
    outputs: dict[str, str] = {}
    for task in ("oeqa", "mcqa"):
        chosen = [r for r in records if r.task == task]
        if not chosen:
            continue
        prompts = [render(r, settings.prompt, tokenizer, system=settings.system, chat=settings.chat) for r in chosen]
        decoding = SamplingSettings(max_new_tokens=settings.tokens_for(task))
        texts = generate(model, tokenizer, prompts, decoding, batch_size=settings.batch_size, on_batch=on_batch)
        outputs.update({r.id: t[0] for r, t in zip(chosen, texts)})
    return [
        {
            "id": r.id,
            "source": r.source,
            "subject": r.subject,
            "task": r.task,
            "prompt": settings.prompt,
            "question": r.question,
            "gold": r.gold if r.task == "mcqa" else r.answer,
            "output": outputs[r.id],
            "outcome": score_output(r, outputs[r.id], settings),
        }
        for r in records
    ]


def macro_groups(rows: Sequence[dict]) -> list[str] | None:
    """MMLU is reported as the unweighted mean over its subjects (as the papers do); others per item."""
    if rows and all(row["source"] == "mmlu" for row in rows):
        return [row["subject"] for row in rows]
    return None


def summarize(rows: Sequence[dict], reference: Sequence[dict] | None = None, n_boot: int = 1000, seed: int = 0) -> dict:
    """Pc, Pw, Pr, Pu (percent) with bootstrap CIs, and THS against `reference` rows on the same items."""
    return summarize_seeds([rows], reference, n_boot=n_boot, seed=seed)


def summarize_seeds(runs: Sequence[Sequence[dict]], reference: Sequence[dict] | None = None, n_boot: int = 1000,
                    seed: int = 0) -> dict:
    """`summarize` over the runs of one method trained with different seeds, on the same items.

    Each metric is the mean over the runs, its interval covers both item and seed variation
    (`rait.evaluate.metrics.seed_bootstrap_ci`); with one run this is the plain item bootstrap.
    """
    outcomes, groups = _same_items(runs), macro_groups(runs[0])
    summary: dict = {"n": len(runs[0]), "macro_over": "subject" if groups else None}
    if len(runs) > 1:
        summary["seeds"] = len(runs)
    for key in ("pc", "pw", "pr", "pu"):
        interval = seed_bootstrap_ci(outcomes, _rate_statistic(key, groups), groups=groups, n_boot=n_boot, seed=seed)
        summary[key] = {"value": interval.estimate, "low": interval.low, "high": interval.high}
    reference_outcomes = _reference_outcomes(runs[0], reference) if reference is not None else None
    if reference_outcomes is not None:
        summary["ths"] = _ths_summary(outcomes, reference_outcomes, groups, n_boot, seed)
    summary["abstention"] = _mean_over_runs([abstention_metrics(run, reference_outcomes) for run in outcomes])
    return summary


def abstention_metrics(outcomes: Sequence[str], reference: Sequence[str] | None = None) -> dict[str, float]:
    """The abstention family of `rait.evaluate.metrics` for one run, in percent.

    Reliable accuracy and effective reliability need only the outcomes. The others need to know which
    items the model knew: with `reference` (Init-Basic's outcomes on the same items), an item is known
    when the untouched model answered it correctly, as Alignment for Honesty decides it before tuning.
    Then: over-refusal (known items refused), prudence (unknown items refused), the honesty score,
    abstention as detection of the unknown items (precision, recall, F1, accuracy) and Say-I-Dont-Know's
    knowledge quadrants. A part with no item to count is NaN. The truthfulness triple (`truthfulness`)
    needs only the outcomes.
    """
    result = {"reliable_accuracy": reliable_accuracy(outcomes), "effective_reliability": effective_reliability(outcomes),
              **truthfulness(outcomes)}
    if reference is None:
        return result
    known = [outcome == "correct" for outcome in reference]
    result |= {"over_refusal": over_refusal(outcomes, known), "prudence": prudence(outcomes, known),
               "honesty": honesty_score(outcomes, known)}
    result |= {f"abstain_{k}": v for k, v in abstain_scores(outcomes, [not k for k in known]).items()}
    return result | {f"quadrant_{k}": v for k, v in knowledge_quadrants(outcomes, known).items()}


def _mean_over_runs(runs: Sequence[dict[str, float]]) -> dict[str, float | None]:
    """Each metric's mean over the runs where it is defined; None where it never is."""
    means = {}
    for key in runs[0]:
        values = [run[key] for run in runs if run[key] == run[key]]
        means[key] = sum(values) / len(values) if values else None
    return means


def compare_seeds(a_runs: Sequence[Sequence[dict]], b_runs: Sequence[Sequence[dict]], reference: Sequence[dict],
                  n_boot: int = 1000, seed: int = 0) -> dict:
    """Method a minus method b on the same items: Pc, Pw and THS differences, each with a paired interval and p-value.

    Items are resampled jointly for both methods and the reference, each method's seeds on
    their own (`rait.evaluate.metrics.seed_paired_bootstrap`).
    """
    a, b = _same_items(a_runs), _same_items(b_runs)
    if [row["id"] for row in a_runs[0]] != [row["id"] for row in b_runs[0]]:
        raise ValueError("methods compared must be evaluated on the same items in the same order")
    groups = macro_groups(a_runs[0])
    result = {}
    for key in ("pc", "pw"):
        comparison = seed_paired_bootstrap(a, b, _rate_statistic(key, groups), groups=groups, n_boot=n_boot, seed=seed)
        result[key] = comparison.__dict__
    comparison = seed_paired_bootstrap(a, b, _defined_ths, reference=_reference_outcomes(a_runs[0], reference),
                                       groups=groups, n_boot=n_boot, seed=seed)
    result["ths"] = comparison.__dict__
    return result


def outcome_flow(runs: Sequence[Sequence[dict]], reference: Sequence[dict]) -> dict[str, float]:
    """Where a method's answers went, item by item, against the reference model (Init-Basic); means over runs.

    refused_known: refused what the reference answered right (over-refusal); refused_unknown:
    refused what it got wrong (a hallucination avoided); kept_correct / lost_to_wrong: the
    reference's right answers kept or turned wrong; still_wrong / fixed: its wrong answers
    left wrong or made right. Counts of items; the reference's refused and unparsed items are
    counted with its wrong ones (not known).
    """
    outcomes = _same_items(runs)
    before = _reference_outcomes(runs[0], reference)
    names = {"correct-refused": "refused_known", "wrong-refused": "refused_unknown", "correct-correct": "kept_correct",
             "correct-wrong": "lost_to_wrong", "wrong-wrong": "still_wrong", "wrong-correct": "fixed"}
    flow = dict.fromkeys(names.values(), 0.0)
    for run in outcomes:
        for now, then in zip(run, before):
            flow[names[transition(then, now)]] += 1 / len(outcomes)
    return flow


def _same_items(runs: Sequence[Sequence[dict]]) -> list[list[str]]:
    ids = [row["id"] for row in runs[0]]
    if any([row["id"] for row in run] != ids for run in runs[1:]):
        raise ValueError("the runs of one method must hold the same items in the same order")
    return [[row["outcome"] for row in run] for run in runs]


def _reference_outcomes(rows: Sequence[dict], reference: Sequence[dict]) -> list[str]:
    by_id = {row["id"]: row["outcome"] for row in reference}
    missing = [row["id"] for row in rows if row["id"] not in by_id]
    if missing:
        raise ValueError(f"the reference run lacks {len(missing)} items, e.g. {missing[0]!r}")
    return [by_id[row["id"]] for row in rows]


def _rate_statistic(key: str, groups) -> Callable[..., float]:
    if groups is None:
        return lambda o: rates(o)[key]
    return lambda o, g: macro_average(o, g)[key]


def _defined_ths(*arrays) -> float:
    """THS, or NaN where it is undefined (the reference made no wrong answer on a resample)."""
    try:
        return ths_of(*arrays)
    except ValueError:
        return float("nan")


def _ths_summary(outcomes, reference_outcomes, groups, n_boot: int, seed: int) -> dict | None:
    """THS with its interval; None when the reference made no wrong answer (THS is then undefined)."""
    interval = seed_bootstrap_ci(outcomes, _defined_ths, reference=reference_outcomes, groups=groups, n_boot=n_boot,
                                 seed=seed)
    if interval.estimate != interval.estimate:  # NaN: undefined on the full data
        return None
    return {"value": interval.estimate, "low": interval.low, "high": interval.high}
