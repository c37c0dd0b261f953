"""Hostile input to `rait eval`, `rait rehearse`, `rait pik` and `rait build` found by an outside sweep (issue 34):
as in tests/test_hostile.py, every case must end in one `error: ...` line that says where and what, exit status 2,
no traceback, nothing new on disk and every input byte-identical, and all of it before any work.
"""

from __future__ import annotations

import json

import pytest

from hostile import assert_refused, assert_refused_in_a_process, fill, jsonl
from test_hostile import GOOD_RECORD, OTHER_RECORD


def _oeqa_row(qid: str, mu: float, sigma: float = 0.5) -> dict:
    return {"id": qid, "task": "oeqa", "mu": mu, "sigma": sigma, "samples": ["x"] * 2,
            "sample_correct": [mu >= 0.5] * 2, "sample_refused": [False] * 2}


def _mcqa_row(qid: str, mu: float) -> dict:
    return {"id": qid, "task": "mcqa", "mu": mu, "sigma": -0.3, "option_probs": [0.5, 0.5], "gold_prob": 0.999}


def _with_metadata(metadata) -> dict:
    return {**OTHER_RECORD, "metadata": metadata}


FILES = {
    "pool.jsonl": jsonl(GOOD_RECORD, OTHER_RECORD),
    "table.jsonl": jsonl(_oeqa_row("o1", 1.0, 1.0), _oeqa_row("o2", 0.0)),
    "mcqa_table.jsonl": jsonl(_mcqa_row("o1", 0.9), _mcqa_row("o2", 0.1)),
    "wider_table.jsonl": jsonl(_oeqa_row("o1", 1.0), _oeqa_row("o2", 0.0), _oeqa_row("o3", 0.0)),
    "stranger_table.jsonl": jsonl(_oeqa_row("zz", 1.0)),
    "inf_table.jsonl": jsonl(_oeqa_row("o1", 1.0), _oeqa_row("o2", 0.0, float("inf"))),
    "unknown_table.jsonl": jsonl(_oeqa_row("o1", 0.4), _oeqa_row("o2", 0.0)),
    "garbled_table.jsonl": jsonl(_oeqa_row("o1", 1.0, 1.0), _oeqa_row("o2", 0.0)),
    "bare_table.jsonl": jsonl(_oeqa_row("o1", 1.0, 1.0), _oeqa_row("o2", 0.0)),
    "mode_fuzzy.jsonl": jsonl(GOOD_RECORD, _with_metadata({"match_mode": "fuzzy"})),
    "mode_number.jsonl": jsonl(GOOD_RECORD, _with_metadata({"match_mode": 3})),
    "conf_text.jsonl": jsonl({"id": "o1", "confidence": 0.5}, {"id": "o2", "confidence": "high"}),
    "conf_nan.jsonl": jsonl({"id": "o1", "confidence": 0.5}, '{"id": "o2", "confidence": NaN}'),
    "conf_big.jsonl": jsonl({"id": "o1", "confidence": 0.5}, {"id": "o2", "confidence": 1.5}),
    "conf_negative.jsonl": jsonl({"id": "o1", "confidence": 0.5}, {"id": "o2", "confidence": -0.1}),
    "conf_bool.jsonl": jsonl({"id": "o1", "confidence": 0.5}, {"id": "o2", "confidence": True}),
    "conf_no_id.jsonl": jsonl({"id": "o1", "confidence": 0.5}, {"confidence": 0.5}),
    "conf_repeated.jsonl": jsonl({"id": "o1", "confidence": 0.5}, {"id": "o1", "confidence": 0.6},
                                  {"id": "o2", "confidence": 0.5}),
    "conf_missing.jsonl": jsonl({"id": "o1", "confidence": 0.5}, {"id": "o2"}),
    "ref_other/outcomes.jsonl": jsonl({"id": "zz", "outcome": "correct"}, {"id": "yy", "outcome": "wrong"}),
    "ref_part/outcomes.jsonl": jsonl({"id": "o1", "outcome": "correct"}),
    "ref_bad/outcomes.jsonl": jsonl({"id": "o1", "outcome": "correct"}, {"id": "o2", "outcome": "maybe"}),
    "ref_no_id/outcomes.jsonl": jsonl({"id": "o1", "outcome": "correct"}, {"outcome": "wrong"}),
    "a_folder/x.txt": "",
    "scores.jsonl/x.txt": "",
}

