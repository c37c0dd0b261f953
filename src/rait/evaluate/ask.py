"""`rait ask`: a model answers questions as the evaluation asks them, each answer marked answered or refused.

The greedy answer is the evaluation's own (`evaluate_records`: the same rendering, decoding and scoring), so
"refused" here means what it means in a results table. With `samples` the model also answers k times at the
probe's sampling settings (`OpenSettings`), and the probe's certainty σ (`score_samples`: the mean pairwise
cosine of the answers' embeddings) says how much the samples agree: a user sees what the model knows, not
only what it says once.

The prompt and the refusal rule default to what the model was trained for where its folder says so (the
`rait.json` of a `rait export` folder: its prompt, and its run's refusal rule or else the first rule that
recognises its refusal string), else to the evaluation's defaults (the refuse prompt, the papers' rule).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import get_args

import numpy as np

from rait.artifacts import read_json_object
from rait.data.records import QARecord
from rait.data.scoring import Outcome, RefusalMode, is_refusal
from rait.errors import MAX_SEED, DataError, SettingsError, check_choice, check_count
from rait.evaluate.runner import EVAL_PROMPTS, MAX_NEW_TOKENS, EvalSettings, evaluate_records
from rait.evaluate.suite import MODEL_NOTES, exported_adapter_base
from rait.models import resolve_model_path
from rait.probe.oeqa import MAX_K, OpenSettings, embed_unique, score_samples
from rait.probe.oeqa import MAX_NEW_TOKENS as MAX_ANSWER_TOKENS
from rait.prompts import render
from rait.train.finetune import SUMMARY_FILE

SOURCE = "ask"  # the records' source: no dataset suffix is appended to the question (`question_suffix`)


@dataclass(frozen=True)
class AskSettings:
    """How questions are put to the model. None takes the model's own default (`model_defaults`), then the
    evaluation's; `samples` 0 asks for the greedy answer alone, k >= 2 adds k samples and their agreement σ."""

    prompt: str | None = None
    refusal_mode: str | None = None
    samples: int = 0
    max_new_tokens: int | None = None
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice("prompt", self.prompt, EVAL_PROMPTS)
        check_choice("refusal_mode", self.refusal_mode, get_args(RefusalMode))
        check_count("samples", self.samples, 0, MAX_K)
        if self.samples == 1:
            raise SettingsError("samples", "agreement compares samples with each other: give 0 (none) or at least 2")
        if self.max_new_tokens is not None:
            check_count("max_new_tokens", self.max_new_tokens, 1, MAX_ANSWER_TOKENS)
        check_count("batch_size", self.batch_size, 1)
        check_count("seed", self.seed, 0, MAX_SEED)


@dataclass(frozen=True)
class ModelDefaults:
    """How a model folder says it is to be asked (`rait.json`): its prompt, its refusal string and the refusal
    rule its run was evaluated with."""

    prompt: str | None = None
    refusal: str | None = None
    refusal_mode: str | None = None
    source: str | None = None  # the file they came from, for the header line


def model_defaults(spec: str) -> ModelDefaults:
    """The `rait.json` beside a model (a `rait export` folder), checked field by field; none for a `rait train`
    output or another folder. Resolving the spec refuses a missing model before any work."""
    if (Path(spec) / SUMMARY_FILE).is_file():
        return ModelDefaults()
    path = Path(spec) / MODEL_NOTES if exported_adapter_base(spec) else resolve_model_path(spec) / MODEL_NOTES
    if not path.is_file():
        return ModelDefaults()
    notes = read_json_object(path)
    prompt, refusal, mode = notes.get("prompt"), notes.get("refusal"), notes.get("refusal_mode")
    for name, value, allowed in (("prompt", prompt, EVAL_PROMPTS), ("refusal_mode", mode, get_args(RefusalMode))):
        if value is not None and value not in allowed:
            raise DataError(path, f"{value!r} is not one of {', '.join(allowed)}", field=name)
    if refusal is not None and (not isinstance(refusal, str) or not refusal.strip()):
        raise DataError(path, f"must be a non-empty string, got {refusal!r}", field="refusal")
    if refusal is not None and refusal_mode_for(refusal) is None:
        raise DataError(path, f"{refusal!r} is caught by no refusal rule of the evaluation "
                        f"({', '.join(get_args(RefusalMode))}), so no answer could be marked refused", field="refusal")
    return ModelDefaults(prompt=prompt, refusal=refusal, refusal_mode=mode, source=str(path))


def refusal_mode_for(refusal: str) -> str | None:
    """The first evaluation rule (the papers' before the broader keywords) that recognises `refusal`."""
    return next((mode for mode in get_args(RefusalMode) if is_refusal(refusal, mode)), None)


def eval_settings(settings: AskSettings, defaults: ModelDefaults) -> EvalSettings:
    """The evaluation settings the greedy answers are produced and scored with."""
    mode = (settings.refusal_mode or defaults.refusal_mode
            or (refusal_mode_for(defaults.refusal) if defaults.refusal else None))
    evaluation = EvalSettings()
    return EvalSettings(prompt=settings.prompt or defaults.prompt or evaluation.prompt,
                        max_new_tokens=settings.max_new_tokens, batch_size=settings.batch_size,
                        refusal_mode=mode or evaluation.refusal_mode)


def question_record(question: str, answer: str | None = None, aliases: Sequence[str] = ()) -> QARecord:
    """An open question as the evaluation takes it; without an answer it can only be answered or refused. `run`
    numbers the questions it is given (the evaluation keys answers by id)."""
    return QARecord(id=SOURCE, question=question, source=SOURCE, split=SOURCE, answer=answer,
                    aliases=list(aliases))


