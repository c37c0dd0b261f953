"""The MCQA knowledge probe: how likely the model finds each option, per question.

Letter scoring (the papers', `mmlu_test_5shot_MC_kq`; docs/probe.md): the k-shot query
ends with "Answer:" and the probability of each option letter is read from the next-token
distribution of one forward pass (the release scores four copies of the prompt, one per
letter; the numbers are the same). A letter can be written as several tokens ("A" after a
chat template's assistant header, " A" after "Answer:"); their probabilities are summed.
σ = -entropy of the raw letter probabilities, as the release computes it; μ = p_gold / Σ p, the
correct gold share. The release's `mmlu_RAI.py` means this μ but normalises the letter columns one
at a time in place, so its μ differs for every gold letter but A whenever the letter probabilities do
not sum to 1; the table keeps the correct μ, and only the `as_released` builds reproduce the
release's (`rait.select.released`).

Cloze scoring, for models that sit at chance on letters (SmolLM2-135M does): each
option's text is scored as the continuation of "Question: …\\nAnswer:" by its mean
per-token log-probability s_i. The table's raw `option_probs` are exp(s_i), the
geometric-mean token probability; μ is the gold share of the softmax over the s_i, and σ
is minus the entropy of that softmax (exp(s_i) do not form a distribution, so the
entropy is taken after normalising). The cloze prompt is ours ([rait], after the OLMES
"cloze formulation"): no options listed, shots answered with the gold option's text.

Rendering is raw by default, as the release runs this query through OpenCompass's
base-model wrapper even for chat models (the tokenizer adds its BOS, if it has one);
`chat=True` renders the same text as one user turn of the chat template.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd

from rait.data.records import QARecord
from rait.errors import ModelError, RaitError, check_choice, check_count
from rait.probe.backends import Backend
from rait.probe.measures import option_stats
from rait.probe.shards import probe_pool, records_sha256
from rait.prompts import letter_continuations, render, render_messages, subject_name

CLOZE_HEADER = "The following are questions (with answers) about {subject}.\n\n"
CLOZE_SHOT = "Question: {question}\nAnswer: {answer}\n\n"
CLOZE_TARGET = "Question: {question}\nAnswer:"
KSHOT_PROMPT = "query_kshot_mcqa"


@dataclass(frozen=True)
class MCQASettings:
    """How MCQA questions are scored. Defaults follow the release (5-shot, letters, raw rendering).

    `shots` exemplars come from the question's subject (the first `shots` given for it);
    `batch_size` counts forward-pass rows (questions for letters, question-option pairs
    for cloze); `shard_size` counts questions per resumable shard.
    """

    scoring: Literal["letter", "cloze"] = "letter"
    shots: int = 5
    chat: bool = False
    system: str | None = None
    batch_size: int = 8
    shard_size: int = 32

    def __post_init__(self):
        check_choice("scoring", self.scoring, ("letter", "cloze"))
        check_count("shots", self.shots, 0)
        for name in ("batch_size", "shard_size"):
            check_count(name, getattr(self, name), 1)
        if self.system is not None and not self.chat:
            raise RaitError("a system prompt needs chat rendering (chat=True)")

    @property
    def add_special_tokens(self) -> bool:
        """Raw prompts get the tokenizer's BOS (as OpenCompass's base wrapper); chat prompts already have theirs."""
        return not self.chat

    def as_dict(self) -> dict:
        return {**asdict(self), "add_special_tokens": self.add_special_tokens}


def letter_token_ids(tokenizer, letters: str) -> dict[str, list[int]]:
    """The single-token spellings of each option letter ("A", " A", ...), found through the tokenizer."""
    ids: dict[str, list[int]] = {}
    for letter, spaced in zip(letters, letter_continuations(letters)):
        found = []
        for variant in dict.fromkeys([letter, spaced]):
            encoded = tokenizer(variant, add_special_tokens=False)["input_ids"]
            if len(encoded) == 1 and encoded[0] not in found:
                found.append(encoded[0])
        if not found:
            raise ModelError(f"the tokenizer has no single token for option letter {letter!r}; use cloze scoring")
        ids[letter] = found
    taken = [i for found in ids.values() for i in found]
    if len(taken) != len(set(taken)):
        raise ModelError(f"option letters {letters} share a token; use cloze scoring")
    return ids


def group_shots(exemplars: Sequence[QARecord]) -> dict[str, list[QARecord]]:
    """Exemplars by subject, in the order given (MMLU val rows 0-4 come first, as the release uses)."""
    by_subject: dict[str, list[QARecord]] = defaultdict(list)
    for record in exemplars:
        by_subject[record.subject].append(record)
    return dict(by_subject)


def cloze_text(record: QARecord, shots: Sequence[QARecord]) -> str:
    """The cloze query: header, shots answered with their gold text, then the question and "Answer:"."""
    text = CLOZE_HEADER.format(subject=subject_name(record))
    text += "".join(CLOZE_SHOT.format(question=s.question, answer=s.gold_text) for s in shots)
    return text + CLOZE_TARGET.format(question=record.question)


class MCQAProbe:
    """Scores shards of MCQA questions with one backend and one set of settings."""

    def __init__(self, backend: Backend, settings: MCQASettings, exemplars: Sequence[QARecord] = ()):
        self.backend, self.settings = backend, settings
        self.shots_by_subject = group_shots(exemplars)

    def shots_for(self, record: QARecord) -> list[QARecord]:
        k = self.settings.shots
        shots = self.shots_by_subject.get(record.subject, [])[:k]
        if len(shots) < k:
            raise RaitError(f"{k}-shot MCQA query: only {len(shots)} exemplar(s) for subject {record.subject!r} "
                            f"(question {record.id!r}); pass more exemplars or fewer shots")
        if any(s.id == record.id for s in shots):
            raise RaitError(f"question {record.id!r} is one of its own exemplars; keep exemplars out of the pool")
        return shots

    def prompt(self, record: QARecord) -> str:
        """The rendered query for `record` (letters: the papers' k-shot prompt; cloze: ours)."""
        s, tokenizer = self.settings, self.backend.tokenizer
        if s.scoring == "letter":
            return render(record, KSHOT_PROMPT, tokenizer, system=s.system, shots=self.shots_for(record), n_shots=s.shots,
                          chat=s.chat)
        messages = [] if s.system is None else [{"role": "system", "content": s.system}]
        messages.append({"role": "user", "content": cloze_text(record, self.shots_for(record))})
        return render_messages(messages, tokenizer, chat=s.chat)

    def __call__(self, records: list[QARecord], seed: int, advance) -> list[dict]:
        """One table row per record. Deterministic: `seed` is unused (no sampling)."""
        for record in records:
            if record.task != "mcqa" or record.unscorable:
                raise RaitError(f"question {record.id!r} cannot be probed as multiple choice "
                                f"({'unscorable gold key' if record.task == 'mcqa' else 'open QA'})")
        prompts = [self.prompt(r) for r in records]
        if self.settings.scoring == "letter":
            option_probs = self._letter_probs(records, prompts, advance)
        else:
            option_probs = self._cloze_probs(records, prompts, advance)
        rows = []
        for record, probs in zip(records, option_probs):
            gold = record.letters.index(record.gold)
            mu, sigma = option_stats(probs, gold, normalized_entropy=self.settings.scoring == "cloze")
            rows.append({"id": record.id, "task": "mcqa", "mu": mu, "sigma": sigma,
                         "option_probs": [float(p) for p in probs], "gold_prob": float(probs[gold])})
        return rows

    def _letter_probs(self, records, prompts, advance) -> list[np.ndarray]:
        letters = max((r.letters for r in records), key=len)
        ids = letter_token_ids(self.backend.tokenizer, letters)
        flat = [i for letter in letters for i in ids[letter]]
        columns = np.cumsum([0] + [len(ids[letter]) for letter in letters])
        probs = self.backend.next_token_probs(prompts, flat, batch_size=self.settings.batch_size,
                                              add_special_tokens=self.settings.add_special_tokens, on_batch=advance)
        return [np.array([row[columns[j]:columns[j + 1]].sum() for j in range(len(r.letters))])
                for r, row in zip(records, probs)]

    def _cloze_probs(self, records, prompts, advance) -> list[np.ndarray]:
        space = "" if self.settings.chat else " "  # raw: " Paris" follows "Answer:"; chat: the reply starts fresh
        pairs = [(prompts[i], space + choice) for i, r in enumerate(records) for choice in r.choices]
        per_row = len(records) / len(pairs)  # the bar counts questions, batches count (question, option) rows
        logprobs = self.backend.continuation_logprobs(
            [context for context, _ in pairs], [continuation for _, continuation in pairs],
            batch_size=self.settings.batch_size, add_special_tokens=self.settings.add_special_tokens,
            on_batch=lambda n: advance(n * per_row))
        scores = iter([float(lp.mean()) for lp in logprobs])
        return [np.exp([next(scores) for _ in r.choices]) for r in records]


def probe_mcqa(
    backend: Backend,
    records: Sequence[QARecord],
    out: str | Path,
    *,
    exemplars: Sequence[QARecord] = (),
    settings: MCQASettings = MCQASettings(),
    model_info: dict | None = None,
    **run_options: Any,
) -> pd.DataFrame:
    """Probe MCQA `records` and write the knowledge table `out` (.parquet or .jsonl) with its manifest.

    `exemplars`: shot questions, grouped by subject (for MMLU: `load_source("mmlu:val")`).
    `run_options` are `rait.probe.shards.probe_pool`'s (`work_dir`, default `<out>.work/`, which makes
    the run resumable; `keep_work`, `progress`, `inputs`). Returns the table.
    """
    probe = MCQAProbe(backend, settings, exemplars)
    model_info = model_info if model_info is not None else backend.model_info
    shots_used = sorted({s.id for r in records for s in probe.shots_for(r)})
    used = set(shots_used)
    example = probe.prompt(records[0]) if records else ""
    return probe_pool(
        records, out, probe,
        task="mcqa", settings=settings.as_dict(), seed=0, shard_size=settings.shard_size,
        backend=backend, model_info=model_info,
        identity_extra={"exemplar_ids": shots_used},
        manifest_extra={"prompt": {"name": KSHOT_PROMPT if settings.scoring == "letter" else "cloze",
                                   "example": example},
                        "exemplars": {"count": len(shots_used),
                                      "sha256": records_sha256([r for r in exemplars if r.id in used])}},
        description=f"MCQA {settings.scoring}", **run_options,
    )
