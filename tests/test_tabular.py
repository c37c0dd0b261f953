"""CSV, Parquet and `datasets` save_to_disk folders as QA sources through a column mapping (issue 31, item 6):
the same records from `rait data load`, a config's pool and its test sets; a bad file or mapping stops with one
line naming the file, the line (CSV) or row (Parquet, datasets) and the column."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from hostile import assert_refused
from rait.cli import main
from rait.data import DataSettings, load_source, load_test_records, read_records
from rait.data import TestSet as NamedSet  # not "Test...": pytest would try to collect it
from rait.data.stage import load
from rait.errors import DataError, RaitError, SettingsError

OPEN = {"question": "q", "answer": "a", "aliases": "alts"}
CSV_TEXT = ('q,a,alts,relation\n'
            'Who wrote Hamlet?,William Shakespeare,"[""Shakespeare"", ""the Bard""]",author\n'
            'What is the capital of France?,Paris,paris|PARIS,capital\n'
            'Which option is missing?,None,,trick\n')
MCQA_ROWS = {"stem": ["2 + 2 = ?", "Red planet?"], "options": [["3", "4", "5"], ["Venus", "Mars", "Moon"]],
             "label": ["1", "B"], "topic": ["maths", "astronomy"]}  # "1": a 0-based index, "B": a letter


@pytest.fixture
def files(tmp_path) -> Path:
    from datasets import Dataset, DatasetDict

    (tmp_path / "qa.csv").write_text(CSV_TEXT, encoding="utf-8")
    pd.DataFrame({"question": ["Who wrote Hamlet?", "Capital of Peru?"], "answers": [["Shakespeare", "the Bard"],
                                                                                      ["Lima"]]}
                 ).to_parquet(tmp_path / "nq.parquet")
    pd.DataFrame(MCQA_ROWS).to_parquet(tmp_path / "mcqa.parquet")
    quiz = Dataset.from_dict({"uid": ["u1", "u2"], "question": ["Largest ocean?", "Boiling point of water in C?"],
                              "answer": ["Pacific", "100"], "level": [1, 2]})
    quiz.save_to_disk(str(tmp_path / "quiz"))
    DatasetDict({"train": quiz, "test": quiz}).save_to_disk(str(tmp_path / "quiz_splits"))
    return tmp_path


def test_csv_cells_stay_text_and_list_cells_are_json_or_pipe_separated(files):
    records, _ = load(DataSettings(data=f"csv:{files / 'qa.csv'}", columns=OPEN))
    assert [r.id for r in records] == ["qa/train/0", "qa/train/1", "qa/train/2"]
    assert [r.aliases for r in records] == [["Shakespeare", "the Bard"], ["paris", "PARIS"], []]
    assert records[2].answer == "None"  # pandas would have read it as a missing value; it is an answer here
    assert [r.metadata for r in records] == [{"relation": "author"}, {"relation": "capital"}, {"relation": "trick"}]


def test_a_parquet_answers_column_gives_the_answer_and_its_aliases(files):
    test = NamedSet(name="nq", data=str(files / "nq.parquet"), columns={"question": "question", "answers": "answers"})
    records = load_test_records(test, seed=0)  # a bare path is read by its suffix
    assert [(r.answer, r.aliases) for r in records] == [("Shakespeare", ["the Bard"]), ("Lima", [])]


def test_parquet_multiple_choice_from_one_list_column_and_an_index_or_letter(files):
    mapping = {"question": "stem", "choices": "options", "gold": "label", "subject": "topic"}
    records = load_source(f"parquet:{files / 'mcqa.parquet'}", columns=mapping)
    assert [(r.gold, r.gold_text, r.subject) for r in records] == [("B", "4", "maths"), ("B", "Mars", "astronomy")]


def test_a_save_to_disk_folder_is_read_with_its_ids_and_a_split_folder_of_several_is_named(files):
    mapping = {"id": "uid", "question": "question", "answer": "answer"}
    records, _ = load(DataSettings(data=f"disk:{files / 'quiz'}", columns=mapping))
    assert [(r.id, r.answer, r.metadata, r.source) for r in records] == [
        ("u1", "Pacific", {"level": 1}, "quiz"), ("u2", "100", {"level": 2}, "quiz")]
    split, _ = load(DataSettings(data=f"disk:{files / 'quiz_splits' / 'test'}", columns=mapping))
    assert [r.question for r in split] == [r.question for r in records]
    with pytest.raises(DataError, match="holds the splits train, test; name one"):
        load(DataSettings(data=f"disk:{files / 'quiz_splits'}", columns=mapping))


@pytest.mark.parametrize("name, frame, mapping, where, field, words", [
    ("a mapped column missing", {"question": ["Q?"], "answer": ["A"]}, {"question": "question", "answer": "reply"},
     "", "reply", "column not in the file (columns: question, answer)"),
    ("an empty question", {"question": ["Q?", " "], "answer": ["A", "B"]}, {"question": "question", "answer": "answer"},
     "row 2: ", "question", "empty"),
    ("a non-string answer", {"question": ["Q?"], "answer": [["A"]]}, {"question": "question", "answer": "answer"},
     "row 1: ", "answer", "must be a string, got list"),
    ("a null answer", {"question": ["Q?", "R?"], "answer": ["A", None]}, {"question": "question", "answer": "answer"},
     "row 2: ", "answer", "missing or empty"),
    ("an empty answers list", {"question": ["Q?"], "answers": [[]]}, {"question": "question", "answers": "answers"},
     "row 1: ", "answers", "non-empty list of strings"),
])
def test_a_bad_parquet_row_is_named_by_file_row_and_column(tmp_path, name, frame, mapping, where, field, words):
    path = tmp_path / "bad.parquet"
    pd.DataFrame(frame).to_parquet(path)
    with pytest.raises(DataError) as err:
        load_source(f"parquet:{path}", columns=mapping)
    assert (err.value.path, err.value.line, err.value.field) == (str(path), None, field)
    assert err.value.message.startswith(where) and words in err.value.message


def test_a_bad_csv_row_is_named_by_its_line_counting_the_header(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("q,a\nWho?,Ann\n,Bob\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_source(f"csv:{path}", columns={"question": "q", "answer": "a"})
    assert (err.value.line, err.value.field, err.value.message) == (3, "q", "empty")
    with pytest.raises(DataError) as err:
        load_source(f"csv:{path}", columns={"question": "q", "answer": "answer"})
    assert (err.value.line, err.value.field) == (1, "answer")


def test_a_table_without_a_mapping_is_refused_by_its_spec(files):
    with pytest.raises(RaitError, match="'csv:.*qa.csv' needs a column mapping"):
        load_test_records(NamedSet(name="t", data=str(files / "qa.csv")), seed=0)


@pytest.mark.parametrize("spec, columns, words", [
    ("facts:train", OPEN, "maps the columns of a jsonl, csv, parquet, disk source"),
    ("csv:{tmp}/qa.csv", {"question": "q", "hint": "h"}, "unknown mapping key(s) hint"),
    ("csv:{tmp}/qa.csv", {"question": "q"}, "needs 'question' and either 'answer'"),
    ("csv:{tmp}/qa.csv", {"question": "q", "answer": "a", "answers": "alts"}, "not both"),
    ("csv:{tmp}/qa.csv", {"question": "q", "answer": ["a"]}, "answer: must name a column"),
])
def test_a_mapping_that_cannot_work_is_refused_as_the_columns_setting(files, spec, columns, words):
    with pytest.raises(SettingsError) as err:
        load(DataSettings(data=spec.format(tmp=files), columns=columns))
    assert err.value.field == "columns" and words in err.value.message


def test_a_file_that_is_not_what_its_spec_says_is_one_error(files):
    with pytest.raises(DataError, match="not a readable Parquet file"):
        load_source(f"parquet:{files / 'qa.csv'}", columns=OPEN)
    with pytest.raises(DataError, match="not a folder written by datasets' save_to_disk"):
        load_source(f"disk:{files}", columns=OPEN)
    (files / "latin1.csv").write_bytes("q,a\nCafé?,oui\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        load_source(f"csv:{files / 'latin1.csv'}", columns={"question": "q", "answer": "a"})
    (files / "header_only.csv").write_text("q,a\n", encoding="utf-8")
    with pytest.raises(DataError, match="no records"):
        load_source(f"csv:{files / 'header_only.csv'}", columns={"question": "q", "answer": "a"})


def test_rait_data_load_writes_what_the_python_loader_reads(files):
    out = files / "pool.jsonl"
    try:
        main(["data", "load", f"csv:{files / 'qa.csv'}", "--columns", "{question: q, answer: a, aliases: alts}",
              "--out", str(out)])
    except SystemExit as exit_:
        assert not exit_.code
    assert read_records(out) == load_source(f"csv:{files / 'qa.csv'}", columns=OPEN)
    manifest = json.loads((files / "pool.jsonl.manifest.json").read_text())
    assert manifest["settings"]["columns"] == OPEN


@pytest.mark.parametrize("columns, words", [
    ("[question, q]", ["--columns", "give a mapping"]),
    ("{question: q, answer: nope}", ["qa.csv:1", "field 'nope'", "column not in the header"]),
    ("{question: q, hint: h}", ["--columns", "unknown mapping key(s) hint"]),
])
def test_rait_data_load_refuses_a_bad_mapping_in_one_line(files, capfd, columns, words):
    assert_refused(["data", "load", f"csv:{files / 'qa.csv'}", "--columns", columns, "--out",
                    str(files / "pool.jsonl")], files, capfd, words)


def _config(files: Path, model: Path, pool_columns: str = "{question: q, answer: a, aliases: alts}") -> str:
    return f"""model: {model}
