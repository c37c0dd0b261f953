"""Evaluate a model on QA records: greedy answers, one outcome per item, metrics with CIs.

Per-item rows are kept (id, prompt name, output, outcome), like lm-eval's `--log_samples`,
so any metric can be recomputed later and two runs can be compared item by item. THS
is always computed against a reference run named by the caller (Init-Basic: the same
base model with the BASIC prompt on the same items), never "the first row".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from rait.data.records import QARecord
from rait.evaluate.scoring import score_mcqa, score_open
from rait.generate import SamplingSettings, generate
from rait.prompts.render import render

# Papers: 50 new tokens for open QA. MCQA allowed 1024 there; a letter or a refusal needs
# far fewer, and 32 keeps CPU runs short while leaving room for "The answer is (B)".
MAX_NEW_TOKENS = {"oeqa": 50, "mcqa": 32}


@dataclass(frozen=True)
class EvalSettings:
    prompt: str = "refuse"
    max_new_tokens: int | None = None
    batch_size: int = 16
    refusal_mode: str = "paper"
    match_mode: str | None = None
    system: str | None = None
    chat: bool | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _match_mode(record: QARecord, settings: EvalSettings) -> str:
    """The settings' rule if given, else the one the record's source asks for, else the papers' rule."""
    return settings.match_mode or record.metadata.get("match_mode") or "contains"


def score_output(record: QARecord, output: str, settings: EvalSettings) -> str:
    if record.task == "mcqa":
        return str(score_mcqa(output, record.gold, record.letters, settings.refusal_mode))
    return str(score_open(output, record.all_answers, settings.refusal_mode, _match_mode(record, settings)))


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
        decoding = SamplingSettings(max_new_tokens=settings.max_new_tokens or MAX_NEW_TOKENS[task])
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
    from rait.evaluate.metrics import bootstrap_ci, macro_average, rates

    outcomes = [row["outcome"] for row in rows]
    groups = macro_groups(rows)
    point = rates(outcomes) if groups is None else macro_average(outcomes, groups)
    summary: dict = {"n": len(rows), "macro_over": "subject" if groups else None}
    for key in ("pc", "pw", "pr", "pu"):
        if groups is None:
            stat = lambda o, key=key: rates(o)[key]  # noqa: E731
        else:
            stat = lambda o, g, key=key: macro_average(o, g)[key]  # noqa: E731
        interval = bootstrap_ci(outcomes, stat, groups=groups, n_boot=n_boot, seed=seed)
        summary[key] = {"value": point[key], "low": interval.low, "high": interval.high}
    if reference is not None:
        by_id = {row["id"]: row["outcome"] for row in reference}
        missing = [row["id"] for row in rows if row["id"] not in by_id]
        if missing:
            raise ValueError(f"the reference run lacks {len(missing)} items, e.g. {missing[0]!r}")
        reference_outcomes = [by_id[row["id"]] for row in rows]
        summary["ths"] = _ths_summary(outcomes, reference_outcomes, groups, n_boot, seed)
    return summary


def _ths_summary(outcomes, reference_outcomes, groups, n_boot: int, seed: int) -> dict | None:
    """THS with its interval; None when the reference made no wrong answer (THS is then undefined)."""
    from rait.evaluate.metrics import bootstrap_ci, ths_of

    def defined_ths(*arrays):
        try:
            return ths_of(*arrays)
        except ValueError:
            return float("nan")

    interval = bootstrap_ci(outcomes, defined_ths, reference=reference_outcomes, groups=groups, n_boot=n_boot, seed=seed)
    if interval.estimate != interval.estimate:  # NaN: undefined on the full data
        return None
    return {"value": interval.estimate, "low": interval.low, "high": interval.high}
