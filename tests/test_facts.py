from __future__ import annotations

import json
import re
from collections import Counter, defaultdict

import pytest

from rait.artifacts import read_manifest
from rait.data.facts import (
    DEFAULT_OOD_RELATIONS, PACKAGES, RELATIONS, SPLITS, STUDY_RELATIONS, VALIDATION_OOD_RELATIONS, WIDE_PER_RELATION,
    WIDE_RELATIONS, build_facts, facts_splits, split_facts, write_facts,
)
from rait.data.loaders import load_source
from rait.data.records import QARecord
from rait.errors import RaitError


@pytest.fixture(scope="module")
def records() -> list[QARecord]:
    return build_facts(RELATIONS)


@pytest.fixture(scope="module")
def by_key(records) -> dict[tuple[str, str], QARecord]:
    return {(r.subject, r.metadata["entity"]): r for r in records}


def word_in(text: str, phrase: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(phrase.lower())}(?!\w)", text.lower()) is not None


def test_every_relation_builds_valid_records(records):
    assert set(Counter(r.subject for r in records)) == set(RELATIONS)
    assert all(r.problems() == [] for r in records)
    assert len({r.id for r in records}) == len(records)
    for r in records:
        assert r.source == "facts" and r.task == "oeqa"
        assert r.metadata["relation"] == r.subject
        assert r.metadata["match_mode"] == "word"
        assert re.fullmatch(rf"facts/{r.subject}/[a-z0-9]+(-[a-z0-9]+)*", r.id)
        assert r.metadata["entity"].lower() in r.question.lower()


@pytest.mark.parametrize(
    "relation, entity, answer",
    [
        ("country_capital", "France", "Paris"),
        ("country_continent", "Japan", "Asia"),
        ("country_continent", "Brazil", "South America"),
        ("country_currency", "Japan", "Yen"),
        ("city_country", "Tokyo", "Japan"),
        ("element_symbol", "gold", "Au"),
        ("element_number", "iron", "26"),
        ("symbol_element", "Fe", "iron"),
        ("state_capital", "Texas", "Austin"),
        ("country_neighbour", "France", "Germany"),
        ("country_language", "Brazil", "Portuguese"),
        ("country_name_translation", "Germany in French", "Allemagne"),
        ("month_translation", "January in Spanish", "enero"),
        ("month_translation", "January in Polish", "styczeń"),  # the nominative, not "stycznia"
        ("weekday_translation", "Monday in German", "Montag"),
        ("number_translation", "9 in French", "neuf"),  # "sept" is left out: common in English ("Sept.")
        ("multiplication", "7 times 8", "56"),
        ("addition", "5 plus 17", "22"),
        ("square", "12", "144"),
        ("roman_numeral", "14", "XIV"),
        ("emoji_name", "🐘", "elephant"),
        ("country_calling_code", "France", "33"),
    ],
)
def test_known_facts(by_key, relation, entity, answer):
    assert by_key[(relation, entity)].answer == answer


def test_questions_name_countries_as_a_sentence_would(by_key):
    assert by_key[("country_capital", "United States")].question == "What is the capital of the United States?"
    assert by_key[("country_continent", "The Netherlands")].question == "On which continent is the Netherlands?"
    assert by_key[("country_capital", "France")].question == "What is the capital of France?"


def test_aliases_hold_other_names_and_spellings(by_key):
    assert "aluminium" in by_key[("symbol_element", "Al")].aliases
    assert "sulphur" in by_key[("symbol_element", "S")].aliases
    assert {"USD", "Dollars"} <= set(by_key[("country_currency", "United States")].aliases)
    assert {"US", "USA"} <= set(by_key[("city_country", "Chicago")].aliases)
    assert "UK" in by_key[("city_country", "London")].aliases
    assert "twenty-six" in by_key[("element_number", "iron")].aliases
    assert by_key[("element_number", "hydrogen")].aliases == []  # "one" would match ordinary text
    assert "St. Paul" in by_key[("state_capital", "Minnesota")].aliases
    kazakhstan = by_key[("country_capital", "Kazakhstan")]
    assert "Astana" in kazakhstan.all_answers and "Nur-Sultan" in kazakhstan.all_answers
    assert "Naypyitaw" in by_key[("country_capital", "Myanmar")].all_answers


def test_no_answer_can_be_scored_by_echoing_the_question(records):
    for r in records:
        for answer in r.all_answers:
            assert not word_in(r.question, answer), (r.id, answer)
            assert not word_in(answer, r.metadata["entity"]), (r.id, answer)
        assert len({a.casefold() for a in r.all_answers}) == len(r.all_answers)