E = ["eval", "--model", "{model}", "--data", "{tmp}/pool.jsonl", "--out", "{tmp}/e"]
R = ["rehearse", "--model", "{model}", "--data", "{tmp}/pool.jsonl", "--out", "{tmp}/h", "--table"]
K = ["pik", "--model", "{model}", "--records", "{tmp}/pool.jsonl", "--items", "{tmp}/pool.jsonl", "--out",
     "{tmp}/p.jsonl", "--table"]
B = ["build", "--table", "{tmp}/table.jsonl", "--records", "{tmp}/pool.jsonl", "--out", "{tmp}/b"]

# (case id, argv, fragments the one error line must hold)
CASES = [
    # rait eval: a record's metadata, checked where records are read
    ("eval: unknown metadata match_mode", ["eval", "--model", "{model}", "--data", "{tmp}/mode_fuzzy.jsonl", "--out",
                                           "{tmp}/e"], ["mode_fuzzy.jsonl:2", "match_mode", "'fuzzy'"]),
    ("eval: metadata match_mode a number", ["eval", "--model", "{model}", "--data", "jsonl:{tmp}/mode_number.jsonl",
                                            "--out", "{tmp}/e"], ["mode_number.jsonl:2", "match_mode", "3"]),
    ("validate: unknown metadata match_mode", ["data", "validate", "{tmp}/mode_fuzzy.jsonl"],
     ["mode_fuzzy.jsonl:2", "match_mode"]),
    # rait eval --confidence
    ("eval: --confidence a folder", E + ["--confidence", "{tmp}/a_folder"], ["--confidence", "a_folder", "folder"]),
    ("eval: --confidence a folder named .jsonl", E + ["--confidence", "{tmp}/scores.jsonl"],
     ["--confidence", "scores.jsonl", "folder"]),
    ("eval: --confidence missing", E + ["--confidence", "{tmp}/nosuch.jsonl"], ["--confidence", "nosuch.jsonl"]),
    ("eval: --confidence text", E + ["--confidence", "{tmp}/conf_text.jsonl"],
     ["conf_text.jsonl:2", "'confidence'", "'high'"]),
    ("eval: --confidence NaN", E + ["--confidence", "{tmp}/conf_nan.jsonl"], ["conf_nan.jsonl:2", "'confidence'", "nan"]),
    ("eval: --confidence above 1", E + ["--confidence", "{tmp}/conf_big.jsonl"],
     ["conf_big.jsonl:2", "'confidence'", "1.5"]),
    ("eval: --confidence below 0", E + ["--confidence", "{tmp}/conf_negative.jsonl"],
     ["conf_negative.jsonl:2", "'confidence'", "-0.1"]),
    ("eval: --confidence true", E + ["--confidence", "{tmp}/conf_bool.jsonl"], ["conf_bool.jsonl:2", "'confidence'"]),
    ("eval: --confidence row without id", E + ["--confidence", "{tmp}/conf_no_id.jsonl"], ["conf_no_id.jsonl:2", "'id'"]),
    ("eval: --confidence id twice", E + ["--confidence", "{tmp}/conf_repeated.jsonl"],
     ["conf_repeated.jsonl:2", "'id'", "'o1'"]),
    ("eval: --confidence row without confidence", E + ["--confidence", "{tmp}/conf_missing.jsonl"],
     ["conf_missing.jsonl:2", "'confidence'"]),
    ("eval: --confidence a table with sigma inf", E + ["--confidence", "{tmp}/inf_table.jsonl"],
     ["inf_table.jsonl:2", "'sigma'"]),
    ("eval: --confidence an MCQA table", E + ["--confidence", "{tmp}/mcqa_table.jsonl"],
     ["mcqa_table.jsonl:1", "'task'", "mcqa"]),
    ("eval: --confidence of other items", E + ["--confidence", "{tmp}/stranger_table.jsonl"],
     ["stranger_table.jsonl", "'o1'"]),
    # rait eval --reference
    ("eval: --reference over other items", E + ["--reference", "{tmp}/ref_other"],
     ["--reference", "ref_other", "other items", "'o1'"]),
    ("eval: --reference over part of the items", E + ["--reference", "{tmp}/ref_part"],
     ["--reference", "ref_part", "'o2'"]),
    ("eval: --reference with an unknown outcome", E + ["--reference", "{tmp}/ref_bad"],
     ["ref_bad/outcomes.jsonl:2", "'outcome'", "'maybe'"]),
    ("eval: --reference row without id", E + ["--reference", "{tmp}/ref_no_id"], ["ref_no_id/outcomes.jsonl:2", "'id'"]),
    ("eval: --reference a file", E + ["--reference", "{tmp}/pool.jsonl"], ["--reference", "pool.jsonl", "folder"]),
    # rait rehearse
    ("rehearse: MCQA table for an open-QA pool", R + ["{tmp}/mcqa_table.jsonl"],
     ["mcqa_table.jsonl:1", "'task'", "mcqa", "oeqa"]),
    ("rehearse: table without its manifest", R + ["{tmp}/bare_table.jsonl"],
     ["bare_table.jsonl", "manifest", "missing"]),
    ("rehearse: garbled manifest", R + ["{tmp}/garbled_table.jsonl"], ["garbled_table.jsonl.manifest.json"]),
    ("rehearse: table of a wider pool", R + ["{tmp}/wider_table.jsonl"], ["wider_table.jsonl", "'o3'"]),
    ("rehearse: sigma inf", R + ["{tmp}/inf_table.jsonl"], ["inf_table.jsonl:2", "'sigma'"]),
    ("rehearse: --table a folder", R + ["{tmp}/a_folder"], ["a_folder", "folder"]),
    # rait pik
    ("pik: table of another pool", K + ["{tmp}/stranger_table.jsonl"], ["stranger_table.jsonl:1", "'zz'"]),
    ("pik: table of a wider pool", K + ["{tmp}/wider_table.jsonl"], ["wider_table.jsonl", "'o3'"]),
    ("pik: MCQA table", K + ["{tmp}/mcqa_table.jsonl"], ["mcqa_table.jsonl:1", "'task'", "mcqa"]),
    ("pik: sigma inf", K + ["{tmp}/inf_table.jsonl"], ["inf_table.jsonl:2", "'sigma'"]),
    ("pik: --tau 1, no known question", K + ["{tmp}/unknown_table.jsonl", "--tau", "1"],
     ["--tau", "unknown at τ = 1"]),
    ("pik: --tau 0, no unknown question", K + ["{tmp}/table.jsonl", "--tau", "0"], ["--tau", "known at τ = 0"]),
    ("pik: --tau nan", K + ["{tmp}/table.jsonl", "--tau", "nan"], ["--tau"]),
    ("pik: --out over its table", ["pik", "--model", "{model}", "--records", "{tmp}/pool.jsonl", "--items",
                                   "{tmp}/pool.jsonl", "--out", "{tmp}/table.jsonl", "--table", "{tmp}/table.jsonl"],
     ["would overwrite"]),
    ("pik: --table a folder", K + ["{tmp}/a_folder"], ["a_folder", "folder"]),
    # rait build
    ("build: --table a folder", ["build", "--table", "{tmp}/a_folder", "--records", "{tmp}/pool.jsonl", "--out",
                                 "{tmp}/b"], ["a_folder", "folder"]),
    ("build: --refusal ''", B + ["--refusal", ""], ["--refusal", "empty refusal"]),
    ("build: --refusal blank", B + ["--refusal", "  "], ["--refusal", "empty refusal"]),
    ("build: a repeated --method", B + ["--method", "cor_rait", "--method", "cor_rait"],
     ["--method", "'cor_rait'", "twice"]),
    ("build: a --method repeated by its alias", B + ["--method", "vanilla", "--method", "van_tuning"],
     ["--method", "'van_tuning'", "twice"]),
    ("build: --crss-model nosuch", B + ["--crss-model", "{tmp}/nosuch"], ["--crss-model", "nosuch"]),
    ("build: --crss-model not a model", B + ["--crss-model", "{tmp}/a_folder"], ["--crss-model", "a_folder"]),
    ("build: MCQA table for an open-QA pool", ["build", "--table", "{tmp}/mcqa_table.jsonl", "--records",
                                               "{tmp}/pool.jsonl", "--out", "{tmp}/b"],
     ["mcqa_table.jsonl:1", "'task'", "mcqa"]),
    ("build: sigma inf", ["build", "--table", "{tmp}/inf_table.jsonl", "--records", "{tmp}/pool.jsonl", "--out",
                          "{tmp}/b"], ["inf_table.jsonl:2", "'sigma'"]),
]