def read_question_file(path: Path) -> list[QARecord]:
    """`read_questions` of a UTF-8 text file."""
    if not path.is_file():
        raise DataError(path, "is a folder, not a file" if path.is_dir() else "no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(path, f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    return read_questions(text, str(path))


def read_questions(text: str, origin: str) -> list[QARecord]:
    """Questions from a file's (or stdin's) text: one per line, or JSON lines of objects with a `question`
    and, to score the answers too, an `answer` and `aliases`. Bad lines are errors naming `origin` and the line."""
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not lines:
        raise DataError(origin, "no question in it (one question per line, or JSON lines with a 'question')")
    if not lines[0][1].startswith("{"):
        return [question_record(line) for _, line in lines]
    records = []
    for number, line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(origin, f"not JSON: {err.msg}", line=number) from None
        if not isinstance(row, dict):
            raise DataError(origin, f"must be a JSON object, got {type(row).__name__}", line=number)
        for name, value in (("question", row.get("question")), ("answer", row.get("answer", ""))):
            if not isinstance(value, str) or (name == "question" and not value.strip()):
                raise DataError(origin, f"must be a non-empty string, got {value!r}" if name == "question" else
                                f"must be a string, got {value!r}", line=number, field=name)
        aliases = row.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) and a.strip() for a in aliases):
            raise DataError(origin, "must be a list of non-empty strings", line=number, field="aliases")
        if "choices" in row:
            raise DataError(origin, "multiple-choice questions are asked by `rait eval`; `rait ask` takes open "
                            "questions", line=number, field="choices")
        records.append(question_record(row["question"], row.get("answer") or None, aliases))
    return records


def run(settings: AskSettings, records: Sequence[QARecord], model, tokenizer, defaults: ModelDefaults = ModelDefaults(),
        embedder: Callable[[Sequence[str]], np.ndarray] | None = None) -> list[dict]:
    """One row per question: the greedy answer with its verdict (answered or refused) and, for a question with an
    answer, the evaluation's outcome; with `settings.samples`, the samples with their verdicts and their σ.

    `embedder` maps texts to vectors for σ (default: the probe's `SentenceEmbedder`)."""
    evaluation = eval_settings(settings, defaults)
    records = [replace(record, id=f"{SOURCE}-{index}") for index, record in enumerate(records)]
    rows = []
    for record, scored in zip(records, evaluate_records(model, tokenizer, records, evaluation)):
        outcome = scored["outcome"]
        row = {"question": record.question, "prompt": evaluation.prompt, "refusal_mode": evaluation.refusal_mode,
               "answer": scored["output"], "verdict": _verdict(outcome == Outcome.REFUSED)}
        if record.all_answers:
            row["outcome"] = outcome
        rows.append(row)
    if settings.samples:
        for row, sampled in zip(rows, _samples(settings, evaluation, records, model, tokenizer, embedder)):
            row.update(sampled)
    return rows


def _verdict(refused: bool) -> str:
    return "refused" if refused else "answered"


def _samples(settings: AskSettings, evaluation: EvalSettings, records: Sequence[QARecord], model, tokenizer,
             embedder) -> list[dict]:
    """k answers per question at the probe's sampling settings, under the prompt of the greedy answer."""
    from rait.generate import generate

    if embedder is None:
        from rait.probe.measures import SentenceEmbedder

        embedder = SentenceEmbedder(device=str(next(model.parameters()).device))
    probe = OpenSettings(prompt=evaluation.prompt, k=settings.samples, refusal_mode=evaluation.refusal_mode,
                         max_new_tokens=evaluation.max_new_tokens or MAX_NEW_TOKENS["oeqa"], seed=settings.seed,
                         batch_size=settings.batch_size)
    prompts = [render(record, evaluation.prompt, tokenizer, system=evaluation.system, chat=evaluation.chat)
               for record in records]
    outputs = generate(model, tokenizer, prompts, probe.sampling, batch_size=probe.batch_size, seed=probe.seed)
    answers = [[text.strip() for text in texts] for texts in outputs]
    vectors = embed_unique(embedder, [a for texts in answers for a in texts])
    sampled = []
    for record, texts in zip(records, answers):
        scored = score_samples(record, texts, np.stack([vectors[a] for a in texts]), probe)
        entry = {"samples": [{"answer": a, "verdict": _verdict(r)} for a, r in zip(texts, scored["sample_refused"])],
                 "sigma": scored["sigma"]}
        if record.all_answers:
            entry["mu"] = scored["mu"]
        sampled.append(entry)
    return sampled


def format_row(row: dict) -> str:
    """A row as the terminal shows it: question, answer and verdict, then the samples grouped by text."""
    verdict = row["verdict"] + (f", {row['outcome']}" if "outcome" in row else "")
    lines = [f"Q: {row['question']}", f"A: {row['answer'].strip()}  [{verdict}]"]
    if "samples" in row:
        refused = sum(sample["verdict"] == "refused" for sample in row["samples"])
        known = f", correct {row['mu']:.0%}" if "mu" in row else ""
        lines.append(f"   {len(row['samples'])} samples, agreement σ {row['sigma']:.2f}: "
                     f"{len(row['samples']) - refused} answered, {refused} refused{known}")
        counts = Counter((sample["answer"], sample["verdict"]) for sample in row["samples"])
        lines += [f"   {count:>3}x [{verdict}] {answer}" for (answer, verdict), count in counts.most_common()]
    return "\n".join(lines)
