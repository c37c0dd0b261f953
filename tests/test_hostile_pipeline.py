"""Hostile `rait run` configs and run folders found by an outside sweep (issue 34, part 3): YAML that expands, a
value of the wrong YAML type, a key given twice, a repeated method, sizes beyond the data, a test set that is the
training pool, inputs inside the run's own folder, and a second run on a folder in use. Each case, as in
tests/test_hostile.py, must end in exit status 2 and one `error:` line naming the config line and field, before
any work: nothing new on disk (not even `<out>/<track>/`), the inputs byte-identical.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rait.cli import main
from rait.errors import RaitError
from rait.pipeline.run import RunLock
from hostile import assert_refused, fill, jsonl, snapshot

RUN = ["run", "{tmp}/c.yaml", "--out", "{tmp}/r"]


def _record(i: int, prefix: str = "q") -> dict:
    return {"id": f"{prefix}{i}", "question": f"What is {prefix} {i}?", "source": "facts", "split": "test",
            "answer": str(i)}


FILES = {
    "pool.jsonl": jsonl(*(_record(i) for i in range(6))),
    "test.jsonl": jsonl(*(_record(i, "t") for i in range(4))),
    "pool_copy.jsonl": jsonl(*(_record(i) for i in range(6))),
    "mixed.jsonl": jsonl(_record(0), *(_record(i, "t") for i in range(4, 7))),
}


def _config(extra_track: str = "", top: str = "", pool: str = "{data: 'jsonl:{tmp}/pool.jsonl'}",
            tests: str = "[{name: t, data: 'jsonl:{tmp}/test.jsonl'}]", name: str = "a",
            methods: str = "[cor_rait]") -> str:
    """A good config (pool on line 5, test sets on line 6, `extra_track` from line 7, `top` from line 3)."""
    return (f"model: {{model}}\nmethods: {methods}\n{top}tracks:\n  - name: {name}\n    pool: {pool}\n"
            f"    test_sets: {tests}\n" + extra_track)


def _bomb(levels: int) -> str:
    """A billion-laughs list: each level holds nine aliases of the one before, 9**levels strings in all."""
    nodes = ["&l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    nodes += [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels + 1)]
    return "[" + ", ".join(nodes) + "]"


def _pool_in_out(tmp: Path) -> None:
    (tmp / "r" / "a").mkdir(parents=True)
    (tmp / "r" / "a" / "pool.jsonl").write_text(FILES["pool.jsonl"], encoding="utf-8")


def _test_in_out(tmp: Path) -> None:
    (tmp / "r").mkdir()
    (tmp / "r" / "t.jsonl").write_text(FILES["test.jsonl"], encoding="utf-8")


def _out_exists(tmp: Path) -> None:
    (tmp / "r").mkdir()


# (case id, config text (bytes: written as they are), what to set up first or None, fragments of the one line)
CASES = [
    # tracebacks: YAML that expands, values of the wrong YAML type, numbers beyond what the libraries hold
    ("alias bomb", _config(top=f"title: {_bomb(9)}\n"), None, ["c.yaml:3", "aliases"]),
    ("alias bomb in a track", _config("    methods: " + _bomb(8) + "\n"), None, ["c.yaml:7", "aliases"]),
    ("recursive alias", _config(top="title: &r [*r]\n"), None, ["c.yaml:3", "aliases"]),
    ("nested ten thousand deep", _config(top="title: " + "[" * 10000 + "]" * 10000 + "\n"), None,
     ["c.yaml", "nested too deeply"]),
    ("seed a date", _config(top="seed: 2020-01-01\n"), None, ["c.yaml:3", "'seed'", "'2020-01-01'"]),
    ("seed an explicit timestamp", _config(top="seed: !!timestamp 2020-01-01\n"), None, ["c.yaml:3", "'seed'"]),
    ("title a date object", _config(top="title: !!timestamp 2020-01-01\n"), None, ["c.yaml:3", "'title'", "string"]),
    ("title bytes", _config(top="title: !!binary aGVsbG8=\n"), None, ["c.yaml:3", "'title'", "string"]),
    ("a python tag", _config(top="title: !!python/object/apply:os.system [ls]\n"), None, ["c.yaml:3", "YAML"]),
    ("track name of 300 characters", _config(name="a" * 300), None, ["c.yaml:4", "tracks.0.name", "64 characters"]),
    ("test set name of 300 characters", _config(tests=f"[{{name: {'t' * 300}, data: 'jsonl:{{tmp}}/test.jsonl'}}]"),
     None, ["c.yaml:6", "tracks.0.test_sets.0.name", "64 characters"]),
    ("Latin-1 config", _config(top="title: caf\xe9\n").encode("latin-1"), None, ["c.yaml:3", "UTF-8", "0xe9"]),
    ("model 42", _config().replace("model: {model}", "model: 42"), None, ["c.yaml:1", "'model'", "string", "42"]),
    ("model empty", _config().replace("model: {model}", "model:"), None, ["c.yaml:1", "'model'", "string"]),
    ("title a list", _config(top="title: [a, b]\n"), None, ["c.yaml:3", "'title'", "string", "['a', 'b']"]),
    ("title a number", _config(top="title: 5\n"), None, ["c.yaml:3", "'title'", "string"]),
    ("k 10**30", _config("    probe: {k: " + str(10**30) + "}\n"), None, ["c.yaml:7", "tracks.0.probe.k"]),
    ("k 100000000", _config("    probe: {k: 100000000}\n"), None, ["c.yaml:7", "k"]),
    ("k inf", _config("    probe: {k: .inf}\n"), None, ["c.yaml:7", "tracks.0.probe.k", "whole number"]),
    ("seed 10**30", _config(top=f"seed: {10**30}\n"), None, ["c.yaml:3", "'seed'", "4294967295"]),
    ("seed -1", _config(top="seed: -1\n"), None, ["c.yaml:3", "'seed'", "4294967295"]),
    ("seed true", _config(top="seed: true\n"), None, ["c.yaml:3", "'seed'", "True"]),
    ("seed 1.5", _config(top="seed: 1.5\n"), None, ["c.yaml:3", "'seed'", "1.5"]),
    ("seeds with 10**30", _config(top=f"seeds: [0, {10**30}]\n"), None, ["c.yaml:3", "seeds.1", "4294967295"]),
    ("seeds a number", _config(top="seeds: 3\n"), None, ["c.yaml:3", "'seeds'", "list"]),
    ("probe seed 2**32", _config("    probe: {seed: 4294967296}\n"), None, ["c.yaml:7", "tracks.0.probe.seed"]),
    ("track train seed -3", _config("    train: {seed: -3}\n"), None, ["c.yaml:7", "tracks.0.train.seed"]),
    ("n_boot 10**20", _config(top=f"eval: {{n_boot: {10**20}}}\n"), None, ["c.yaml:3", "eval.n_boot"]),
    ("n_boot 10**9", _config(top="eval: {n_boot: 1000000000}\n"), None, ["c.yaml:3", "eval.n_boot", "100000"]),
    ("dims 10**20", _config(f"    grads: {{dims: [{10**20}]}}\n"), None, ["c.yaml:7", "tracks.0.grads.dims.0"]),
    ("methods a string", _config(methods="cor_rait"), None, ["c.yaml:2", "'methods'", "list"]),
    ("methods empty", _config(methods=""), None, ["c.yaml:2", "'methods'", "list"]),
    ("track methods a string", _config("    methods: cor_rait\n"), None, ["c.yaml:7", "tracks.0.methods", "list"]),
    ("eval prompts a string", _config(top="eval: {prompts: basic}\n"), None, ["c.yaml:3", "eval.prompts", "list"]),
    ("train a list", _config(top="train: [1]\n"), None, ["c.yaml:3", "'train'", "mapping"]),
    ("max_new_tokens a string", _config(top="eval: {max_new_tokens: '5'}\n"), None,
     ["c.yaml:3", "eval.max_new_tokens", "whole number or a mapping"]),
    ("eval prompt, which the run sets", _config(top="eval: {prompt: basic}\n"), None,
     ["c.yaml:3", "eval.prompt", "unknown setting", "prompts"]),
    ("pool data a number", _config(pool="{data: 5}"), None, ["c.yaml:5", "tracks.0.pool.data", "string"]),
    ("test data a number", _config(tests="[{name: t, data: 5}]"), None,
     ["c.yaml:6", "tracks.0.test_sets.0.data", "string"]),
    ("test set name a number", _config(tests="[{name: 5, data: 'jsonl:{tmp}/test.jsonl'}]"), None,
     ["c.yaml:6", "tracks.0.test_sets.0.name", "string"]),
    ("exemplars a number", _config("    exemplars: 3\n"), None, ["c.yaml:7", "tracks.0.exemplars", "string"]),
    ("stratify a number", _config(pool="{data: 'jsonl:{tmp}/pool.jsonl', stratify: 5}"), None,
     ["c.yaml:5", "tracks.0.pool.stratify", "string"]),
    ("refusal_mode a number", _config(top="eval: {refusal_mode: 3}\n"), None, ["c.yaml:3", "eval.refusal_mode"]),
    ("learning rate a word", _config(top="train: {learning_rate: fast}\n"), None,
     ["c.yaml:3", "train.learning_rate", "number", "'fast'"]),
    ("lora r a word", _config(top="train: {lora: {r: big}}\n"), None, ["c.yaml:3", "train.lora.r", "'big'"]),
    ("learning rate nan in a track", _config("    train: {learning_rate: .nan}\n"), None,
     ["c.yaml:7", "tracks.0.train.learning_rate"]),
    # silently accepted: keys given twice, repeats, unknown keys under a section, a string for a bool
    ("a top-level key twice", _config(top="seed: 1\nseed: 2\n"), None, ["c.yaml:4", "'seed'", "twice", "line 3"]),
    ("a key twice in a flow mapping", _config("    probe: {k: 3, k: 4}\n"), None,
     ["c.yaml:7", "tracks.0.probe.k", "twice"]),
    ("a track key twice", _config("    name: b\n"), None, ["c.yaml:7", "tracks.0.name", "twice", "line 4"]),
    ("a method twice", _config(methods="[cor_rait, cor_rait]"), None, ["c.yaml:2", "methods.1", "twice"]),
    ("a method twice in a track", _config("    methods: [craft, cor_rait, craft]\n"), None,
     ["c.yaml:7", "tracks.0.methods.2", "twice"]),
    ("a prompt twice", _config(top="eval: {prompts: [basic, basic]}\n"), None, ["c.yaml:3", "eval.prompts.1", "twice"]),
    ("seeds repeated", _config(top="seeds: [1, 2, 1]\n"), None, ["c.yaml:3", "seeds", "distinct"]),
    ("unknown key under train", _config(top="train: {epochz: 3}\n"), None, ["c.yaml:3", "train.epochz", "unknown"]),
    ("unknown key under lora", _config(top="train:\n  lora: {r: 4, rr: 3}\n"), None,
     ["c.yaml:4", "train.lora.rr", "unknown"]),
    ("unknown key under a rehearsal's train", _config("    rehearsal: {train: {foo: 1}}\n"), None,
     ["c.yaml:7", "tracks.0.rehearsal.train.foo", "unknown"]),
    ("unknown key under the warm-up", _config("    grads: {warmup: {foo: 1}}\n"), None,
     ["c.yaml:7", "tracks.0.grads.warmup.foo", "unknown"]),
    ("unknown key under dpo.train", _config(top="dpo: {train: {foo: 1}}\n"), None, ["c.yaml:3", "dpo.train.foo"]),
    ("unknown task under max_new_tokens", _config(top="eval: {max_new_tokens: {oqa: 4}}\n"), None,
     ["c.yaml:3", "eval.max_new_tokens.oqa", "unknown task"]),
    ("unknown key under probe", _config("    probe: {kk: 3}\n"), None, ["c.yaml:7", "tracks.0.probe.kk"]),
    ("diagnose 'yes'", _config("    diagnose: 'yes'\n"), None, ["c.yaml:7", "tracks.0.diagnose", "true or false"]),
    ("diagnose 1", _config("    diagnose: 1\n"), None, ["c.yaml:7", "tracks.0.diagnose", "true or false"]),
    # silently accepted: sizes beyond the data, a test set that is the pool, a test set named `validation`
    ("validation larger than the pool", _config(pool="{data: 'jsonl:{tmp}/pool.jsonl', validation: 50}"), None,
     ["c.yaml:5", "tracks.0.pool", "50"]),
    ("pool sample larger than the data", _config(pool="{data: 'jsonl:{tmp}/pool.jsonl', sample: 50}"), None,
     ["c.yaml:5", "tracks.0.pool.sample", "50"]),
    ("validation and sample beyond the data", _config(pool="{data: 'jsonl:{tmp}/pool.jsonl', validation: 2, "
                                                           "sample: 5}"), None, ["c.yaml:5", "tracks.0.pool.sample"]),
    ("test sample larger than the test set", _config(tests="[{name: t, data: 'jsonl:{tmp}/test.jsonl', sample: 50}]"),
     None, ["c.yaml:6", "tracks.0.test_sets.0.sample", "50"]),
    ("test set the pool file", _config(tests="[{name: t, data: 'jsonl:{tmp}/pool.jsonl'}]"), None,
     ["c.yaml:6", "tracks.0.test_sets.0", "shares 6 of its 6", "pool"]),
    ("test set a copy of the pool", _config(tests="[{name: t, data: '{tmp}/pool_copy.jsonl'}]"), None,
     ["c.yaml:6", "shares 6 of its 6", "pool"]),
    ("test set with one pool item", _config(tests="[{name: t, data: 'jsonl:{tmp}/mixed.jsonl'}]"), None,
     ["c.yaml:6", "shares 1 of its 4", "'q0'"]),
    ("test set named validation", _config(tests="[{name: validation, data: 'jsonl:{tmp}/test.jsonl'}]"), None,
     ["c.yaml:6", "tracks.0.test_sets.0.name", "'validation'"]),
    ("test set named validation beside the split",
     _config(pool="{data: 'jsonl:{tmp}/pool.jsonl', validation: 2}",
             tests="[{name: validation, data: 'jsonl:{tmp}/test.jsonl'}]"), None, ["c.yaml:6", "'validation'"]),
    # run folders: inputs inside --out, a bad setting found after the pool once made the track's folder
    ("pool inside its own --out", _config(pool="{data: 'jsonl:{tmp}/r/a/pool.jsonl', sample: 4}"), _pool_in_out,
     ["c.yaml:5", "tracks.0.pool.data", "inside the output folder"]),
    ("test set inside --out", _config(tests="[{name: t, data: '{tmp}/r/t.jsonl'}]"), _test_in_out,
     ["c.yaml:6", "tracks.0.test_sets.0.data", "inside the output folder"]),
    ("max_new_tokens 0", _config(top="eval: {max_new_tokens: {oeqa: 0}}\n"), None,
     ["c.yaml:3", "eval.max_new_tokens.oeqa"]),
    ("max_new_tokens 10**9", _config(top="eval: {max_new_tokens: {oeqa: 1000000000}}\n"), None,
     ["c.yaml:3", "eval.max_new_tokens.oeqa", "4096"]),
    ("probe seed -1 into a new folder", _config("    probe: {seed: -1}\n"), None, ["c.yaml:7", "tracks.0.probe.seed"]),
    ("probe seed -1 into an existing folder", _config("    probe: {seed: -1}\n"), _out_exists,
     ["c.yaml:7", "tracks.0.probe.seed"]),
    ("probe temperature 0 found when the pool is read", _config("    probe: {temperature: 0}\n"), None,
     ["c.yaml:7", "temperature"]),
]


@pytest.fixture
def workspace(tmp_path, tiny_model_dir):
    for name, text in FILES.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path, tiny_model_dir


def _refused(tmp: Path, model: Path, capfd, fragments: list[str]) -> None:
    """`rait run {tmp}/c.yaml --out {tmp}/r` ends in exit 2 and one error line holding every fragment, with nothing
    on disk changed."""
    assert_refused([fill(a, tmp, model) for a in RUN], tmp, capfd, [fill(f, tmp, model) for f in fragments])


def test_the_cases_are_distinct():
    assert len({case[0] for case in CASES}) == len(CASES) >= 60


@pytest.mark.parametrize("config, setup, fragments", [pytest.param(*rest, id=name) for name, *rest in CASES])
def test_hostile_config_is_one_line_exit_2_and_writes_nothing(workspace, capfd, config, setup, fragments):
    tmp, model = workspace
    if setup is not None:
        setup(tmp)
    config = config if isinstance(config, bytes) else fill(config, tmp, model).encode()
    (tmp / "c.yaml").write_bytes(config)
    _refused(tmp, model, capfd, fragments)


def _hold(folder: Path) -> int:
    """Hold the run lock on `folder` as a running `rait run` does."""
    handle = os.open(folder, os.O_RDONLY)
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


def test_a_second_run_on_a_folder_in_use_stops_at_once(workspace, capfd):
    tmp, model = workspace
    (tmp / "c.yaml").write_text(fill(_config(), tmp, model), encoding="utf-8")
    (tmp / "r").mkdir()
    (tmp / "r" / "config.yaml").write_text((tmp / "c.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    handle = _hold(tmp / "r")
    try:
        _refused(tmp, model, capfd, ["{tmp}/r", "another `rait run`"])
        with pytest.raises(SystemExit) as exit_:
            main(["report", str(tmp / "r")])  # a report would rewrite results.md under the running one
        assert exit_.value.code == 2 and "another `rait run`" in capfd.readouterr().err
    finally:
        os.close(handle)


def test_a_second_run_in_a_real_process_stops_with_one_line(workspace):
    tmp, model = workspace
    (tmp / "c.yaml").write_text(fill(_config(), tmp, model), encoding="utf-8")
    (tmp / "r").mkdir()
    handle = _hold(tmp / "r")
    try:
        done = subprocess.run([sys.executable, "-m", "rait", *(fill(a, tmp, model) for a in RUN)],
                              capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    finally:
        os.close(handle)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and "another `rait run`" in lines[0], done.stderr[-2000:]
    assert not list((tmp / "r").iterdir())


def test_the_lock_is_the_folder_itself_and_ends_with_its_holder(tmp_path):
    """Nothing is left behind to break a later run or `rait report`: the lock is no file, and it is gone when the
    run ends, by error or not."""
    out = tmp_path / "r"
    with RunLock(out) as lock:
        assert not out.exists()  # a new folder is claimed only once the inputs are checked
        lock.claim()
        with pytest.raises(RaitError, match="another `rait run`"):
            RunLock(out).__enter__()
    with pytest.raises(ZeroDivisionError):
        with RunLock(out):
            1 / 0
    with RunLock(out) as again:
        assert again.handle is not None
    assert list(out.iterdir()) == []


def test_a_refused_run_leaves_the_folder_free(workspace, capfd):
    tmp, model = workspace
    _out_exists(tmp)
    (tmp / "c.yaml").write_text(fill(_config("    probe: {temperature: 0}\n"), tmp, model), encoding="utf-8")
    _refused(tmp, model, capfd, ["c.yaml:7"])
    os.close(_hold(tmp / "r"))


def test_a_pool_in_another_run_folder_is_read_not_replaced(workspace, capfd):
    """Outside this run's --out, a previous run's pool is an ordinary input: the check is on --out alone."""
    tmp, model = workspace
    _pool_in_out(tmp)
    pool = tmp / "r" / "a" / "pool.jsonl"
    text = _config(pool=f"{{data: 'jsonl:{pool}', sample: 50}}")
    (tmp / "c.yaml").write_text(fill(text, tmp, model), encoding="utf-8")
    with pytest.raises(SystemExit):
        main(["run", str(tmp / "c.yaml"), "--out", str(tmp / "other")])
    assert "tracks.0.pool.sample" in capfd.readouterr().err  # got past the --out check, to the data
    assert json.loads(pool.read_text(encoding="utf-8").splitlines()[0])["id"] == "q0"
