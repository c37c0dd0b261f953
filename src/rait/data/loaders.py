"""Loaders from each source's own file layout to `QARecord`s.

Every loader returns records with stable ids (the source's own id where it has one) and
stops at the first bad row with a `DataError` that names the file, the line (CSV rows count
the header as line 1) and the field. JSON files that hold one array (NQ, TriviaQA) have no
useful line numbers, so their errors name the item number and id instead.

`load_source("mmlu:test")` etc. resolves the shipped datasets under `shared_data_dir()`.
"""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterator

from rait.artifacts import iter_jsonl_objects
from rait.data.jsonl import read_records
from rait.data.paths import shared_data_dir
from rait.data.records import LETTERS, QARecord
from rait.errors import DataError, RaitError, SettingsError

# ---------------------------------------------------------------------------- helpers


def _checked(
    record: QARecord, path: Path, line: int | None = None, where: str = "", column_of: dict[str, str] | None = None
) -> QARecord:
    """Return the record, or raise on its first problem, naming the file's own column for the field."""
    if problems := record.problems():
        name, message = problems[0]
        raise DataError(path, f"{where}{message}", line=line, field=(column_of or {}).get(name, name))
    return record


def _unique(records: list[QARecord], path: Path) -> list[QARecord]:
    """Ids must be unique: splits, joins with knowledge tables and exclusions all key on them."""
    seen: set[str] = set()
    for record in records:
        if record.id in seen:
            raise DataError(path, f"duplicate id {record.id!r}", field="id")
        seen.add(record.id)
    return records


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise DataError(path, "no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(path, f"not valid JSON ({err.msg})", line=err.lineno) from None


def _nonempty(records: list[QARecord], path: Path) -> list[QARecord]:
    if not records:
        raise DataError(path, "no records (the file is empty)")
    return records


# ---------------------------------------------------------------------------- MMLU

MMLU_SPLITS = ("dev", "val", "test")
MMLU_OPTIONS = ("A", "B", "C", "D")
# CRaFT's preprocessed files: header `id,lang,question,A,B,C,D,target`. The original
# Hendrycks release has no header and six columns: question,A,B,C,D,answer.
MMLU_HEADERLESS_COLUMNS = ("question", *MMLU_OPTIONS, "target")


def load_mmlu(root: str | Path, split: str, subjects: list[str] | None = None) -> list[QARecord]:
    """MMLU from `root/<split>/<subject>_<split>.csv`, subjects in alphabetical order.

    id = the csv `id` column (`<subject>/<split>/<row>`), or that same pattern for header-less
    files, so both layouts give the same ids. `metadata["subject_name"]` is the subject with
    spaces ("high school biology"), as prompts print it.
    """
    if split not in MMLU_SPLITS:
        raise RaitError(f"unknown MMLU split {split!r}; choose one of {', '.join(MMLU_SPLITS)}")
    folder = Path(root) / split
    if not folder.is_dir():
        raise DataError(folder, f"no such folder (expected <root>/{{{','.join(MMLU_SPLITS)}}}/<subject>_<split>.csv)")
    suffix = f"_{split}.csv"
    files = {f.name[: -len(suffix)]: f for f in sorted(folder.glob(f"*{suffix}"))}
    if not files:
        raise DataError(folder, f"no <subject>{suffix} files in this folder")
    if subjects is not None:
        unknown = sorted(set(subjects) - set(files))
        if unknown:
            raise RaitError(f"unknown MMLU subject(s) {', '.join(unknown)}; available: {', '.join(files)}")
        files = {s: f for s, f in files.items() if s in set(subjects)}
    records: list[QARecord] = []
    for subject, path in files.items():
        records.extend(_load_mmlu_file(path, subject, split))
    return _unique(records, folder)


def _load_mmlu_file(path: Path, subject: str, split: str) -> list[QARecord]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))  # csv, not pandas: options such as "None" must stay text
    if not rows:
        raise DataError(path, "no records (the file is empty)")
    header, first_line = rows[0], 2
    if "question" in header and "target" in header:
        rows = rows[1:]
    elif len(header) == len(MMLU_HEADERLESS_COLUMNS):
        header, first_line = list(MMLU_HEADERLESS_COLUMNS), 1
    else:
        raise DataError(path, f"unrecognised header {header}; expected id,lang,question,A,B,C,D,target", line=1)
    missing = [c for c in MMLU_HEADERLESS_COLUMNS if c not in header]
    if missing:
        raise DataError(path, "column missing from the header", line=1, field=missing[0])
    column = {name: i for i, name in enumerate(header)}
    subject_name = subject.replace("_", " ")
    records = []
    for row_index, row in enumerate(rows):
        line = first_line + row_index
        if len(row) != len(header):
            raise DataError(path, f"expected {len(header)} columns, found {len(row)}", line=line)
        record = QARecord(
            id=row[column["id"]] if "id" in column else f"{subject}/{split}/{row_index}",
            question=row[column["question"]],
            source="mmlu",
            split=split,
            subject=subject,
            choices=[row[column[o]] for o in MMLU_OPTIONS],
            gold=row[column["target"]].strip(),
            metadata={"subject_name": subject_name},
        )
        records.append(_checked(record, path, line, column_of={"gold": "target", "choices": "A-D"}))
    return _nonempty(records, path)


