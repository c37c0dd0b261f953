"""Hostile input, as a new user would type it (issue 17): every case must end in one line on stderr that says
where and what (`error: ...`), exit status 2, no traceback, and nothing new on disk.

The cases run in-process through `rait.cli.main`: an exception that escapes the CLI's error handling fails the
test as it would print a traceback for a user; `test_no_case_prints_a_traceback_in_a_real_process` runs a
sample of them as real subprocesses and reads their stderr.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hostile import assert_refused, assert_refused_in_a_process, fill, jsonl

GOOD_RECORD = {"id": "o1", "question": "What is the capital of France?", "source": "facts", "split": "test",
               "answer": "Paris"}
OTHER_RECORD = {"id": "o2", "question": "Who wrote Hamlet?", "source": "facts", "split": "test",
                "answer": "Shakespeare"}


def _config(extra_track: str = "", top: str = "", track_name: str = "a", methods: str = "[cor_rait]") -> str:
    return (f"model: {{model}}\nmethods: {methods}\n{top}tracks:\n  - name: {track_name}\n"
            "    pool: {data: 'jsonl:{tmp}/pool.jsonl'}\n"
            "    test_sets: [{name: t, data: 'jsonl:{tmp}/pool.jsonl'}]\n" + extra_track)


# Files every case may use: a good pool, table and training set, and the bad ones the cases point at.
FILES = {
    "pool.jsonl": jsonl(GOOD_RECORD, OTHER_RECORD),
    "train.jsonl": jsonl(GOOD_RECORD, OTHER_RECORD),
    "table.jsonl": jsonl({"id": "o1", "task": "oeqa", "mu": 1.0, "sigma": 0.5},
                          {"id": "o2", "task": "oeqa", "mu": 0.0, "sigma": 0.5}),
    "stranger_table.jsonl": jsonl({"id": "zz", "task": "oeqa", "mu": 1.0, "sigma": 0.5}),
    "bad_json.jsonl": jsonl(GOOD_RECORD, '{"id": "x", "question": "q", '),
    "no_answer.jsonl": jsonl(GOOD_RECORD, {k: v for k, v in OTHER_RECORD.items() if k != "answer"}),
    "number_id.jsonl": jsonl(GOOD_RECORD, {**OTHER_RECORD, "id": 42}),
    "empty_alias.jsonl": jsonl(GOOD_RECORD, {**OTHER_RECORD, "aliases": [""]}),
    "bad_gold.jsonl": jsonl(GOOD_RECORD, {"id": "m", "question": "q", "source": "s", "split": "t",
                                           "choices": ["a", "b"], "gold": "C"}),
    "array_line.jsonl": jsonl(GOOD_RECORD, "[1, 2]"),
    "empty.jsonl": "",
    "a_file.txt": "not a folder\n",
}
BYTES = {"latin1.jsonl": jsonl(GOOD_RECORD).encode() + '{"id": "é"}\n'.encode("latin-1"),
         "truncated.parquet": b"PAR1\x15\x04\x15"}


def _training_rows(second_weight: float) -> str:
    from rait.prompts import training_example

    return jsonl({"id": "o1", "weight": 1.0, **training_example(_record(GOOD_RECORD), "refuse", "Paris")},
                  {"id": "o2", "weight": second_weight,
                   **training_example(_record(OTHER_RECORD), "refuse", "Shakespeare")})


def _record(row: dict):
    from rait.data import QARecord

    return QARecord(**row)


P, B, T, G, E = (["probe", "--model", "{model}", "--data", "{tmp}/pool.jsonl", "--out", "{tmp}/t.parquet"],
                 ["build", "--table", "{tmp}/table.jsonl", "--records", "{tmp}/pool.jsonl", "--out", "{tmp}/b"],
                 ["train", "--model", "{model}", "--data", "{tmp}/good_train.jsonl", "--out", "{tmp}/m"],
                 ["grads", "--model", "{model}", "--records", "{tmp}/pool.jsonl", "--out", "{tmp}/g"],
                 ["eval", "--model", "{model}", "--data", "{tmp}/pool.jsonl", "--out", "{tmp}/e"])
R = ["rehearse", "--model", "{model}", "--table", "{tmp}/table.jsonl", "--data", "{tmp}/pool.jsonl", "--out", "{tmp}/h"]
RUN = ["run", "{tmp}/c.yaml", "--out", "{tmp}/r"]

# (case id, argv, config text for {tmp}/c.yaml or None, fragments the one error line must hold)
CASES = [
    # records files, read by `rait data validate`
    ("records: broken JSON", ["data", "validate", "{tmp}/bad_json.jsonl"], None, ["bad_json.jsonl:2"]),
    ("records: missing answer", ["data", "validate", "{tmp}/no_answer.jsonl"], None, ["no_answer.jsonl:2", "'answer'"]),
    ("records: id of the wrong type", ["data", "validate", "{tmp}/number_id.jsonl"], None,
     ["number_id.jsonl:2", "'id'", "must be a string"]),
    ("records: empty alias", ["data", "validate", "{tmp}/empty_alias.jsonl"], None, ["empty_alias.jsonl:2", "'aliases'"]),
    ("records: gold not an option", ["data", "validate", "{tmp}/bad_gold.jsonl"], None, ["bad_gold.jsonl:2", "'gold'"]),
    ("records: a line that is not an object", ["data", "validate", "{tmp}/array_line.jsonl"], None, ["array_line.jsonl:2"]),
    ("records: bad UTF-8", ["data", "validate", "{tmp}/latin1.jsonl"], None, ["latin1.jsonl:2", "UTF-8"]),
    ("records: empty file", ["data", "validate", "{tmp}/empty.jsonl"], None, ["empty.jsonl", "empty"]),
    ("records: no such file", ["data", "validate", "{tmp}/nosuch.jsonl"], None, ["nosuch.jsonl"]),
    ("records: a folder", ["data", "validate", "{tmp}"], None, ["is a folder"]),
    # rait data load / split
    ("load: --limit 0", ["data", "load", "jsonl:{tmp}/pool.jsonl", "--out", "{tmp}/x.jsonl", "--limit", "0"], None, ["--limit"]),
    ("load: --limit -1", ["data", "load", "jsonl:{tmp}/pool.jsonl", "--out", "{tmp}/x.jsonl", "--limit", "-1"], None, ["--limit"]),
    ("load: unknown dataset", ["data", "load", "nosuch:dev", "--out", "{tmp}/x.jsonl"], None, ["nosuch"]),
    ("load: --out under a file", ["data", "load", "jsonl:{tmp}/pool.jsonl", "--out", "{tmp}/a_file.txt/x.jsonl"], None,
     ["--out", "a_file.txt", "not a folder"]),
    ("load: --out a folder", ["data", "load", "jsonl:{tmp}/pool.jsonl", "--out", "{tmp}"], None, ["--out", "is a folder"]),
    ("load: --arc-mode bogus", ["data", "load", "jsonl:{tmp}/pool.jsonl", "--out", "{tmp}/x.jsonl", "--arc-mode", "bogus"],
     None, ["--arc-mode", "bogus"]),
    ("load: bad UTF-8 source", ["data", "load", "jsonl:{tmp}/latin1.jsonl", "--out", "{tmp}/x.jsonl"], None,
     ["latin1.jsonl:2", "UTF-8"]),
    ("split: into its own folder", ["data", "split", "{tmp}/train.jsonl", "--out-dir", "{tmp}"], None, ["would overwrite"]),
    ("split: --test-size 0", ["data", "split", "{tmp}/pool.jsonl", "--out-dir", "{tmp}/s", "--test-size", "0"], None,
     ["--test-size"]),
    ("split: --test-size larger than the file", ["data", "split", "{tmp}/pool.jsonl", "--out-dir", "{tmp}/s",
                                                 "--test-size", "5"], None, ["--test-size"]),
    ("split: --out-dir a file", ["data", "split", "{tmp}/pool.jsonl", "--out-dir", "{tmp}/a_file.txt"], None,
     ["--out-dir", "not a folder"]),
    ("split: unknown option", ["data", "split", "{tmp}/pool.jsonl", "--out-dir", "{tmp}/s", "--bogus"], None, ["--bogus"]),
    # rait probe
    ("probe: --top-p 2", P + ["--top-p", "2"], None, ["--top-p"]),
    ("probe: --k 0", P + ["--k", "0"], None, ["--k"]),
    ("probe: --k 1", P + ["--k", "1"], None, ["k must be at least 2"]),
    ("probe: --temperature 0", P + ["--temperature", "0"], None, ["temperature"]),
    ("probe: --batch-size 0", P + ["--batch-size", "0"], None, ["--batch-size"]),
    ("probe: --shard-size 0", P + ["--shard-size", "0"], None, ["--shard-size"]),
    ("probe: --max-new-tokens 0", P + ["--max-new-tokens", "0"], None, ["--max-new-tokens"]),
    ("probe: --sample 0", P + ["--sample", "0"], None, ["--sample"]),
    ("probe: --prompt bogus", P + ["--prompt", "bogus"], None, ["prompt", "bogus"]),
    ("probe: --match-mode bogus", P + ["--match-mode", "bogus"], None, ["--match-mode", "bogus"]),
    ("probe: --backend (not offered: hf is the only backend)", P + ["--backend", "vllm"], None, ["--backend"]),
    ("probe: --device bogus", P + ["--device", "bogus"], None, ["--device", "bogus"]),
    ("probe: --device cuda without a GPU (CUDA)", P + ["--device", "cuda"], None, ["--device cuda", "no CUDA device"]),
    ("probe: --out with an unknown suffix", P[:-1] + ["{tmp}/t.txt"], None, ["--out", ".parquet or .jsonl"]),
    ("probe: --out under a file", P[:-1] + ["{tmp}/a_file.txt/t.parquet"], None, ["--out", "not a folder"]),
    ("probe: --model missing", ["probe", "--model", "{tmp}/nosuch", "--data", "{tmp}/pool.jsonl", "--out",
                                "{tmp}/t.parquet"], None, ["nosuch"]),
    ("probe: --data missing", ["probe", "--model", "{model}", "--data", "{tmp}/nosuch.jsonl", "--out", "{tmp}/t.parquet"],
     None, ["nosuch"]),
    ("probe: --data bad UTF-8", ["probe", "--model", "{model}", "--data", "{tmp}/latin1.jsonl", "--out",
                                 "{tmp}/t.parquet"], None, ["latin1.jsonl:2", "UTF-8"]),
    ("probe: --out over its pool", ["probe", "--model", "{model}", "--data", "{tmp}/pool.jsonl", "--out",
                                    "{tmp}/pool.jsonl"], None, ["would overwrite"]),
    ("probe: --k two", P + ["--k", "two"], None, ["--k", "valid integer"]),
    # rait build
    ("build: --tau 2", B + ["--tau", "2"], None, ["--tau"]),
    ("build: --idk-share 1.5", B + ["--idk-share", "1.5"], None, ["--idk-share"]),
    ("build: --n-total -4", B + ["--n-total", "-4"], None, ["--n-total"]),
    ("build: --dead-band 2", B + ["--dead-band", "2"], None, ["--dead-band"]),
    ("build: --method bogus", B + ["--method", "bogus"], None, ["bogus"]),
    ("build: --mode bogus", B + ["--mode", "bogus"], None, ["--mode", "bogus"]),
    ("build: --answer bogus", B + ["--answer", "bogus"], None, ["--answer", "bogus"]),
    ("build: --prompt bogus", B + ["--prompt", "bogus"], None, ["--prompt", "bogus"]),
    ("build: --weight-sign 0", B + ["--method", "grait", "--grads", "{tmp}", "--weight-sign", "0"], None,
     ["--weight-sign"]),
    ("build: --grait-rule bogus", B + ["--method", "grait", "--grads", "{tmp}", "--grait-rule", "bogus"], None,
     ["--grait-rule", "bogus"]),
    ("build: grait without --grads", B + ["--method", "grait"], None, ["--grads"]),
    ("build: craft without a flow", B + ["--method", "craft"], None, ["delta_mu"]),
    ("build: --table missing", ["build", "--table", "{tmp}/nosuch.jsonl", "--records", "{tmp}/pool.jsonl", "--out",
                                "{tmp}/b"], None, ["nosuch.jsonl"]),
    ("build: --table truncated parquet", ["build", "--table", "{tmp}/truncated.parquet", "--records",
                                          "{tmp}/pool.jsonl", "--out", "{tmp}/b"], None, ["truncated.parquet"]),
    ("build: table of other questions", ["build", "--table", "{tmp}/stranger_table.jsonl", "--records",
                                         "{tmp}/pool.jsonl", "--out", "{tmp}/b"], None, ["stranger_table.jsonl", "'zz'"]),
    ("build: --records bad", ["build", "--table", "{tmp}/table.jsonl", "--records", "{tmp}/no_answer.jsonl",
                              "--out", "{tmp}/b"], None, ["no_answer.jsonl:2"]),
    ("build: --out a file", B[:-1] + ["{tmp}/a_file.txt"], None, ["--out", "not a folder"]),
    # rait rehearse
    ("rehearse: --target bogus", R + ["--target", "bogus"], None, ["--target", "bogus"]),
    ("rehearse: --mu-min 2", R + ["--mu-min", "2"], None, ["--mu-min"]),
    ("rehearse: --n 0", R + ["--n", "0"], None, ["--n"]),
    ("rehearse: table of other questions", ["rehearse", "--model", "{model}", "--table", "{tmp}/stranger_table.jsonl",
                                            "--data", "{tmp}/pool.jsonl", "--out", "{tmp}/h"], None,
     ["stranger_table.jsonl", "'zz'"]),
    ("rehearse: --out a file", R[:-1] + ["{tmp}/a_file.txt"], None, ["--out", "not a folder"]),
    # rait train
    ("train: --lora-r 0", T + ["--lora-r", "0"], None, ["--lora-r"]),
    ("train: --epochs 0", T + ["--epochs", "0"], None, ["epochs"]),
    ("train: --lr -1", T + ["--lr", "-1"], None, ["learning rate"]),
    ("train: --lora-dropout 1.5", T + ["--lora-dropout", "1.5"], None, ["dropout"]),
    ("train: --batch-size 0", T + ["--batch-size", "0"], None, ["--batch-size"]),
    ("train: --method bogus", T + ["--method", "bogus"], None, ["bogus"]),
    ("train: --target-modules nosuch", T + ["--target-modules", "nosuch"], None, ["--target-modules", "nosuch"]),
    ("train: negative weight", ["train", "--model", "{model}", "--data", "{tmp}/negative_weight.jsonl", "--out",
                                "{tmp}/m"], None, ["negative_weight.jsonl:2", "weight"]),
    ("train: --data empty", ["train", "--model", "{model}", "--data", "{tmp}/empty.jsonl", "--out", "{tmp}/m"], None,
     ["empty.jsonl"]),
    ("train: --data missing", ["train", "--model", "{model}", "--data", "{tmp}/nosuch.jsonl", "--out", "{tmp}/m"], None,
     ["nosuch.jsonl"]),
    ("train: --out a file", T[:-1] + ["{tmp}/a_file.txt"], None, ["--out", "not a folder"]),
    # rait grads
    ("grads: --batch-size 0", G + ["--batch-size", "0"], None, ["--batch-size"]),
    ("grads: --dims abc", G + ["--dims", "abc"], None, ["--dims", "abc"]),
    ("grads: --dims 0", G + ["--dims", "0"], None, ["--dims"]),
    ("grads: --gradient-type bogus", G + ["--gradient-type", "bogus"], None, ["bogus"]),
    ("grads: --projector bogus", G + ["--projector", "bogus"], None, ["bogus"]),
    ("grads: --n-rehearsal 0", G + ["--n-rehearsal", "0"], None, ["--n-rehearsal"]),
    ("grads: --records missing", ["grads", "--model", "{model}", "--records", "{tmp}/nosuch.jsonl", "--out", "{tmp}/g"],
     None, ["nosuch.jsonl"]),
    # rait eval
    ("eval: --max-new-tokens 0", E + ["--max-new-tokens", "0"], None, ["--max-new-tokens"]),
    ("eval: --n-boot 0", E + ["--n-boot", "0"], None, ["--n-boot"]),
    ("eval: --prompt bogus", E + ["--prompt", "bogus"], None, ["--prompt", "bogus"]),
    ("eval: --refusal-mode bogus", E + ["--refusal-mode", "bogus"], None, ["--refusal-mode", "bogus"]),
    ("eval: --match-mode bogus", E + ["--match-mode", "bogus"], None, ["--match-mode", "bogus"]),
    ("eval: --sample 0", E + ["--sample", "0"], None, ["--sample"]),
    ("eval: --stratify a field no record has", E + ["--sample", "1", "--stratify", "nosuch"], None, ["nosuch"]),
    ("eval: --reference without outcomes", E + ["--reference", "{tmp}"], None, ["outcomes.jsonl", "no such file"]),
    ("eval: --model missing", ["eval", "--model", "{tmp}/nosuch", "--data", "{tmp}/pool.jsonl", "--out", "{tmp}/e"],
     None, ["nosuch"]),
    ("eval: --data unknown dataset", ["eval", "--model", "{model}", "--data", "nosuch:dev", "--out", "{tmp}/e"], None,
     ["nosuch"]),
    # rait run: the config
    ("run: no such config", ["run", "{tmp}/nosuch.yaml"], None, ["nosuch.yaml"]),
    ("run: YAML syntax", RUN, "tracks: [\n", ["c.yaml"]),
    ("run: a list at the top", RUN, "- 1\n- 2\n", ["c.yaml"]),
    ("run: unknown key", RUN, _config(top="epochz: 3\n"), ["c.yaml:3", "epochz"]),
    ("run: no methods", RUN, _config(methods="[]"), ["c.yaml:2", "methods"]),
    ("run: unknown method", RUN, _config(methods="[bogus]"), ["c.yaml:2", "bogus"]),
    ("run: two tracks with one name", RUN, _config() + "  - name: a\n    pool: {data: 'jsonl:{tmp}/pool.jsonl'}\n"
     "    test_sets: [{name: t, data: 'jsonl:{tmp}/pool.jsonl'}]\n", ["c.yaml:7", "name", "'a'"]),
    ("run: two test sets with one name", RUN, _config().replace(
        "test_sets: [{name: t, data: 'jsonl:{tmp}/pool.jsonl'}]",
        "test_sets: [{name: t, data: 'jsonl:{tmp}/pool.jsonl'}, {name: t, data: 'nq:dev'}]"), ["c.yaml", "'t'"]),
    ("run: a track name that is a path", RUN, _config(track_name="'../x'"), ["c.yaml:4", "name"]),
    ("run: no tracks", RUN, "model: {model}\nmethods: [cor_rait]\ntracks: []\n", ["c.yaml:3", "tracks"]),
    ("run: no test sets", RUN, _config().replace("test_sets: [{name: t, data: 'jsonl:{tmp}/pool.jsonl'}]",
                                                 "test_sets: []"), ["c.yaml:6", "test_sets"]),
    ("run: n_total -4", RUN, _config("    build: {n_total: -4}\n"), ["c.yaml:7", "n_total"]),
    ("run: k 2.5", RUN, _config("    probe: {k: 2.5}\n"), ["c.yaml:7", "k"]),
    ("run: k two", RUN, _config("    probe: {k: two}\n"), ["c.yaml:7", "k", "'two'"]),
    ("run: unknown domain", RUN, _config().replace("{name: t, data:", "{name: t, domain: MID, data:"),
     ["c.yaml:6", "domain", "MID"]),
    ("run: n_boot 0", RUN, _config(top="eval: {n_boot: 0}\n"), ["c.yaml:3", "n_boot"]),
    ("run: tau 2", RUN, _config("    build: {tau: 2}\n"), ["c.yaml:7", "tau"]),
    ("run: build mode bogus", RUN, _config("    build: {mode: bogus}\n"), ["c.yaml:7", "mode", "'bogus'"]),
    ("run: probe match_mode bogus", RUN, _config("    probe: {match_mode: bogus}\n"), ["c.yaml:7", "match_mode", "'bogus'"]),
    ("run: pool sample 0", RUN, _config().replace("pool.jsonl'}\n    test", "pool.jsonl', sample: 0}\n    test", 1),
     ["c.yaml:5", "sample"]),
    ("run: seeds repeated", RUN, _config(top="seeds: [0, 0]\n"), ["c.yaml:3", "seeds"]),
    ("run: eval prompt bogus", RUN, _config(top="eval: {prompts: [bogus]}\n"), ["c.yaml:3", "bogus"]),
    ("run: model missing", RUN, _config().replace("model: {model}", "model: {tmp}/nosuch"), ["nosuch"]),
    ("run: pool with a bad record", RUN, _config().replace("{tmp}/pool.jsonl'}\n    test",
                                                           "{tmp}/number_id.jsonl'}\n    test", 1),
     ["number_id.jsonl:2", "'id'"]),
    ("run: --out a file", ["run", "{tmp}/c.yaml", "--out", "{tmp}/a_file.txt"], _config(), ["--out", "not a folder"]),
]


@pytest.fixture
def workspace(tmp_path, tiny_model_dir):
    for name, text in FILES.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    for name, data in BYTES.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "good_train.jsonl").write_text(_training_rows(1.0), encoding="utf-8")
    (tmp_path / "negative_weight.jsonl").write_text(_training_rows(-1.0), encoding="utf-8")
    return tmp_path, tiny_model_dir


def test_the_suite_holds_at_least_sixty_distinct_cases():
    assert len(CASES) >= 60 and len({case[0] for case in CASES}) == len(CASES)


def _params():
    """Every case; asking for CUDA is hostile only where there is none."""
    import torch

    for name, *rest in CASES:
        marks = [pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")] if "CUDA" in name else []
        yield pytest.param(*rest, id=name, marks=marks)


@pytest.mark.parametrize("argv, config, fragments", list(_params()))
def test_hostile_input_is_one_line_exit_2_and_writes_nothing(workspace, capfd, argv, config, fragments):
    tmp, model = workspace
    if config is not None:
        (tmp / "c.yaml").write_text(fill(config, tmp, model), encoding="utf-8")
    assert_refused([fill(a, tmp, model) for a in argv], tmp, capfd, [fill(f, tmp, model) for f in fragments])


SUBPROCESS_SAMPLE = ["records: bad UTF-8", "probe: --top-p 2", "probe: --match-mode bogus", "grads: --dims abc",
                     "train: --target-modules nosuch", "run: two tracks with one name", "split: unknown option"]


@pytest.mark.parametrize("name", SUBPROCESS_SAMPLE)
def test_no_case_prints_a_traceback_in_a_real_process(workspace, name):
    tmp, model = workspace
    _, argv, config, _ = next(case for case in CASES if case[0] == name)
    if config is not None:
        (tmp / "c.yaml").write_text(fill(config, tmp, model), encoding="utf-8")
    assert_refused_in_a_process([fill(a, tmp, model) for a in argv], tmp)


def test_an_output_in_a_folder_this_user_cannot_write_is_refused_before_any_work(workspace, capfd, monkeypatch):
    """Running as root, a read-only folder is still writable; the check asks `os.access`, so ask it as a user
    without write permission would be answered."""
    import rait.cli

    tmp, _ = workspace
    monkeypatch.setattr(rait.cli.os, "access", lambda path, mode: Path(path) != tmp)
    assert_refused(["data", "load", f"jsonl:{tmp}/pool.jsonl", "--out", f"{tmp}/x.jsonl"], tmp, capfd,
                   [f"{tmp} is not writable"])
