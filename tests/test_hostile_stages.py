"""Hostile input to the stage commands found by an outside sweep (issue 34, part 3): settings out of range (nan,
inf, a count far beyond any use, an option of another objective), a tampered probe work folder, and an
environment the default model cannot live in. Each case, as in tests/test_hostile.py, must end in exit status 2
and one `error:` line that says where and what, before any work: nothing new on disk, the inputs unchanged.
"""

from __future__ import annotations

import pytest

from hostile import assert_refused, assert_refused_in_a_process, fill, jsonl
from test_hostile import OTHER_RECORD, workspace  # noqa: F401 (the fixture: tests/test_hostile.py's files)

P = ["probe", "--model", "{model}", "--data", "{tmp}/pool.jsonl", "--out", "{tmp}/t.parquet"]
T = ["train", "--model", "{model}", "--data", "{tmp}/good_train.jsonl", "--out", "{tmp}/m"]
R = ["rehearse", "--model", "{model}", "--table", "{tmp}/table.jsonl", "--data", "{tmp}/pool.jsonl", "--out", "{tmp}/h"]
E = ["eval", "--model", "{model}", "--data", "{tmp}/pool.jsonl", "--out", "{tmp}/e"]
LOAD = ["data", "load", "jsonl:{tmp}/pool.jsonl", "--out", "{tmp}/x.jsonl"]
SPLIT = ["data", "split", "{tmp}/pool.jsonl", "--out-dir", "{tmp}/s"]


def _work_file(tmp):
    (tmp / "t.parquet.work").write_text("garbage\n")


def _run_json(data: bytes):
    def setup(tmp):
        (tmp / "t.parquet.work").mkdir()
        (tmp / "t.parquet.work" / "run.json").write_bytes(data)
    return setup


def _manifest_folder(tmp):
    (tmp / "t.parquet.manifest.json").mkdir()