# ---------------------------------------------------------------------------- ARC

ARC_MODES = ("sane", "as_released")
ARC_SUBJECT_NAME = "STEM"  # the task name CRaFT's prompts print for ARC
ARC_RELEASED_OPTIONS = 4
ARC_PADDING = "nan"  # what the released loader shows for a missing fourth option
ARC_FILE_NAME = re.compile(r"ARC-(Challenge|Easy)-(Train|Dev|Test)", re.IGNORECASE)
ARC_COLUMNS = {"question": "question.stem", "choices": "question.choices", "gold": "answerKey"}


def load_arc(path: str | Path, mode: str = "sane", subject: str | None = None, split: str | None = None) -> list[QARecord]:
    """ARC from the official jsonl `{id, question: {stem, choices: [{text, label}]}, answerKey}`.

    mode="sane" keeps every choice (3-5) and maps numeric labels/keys ("1".."5") to letters by
    position. mode="as_released" reproduces CRaFT's evaluation (opencompass fork,
    datasets/arc_honest.py): only the first 4 choices, a missing fourth shown as "nan", and the
    answer key kept raw. A raw key that is not one of the shown letters (numeric keys; "E" of a cut
    five-choice question) stays as `gold` with `metadata["unscorable"] = True`, so no parsed letter
    can match it, exactly as the release scored it. `metadata["answer_key"]` always holds the raw
    key.

    subject and split default to what the official file name says ("ARC-Challenge-Test"
    -> arc_challenge, test); the subject is also the record's source.
    """
    if mode not in ARC_MODES:
        raise RaitError(f"unknown ARC mode {mode!r}; choose one of {', '.join(ARC_MODES)}")
    path = Path(path)
    named = ARC_FILE_NAME.search(path.name)
    subject = subject or (f"arc_{named.group(1).lower()}" if named else "arc")
    split = split or (named.group(2).lower() if named else path.stem)
    records = []
    for line, row in iter_jsonl_objects(path):
        question = row.get("question")
        if not isinstance(question, dict) or not isinstance(question.get("choices"), list):
            raise DataError(path, "must be an object with 'stem' and a list of 'choices'", line=line, field="question")
        try:
            texts = [c["text"] for c in question["choices"]]
            labels = [c["label"] for c in question["choices"]]
        except (TypeError, KeyError):
            raise DataError(path, "every choice needs 'text' and 'label'", line=line, field="question.choices") from None
        key = row.get("answerKey")
        if key not in labels:
            raise DataError(path, f"{key!r} is not among the labels {labels}", line=line, field="answerKey")
        metadata: dict[str, Any] = {"subject_name": ARC_SUBJECT_NAME, "answer_key": key}
        if mode == "sane":
            choices, gold = texts, LETTERS[labels.index(key)]
        else:
            choices = texts[:ARC_RELEASED_OPTIONS]
            choices += [ARC_PADDING] * (ARC_RELEASED_OPTIONS - len(choices))
            gold = key
            if gold not in LETTERS[:ARC_RELEASED_OPTIONS]:
                metadata["unscorable"] = True
        record = QARecord(
            id=row.get("id"),
            question=question.get("stem"),
            source=subject,
            split=split,
            subject=subject,
            choices=choices,
            gold=gold,
            metadata=metadata,
        )
        records.append(_checked(record, path, line, column_of=ARC_COLUMNS))
    return _unique(_nonempty(records, path), path)


# ---------------------------------------------------------------------------- open QA

TRIVIAQA_COLUMNS = {"id": "QuestionId", "question": "Question", "answer": "Answer.Value"}


