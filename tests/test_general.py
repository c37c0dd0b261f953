"""The hand-written general-knowledge validation set (`rait.data.general`): schema, hygiene under word scoring, spread."""

from __future__ import annotations

import fnmatch
import json
import tomllib
from collections import Counter
from importlib.resources import files
from pathlib import Path

import pytest

from rait.data.facts import RELATIONS, _mentions, build_facts
from rait.data.general import GENERAL_SPLITS, RESOURCE, SOURCE, load_general
from rait.data.records import QARecord
from rait.data.scoring import Outcome, is_refusal, match_answer, normalize_answer, score_record
from rait.errors import RaitError

ROOT = Path(__file__).resolve().parents[1]
DOMAINS_AT_LEAST = 8
MAX_DOMAIN_SHARE = 0.20
# Words that an ordinary sentence of any answer would contain: as an alias they would score almost anything.
COMMON_WORDS = {"yes", "no", "one", "two", "the", "a", "an", "it", "is", "of", "and", "to", "in", "i", "not", "none"}
# The training pool's kinds of question; none of them may appear here.
POOL_KINDS = ("capital", "currency", "continent", "chemical", "atomic number", "periodic table", "calling code",
              "official language", "roman numeral", "emoji")


@pytest.fixture(scope="module")
def records() -> list[QARecord]:
    return load_general("validation")


def _raw_lines() -> list[str]:
    return [line for line in files("rait.data").joinpath(RESOURCE).read_text(encoding="utf-8").splitlines() if line.strip()]


def test_every_line_parses_into_a_valid_open_record(records):
    lines = _raw_lines()
    assert len(lines) == len(records)
    for line in lines:
        row = json.loads(line)
        record = QARecord.from_dict(row)
        assert record.to_dict() == row, "a line must be exactly a QARecord.to_dict()"
        assert record.problems() == []
        assert record.task == "oeqa"


def test_ids_fields_and_metadata(records):
    assert len({r.id for r in records}) == len(records)
    for r in records:
        domain = r.metadata["domain"]
        assert r.id.startswith(f"general/{domain}/") and r.id.count("/") == 2
        assert r.source == SOURCE and r.split == "validation" and r.subject == domain
        assert r.answer and r.answer.strip() == r.answer
        assert r.metadata["match_mode"] == "word"
        assert r.metadata["difficulty"] in ("easy", "medium", "hard")
        assert set(r.metadata) == {"domain", "match_mode", "difficulty"}


def test_no_answer_is_echoed_by_its_own_question(records):
    for r in records:
        for alias in r.all_answers:
            assert not _mentions(r.question, alias), f"{r.id}: {alias!r} is in the question"
            assert not match_answer(r.question, [alias], mode="word"), f"{r.id}: the question scores {alias!r}"


def test_aliases_are_neither_letters_nor_common_words(records):
    """Short numbers ("8", "24") are fine: word matching keeps "8" from matching "18"; letters are not."""
    for r in records:
        for alias in r.all_answers:
            assert alias.isdigit() or len(alias.strip()) > 2, f"{r.id}: alias {alias!r} is too short"
            assert normalize_answer(alias) not in COMMON_WORDS, f"{r.id}: alias {alias!r} is a common word"
            assert normalize_answer(alias), f"{r.id}: alias {alias!r} normalises to nothing"
            assert not is_refusal(alias, "keywords")


def test_aliases_do_not_repeat_after_normalisation(records):
    for r in records:
        normalised = [normalize_answer(a) for a in r.all_answers]
        assert len(set(normalised)) == len(normalised), f"{r.id}: {r.all_answers}"


def test_size_and_spread(records):
    assert len(records) >= 150
    domains = Counter(r.metadata["domain"] for r in records)
    assert len(domains) >= DOMAINS_AT_LEAST
    assert max(domains.values()) <= MAX_DOMAIN_SHARE * len(records), domains
    difficulty = Counter(r.metadata["difficulty"] for r in records)
    for level in ("easy", "medium", "hard"):
        assert difficulty[level] >= len(records) / 4, difficulty


def test_questions_are_unique_and_not_of_the_training_pool(records):
    def norm(q: str) -> str:
        return normalize_answer(q)

    ours = [norm(r.question) for r in records]
    assert len(set(ours)) == len(ours)
    pool = {norm(r.question) for r in build_facts(list(RELATIONS))}
    assert not set(ours) & pool
    for r in records:
        for kind in POOL_KINDS:
            assert not _mentions(r.question, kind), f"{r.id}: a {kind!r} question is of the training pool's kind"


def test_every_record_scores_its_own_answer_and_not_a_refusal(records):
    for r in records:
        assert match_answer(r.answer, r.all_answers, mode="word")
        assert score_record(r, f"The answer is {r.answer}.") is Outcome.CORRECT
        assert score_record(r, "I don't know.") is Outcome.REFUSED
        assert score_record(r, "I am not able to tell.") is Outcome.WRONG


def test_unknown_split_is_refused():
    assert GENERAL_SPLITS == ("validation",)
    for split in ("test", "train", ""):
        with pytest.raises(RaitError, match="unknown general split"):
            load_general(split)


def test_the_jsonl_ships_with_the_package():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["rait"]
    assert any(fnmatch.fnmatch(f"data/{RESOURCE}", p) for p in patterns), patterns