def test_degenerate_and_ambiguous_entities_are_dropped(by_key):
    for country in ("Singapore", "Kuwait", "Mexico", "Monaco", "Guinea-Bissau"):
        assert ("country_capital", country) not in by_key  # the answer is in the question
    assert ("country_continent", "South Africa") not in by_key and ("country_capital", "South Africa") not in by_key
    assert ("state_capital", "Oklahoma") not in by_key
    assert ("city_country", "Mexico City") not in by_key
    for country in ("Bolivia", "The Netherlands", "Israel"):
        assert ("country_capital", country) not in by_key  # split or disputed capitals
        assert ("country_continent", country) in by_key
    for city in ("Hyderabad", "Valencia", "Córdoba"):
        assert ("city_country", city) not in by_key  # a large namesake in another country
    assert ("city_country", "Paris") in by_key  # Paris, Texas is far smaller
    assert ("element_symbol", "iodine") not in by_key and ("element_symbol", "indium") not in by_key
    assert ("element_number", "iodine") in by_key
    assert ("country_continent", "Serbia and Montenegro") not in by_key
    assert ("country_continent", "Bouvet Island") not in by_key


def test_fame_rank_orders_each_relation(records):
    by_relation = defaultdict(list)
    for r in records:
        by_relation[r.subject].append(r)
    for group in by_relation.values():
        assert [r.metadata["fame_rank"] for r in group] == list(range(1, len(group) + 1))
        fames = [r.metadata["fame"] for r in group]
        assert fames == sorted(fames, reverse=True)


def test_per_relation_spreads_over_fame_and_min_fame_filters(records):
    full = Counter(r.subject for r in records)
    sample = build_facts(["country_capital", "element_symbol"], per_relation=10, seed=3)
    for relation in ("country_capital", "element_symbol"):
        ranks = [r.metadata["fame_rank"] for r in sample if r.subject == relation]
        assert len(ranks) == 10
        assert min(ranks) <= full[relation] // 10 and max(ranks) > full[relation] * 9 // 10
    big = build_facts(["country_capital"], min_fame={"country_capital": 100_000_000})
    assert {r.metadata["entity"] for r in big} >= {"China", "India", "United States", "Japan"}
    assert all(r.metadata["fame"] >= 100_000_000 for r in big)


def test_unknown_relations_are_refused():
    with pytest.raises(RaitError, match="country_flag"):
        build_facts(["country_flag"])
    with pytest.raises(RaitError, match="country_flag"):
        split_facts([], seed=0, ood_relations=["country_flag"])


def test_split_is_disjoint_and_holds_out_ood_relations():
    records = build_facts()  # the study's relations
    assert {r.subject for r in records} == set(STUDY_RELATIONS)
    splits = split_facts(records, seed=0)
    ids = {name: [r.id for r in rows] for name, rows in splits.items()}
    assert sum(len(v) for v in ids.values()) == len(records)
    assert set().union(*ids.values()) == {r.id for r in records}
    for name, rows in splits.items():
        assert all(r.split == name for r in rows)
    assert {r.subject for r in splits["test_ood"]} == set(DEFAULT_OOD_RELATIONS)
    assert not {r.subject for r in splits["train"]} & set(DEFAULT_OOD_RELATIONS)
    assert {r.subject for r in splits["test_id"]} == {r.subject for r in splits["train"]}
    for relation in {r.subject for r in splits["train"]}:
        train = [r for r in splits["train"] if r.subject == relation]
        test = [r for r in splits["test_id"] if r.subject == relation]
        assert not {r.metadata["entity"] for r in train} & {r.metadata["entity"] for r in test}
        assert len(test) == round(0.2 * (len(train) + len(test)))
        ranks = [r.metadata["fame_rank"] for r in test]  # test_id covers the famous and the obscure
        n = len(train) + len(test)
        assert min(ranks) <= n // 10 and max(ranks) > n * 9 // 10


def test_split_depends_only_on_the_seed(records):
    def test_ids(seed):
        return [r.id for r in split_facts(records, seed=seed)["test_id"]]

    assert test_ids(5) == test_ids(5)
    assert test_ids(5) != test_ids(6)
    assert split_facts(records, seed=5)["test_ood"] == split_facts(records, seed=6)["test_ood"]


def test_write_facts_is_byte_identical_per_seed(tmp_path):
    first = write_facts(tmp_path / "a", seed=1, per_relation=40)
    second = write_facts(tmp_path / "b", seed=1, per_relation=40)
    other = write_facts(tmp_path / "c", seed=2, per_relation=40)
    assert set(first) == set(SPLITS)
    for split, path in first.items():
        assert path.read_bytes() == second[split].read_bytes()
    assert first["train"].read_bytes() != other["train"].read_bytes()

    rows = [json.loads(line) for line in first["train"].read_text(encoding="utf-8").splitlines()]
    assert all(QARecord.from_dict(row).problems() == [] for row in rows)
    manifest = read_manifest(first["train"])
    assert manifest["stage"] == "data.facts" and manifest["seed"] == 1
    assert set(manifest["settings"]["packages"]) == set(PACKAGES)
    assert sum(manifest["counts"].values()) == len(rows)
    assert manifest["settings"]["ood_relations"] == list(DEFAULT_OOD_RELATIONS)


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(RaitError, match="per_relation"):
        build_facts(per_relation=0)
    with pytest.raises(RaitError, match="empty"):
        write_facts(tmp_path, relations=["state_capital"], ood_relations=["state_capital"])
    assert not list(tmp_path.iterdir())