methods: [cor_rait]
train: {{epochs: 1, batch_size: 2, grad_accum: 1,
        lora: {{r: 2, alpha: 4, dropout: 0.0, layers: [1], target_modules: [q_proj]}}}}
eval: {{batch_size: 4, n_boot: 10, max_new_tokens: {{oeqa: 2}}}}
tracks:
  - name: mine
    pool: {{data: "csv:{files / 'qa.csv'}", columns: {pool_columns}}}
    probe: {{k: 2, max_new_tokens: 2, prompt: query_0shot, batch_size: 4}}
    build: {{n_total: 2, idk_share: 0.5, tau: 0.5}}
    test_sets:
      - {{name: nq-mine, data: "{files / 'nq.parquet'}", domain: OOD,
         columns: {{question: question, answers: answers}}}}
      - {{name: quiz, data: "disk:{files / 'quiz'}", columns: {{id: uid, question: question, answer: answer}}}}
"""


def test_rait_run_trains_on_a_csv_pool_and_evaluates_parquet_and_disk_test_sets(files, tiny_model_dir):
    config, out = files / "mine.yaml", files / "out"
    config.write_text(_config(files, tiny_model_dir), encoding="utf-8")
    try:
        main(["--quiet", "run", str(config), "--out", str(out)])
    except SystemExit as exit_:
        assert not exit_.code
    assert read_records(out / "mine" / "pool.jsonl") == load_source(f"csv:{files / 'qa.csv'}", columns=OPEN)
    results = pd.read_csv(out / "results.csv")
    assert {"nq-mine", "quiz"} <= set(results["test_set"]) and {"Init-Basic", "Cor-RAIT"} <= set(results["method"])
    assert set(results.loc[results["test_set"] == "quiz", "n"]) == {2}


@pytest.mark.parametrize("pool_columns, line, words", [
    ("{question: q, hint: h}", 8, ["tracks.0.pool.columns", "unknown mapping key(s) hint"]),
    ("{question: q, answer: reply}", 8, ["qa.csv:1", "field 'reply'", "column not in the header"]),
    ("{question: q, answer: 3}", 8, ["tracks.0.pool.columns.answer", "must be a string"]),
])
def test_a_bad_mapping_in_a_config_is_refused_at_its_line_before_any_work(files, tiny_model_dir, capfd, pool_columns,
                                                                          line, words):
    config = files / "bad.yaml"
    config.write_text(_config(files, tiny_model_dir, pool_columns), encoding="utf-8")
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(config), "--out", str(files / "out")])
    err = capfd.readouterr().err
    assert exit_.value.code == 2 and f"{config}:{line}" in err and all(w in err for w in words), err
    assert not (files / "out").exists()