@pytest.fixture
def workspace(tmp_path, tiny_model_dir):
    from rait.models import model_fingerprint

    for name, text in FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    probe = {"stage": "probe", "task": "oeqa", "settings": {"k": 2}, "model": model_fingerprint(tiny_model_dir)}
    for name in ("table", "mcqa_table", "wider_table", "inf_table"):
        manifest = {**probe, "task": "mcqa" if name.startswith("mcqa") else "oeqa"}
        (tmp_path / f"{name}.jsonl.manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (tmp_path / "garbled_table.jsonl.manifest.json").write_text('{"stage": "pro', encoding="utf-8")
    return tmp_path, tiny_model_dir


def test_the_cases_are_distinct():
    assert len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize("argv, fragments", [pytest.param(*rest, id=name) for name, *rest in CASES])
def test_hostile_input_is_one_line_exit_2_before_any_work(workspace, capfd, monkeypatch, argv, fragments):
    import rait.models.loading

    tmp, model = workspace

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was refused")

    monkeypatch.setattr(rait.models.loading.AutoModelForCausalLM, "from_pretrained", no_loading)
    assert_refused([fill(a, tmp, model) for a in argv], tmp, capfd, [fill(f, tmp, model) for f in fragments])


SUBPROCESS_SAMPLE = ["eval: --confidence NaN", "rehearse: table without its manifest", "build: --crss-model nosuch"]


@pytest.mark.parametrize("name", SUBPROCESS_SAMPLE)
def test_no_case_prints_a_traceback_in_a_real_process(workspace, name):
    tmp, model = workspace
    _, argv, _ = next(case for case in CASES if case[0] == name)
    assert_refused_in_a_process([fill(a, tmp, model) for a in argv], tmp)


def test_a_reference_over_more_items_serves_in_the_order_of_the_items(tmp_path):
    """A reference run of the whole set serves a sample of it; its rows come back in the order of the items."""
    from rait.evaluate.suite import read_reference

    (tmp_path / "outcomes.jsonl").write_text(jsonl(*({"id": i, "outcome": o} for i, o in
                                                      (("o3", "wrong"), ("o2", "refused"), ("o1", "correct")))))
    assert [row["outcome"] for row in read_reference(tmp_path, ["o1", "o2"])] == ["correct", "refused"]


def test_a_confidence_table_keeps_a_sigma_rounded_just_above_one(tmp_path):
    """k identical samples give σ = 1 up to rounding (`rait.probe.measures.mean_pairwise_cosine`)."""
    from rait.evaluate.abstain import read_confidence

    import pandas as pd

    path = tmp_path / "table.parquet"  # Parquet keeps every bit of the float
    pd.DataFrame([_oeqa_row("o1", 1.0, 1.0000000000000002), _oeqa_row("o2", 0.0, 0.25)]).to_parquet(path)
    assert read_confidence(path, ["o2", "o1"]) == [0.25, 1.0000000000000002]