# (case id, argv, what to put in the workspace first or None, fragments the one error line must hold)
CASES = [
    # rait probe: every float finite and in its range, every count bounded
    ("probe: --top-p 0", P + ["--top-p", "0"], None, ["--top-p", "got 0.0"]),
    ("probe: --top-p nan", P + ["--top-p", "nan"], None, ["--top-p", "nan"]),
    ("probe: --temperature inf", P + ["--temperature", "inf"], None, ["--temperature", "inf"]),
    ("probe: --temperature nan", P + ["--temperature", "nan"], None, ["--temperature", "nan"]),
    ("probe: --temperature 1e-30", P + ["--temperature", "1e-30"], None, ["--temperature", "1e-30"]),
    ("probe: --k 100000000", P + ["--k", "100000000"], None, ["--k", "between 1 and 1000", "100000000"]),
    ("probe: --max-new-tokens 100000000", P + ["--max-new-tokens", "100000000"], None, ["--max-new-tokens"]),
    ("probe: --seed -1", P + ["--seed", "-1"], None, ["--seed", "-1"]),
    ("probe: --seed 2^40", P + ["--seed", str(2**40)], None, ["--seed", str(2**40)]),
    ("probe: --sample larger than the pool", P + ["--sample", "5"], None,
     ["--sample", "5 is more than the 2 records"]),
    # rait probe: its work folder and manifest
    ("probe: a file where the work folder goes", P, _work_file, ["t.parquet.work", "is a file"]),
    ("probe: a garbage run.json", P, _run_json(b"garbage\n"), ["t.parquet.work/run.json", "delete the folder"]),
    ("probe: a run.json that is a list", P, _run_json(b"[1, 2]\n"), ["t.parquet.work/run.json"]),
    ("probe: a run.json in Latin-1", P, _run_json('{"a": "\xe9"}'.encode("latin-1")), ["run.json", "utf-8"]),
    ("probe: a folder where the manifest goes", P, _manifest_folder, ["--out", "t.parquet.manifest.json", "is a folder"]),
    # rait train (and rehearse, which shares its options)
    ("train: --lr nan", T + ["--lr", "nan"], None, ["--lr", "learning rate", "nan"]),
    ("train: --lr inf", T + ["--lr", "inf"], None, ["--lr", "learning rate", "inf"]),
    ("train: --epochs inf", T + ["--epochs", "inf"], None, ["--epochs", "inf"]),
    ("train: --epochs nan", T + ["--epochs", "nan"], None, ["--epochs", "nan"]),
    ("train: --max-steps 0", T + ["--max-steps", "0"], None, ["--max-steps", "got 0"]),
    ("train: --max-steps -5", T + ["--max-steps", "-5"], None, ["--max-steps", "-5"]),
    ("train: --seed -1", T + ["--seed", "-1"], None, ["--seed", "-1"]),
    ("train: --num-generations with SFT", T + ["--num-generations", "0"], None, ["--num-generations", "GRPO"]),
    ("train: --start-from with SFT", T + ["--start-from", "{tmp}"], None, ["--start-from", "GRPO"]),
    ("train: --max-completion-length with SFT", T + ["--max-completion-length", "8"], None,
     ["--max-completion-length", "GRPO"]),
    ("train: --refusal-mode with DPO", T + ["--objective", "dpo", "--refusal-mode", "paper"], None,
     ["--refusal-mode", "GRPO", "dpo"]),
    ("train: --beta with SFT", T + ["--beta", "0.1"], None, ["--beta", "DPO or GRPO"]),
    ("train: grpo --beta inf", ["train", "--objective", "grpo", "--model", "{model}", "--data", "{tmp}/pool.jsonl",
                                "--out", "{tmp}/m", "--beta", "inf"], None, ["--beta", "inf"]),
    ("train: --lora-r 100000000", T + ["--lora-r", "100000000"], None, ["--lora-r", "100000000"]),
    ("rehearse: --lr nan", R + ["--lr", "nan"], None, ["--lr", "nan"]),
    ("grads: --warmup-epochs inf", ["grads", "--model", "{model}", "--records", "{tmp}/pool.jsonl", "--out", "{tmp}/g",
                                    "--warmup-epochs", "inf"], None, ["--warmup-epochs", "inf"]),
    # rait data
    ("split: --test-size inf", SPLIT + ["--test-size", "inf"], None, ["--test-size", "inf"]),
    ("split: --test-size nan", SPLIT + ["--test-size", "nan"], None, ["--test-size"]),
    ("split: --test-size 1.5", SPLIT + ["--test-size", "1.5"], None, ["--test-size", "1.5", "whole count"]),
    ("split: --seed -1", SPLIT + ["--seed", "-1"], None, ["--seed", "-1"]),
    ("load: --sample larger than the data", LOAD + ["--sample", "5"], None, ["--sample", "5 is more than the 2"]),
    ("load: --limit with --sample", LOAD + ["--limit", "1", "--sample", "1"], None, ["--limit", "--sample"]),
    ("load: --seed -1", LOAD + ["--seed", "-1"], None, ["--seed", "-1"]),
    ("facts: --out a file", ["data", "facts", "--out", "{tmp}/a_file.txt"], None, ["--out", "a_file.txt", "not a folder"]),
    ("facts: --out under a file", ["data", "facts", "--out", "{tmp}/a_file.txt/f"], None, ["--out", "not a folder"]),
    ("facts: --seed -1", ["data", "facts", "--out", "{tmp}/f", "--seed", "-1"], None, ["--seed", "-1"]),
    ("eval: --sample larger than the data", E + ["--sample", "3"], None, ["--sample", "3 is more than the 2"]),
]


def _refused(argv, tmp, model, capfd, fragments) -> None:
    assert_refused([fill(a, tmp, model) for a in argv], tmp, capfd, [fill(f, tmp, model) for f in fragments])


@pytest.mark.parametrize("argv, setup, fragments", [pytest.param(*rest, id=name) for name, *rest in CASES])
def test_hostile_stage_input_is_one_line_exit_2_and_writes_nothing(workspace, capfd, argv, setup, fragments):
    tmp, model = workspace
    if setup is not None:
        setup(tmp)
    _refused(argv, tmp, model, capfd, fragments)


PD = ["probe", "--data", "{tmp}/pool.jsonl", "--out", "{tmp}/t.parquet"]  # the default model
TD = ["train", "--data", "{tmp}/good_train.jsonl", "--out", "{tmp}/m"]