def load_nq(path: str | Path) -> list[QARecord]:
    """NQ-open as CRaFT ships it: a JSON array of `{qid, lang, question, answer, answers}`.

    answer = answers[0] (the shipped `answer`), aliases = the other answers; split = the
    file name ("dev.json" -> dev).
    """
    return _load_preprocessed_oeqa(Path(path), source="nq")


def load_triviaqa(path: str | Path) -> list[QARecord]:
    """TriviaQA in the official (unfiltered) layout `{"Data": [...], "Split": ...}` or CRaFT's array.

    Official: id = QuestionId, answer = Answer.Value, aliases = the de-duplicated union of
    Value, NormalizedValue, Aliases and NormalizedAliases in that order, minus the answer
    itself. (The release builds the union through a Python set, so its order is arbitrary;
    scoring accepts any alias, so only the order differs, never a score.)
    """
    path = Path(path)
    data = _read_json(path)
    if isinstance(data, list):
        return _load_preprocessed_oeqa(path, source="triviaqa", data=data)
    if not isinstance(data, dict) or not isinstance(data.get("Data"), list):
        raise DataError(path, "expected the official layout {'Data': [...]} or a JSON array of questions", field="Data")
    split = str(data.get("Split") or path.stem).lower()
    records = []
    for index, item in enumerate(data["Data"], start=1):
        where = f"item {index}: "
        if not isinstance(item, dict) or not isinstance(item.get("Answer"), dict):
            raise DataError(path, f"{where}missing or not an object", field="Answer")
        answer = item["Answer"]
        value = answer.get("Value")
        names = [value, answer.get("NormalizedValue"), *(answer.get("Aliases") or []), *(answer.get("NormalizedAliases") or [])]
        aliases = [a for a in dict.fromkeys(names) if isinstance(a, str) and a.strip() and a != value]
        record = QARecord(
            id=item.get("QuestionId"),
            question=item.get("Question"),
            source="triviaqa",
            split=split,
            answer=value,
            aliases=aliases,
        )
        records.append(_checked(record, path, where=where, column_of=TRIVIAQA_COLUMNS))
    return _unique(_nonempty(records, path), path)


def _load_preprocessed_oeqa(path: Path, source: str, data: Any = None) -> list[QARecord]:
    """CRaFT's open-QA layout (NQ, TriviaQA): `{qid, question, answer, answers}`; answer defaults to answers[0]."""
    data = _read_json(path) if data is None else data
    if not isinstance(data, list):
        raise DataError(path, "expected a JSON array of questions")
    records = []
    for index, item in enumerate(data, start=1):
        where = f"item {index}: "
        if not isinstance(item, dict):
            raise DataError(path, f"{where}each item must be an object")
        answers = item.get("answers")
        if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
            raise DataError(path, f"{where}must be a non-empty list of strings", field="answers")
        answer = item.get("answer") or answers[0]
        record = QARecord(
            id=item.get("qid"),
            question=item.get("question"),
            source=source,
            split=path.stem,
            answer=answer,
            aliases=[a for a in dict.fromkeys(answers) if a != answer],
        )
        records.append(_checked(record, path, where=where, column_of={"id": "qid"}))
    return _unique(_nonempty(records, path), path)


# ---------------------------------------------------------------------------- any table, through a column mapping

GENERIC_FIELDS = ("id", "question", "answer", "answers", "aliases", "choices", "gold", "subject")
# How a file is read, by its spec's name (`csv:FILE`) or a bare path's suffix; a folder is a `save_to_disk` dataset.
TABLE_FORMATS = {".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet"}
Rows = Iterator[tuple[int | None, str, dict[str, Any]]]  # (line or None, where in the file, row)


def check_mapping(mapping: Any) -> None:
    """A column mapping is record field -> column (or a list of columns for `choices`); refused whole, before any
    file is read, as the setting `columns`."""
    if not isinstance(mapping, dict) or not mapping:
        raise SettingsError("columns", f"must map record fields to columns, e.g. {{question: q, answer: a}}; "
                            f"got {mapping!r}")
    unknown = sorted(map(str, set(mapping) - set(GENERIC_FIELDS)))
    if unknown:
        raise SettingsError("columns", f"unknown mapping key(s) {', '.join(unknown)}; "
                            f"known: {', '.join(GENERIC_FIELDS)}")
    for name, cols in mapping.items():
        many = name == "choices" and isinstance(cols, list) and cols and all(isinstance(c, str) and c for c in cols)
        if not (isinstance(cols, str) and cols or many):
            either = " (or a list of columns)" if name == "choices" else ""
            raise SettingsError("columns", f"{name}: must name a column{either}, got {cols!r}")
    answers = [name for name in ("answer", "answers") if name in mapping]
    if "question" not in mapping or not (answers or {"choices", "gold"} <= set(mapping)):
        raise SettingsError("columns", "the mapping needs 'question' and either 'answer' (or 'answers') or both "
                            "'choices' and 'gold'")
    if len(answers) == 2 or "answers" in mapping and "aliases" in mapping:
        raise SettingsError("columns", "'answers' is one column of every accepted answer: give it, or 'answer' with "
                            "optional 'aliases', not both")


