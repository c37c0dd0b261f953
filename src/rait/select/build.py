"""From a fitted selector to files: the training JSONL, the CRaFT/xtuner layout, DPO pairs, CRSS of a build.

Training rows are TRL conversational prompt-completion rows (what `rait.train` consumes)::

    {"id": ..., "method": "craft", "kind": "vanilla" | "idk", "weight": 1.0,
     "prompt": [{"role": "user", "content": <REFUSE prompt>}],
     "completion": [{"role": "assistant", "content": <gold answer | refusal>}]}

Vanilla rows come first, then IdK rows, each in selection order; the trainer's sampler shuffles
(the release's final shuffle was unseeded). Every file gets a manifest: input hashes (knowledge
table, records), the selector's parameters, the seed, its report and the rait version.

Preference pairs (Idk-DPO style, Say-I-Dont-Know): a vanilla question prefers its gold answer
over the refusal; an IdK question prefers the refusal over the model's own wrong answer — the
most probable wrong option (MCQA) or the most frequent wrong, non-refusing sample of the probe
(open QA). The gold answer is never used as a rejected answer: teaching a model to disprefer
the truth is not what refusal training wants. An IdK question with no recorded wrong answer
gets no pair, with a warning.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from rait.artifacts import write_jsonl, write_manifest
from rait.data.records import QARecord
from rait.errors import DataError, RaitError
from rait.prompts import enumerate_letters, prompt_library, subject_name, training_example
from rait.select.base import Selector, SelectionWarning
from rait.select.static_conflicts import crss, question_features


def records_by_id(records: Iterable[QARecord]) -> dict[str, QARecord]:
    out: dict[str, QARecord] = {}
    for record in records:
        if record.id in out:
            raise DataError("<records>", f"duplicate id {record.id!r}", field="id")
        out[record.id] = record
    return out


def _lookup(by_id: dict[str, QARecord], qid: str) -> QARecord:
    if qid not in by_id:
        raise DataError("<knowledge table>", f"question {qid!r} is not among the records (was the table probed on "
                        "another pool?)", field="id")
    return by_id[qid]


def selected(selector: Selector) -> list[tuple[str, str]]:
    """(id, kind) of every selected sample: vanilla first, then IdK."""
    return [(i, "vanilla") for i in selector.vanilla_ids_] + [(i, "idk") for i in selector.idk_ids_]


ANSWERS = ("gold", "sampled")


def build_dataset(selector: Selector, table: pd.DataFrame, records: Sequence[QARecord], prompt: str = "refuse",
                  system: str | None = None, answer: str = "gold") -> list[dict]:
    """Fit `selector` on `table` and return its training rows (module docstring) for the weighted SFT trainer.

    `answer="sampled"` trains open-QA vanilla samples on the model's own words: the most frequent
    of its correct probe samples instead of the dataset's answer (the gold answer where none was
    correct; MCQA keeps the letter). A small model may learn to keep answering from its own
    phrasing more easily than from a gold string it never says (docs/study.md, recipe search).
    """
    if answer not in ANSWERS:
        raise ValueError(f"answer must be one of {ANSWERS}, not {answer!r}")
    selector.fit(table)
    by_id = records_by_id(records)
    sampled = _own_correct_answers(table) if answer == "sampled" else {}
    rows = []
    for qid, kind in selected(selector):
        record = _lookup(by_id, qid)
        target = sampled.get(qid) if kind == "vanilla" and qid in sampled else selector.target(record, kind)
        row = training_example(record, prompt, target, system=system)
        rows.append({"id": qid, "method": selector.method, "kind": kind,
                     "weight": float(selector.weights_.get(qid, 1.0)), **row})
    return rows


def _own_correct_answers(table: pd.DataFrame) -> dict[str, str]:
    """Per open-QA question, the most frequent of its probe samples scored correct (first seen wins a tie)."""
    if "samples" not in table.columns or "sample_correct" not in table.columns:
        raise DataError("<knowledge table>", "answer='sampled' needs the open-QA probe's samples", field="samples")
    out = {}
    for qid, samples, correct in zip(table["id"], table["samples"], table["sample_correct"]):
        kept = [str(s).strip() for s, ok in zip(samples, correct) if ok and str(s).strip()]
        if kept:
            out[qid] = Counter(kept).most_common(1)[0][0]
    return out


def xtuner_rows(rows: Sequence[dict], records: Sequence[QARecord]) -> list[dict]:
    """The CRaFT release's training-file layout (`triviaqa_RAI.py`, `mmlu_RAI.py`), for its xtuner configs.

    Open QA: ``{"qid", "question", "answer"}``, answer = gold answer or "I don't know".
    MCQA: the MMLU CSV columns (id, lang, question, one column per option letter, target) plus
    what ``map_fn_mmlu`` reads: prompt_task_name, prompt_instruction (the REFUSE hint with a
    ``{task_name}`` placeholder), prompt_question, prompt_answer, and strategy ("learn" | "idk").
    """
    by_id = records_by_id(records)
    hint = prompt_library()["mcqa_hint_refuse"]["text"]
    out = []
    for row in rows:
        record = _lookup(by_id, row["id"])
        target = row["completion"][-1]["content"]
        if record.task == "oeqa":
            out.append({"qid": record.id, "question": record.question, "answer": target})
            continue
        out.append({
            "id": record.id, "lang": "en", "question": record.question,
            **dict(zip(record.letters, record.choices)),
            "target": target,
            "prompt_task_name": subject_name(record),
            "prompt_instruction": hint.format(subject="{task_name}", letters=enumerate_letters(record.letters, "refuse")),
            "prompt_question": "Question",
            "prompt_answer": "Answer",
            "strategy": "learn" if row["kind"] == "vanilla" else "idk",
        })
    return out


def model_wrong_answer(record: QARecord, row: pd.Series) -> str | None:
    """What the model itself would answer wrongly: most probable wrong option, or most frequent wrong sample."""
    if record.task == "mcqa":
        probs = row.get("option_probs")
        if probs is None or len(probs) != len(record.letters):
            return None
        wrong = [(p, letter) for p, letter in zip(probs, record.letters) if letter != record.gold]
        return max(wrong, key=lambda pair: pair[0])[1]
    samples, correct, refused = row.get("samples"), row.get("sample_correct"), row.get("sample_refused")
    if samples is None or correct is None or refused is None:
        return None
    wrong = [s.strip() for s, c, r in zip(samples, correct, refused) if not c and not r and s.strip()]
    return Counter(wrong).most_common(1)[0][0] if wrong else None


def preference_pairs(rows: Sequence[dict], selector: Selector, table: pd.DataFrame,
                     records: Sequence[QARecord]) -> list[dict]:
    """TRL conversational preference rows {"id", "method", "kind", "prompt", "chosen", "rejected"} (module docstring).

    `rows` and `selector` must come from the same `build_dataset` call.
    """
    if getattr(selector, "variant", None) == "unsure":
        raise RaitError("R-Tuning 'unsure' data has no answer-vs-refusal pair; build preference pairs from another method")
    by_id = records_by_id(records)
    table_rows = table.assign(id=table["id"].astype(str)).set_index("id")
    pairs, missing = [], []
    for row in rows:
        record = _lookup(by_id, row["id"])
        if row["kind"] == "vanilla":
            rejected = selector.refusal_for(record)
        else:
            rejected = model_wrong_answer(record, table_rows.loc[row["id"]])
            if rejected is None:
                missing.append(row["id"])
                continue
        pairs.append({"id": row["id"], "method": row["method"], "kind": row["kind"], "prompt": row["prompt"],
                      "chosen": row["completion"], "rejected": [{"role": "assistant", "content": rejected}]})
    if missing:
        warnings.warn(f"{selector.method}: {len(missing)} IdK question(s) have no recorded wrong answer and get no "
                      f"preference pair (e.g. {missing[0]!r})", SelectionWarning, stacklevel=2)
    return pairs


def write_dataset(path: str | Path, rows: Sequence[dict], selector: Selector, *, table_path: str | Path,
                  records_path: str | Path, prompt: str, kind: str = "sft") -> Path:
    """Write rows as JSONL (atomically) with a manifest: input hashes, selector parameters, seed, report."""
    path = Path(path)
    write_jsonl(path, rows)
    write_manifest(
        path, stage=f"build.{kind}",
        inputs={"knowledge_table": table_path, "records": records_path},
        settings={"method": selector.method, "params": jsonable(selector.get_params()), "prompt": prompt,
                  "rows": len(rows)},
        seed=getattr(selector, "seed", None),
        extra={"report": selector.report_},
    )
    return path


def jsonable(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters as JSON values: tuples become lists, objects (e.g. loaded gradient features) their repr."""
    plain = (str, int, float, bool, type(None), list, dict)
    return {k: list(v) if isinstance(v, tuple) else v if isinstance(v, plain) else repr(v) for k, v in params.items()}