# sha256 of the JSON list of each split's records at seed 0 when the study ran (docs/study.md): the wide pool
# must leave the study's pool and test sets exactly as they were, so its numbers stay comparable.
STUDY_SPLIT_DIGESTS = {
    "train": "638445d00b7f102b",
    "test_id": "ad20c67c64b29992",
    "test_ood": "35a0ea7abff398b2",
}


def _digest(records) -> str:
    import hashlib

    return hashlib.sha256(json.dumps([r.to_dict() for r in records]).encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def splits() -> dict[str, list[QARecord]]:
    return facts_splits(0)


@pytest.mark.parametrize("name", sorted(STUDY_SPLIT_DIGESTS))
def test_the_studys_splits_are_unchanged_byte_for_byte(splits, name):
    assert _digest(splits[name]) == STUDY_SPLIT_DIGESTS[name]
    assert _digest(load_source(f"facts:{name}")) == STUDY_SPLIT_DIGESTS[name]


def test_the_wide_pool_holds_sixteen_training_relations_and_keeps_validation_ood_apart(splits):
    relations = {name: {r.subject for r in rows} for name, rows in splits.items()}
    assert set(splits) == set(SPLITS)
    assert len(relations["train_wide"]) >= 16
    assert relations["train_wide"] == relations["train"] | set(WIDE_RELATIONS)
    assert relations["test_id_wide"] == set(WIDE_RELATIONS)
    assert relations["validation_ood"] == set(VALIDATION_OOD_RELATIONS)
    for name in ("train_wide", "train", "test_id", "test_ood", "test_id_wide"):
        assert not relations["validation_ood"] & relations[name], name
    assert not relations["test_ood"] & relations["train_wide"]
    ids = {name: {r.id for r in rows} for name, rows in splits.items()}
    assert ids["train"] <= ids["train_wide"]
    for name in ("test_id", "test_ood", "test_id_wide", "validation_ood"):
        assert not ids[name] & ids["train_wide"], name
    for name, rows in splits.items():
        assert all(r.split == name for r in rows)
    new = Counter(r.subject for r in splits["train_wide"] + splits["test_id_wide"] if r.subject in WIDE_RELATIONS)
    assert max(new.values()) <= WIDE_PER_RELATION
    outside = {"month_translation", "weekday_translation", "number_translation", "country_name_translation",
               "multiplication", "addition", "square", "roman_numeral", "emoji_name"}
    assert len(outside & relations["train_wide"]) >= 7  # several kinds beyond geography and chemistry


def test_wide_splits_are_reproducible_by_seed(splits):
    again, other = facts_splits(0), facts_splits(1)
    for name in SPLITS:
        assert _digest(again[name]) == _digest(splits[name])
    assert [r.id for r in other["test_id_wide"]] != [r.id for r in splits["test_id_wide"]]
    assert other["test_ood"] == splits["test_ood"]


def test_new_relations_keep_the_word_rule_honest(records):
    """The hygiene of docs/facts.md holds for the new relations: no answer inside its question, no answer that
    is the English word itself ("six" in French), no common English word as an answer, no one-letter numeral."""
    from wordfreq import zipf_frequency

    new = [r for r in records if r.subject in (*WIDE_RELATIONS, *VALIDATION_OOD_RELATIONS)]
    assert {r.subject for r in new} == {*WIDE_RELATIONS, *VALIDATION_OOD_RELATIONS}
    for r in new:
        assert not word_in(r.question, r.answer), r.id
        if r.subject.endswith("_translation"):
            assert zipf_frequency(r.answer, "en") < 4.0, r.id
            assert r.answer.lower() != r.metadata["entity"].split(" in ")[0].lower(), r.id
    numerals = {r.answer for r in new if r.subject == "roman_numeral"}
    assert "XIV" in numerals and "I" not in numerals
    assert all(len(r.answer) >= 2 for r in new if r.subject == "country_calling_code")
    lunedi = next(r for r in new if r.id == "facts/weekday_translation/monday-in-italian")
    assert lunedi.answer == "lunedì" and lunedi.aliases == ["lunedi"]  # the plain spelling a model may write
    france = next(r for r in new if r.id == "facts/country_neighbour/france")
    assert {"Spain", "Belgium", "Switzerland"} <= set(france.aliases)  # any neighbour is right
