"""The open-QA knowledge probe: k sampled answers per question, scored and compared.

Per question (CRaFT's `triviaqa_train_3shot_OE_kq`; docs/probe.md): k samples at
temperature T under the knowledge-query prompt (3-shot by default, as in the papers), each
cut where the model starts inventing the next exemplar and stripped; each scored against
the gold answer and its aliases (refusal first). μ = share correct; σ = mean pairwise
cosine of the samples' all-MiniLM-L6-v2 embeddings. All k answers and their flags are kept
in the table.

Sampling defaults, and why: T = 1.0, top_k = 50, top_p = 0.9. The papers set only
T = 1.0, and their runs inherited the rest: transformers applies top_k = 50 whenever it
samples, and both Llama chat models ship top_p = 0.9 in their generation_config.json.
These defaults reproduce what the papers' probes did, not what their text says; pass
top_k = 0 and top_p = 1.0 for pure temperature sampling. max_new_tokens = 50 as released.

Matching: `match_mode=None` honours each record's metadata["match_mode"] (the facts
pool asks for "word") and falls back to the papers' alias containment ("contains").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, get_args

import numpy as np
import pandas as pd

from rait.data.records import QARecord
from rait.errors import MAX_SEED, RaitError, SettingsError, check_choice, check_count, check_number
from rait.data.scoring import MatchMode, Outcome, RefusalMode, score_open
from rait.generate import SamplingSettings
from rait.probe.backends import Backend
from rait.probe.measures import mean_pairwise_cosine
from rait.probe.shards import probe_pool
from rait.prompts import cut_at_splitter, render

Embedder = Callable[[Sequence[str]], np.ndarray]
OPEN_PROMPTS = ("query_3shot", "query_0shot", "basic", "refuse")
# Bounds past which a setting only exhausts memory or time: every question expands to k sequences of up to
# max_new_tokens each (the papers: k 10, 50 tokens; an answer is a short phrase); below T = 0.01 sampling is greedy
# in effect and half-precision logits overflow, above T = 100 it is uniform noise.
MAX_K = 1000
MAX_NEW_TOKENS = 4096
TEMPERATURES = (0.01, 100)


@dataclass(frozen=True)
class OpenSettings:
    """How open-QA questions are sampled and scored. Defaults: the papers' probe (see the module doc).

    `batch_size` counts questions per generate call (each expands to k sequences; 16 was
    the fastest of 4/16/32 on CPU, docs/probe.md);
    `shard_size` counts questions per resumable shard; `chat=True` renders through the
    tokenizer's chat template, as the release does for this query.
    """

    prompt: str = "query_3shot"
    k: int = 10
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 0.9
    max_new_tokens: int = 50
    chat: bool = True
    system: str | None = None
    match_mode: MatchMode | None = None
    refusal_mode: RefusalMode = "paper"
    seed: int = 0
    batch_size: int = 16
    shard_size: int = 32

    def __post_init__(self):
        check_choice("prompt", self.prompt, OPEN_PROMPTS)
        check_choice("match_mode", self.match_mode, get_args(MatchMode))
        check_choice("refusal_mode", self.refusal_mode, get_args(RefusalMode))
        check_count("k", self.k, 1, MAX_K)
        if self.k < 2:
            raise SettingsError("k", "certainty compares samples with each other: k must be at least 2")
        check_number("temperature", self.temperature, *TEMPERATURES)
        check_number("top_p", self.top_p, 0, 1, low_open=True)  # top_p 0 keeps no token to sample
        check_count("top_k", self.top_k, 0)
        check_count("seed", self.seed, 0, MAX_SEED)
        check_count("max_new_tokens", self.max_new_tokens, 1, MAX_NEW_TOKENS)
        for name in ("batch_size", "shard_size"):
            check_count(name, getattr(self, name), 1)

    @property
    def sampling(self) -> SamplingSettings:
        return SamplingSettings(max_new_tokens=self.max_new_tokens, do_sample=True, temperature=self.temperature,
                                top_k=self.top_k, top_p=self.top_p, num_return_sequences=self.k)

    def as_dict(self) -> dict:
        return {**asdict(self), "add_special_tokens": not self.chat}


def score_samples(record: QARecord, answers: Sequence[str], vectors: np.ndarray, settings: OpenSettings) -> dict:
    """The table row of one question from its k answers (already cut) and their embeddings."""
    mode = settings.match_mode or record.metadata.get("match_mode", "contains")
    outcomes = [score_open(a, record.all_answers, settings.refusal_mode, mode) for a in answers]
    correct = [o is Outcome.CORRECT for o in outcomes]
    return {"id": record.id, "task": "oeqa", "mu": sum(correct) / len(correct), "sigma": mean_pairwise_cosine(vectors),
            "samples": list(answers), "sample_correct": correct, "sample_refused": [o is Outcome.REFUSED for o in outcomes]}


def embed_unique(embedder: Embedder, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """Embed each distinct text once: repeated answers are common, and identical answers get identical vectors."""
    unique = list(dict.fromkeys(texts))
    return dict(zip(unique, embedder(unique)))


class OpenProbe:
    """Samples, scores and embeds shards of open-QA questions with one backend and one set of settings."""

    def __init__(self, backend: Backend, embedder: Embedder, settings: OpenSettings):
        self.backend, self.embedder, self.settings = backend, embedder, settings

    def prompt(self, record: QARecord) -> str:
        s = self.settings
        return render(record, s.prompt, self.backend.tokenizer, system=s.system, chat=s.chat)

    def __call__(self, records: list[QARecord], seed: int, advance) -> list[dict]:
        for record in records:
            if record.task != "oeqa":
                raise RaitError(f"question {record.id!r} is multiple choice; the open-QA probe needs answers and aliases")
        s = self.settings
        outputs = self.backend.sample([self.prompt(r) for r in records], s.sampling, batch_size=s.batch_size,
                                      seed=seed, add_special_tokens=not s.chat, on_batch=advance)
        answers = [[cut_at_splitter(text).strip() for text in texts] for texts in outputs]
        vectors = embed_unique(self.embedder, [a for texts in answers for a in texts])
        return [score_samples(r, texts, np.stack([vectors[a] for a in texts]), s) for r, texts in zip(records, answers)]


def probe_open(
    backend: Backend,
    records: Sequence[QARecord],
    out: str | Path,
    *,
    embedder: Embedder | None = None,
    settings: OpenSettings = OpenSettings(),
    model_info: dict | None = None,
    **run_options: Any,
) -> pd.DataFrame:
    """Probe open-QA `records` and write the knowledge table `out` (.parquet or .jsonl) with its manifest.

    `embedder` maps texts to vectors (default: `SentenceEmbedder()`, all-MiniLM-L6-v2 on
    the backend's device). `run_options` are `rait.probe.shards.probe_pool`'s, as for `probe_mcqa`.
    """
    if embedder is None:
        from rait.probe.measures import SentenceEmbedder

        embedder = SentenceEmbedder(device=backend.info.get("device"))
    probe = OpenProbe(backend, embedder, settings)
    model_info = model_info if model_info is not None else backend.model_info
    embedder_info = getattr(embedder, "info", {"name": repr(embedder)})
    return probe_pool(
        records, out, probe,
        task="oeqa", settings=settings.as_dict(), seed=settings.seed, shard_size=settings.shard_size,
        backend=backend, model_info=model_info,
        identity_extra={"embedder_sha256": embedder_info.get("sha256")},
        manifest_extra={"prompt": {"name": settings.prompt, "example": probe.prompt(records[0]) if records else ""},
                        "embedder": embedder_info},
        description=f"open QA, k={settings.k}", **run_options,
    )