def load_generic(
    path: str | Path, mapping: dict[str, str | list[str]], source: str | None = None, split: str = "train",
    format: str | None = None,
) -> list[QARecord]:
    """Records from a JSONL, CSV or Parquet file or a `datasets` `save_to_disk` folder through a column mapping.

    `format` ("jsonl", "csv", "parquet", "disk") defaults to the file's suffix, or "disk" for a folder.
    mapping: record field -> column, e.g. {"question": "q", "answer": "a", "aliases": "alts"}
    or {"question": "q", "choices": ["opt1", "opt2", "opt3", "opt4"], "gold": "label"}.
    `answers` is one column of every accepted answer (NQ's layout): the first is the answer, the rest aliases.
    `choices` is a list of columns, or one column holding a list. A list-valued cell (aliases, answers, one-column
    choices) is a list in JSONL, Parquet and datasets; in CSV it is a JSON array when it starts with "[", otherwise
    `|`-separated ("Paris|paris"). `gold` is a letter or a 0-based option index. Columns not in the mapping are
    kept in `metadata` (e.g. a relation to stratify by). Without an id column, id = `<source>/<split>/<row>`
    (0-based data row). Errors name the file's line (JSONL; CSV counting the header as line 1) or its row
    (Parquet, datasets: "row N", from 1) and the file's own column.
    """
    check_mapping(mapping)
    path = Path(path)
    format = format or ("disk" if path.is_dir() else TABLE_FORMATS.get(path.suffix.lower()))
    if format is None:
        raise RaitError(f"{path}: reads .jsonl, .csv or .parquet files or a save_to_disk folder, "
                        f"not {path.suffix or 'a file without a suffix'!r}")
    source = source or path.stem
    mapped = [c for cols in mapping.values() for c in ([cols] if isinstance(cols, str) else cols)]
    column_of = {name: cols if isinstance(cols, str) else ",".join(cols) for name, cols in mapping.items()}
    records = []
    for row_index, (line, where, row) in enumerate(_rows(path, format, mapped)):
        def cell(column: str) -> Any:
            return _cell(row, column, path, line, where)

        choices = None
        if "choices" in mapping:
            cols = mapping["choices"]
            choices = [cell(c) for c in cols] if isinstance(cols, list) else _as_list(cell(cols))
        answer = cell(mapping["answer"]) if "answer" in mapping else None
        aliases = _as_list(cell(mapping["aliases"])) if "aliases" in mapping else []
        if "answers" in mapping:
            answers = _as_list(cell(mapping["answers"]))
            if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
                raise DataError(path, f"{where}must be a non-empty list of strings", line=line,
                                field=mapping["answers"])
            answer, aliases = answers[0], [a for a in dict.fromkeys(answers[1:]) if a != answers[0]]
        record = QARecord(
            id=cell(mapping["id"]) if "id" in mapping else f"{source}/{split}/{row_index}",
            question=cell(mapping["question"]),
            source=source,
            split=split,
            subject=cell(mapping["subject"]) if "subject" in mapping else "",
            choices=choices,
            gold=_as_letter(cell(mapping["gold"])) if "gold" in mapping else None,
            answer=answer,
            aliases=aliases,
            metadata={k: _json_value(v) for k, v in row.items() if k not in mapped},
        )
        records.append(_checked(record, path, line, where, column_of=column_of))
    return _unique(_nonempty(records, path), path)


