import csv
import json
import random
from pathlib import Path

import pytest

from rait.data import (
    QARecord,
    exclude_ids,
    load_arc,
    load_generic,
    load_mmlu,
    load_nq,
    load_source,
    load_triviaqa,
    read_records,
    shared_data_dir,
    split_records,
    write_records,
)
from rait.errors import DataError, RaitError

FIXTURES = Path(__file__).parent / "fixtures" / "data"


@pytest.fixture(scope="module")
def data_dir() -> Path:
    try:
        return shared_data_dir()
    except RaitError as err:
        pytest.skip(f"shipped data not available: {err}")


@pytest.fixture(scope="module")
def mmlu_test(data_dir):
    return load_mmlu(data_dir / "mmlu", "test")


def raw_arc(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def mcqa(id: str, subject: str = "s", **metadata) -> QARecord:
    return QARecord(id=id, question=f"q {id}?", source="t", split="train", subject=subject, choices=["x", "y"], gold="A", metadata=metadata)


# ---------------------------------------------------------------------------- shipped data


@pytest.mark.parametrize(
    "spec, count",
    [
        ("mmlu:dev", 285),
        ("mmlu:val", 1531),
        ("arc-c:test", 1172),
        ("arc-c:dev", 299),
        ("arc-e:test", 2376),
        ("arc-e:dev", 570),
        ("nq:dev", 3610),
    ],
)
def test_shipped_counts(data_dir, spec, count):
    records = load_source(spec, data_dir=data_dir)
    assert len(records) == count
    assert len({r.id for r in records}) == count
    assert all(not r.problems() for r in records)


def test_mmlu_test_has_57_subjects_and_readable_names(mmlu_test):
    assert len(mmlu_test) == 14042
    assert len({r.subject for r in mmlu_test}) == 57
    biology = [r for r in mmlu_test if r.subject == "high_school_biology"]
    assert biology and {r.metadata["subject_name"] for r in biology} == {"high school biology"}
    assert biology[0].id == "high_school_biology/test/0"
    assert all(r.task == "mcqa" and r.letters == "ABCD" and r.source == "mmlu" and r.split == "test" for r in mmlu_test)


def test_mmlu_keeps_option_text_that_pandas_would_turn_into_nan(mmlu_test):
    options = {c for r in mmlu_test for c in r.choices}
    assert "None" in options  # pandas.read_csv would have read this as a missing value
    assert all(isinstance(c, str) for c in options)


def test_mmlu_subject_filter(data_dir):
    records = load_mmlu(data_dir / "mmlu", "val", subjects=["anatomy", "virology"])
    assert {r.subject for r in records} == {"anatomy", "virology"}
    with pytest.raises(RaitError, match="unknown MMLU subject"):
        load_mmlu(data_dir / "mmlu", "val", subjects=["astrology"])


def test_mmlu_headerless_release_gives_the_same_records(data_dir, tmp_path):
    """The original Hendrycks files have no header and no id column; ids must not change."""
    shipped = data_dir / "mmlu" / "val" / "anatomy_val.csv"
    (tmp_path / "val").mkdir()
    with open(shipped, newline="", encoding="utf-8") as src, open(tmp_path / "val" / "anatomy_val.csv", "w", newline="", encoding="utf-8") as dst:
        rows = list(csv.DictReader(src))
        csv.writer(dst).writerows([r["question"], r["A"], r["B"], r["C"], r["D"], r["target"]] for r in rows)
    assert load_mmlu(tmp_path, "val") == load_mmlu(data_dir / "mmlu", "val", subjects=["anatomy"])


def test_arc_challenge_test_quirks_counted_from_the_raw_file(data_dir):
    path = data_dir / "ARC" / "ARC-c" / "ARC-Challenge-Test.jsonl"
    raw = {row["id"]: row for row in raw_arc(path)}
    five = {i for i, r in raw.items() if len(r["question"]["choices"]) == 5}
    three = {i for i, r in raw.items() if len(r["question"]["choices"]) == 3}
    numeric = {i for i, r in raw.items() if r["answerKey"].isdigit()}
    assert (len(five), len(three), len(numeric)) == (3, 4, 22)

    sane = {r.id: r for r in load_arc(path)}
    for id, row in raw.items():
        choices = row["question"]["choices"]
        key_text = next(c["text"] for c in choices if c["label"] == row["answerKey"])
        assert sane[id].choices == [c["text"] for c in choices]
        assert sane[id].gold_text == key_text
        assert not sane[id].unscorable
    assert {sane[i].gold for i in numeric} <= set("ABCD")

    released = {r.id: r for r in load_arc(path, mode="as_released")}
    assert all(len(r.choices) == 4 for r in released.values())
    assert all(released[i].choices[3] == "nan" for i in three)
    assert all(released[i].choices == [c["text"] for c in raw[i]["question"]["choices"][:4]] for i in five)
    assert {i for i, r in released.items() if r.unscorable} == numeric
    assert all(r.gold == raw[i]["answerKey"] for i, r in released.items())
    assert {r.subject for r in released.values()} == {"arc_challenge"}
    assert {r.metadata["subject_name"] for r in released.values()} == {"STEM"}


def test_arc_as_released_cuts_a_gold_option_e(tmp_path):
    row = {"id": "q1", "question": {"stem": "Pick E.", "choices": [{"text": t, "label": l} for t, l in zip("vwxyz", "ABCDE")]}, "answerKey": "E"}
    path = tmp_path / "ARC-Easy-Dev.jsonl"
    path.write_text(json.dumps(row) + "\n")
    (sane,) = load_arc(path)
    assert (sane.gold, sane.gold_text, sane.subject, sane.split) == ("E", "z", "arc_easy", "dev")
    (released,) = load_arc(path, mode="as_released")
    assert released.choices == list("vwxy") and released.gold == "E" and released.unscorable


def test_unscorable_flag_is_the_only_way_past_the_gold_check():
    record = QARecord(id="a", question="q?", source="s", split="test", choices=["x", "y"], gold="2")
    assert [f for f, _ in record.problems()] == ["gold"]
    record.metadata["unscorable"] = True
    assert record.problems() == []
    record.gold = ""
    assert [f for f, _ in record.problems()] == ["gold"]


def test_nq_answer_is_the_first_answer_and_aliases_the_rest(data_dir):
    path = data_dir / "nq" / "en" / "dev.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    records = load_nq(path)
    assert [r.id for r in records] == [row["qid"] for row in raw]
    for record, row in zip(records, raw):
        assert record.answer == row["answers"][0]
        assert record.all_answers == list(dict.fromkeys(row["answers"]))
        assert (record.task, record.source, record.split) == ("oeqa", "nq", "dev")


# ---------------------------------------------------------------------------- TriviaQA and generic files


def test_triviaqa_official_layout():
    records = load_triviaqa(FIXTURES / "triviaqa_unfiltered_dev.json")
    assert [r.id for r in records] == ["tc_1001", "tc_1002", "qb_2003", "sfq_3004"]
    paris, gold, apollo, beatles = records
    assert (paris.split, paris.source, paris.task) == ("dev", "triviaqa", "oeqa")
    assert paris.answer == "Paris"
    assert paris.aliases == ["paris", "City of Light", "Paris, France", "city of light", "paris france"]
    assert apollo.answer == "1969" and apollo.aliases == []
    assert beatles.all_answers == ["The Beatles", "beatles", "Beatles", "Fab Four", "fab four"]
    assert gold.question == "Which chemical element has the symbol Au?"


def test_triviaqa_preprocessed_layout_keeps_its_answer_first(tmp_path):
    path = tmp_path / "dev.json"
    path.write_text(json.dumps([{"qid": "tc_1", "lang": "en", "question": "Capital of France?", "answer": "Paris", "answers": ["paris", "Paris"]}]))
    (record,) = load_triviaqa(path)
    assert (record.answer, record.aliases, record.split) == ("Paris", ["paris"], "dev")


def test_generic_csv_multiple_choice():
    mapping = {"id": "uid", "question": "q", "choices": ["opt1", "opt2", "opt3", "opt4"], "gold": "label", "subject": "topic"}
    records = load_generic(FIXTURES / "generic_mcqa.csv", mapping, source="quiz", split="test")
    assert [r.id for r in records] == ["g1", "g2", "g3"]
    assert [r.gold_text for r in records] == ["100", "Mars", "Carbon dioxide"]  # "2" is a 0-based index
    assert records[1].question == 'Which planet is known as the "Red Planet"?'
    assert records[2].choices[3] == "None"
    assert records[0].subject == "physics" and records[0].metadata == {"difficulty": "easy"}
    assert {(r.source, r.split) for r in records} == {("quiz", "test")}


def test_generic_jsonl_open_qa_without_ids():
    records = load_generic(FIXTURES / "generic_oeqa.jsonl", {"question": "q", "answer": "a", "aliases": "alts"})
    assert [r.id for r in records] == ["generic_oeqa/train/0", "generic_oeqa/train/1", "generic_oeqa/train/2"]
    assert records[0].all_answers == ["William Shakespeare", "Shakespeare", "the Bard"]
    assert records[2].answer == "8"
    assert [r.metadata["relation"] for r in records] == ["author", "capital", "count"]


def test_generic_csv_list_cells_are_json_arrays_or_pipe_separated():
    records = load_generic(FIXTURES / "generic_oeqa.csv", {"question": "question", "answer": "answer", "aliases": "aliases"}, source="facts")
    assert [r.aliases for r in records] == [["Leonardo", "da Vinci"], ["Pacific", "the Pacific"], []]


# ---------------------------------------------------------------------------- records JSONL


def test_records_roundtrip_and_datasets_can_read_them(data_dir, tmp_path):
    records = (
        load_mmlu(data_dir / "mmlu", "dev", subjects=["anatomy"])
        + load_source("arc-c:test", data_dir=data_dir, mode="as_released")[:50]
        + load_source("nq:dev", data_dir=data_dir)[:20]
        + load_triviaqa(FIXTURES / "triviaqa_unfiltered_dev.json")
    )
    path = tmp_path / "pool.jsonl"
    assert write_records(path, records) == len(records)
    assert read_records(path) == records

    from datasets import load_dataset

    dataset = load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf"))
    assert dataset["id"] == [r.id for r in records]
    assert dataset["gold"] == [r.gold for r in records]
    assert dataset["aliases"] == [r.aliases for r in records]


def test_write_records_refuses_an_invalid_record_and_writes_nothing(tmp_path):
    bad = QARecord(id="x", question="q?", source="s", split="train", choices=["a", "b"], gold="C")
    path = tmp_path / "out.jsonl"
    with pytest.raises(DataError) as err:
        write_records(path, [mcqa("ok"), bad])
    assert err.value.field == "gold"
    assert not path.exists()


# ---------------------------------------------------------------------------- bad input

GOOD_LINE = json.dumps(mcqa("a").to_dict())


@pytest.mark.parametrize(
    "second_line, field, message",
    [
        ('{"id": "b", "question": ', None, "not valid JSON"),
        (json.dumps({**mcqa("b").to_dict(), "colour": "red"}), "colour", "unknown field"),
        (json.dumps({k: v for k, v in mcqa("b").to_dict().items() if k != "question"}), "question", "missing"),
        (json.dumps({**mcqa("b").to_dict(), "gold": "C"}), "gold", "not among the choices"),
        (json.dumps({**mcqa("b").to_dict(), "choices": None, "gold": None}), "answer", "missing or empty"),
        (GOOD_LINE, "id", "duplicate id"),
        ("[1, 2]", None, "JSON object"),
    ],
)
def test_read_records_names_file_line_and_field(tmp_path, second_line, field, message):
    path = tmp_path / "pool.jsonl"
    path.write_text(GOOD_LINE + "\n" + second_line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message) as err:
        read_records(path)
    assert (err.value.path, err.value.line, err.value.field) == (str(path), 2, field)
    assert str(err.value).startswith(f"{path}:2: ")


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_empty_records_file(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match="empty") as err:
        read_records(path)
    assert (err.value.path, err.value.line) == (str(path), None)


def test_missing_mmlu_folder(tmp_path):
    with pytest.raises(DataError, match="no such folder") as err:
        load_mmlu(tmp_path / "nowhere", "test")
    assert err.value.path == str(tmp_path / "nowhere" / "test")


def test_mmlu_bad_target_names_row_and_column(tmp_path):
    (tmp_path / "dev").mkdir()
    path = tmp_path / "dev" / "anatomy_dev.csv"
    path.write_text("id,lang,question,A,B,C,D,target\nanatomy/dev/0,en,Q1?,a,b,c,d,A\nanatomy/dev/1,en,Q2?,a,b,c,d,E\n")
    with pytest.raises(DataError) as err:
        load_mmlu(tmp_path, "dev")
    assert (err.value.path, err.value.line, err.value.field) == (str(path), 3, "target")


def test_arc_bad_answer_key_names_line_and_field(tmp_path):
    good = {"id": "q1", "question": {"stem": "S?", "choices": [{"text": "x", "label": "A"}, {"text": "y", "label": "B"}]}, "answerKey": "A"}
    path = tmp_path / "arc.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "q2", "answerKey": "C"}) + "\n")
    with pytest.raises(DataError) as err:
        load_arc(path)
    assert (err.value.line, err.value.field) == (2, "answerKey")


def test_nq_item_without_answers(tmp_path):
    path = tmp_path / "dev.json"
    path.write_text(json.dumps([{"qid": "n0", "question": "q?", "answers": ["a"]}, {"qid": "n1", "question": "q?", "answers": []}]))
    with pytest.raises(DataError, match="item 2") as err:
        load_nq(path)
    assert err.value.field == "answers"


def test_generic_errors_name_the_files_own_columns(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text("q,a\nWho?,Ann\n,Bob\n")
    with pytest.raises(DataError) as err:
        load_generic(path, {"question": "q", "answer": "a"})
    assert (err.value.line, err.value.field) == (3, "q")
    with pytest.raises(DataError) as err:
        load_generic(path, {"question": "q", "answer": "answer"})
    assert (err.value.line, err.value.field) == (1, "answer")
    with pytest.raises(RaitError, match="unknown mapping key"):
        load_generic(path, {"question": "q", "answer": "a", "hint": "h"})


# ---------------------------------------------------------------------------- registry and paths


def test_load_source_registry(tmp_path, monkeypatch):
    with pytest.raises(RaitError, match="known: mmlu") as err:
        load_source("squad:dev")
    assert "arc-c" in str(err.value) and "triviaqa:<path>" in str(err.value)
    with pytest.raises(RaitError, match="needs an argument"):
        load_source("mmlu")
    path = tmp_path / "pool.jsonl"
    write_records(path, [mcqa("a"), mcqa("b")])
    assert [r.id for r in load_source(f"jsonl:{path}")] == ["a", "b"]
    assert len(load_source(f"triviaqa:{FIXTURES / 'triviaqa_unfiltered_dev.json'}")) == 4
    monkeypatch.setenv("RAIT_DATA_DIR", str(tmp_path / "missing"))
    with pytest.raises(RaitError, match="RAIT_DATA_DIR"):
        load_source("nq:dev")


def test_rait_data_dir_overrides_the_default(tmp_path, monkeypatch):
    (tmp_path / "nq" / "en").mkdir(parents=True)
    (tmp_path / "nq" / "en" / "dev.json").write_text(json.dumps([{"qid": "n0", "question": "q?", "answers": ["a", "b"]}]))
    monkeypatch.setenv("RAIT_DATA_DIR", str(tmp_path))
    assert shared_data_dir() == tmp_path
    (record,) = load_source("nq:dev")
    assert (record.id, record.answer, record.aliases) == ("n0", "a", ["b"])


# ---------------------------------------------------------------------------- splits


@pytest.fixture
def pool() -> list[QARecord]:
    subjects = ["a"] * 60 + ["b"] * 30 + ["c"] * 10
    return [mcqa(f"r{i:03d}", subject=s, relation=s.upper()) for i, s in enumerate(subjects)]


def ids(records):
    return sorted(r.id for r in records)


def test_split_is_deterministic_and_order_independent(pool):
    train, test = split_records(pool, test_size=20, seed=0)
    assert len(train) == 80 and len(test) == 20
    assert set(ids(train)).isdisjoint(ids(test)) and len(set(ids(train + test))) == 100
    again_train, again_test = split_records(list(reversed(pool)), test_size=20, seed=0)
    assert ids(again_test) == ids(test) and ids(again_train) == ids(train)
    shuffled = pool[:]
    random.Random(7).shuffle(shuffled)
    assert ids(split_records(shuffled, test_size=20, seed=0)[1]) == ids(test)
    assert ids(split_records(pool, test_size=20, seed=1)[1]) != ids(test)


def test_split_sizes_and_stratification(pool):
    assert len(split_records(pool, test_size=0.25, seed=3)[1]) == 25
    for key in ("subject", "relation"):
        _, test = split_records(pool, test_size=0.2, seed=3, stratify_by=key)
        counts = {s: sum(r.subject == s for r in test) for s in "abc"}
        assert counts == {"a": 12, "b": 6, "c": 2}


def test_split_rejects_what_it_cannot_do(pool):
    with pytest.raises(RaitError, match="duplicate id"):
        split_records(pool + [mcqa("r000")], test_size=10, seed=0)
    with pytest.raises(RaitError, match="cannot split"):
        split_records(pool, test_size=200, seed=0)
    with pytest.raises(RaitError, match="no 'topic'"):
        split_records(pool, test_size=10, seed=0, stratify_by="topic")


def test_exclude_ids_keeps_order(pool):
    kept = exclude_ids(pool, ["r001", "r050", "unknown"])
    assert len(kept) == 98 and [r.id for r in kept][:2] == ["r000", "r002"]


def test_facts_source_equals_the_written_splits(tmp_path):
    from rait.data.facts import write_facts

    write_facts(tmp_path, seed=0)
    for name in ("train", "test_id", "test_ood"):
        assert [r.to_dict() for r in load_source(f"facts:{name}")] == [
            r.to_dict() for r in read_records(tmp_path / f"{name}.jsonl")]
    with pytest.raises(RaitError, match="facts split"):
        load_source("facts:dev")


def test_the_data_stage_holds_validation_out_before_sampling_and_writes_both_with_manifests(tmp_path):
    from rait.data import DataSettings, TestSet, load_test_records, run

    settings = DataSettings(data="facts:train", sample=30, validation=20, stratify="subject", seed=3)
    pool = run(settings, tmp_path / "pool.jsonl")
    assert len(pool.records) == 30 and len(pool.validation) == 20
    assert not {r.id for r in pool.records} & {r.id for r in pool.validation}
    assert pool.validation_path == tmp_path / "pool.validation.jsonl"
    assert [r.id for r in read_records(pool.validation_path)] == [r.id for r in pool.validation]
    manifest = json.loads((tmp_path / "pool.jsonl.manifest.json").read_text())
    assert manifest["stage"] == "data" and manifest["settings"]["validation"] == 20
    # without a validation split the pool is the test sets' sample: one sampling everywhere
    plain = run(DataSettings(data="facts:train", sample=30, stratify="subject", seed=3), tmp_path / "plain.jsonl")
    same = load_test_records(TestSet(name="t", data="facts:train", sample=30, stratify="subject"), seed=3)
    assert [r.id for r in plain.records] == [r.id for r in same] and plain.validation_path is None


@pytest.mark.usefixtures("shipped_data")
def test_the_data_stage_refuses_an_empty_pool_and_bad_settings_before_writing(tmp_path):
    from rait.data import DataSettings, run
    from rait.errors import SettingsError

    with pytest.raises(RaitError, match="the pool is empty"):
        run(DataSettings(data="mmlu:dev", max_chars=1), tmp_path / "pool.jsonl")
    assert not any(tmp_path.iterdir())
    with pytest.raises(SettingsError, match="validation"):
        DataSettings(data="mmlu:dev", validation=0)
    with pytest.raises(SettingsError, match="arc_mode"):
        DataSettings(data="arc-c:test", arc_mode="sloppy")