# (case id, argv, environment: None unsets a variable, fragments)
ENVIRONMENTS = [
    ("probe: $RAIT_CACHE_DIR a file", PD, {"RAIT_CACHE_DIR": "{tmp}/a_file.txt"},
     ["$RAIT_CACHE_DIR", "a_file.txt is a file"]),
    ("train: $RAIT_CACHE_DIR under a file", TD, {"RAIT_CACHE_DIR": "{tmp}/a_file.txt/cache"},
     ["$RAIT_CACHE_DIR", "a_file.txt is a file"]),
    ("probe: $HOME a file", PD, {"RAIT_CACHE_DIR": None, "HOME": "{tmp}/a_file.txt"}, ["$HOME", "a_file.txt is a file"]),
    ("model install-default: $HOME a file", ["model", "install-default"], {"RAIT_CACHE_DIR": None,
                                                                          "HOME": "{tmp}/a_file.txt"}, ["$HOME"]),
    ("probe: $HOME unset", PD, {"RAIT_CACHE_DIR": None, "HOME": None}, ["$HOME is not set", "RAIT_CACHE_DIR"]),
    ("model info: $HOME unset", ["model", "info"], {"RAIT_CACHE_DIR": None, "HOME": None}, ["$HOME is not set"]),
    ("probe: $RAIT_DTYPE=float16 on a CPU (CPU)", P, {"RAIT_DTYPE": "float16"}, ["$RAIT_DTYPE=float16", "CPU"]),
    ("train: $RAIT_DTYPE=half on a CPU (CPU)", T, {"RAIT_DTYPE": "half"}, ["$RAIT_DTYPE=half", "CPU"]),
    ("probe: $RAIT_DTYPE=int8", P, {"RAIT_DTYPE": "int8"}, ["$RAIT_DTYPE", "'int8'"]),
]


def _environments():
    import torch

    for name, *rest in ENVIRONMENTS:
        marks = [pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")] if "CPU" in name else []
        yield pytest.param(*rest, id=name, marks=marks)


@pytest.mark.parametrize("argv, env, fragments", list(_environments()))
def test_an_environment_the_model_cannot_live_in_is_one_line(workspace, capfd, monkeypatch, argv, env, fragments):
    tmp, model = workspace
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, fill(value, tmp, model))
    _refused(argv, tmp, model, capfd, fragments)


@pytest.mark.parametrize("name", ["probe: --top-p 0", "probe: a garbage run.json", "probe: $HOME unset"])
def test_no_case_prints_a_traceback_in_a_real_process(workspace, name):
    tmp, model = workspace
    every = {case: (argv, setup, {}) for case, argv, setup, _ in CASES}
    every |= {case: (argv, None, env) for case, argv, env, _ in ENVIRONMENTS}
    argv, setup, env = every[name]
    if setup is not None:
        setup(tmp)
    assert_refused_in_a_process([fill(a, tmp, model) for a in argv], tmp,
                                {key: None if value is None else fill(value, tmp, model) for key, value in env.items()})


def test_a_read_only_cache_is_refused_before_any_work(workspace, capfd, monkeypatch):
    """A user's cache they cannot write, the model not yet installed in it. Root writes anywhere, so the check asks
    `os.access`; ask it as it would be answered for such a user."""
    import rait.models.default

    tmp, model = workspace
    cache = tmp / "cache"
    cache.mkdir()
    monkeypatch.setenv("RAIT_CACHE_DIR", str(cache))
    monkeypatch.setattr(rait.models.default.os, "access", lambda path, mode: rait.models.default.Path(path) != cache)
    _refused(PD, tmp, model, capfd, ["$RAIT_CACHE_DIR", f"{cache} is not writable"])


def test_a_tampered_shard_is_one_line_not_a_traceback(tmp_path):
    """A resumed probe reads its finished shards; one that is not the probe's own is refused by name."""
    from rait.data import QARecord
    from rait.errors import RaitError
    from rait.probe.shards import _load_shard

    shard = [QARecord(**OTHER_RECORD)]
    for text in ("garbage", "[]", '{"rows": 3, "seconds": 1}', '{"rows": [{"id": "o2"}]}', '{"rows": [7], "seconds": 1}'):
        (tmp_path / "shard-00000.json").write_text(text)
        with pytest.raises(RaitError, match="shard-00000.json"):
            _load_shard(tmp_path / "shard-00000.json", shard)
    (tmp_path / "shard-00000.json").write_text(jsonl({"rows": [{"id": "o2"}], "seconds": 1.0}))
    assert _load_shard(tmp_path / "shard-00000.json", shard)["resumed"]