def _rows(path: Path, format: str, mapped: list[str]) -> Rows:
    """The file's rows as dicts of Python values, every mapped column checked against its header first."""
    if format == "jsonl":
        return ((line, "", row) for line, row in iter_jsonl_objects(path))
    if format == "disk":
        rows, columns = _disk_rows(path)
    elif not path.is_file():
        raise DataError(path, "no such file")
    elif format == "csv":
        rows, columns = _csv_rows(path)
    elif format == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as err:
            raise DataError(path, f"not a readable Parquet file ({err})") from None
        rows, columns = table.to_pylist(), table.column_names
    else:
        raise RaitError(f"unknown table format {format!r}; choose one of jsonl, csv, parquet, disk")
    for column in mapped:
        if column not in columns:
            raise DataError(path, f"column not in the {'header' if format == 'csv' else 'file'} "
                            f"(columns: {', '.join(columns)})", line=1 if format == "csv" else None, field=column)
    if format == "csv":  # a row's line, counting the header as line 1
        return ((index + 2, "", row) for index, row in enumerate(rows))
    return ((None, f"row {index + 1}: ", row) for index, row in enumerate(rows))


def _csv_rows(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every cell as text, as written: pandas' missing-value guessing off, so an option "None" or "NA" stays text."""
    import pandas as pd

    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except pd.errors.EmptyDataError:
        raise DataError(path, "no records (the file is empty)") from None
    except UnicodeDecodeError as err:
        raise DataError(path, f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    except pd.errors.ParserError as err:
        raise DataError(path, f"not valid CSV ({str(err).strip()})") from None
    frame = frame.astype(object).where(frame.notna(), None)  # a short row's missing cells: absent, not "nan"
    return frame.to_dict("records"), [str(c) for c in frame.columns]


def _disk_rows(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """A `datasets` `save_to_disk` folder of one split (a folder of several names them: pick one by its subfolder)."""
    from datasets import DatasetDict, load_from_disk

    if not path.is_dir():
        raise DataError(path, "no such folder (a dataset spec disk:FOLDER reads what datasets' save_to_disk wrote)")
    try:
        dataset = load_from_disk(str(path))
    except FileNotFoundError:
        raise DataError(path, "not a folder written by datasets' save_to_disk (no dataset_info.json / "
                        "dataset_dict.json)") from None
    if isinstance(dataset, DatasetDict):
        splits = list(dataset)
        raise DataError(path, f"holds the splits {', '.join(splits)}; name one, e.g. disk:{path / splits[0]}")
    return dataset.to_list(), list(dataset.column_names)


def _cell(row: dict[str, Any], column: str, path: Path, line: int | None, where: str = "") -> Any:
    """One cell; numbers become text (an answer such as 1969 is still text to match)."""
    if column not in row:
        raise DataError(path, f"{where}missing", line=line, field=column)
    value = row[column]
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _as_list(value: Any) -> Any:
    """A list cell: already a list (JSONL), a JSON array, or `|`-separated text (CSV)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return value  # left as text: the record check reports it as not a list
    return [part.strip() for part in text.split("|") if part.strip()]


def _json_value(value: Any) -> Any:
    """A metadata cell as JSON holds it: a Parquet date or bytes value becomes its text."""
    return json.loads(json.dumps(value, default=str))


def _as_letter(value: Any) -> Any:
    """A gold option as a letter: letters pass through, a 0-based index becomes its letter."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int) and 0 <= value < len(LETTERS):
        return LETTERS[value]
    return value.strip() if isinstance(value, str) else value


# ---------------------------------------------------------------------------- registry


# name -> (usage shown in errors, loader(arg, data_dir, **kwargs))
SOURCES: dict[str, tuple[str, Callable[..., list[QARecord]]]] = {
    "mmlu": ("mmlu:{dev,val,test}", lambda arg, data, **kw: load_mmlu(data / "mmlu", arg, **kw)),
    "arc-c": ("arc-c:{dev,test}", lambda arg, data, **kw: load_arc(data / "ARC" / "ARC-c" / f"ARC-Challenge-{arg.title()}.jsonl", **kw)),
    "arc-e": ("arc-e:{dev,test}", lambda arg, data, **kw: load_arc(data / "ARC" / "ARC-e" / f"ARC-Easy-{arg.title()}.jsonl", **kw)),
    "nq": ("nq:dev", lambda arg, data, **kw: load_nq(data / "nq" / "en" / f"{arg}.json", **kw)),
    "triviaqa": ("triviaqa:<path>", lambda arg, data, **kw: load_triviaqa(arg, **kw)),
    "jsonl": ("jsonl:<path> (records JSONL; any JSONL with columns)",
              lambda arg, data, columns=None, **kw: read_records(arg, **kw) if columns is None
              else load_generic(arg, columns, format="jsonl", **kw)),
    "csv": ("csv:<path> (with columns)",
            lambda arg, data, columns, **kw: load_generic(arg, columns, format="csv", **kw)),
    "parquet": ("parquet:<path> (with columns)",
                lambda arg, data, columns, **kw: load_generic(arg, columns, format="parquet", **kw)),
    "disk": ("disk:<path> (a datasets save_to_disk folder, with columns)",
             lambda arg, data, columns, **kw: load_generic(arg, columns, format="disk", **kw)),
    "facts": ("facts:{train,test_id,test_ood,train_wide,test_id_wide,validation_ood} (seed 0; `rait data facts` "
              "for other seeds)",
              lambda arg, data, **kw: _facts_split(arg, **kw)),
    "general": ("general:validation (hand-written general-knowledge questions, for choosing recipes only)",
                lambda arg, data, **kw: _general_split(arg)),
}
SOURCES_WITH_PATH = ("triviaqa", "jsonl", "csv", "parquet", "disk", "facts", "general")
MAPPED_SOURCES = ("jsonl", "csv", "parquet", "disk")  # the sources a column mapping (`columns`) applies to


def _facts_split(name: str, seed: int = 0) -> list[QARecord]:
    """One split of the templated facts pool, built in memory (it needs no data files)."""
    from rait.data.facts import facts_splits

    splits = facts_splits(seed)
    if name not in splits:
        raise RaitError(f"unknown facts split {name!r}; choose from {', '.join(splits)}")
    return splits[name]


def _general_split(name: str) -> list[QARecord]:
    from rait.data.general import load_general

    return load_general(name)


def source_path(spec: object) -> Path | None:
    """The file or folder a spec reads, resolved: a path, or the path of a source that names one (`jsonl:FILE`,
    `triviaqa:FILE`); None for a shipped dataset (`mmlu:test`, `facts:train`) or a path that does not exist. What
    an output is checked against (an output must never replace or lie inside what a command reads)."""
    if spec is None:
        return None
    name, colon, arg = str(spec).partition(":")
    if colon and name in SOURCES:
        if "<path>" not in SOURCES[name][0]:  # the sources that read a file say so in their usage
            return None
        spec = arg
    path = str(spec)  # empty for `jsonl:` alone, which its loader refuses
    return Path(os.path.realpath(path)) if path and Path(path).exists() else None


def spec_of(data: str) -> str:
    """A dataset spec from what a user wrote: a spec (`name:arg`) as it is, a bare path by its suffix (`.csv`,
    `.parquet`), a folder as a save_to_disk dataset, anything else as records JSONL."""
    if ":" in data:
        return data
    path = Path(data)
    format = "disk" if path.is_dir() else TABLE_FORMATS.get(path.suffix.lower(), "jsonl")
    return f"{format}:{data}"


def load_source(spec: str, data_dir: str | Path | None = None, columns: dict[str, Any] | None = None,
                **kwargs: Any) -> list[QARecord]:
    """Load `name:arg`, e.g. "mmlu:test", "arc-c:test", "nq:dev", "triviaqa:<path>", "jsonl:<path>",
    "csv:<path>", "parquet:<path>", "disk:<folder>".

    Built-in datasets resolve under `data_dir` (default `shared_data_dir()`); `columns` is the column mapping of
    `load_generic`, which csv, parquet and disk need and which makes jsonl read any JSONL; extra keyword
    arguments go to the loader (e.g. `mode="as_released"` for ARC, `subjects=[...]` for MMLU).
    """
    name, _, arg = spec.partition(":")
    known = "; ".join(usage for usage, _ in SOURCES.values())
    if name not in SOURCES:
        raise RaitError(f"unknown data source {spec!r}; known: {known}")
    usage, load = SOURCES[name]
    if not arg:
        raise RaitError(f"data source {spec!r} needs an argument: {usage}")
    if columns is not None and name not in MAPPED_SOURCES:
        raise SettingsError("columns", f"maps the columns of a {', '.join(MAPPED_SOURCES)} source, not of {spec!r}")
    if columns is None and name in MAPPED_SOURCES and name != "jsonl":  # named as a spec: `rait eval` has no --columns
        raise RaitError(f"{spec!r} needs a column mapping, e.g. {{question: q, answer: a}} (`columns:` beside "
                        "`data:` in a config, --columns for `rait data load`, which writes records any command reads)")
    if name in MAPPED_SOURCES:
        kwargs["columns"] = columns
    data = None if name in SOURCES_WITH_PATH else Path(data_dir) if data_dir else shared_data_dir()
    return load(arg, data, **kwargs)
