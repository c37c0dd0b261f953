"""A far-out-of-domain validation set: 160 hand-written general-knowledge questions, for choosing recipes.

The facts pool (`rait.data.facts`) is templated from data tables: capitals, continents, currencies, cities,
chemical elements, arithmetic, translations. A recipe tuned on its `test_id` split is tuned on the very kind of
question it was trained on. This set is of another kind: questions written by hand in varied natural forms across
16 domains (literature, physics, biology, astronomy, history, sports, art, music, film, mathematics, everyday
knowledge, food, animals, language, technology, mythology), 10 questions each, with no question about a capital,
country, continent, currency, city or chemical element and no arithmetic. It measures whether refusal-aware
tuning transfers (refuses what the model does not know, still answers what it does) far from the training pool.

It is used only to *choose* recipes (method, thresholds, epochs, ...). The project's test sets (`facts:test_id`,
`facts:test_ood`, NQ, ...) and any held-out outside sets are never used for choosing: a set that picked the winner
no longer gives an unbiased estimate of it. Keeping the chooser apart from every set that is reported keeps those
numbers honest. Only the split `validation` exists; there is deliberately no test split here.

The questions ship inside the package as `general_validation.jsonl` (one `QARecord.to_dict()` per line). Each record
has an id `general/<domain>/<slug>`, `subject` = its domain, a short answer (1-4 words) with aliases (surname alone
for people, number words next to digits, other spellings), and metadata `domain`, `match_mode: "word"` (the facts
pool's word-boundary rule, docs/facts.md) and `difficulty` (`easy`, `medium`, `hard`, about a third each). The
difficulty is the author's guess of how likely a 135M-parameter chat model (SmolLM2-135M-Instruct) is to know the
answer, not a measurement. Answers never occur in their own question (an echo would score) and none is one or two
letters; numbers 1 and 2 ("one", "two") are avoided, as they would match ordinary sentences.
"""

from __future__ import annotations

from importlib.resources import as_file, files

from rait.data.jsonl import read_records
from rait.data.records import QARecord
from rait.errors import RaitError

SOURCE = "general"
GENERAL_SPLITS = ("validation",)
RESOURCE = "general_validation.jsonl"


def load_general(split: str) -> list[QARecord]:
    """The records of one split of the general-knowledge set (only `validation`), validated as any records file."""
    if split not in GENERAL_SPLITS:
        raise RaitError(f"unknown general split {split!r}; choose from {', '.join(GENERAL_SPLITS)} "
                        "(this set is for choosing recipes only, so it has no test split)")
    with as_file(files("rait.data").joinpath(RESOURCE)) as path:
        return read_records(path)