def crss_of_builds(built: dict[str, Selector], records: Sequence[QARecord], model_spec: str, pooling: str,
                    thresholds: Sequence[float], prompt: str, system: str | None, batch_size: int) -> dict[str, Any]:
    """Features of every selected question, computed once, then CRSS per method."""
    from rait.models import load_model, model_fingerprint, resolve_model_path

    by_id = records_by_id(records)
    ids = sorted({qid for s in built.values() for qid, _ in selected(s)})
    model, tokenizer = load_model(model_spec)
    model.eval()
    features = question_features(model, tokenizer, [by_id[i] for i in ids], pooling=pooling, prompt=prompt,
                                 system=system, batch_size=batch_size)
    row_of = {qid: n for n, qid in enumerate(ids)}
    per_method = {}
    for name, s in built.items():
        rates = crss(features[[row_of[i] for i in s.vanilla_ids_]], features[[row_of[i] for i in s.idk_ids_]],
                     thresholds)
        per_method[name] = {str(t): None if np.isnan(r) else r for t, r in rates.items()}  # None: no IdK samples
    return {"model": model_fingerprint(resolve_model_path(model_spec)), "pooling": pooling, "prompt": prompt,
            "by_method": per_method}


def summary_markdown(summary: dict[str, Any]) -> str:
    """A short Markdown table of a build: pools, what was taken, warnings, CRSS."""
    crss_by = summary.get("crss", {}).get("by_method", {})
    thresholds = sorted({t for rates in crss_by.values() for t in rates}, key=float)
    head = ["method", "vanilla pool", "IdK pool", "dropped by flow", "vanilla taken", "IdK taken", "warnings",
            *[f"CRSS@{t}" for t in thresholds]]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, entry in summary["methods"].items():
        report = entry["report"]
        pool, taken = report.get("pool", {}), report["taken"]
        rates = crss_by.get(name, {})
        cells = [name, pool.get("vanilla", ""), pool.get("idk", ""), pool.get("dropped_by_flow", "–"),
                 taken["vanilla"], taken["idk"], len(report["warnings"]),
                 *[_fmt(rates.get(t)) for t in thresholds]]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    notes = [f"- {w}" for entry in summary["methods"].values() for w in entry["report"]["warnings"]]
    notes += [f"- skipped {m}: {why}" for m, why in summary.get("skipped", {}).items()]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
