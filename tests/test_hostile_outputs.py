"""Hostile outputs (issue 34, part 3): an output that would replace or write into one of the command's own
inputs, a symbolic link where an output goes, and the report's own hostile inputs. As in tests/test_hostile.py,
every case must end in one `error: ...` line that says where and what, exit status 2, before any work: nothing
new on disk and every file byte-identical afterwards.

The cases run in-process through `rait.cli.main`. The report's cases read a finished `rait run` on the tiny
model (made once for the module); `test_rait_report_on_one_folder_writes_only_its_report` is the one success
case: `rait report` computes nothing and writes no file of the run but its report.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from hostile import assert_refused, snapshot
from rait.cli import main

RECORDS = [{"id": f"o{i}", "question": f"Question {i}?", "source": "facts", "split": "test", "answer": f"A{i}"}
           for i in range(3)]
JSONL = "".join(json.dumps(row) + "\n" for row in RECORDS)
TRIVIAQA = json.dumps({"Data": [{"QuestionId": "t1", "Question": "Q?", "Answer": {"Value": "A"}}]})

# A question that, embedded raw in the report's <script> element, opens an HTML comment and ends the element:
# a browser then leaves the item explorer empty.
HOSTILE_QUESTION = "What does <!--<script> open, and </script> close?"


def _link(target: str, name: str):
    """A case's setup: the symbolic link {tmp}/<name> -> target (which may not exist)."""
    return lambda tmp: os.symlink(target.replace("{tmp}", str(tmp)), tmp / name)


def _start_adapter(tmp: Path) -> None:
    """A `rait train` output to start GRPO from (its adapter folder is all the check needs)."""
    for folder in (tmp / "start", tmp / "runs" / "m"):
        (folder / "adapter").mkdir(parents=True)
        (folder / "adapter" / "adapter_config.json").write_text("{}\n")


def _write(name: str, text: str | bytes):
    def setup(run: Path) -> None:
        path = run / name
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text, encoding="utf-8")
    return setup


LOAD = ["data", "load", "jsonl:{tmp}/pool.jsonl"]
GRPO = ["train", "--objective", "grpo", "--data", "{tmp}/pool.jsonl", "--start-from", "{tmp}/start"]

# (case id, argv, setup(tmp) before the snapshot or None, fragments the one error line must hold)
CASES = [
    # an input given as a dataset spec or through another spelling of its path
    ("load: --out over its triviaqa: source", ["data", "load", "triviaqa:{tmp}/tqa.json", "--out", "{tmp}/tqa.json"],
     None, ["source spec", "tqa.json", "would overwrite"]),
    ("load: --out over its bare-path source", ["data", "load", "{tmp}/pool.jsonl", "--out", "{tmp}/pool.jsonl"], None,
     ["source spec", "pool.jsonl", "would overwrite"]),
    ("load: --out over its source, spelled with ..", LOAD + ["--out", "{tmp}/nosuch/../pool.jsonl"], None,
     ["source spec", "would overwrite"]),
    ("load: --out over its source through a linked folder", LOAD + ["--out", "{tmp}/alias/pool.jsonl"],
     _link("{tmp}", "alias"), ["source spec", "would overwrite"]),
    ("load: --out over its source's manifest", ["data", "load", "jsonl:{tmp}/p.jsonl.manifest.json", "--out",
                                                "{tmp}/p.jsonl"], None, ["p.jsonl.manifest.json", "would overwrite"]),
    ("probe: --out over its triviaqa: pool", ["probe", "--model", "{model}", "--data", "triviaqa:{tmp}/tqa.jsonl",
                                              "--out", "{tmp}/tqa.jsonl"], None, ["--data", "tqa.jsonl", "would overwrite"]),
    ("eval: --out holding its triviaqa: items", ["eval", "--model", "{model}", "--data", "triviaqa:{tmp}/e/outcomes.jsonl",
                                                 "--out", "{tmp}/e"], None, ["--data", "would overwrite"]),
    # the validation split written beside --out
    ("load: --validation over its source", ["data", "load", "jsonl:{tmp}/pool.validation.jsonl", "--out",
                                            "{tmp}/pool.jsonl", "--validation", "1"], None,
     ["source spec", "pool.validation.jsonl", "would overwrite"]),
    ("load: --validation over a file the user did not name", LOAD + ["--out", "{tmp}/mine.jsonl", "--validation", "1"],
     None, ["--validation", "mine.validation.jsonl", "not a validation split"]),
    ("load: --validation over a folder", LOAD + ["--out", "{tmp}/dir.jsonl", "--validation", "1"], None,
     ["--validation", "dir.validation.jsonl", "is a folder"]),
    # symbolic links where an output goes
    ("load: --out a dangling link", LOAD + ["--out", "{tmp}/dangling.jsonl"], _link("{tmp}/nowhere.jsonl", "dangling.jsonl"),
     ["--out", "dangling.jsonl", "symbolic link"]),
    ("load: --out a link to its source", LOAD + ["--out", "{tmp}/to_pool.jsonl"], _link("{tmp}/pool.jsonl", "to_pool.jsonl"),
     ["--out", "symbolic link"]),
    ("load: --out under a dangling link", LOAD + ["--out", "{tmp}/gone/x.jsonl"], _link("{tmp}/nowhere", "gone"),
     ["--out", "gone", "does not exist"]),
    ("load: --validation a dangling link", LOAD + ["--out", "{tmp}/v.jsonl", "--validation", "1"],
     _link("{tmp}/nowhere.jsonl", "v.validation.jsonl"), ["--validation", "symbolic link"]),
    ("split: --out-dir a dangling link", ["data", "split", "{tmp}/pool.jsonl", "--out-dir", "{tmp}/gone"],
     _link("{tmp}/nowhere", "gone"), ["--out-dir", "symbolic link"]),
    ("split: --out-dir over its file through a link", ["data", "split", "{tmp}/train.jsonl", "--out-dir", "{tmp}/alias"],
     _link("{tmp}", "alias"), ["train.jsonl", "would overwrite"]),
    ("eval: --out a dangling link", ["eval", "--model", "{model}", "--data", "{tmp}/pool.jsonl", "--out", "{tmp}/gone"],
     _link("{tmp}/nowhere", "gone"), ["--out", "symbolic link"]),
    ("probe: --out a link to its pool", ["probe", "--model", "{model}", "--data", "{tmp}/pool.jsonl", "--out",
                                         "{tmp}/t.jsonl"], _link("{tmp}/pool.jsonl", "t.jsonl"), ["--out", "symbolic link"]),
    # GRPO from an adapter: --out must lie outside it
    ("train: grpo --out its --start-from", GRPO + ["--out", "{tmp}/start"], _start_adapter,
     ["--start-from", "start", "would overwrite"]),
    ("train: grpo --out inside its --start-from", GRPO + ["--out", "{tmp}/start/adapter"], _start_adapter,
     ["--start-from", "would write into"]),
    ("train: grpo --out its --start-from, spelled ./start/.", GRPO + ["--out", "{tmp}/./start/."], _start_adapter,
     ["--start-from", "would overwrite"]),
    ("train: grpo --out holding its --start-from", ["train", "--objective", "grpo", "--data", "{tmp}/pool.jsonl",
                                                    "--start-from", "{tmp}/runs/m", "--out", "{tmp}/runs"], _start_adapter,
     ["--start-from", "would overwrite"]),
    ("train: grpo --start-from the adapter of --out", ["train", "--objective", "grpo", "--data", "{tmp}/pool.jsonl",
                                                       "--start-from", "{tmp}/start/adapter", "--out", "{tmp}/start"],
     _start_adapter, ["--start-from", "would overwrite"]),
]

# `rait report` on copies r1, r2 of a finished run: (case id, argv, setup(r1) or None, fragments)
REPORT_CASES = [
    ("report: --out the first run", ["report", "{r1}", "{r2}", "--out", "{r1}"], None,
     ["run folder", "r1", "would overwrite"]),
    ("report: --out the second run, spelled ./r2/.", ["report", "{r1}", "{r2}", "--out", "{tmp}/./r2/."], None,
     ["run folder", "r2", "would overwrite"]),
    ("report: --out inside a run", ["report", "{r1}", "{r2}", "--out", "{r1}/merged"], None,
     ["run folder", "r1", "would write into"]),
    ("report: --out a run through a link", ["report", "{r1}", "{r2}", "--out", "{tmp}/alias"],
     lambda run: os.symlink(run, run.parent / "alias"), ["run folder", "would overwrite"]),
    ("report: a corrupt stage.json", ["report", "{r1}"], _write("facts/probe/stage.json", '{"key": "ab'),
     ["facts/probe/stage.json", "not a stage record", "not JSON"]),
    ("report: a stage.json that is a list", ["report", "{r1}"], _write("facts/build/stage.json", "[1, 2]\n"),
     ["facts/build/stage.json", "not a stage record", "list"]),
    ("report: a stage.json not UTF-8", ["report", "{r1}"], _write("facts/probe/stage.json", b'{"key": "\xe9"}'),
     ["facts/probe/stage.json", "not a stage record"]),
    ("report: a broken pipeline.json", ["report", "{r1}"], _write("pipeline.json", '{"stages": [\n'),
     ["pipeline.json", "not a run log", "not JSON"]),
    ("report: a pipeline.json without times", ["report", "{r1}"], _write("pipeline.json", '{"wall_seconds": "soon"}'),
     ["pipeline.json", "'wall_seconds'"]),
    ("report: a pipeline.json that is a folder", ["report", "{r1}"],
     lambda run: ((run / "pipeline.json").unlink(), (run / "pipeline.json").mkdir()), ["pipeline.json"]),
    ("report: a run without its pool", ["report", "{r1}"], lambda run: (run / "facts" / "pool.jsonl").unlink(),
     ["r1/facts", "pool", "has not been written"]),
    ("report: a run folder that is a dangling link", ["report", "{r1}", "{tmp}/gone"],
     lambda run: os.symlink(run.parent / "nowhere", run.parent / "gone"), ["gone"]),
]

RUN_CONFIG = """
model: {model}
methods: [cor_rait]
train: {{epochs: 1, batch_size: 4, grad_accum: 1, lora: {{r: 4, alpha: 8, dropout: 0.0, layers: [1], target_modules: [q_proj]}}}}
eval: {{batch_size: 8, n_boot: 20, max_new_tokens: {{oeqa: 3}}}}
tracks:
  - name: facts
    pool: {{data: "facts:train", sample: 8}}
    probe: {{k: 2, max_new_tokens: 3, prompt: query_0shot}}
    build: {{n_total: 4, tau: 0.5}}
    test_sets: [{{name: facts-id, data: "jsonl:{test}", domain: ID}}]
"""


@pytest.fixture
def workspace(tmp_path, tiny_model_dir):
    for name in ("pool.jsonl", "train.jsonl", "pool.validation.jsonl", "p.jsonl.manifest.json", "mine.validation.jsonl"):
        (tmp_path / name).write_text(JSONL, encoding="utf-8")
    (tmp_path / "tqa.json").write_text(TRIVIAQA, encoding="utf-8")
    (tmp_path / "tqa.jsonl").write_text(TRIVIAQA, encoding="utf-8")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "outcomes.jsonl").write_text(TRIVIAQA, encoding="utf-8")
    (tmp_path / "dir.validation.jsonl").mkdir()
    return tmp_path, tiny_model_dir


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model_dir):
    """A finished `rait run` whose test set holds a question that would break a raw <script> element."""
    folder = tmp_path_factory.mktemp("finished")
    test = [{**row, "question": HOSTILE_QUESTION if i == 0 else row["question"]} for i, row in enumerate(RECORDS)]
    (folder / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in test), encoding="utf-8")
    (folder / "c.yaml").write_text(RUN_CONFIG.format(model=tiny_model_dir, test=folder / "test.jsonl"))
    assert _exit(["run", str(folder / "c.yaml"), "--out", str(folder / "run")]) == 0
    return folder / "run"


def _exit(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exit_:
        return exit_.code or 0
    return 0


def test_the_cases_are_distinct():
    names = [case[0] for case in CASES + REPORT_CASES]
    assert len(names) == len(set(names)) >= 30


@pytest.mark.parametrize("argv, setup, fragments", [pytest.param(*rest, id=name) for name, *rest in CASES])
def test_an_output_over_an_input_or_a_link_is_one_line_exit_2_and_writes_nothing(workspace, capfd, argv, setup,
                                                                                 fragments):
    tmp, model = workspace
    if setup is not None:
        setup(tmp)
    fill = lambda text: text.replace("{tmp}", str(tmp)).replace("{model}", str(model))  # noqa: E731
    assert_refused([fill(a) for a in argv], tmp, capfd, [fill(f) for f in fragments])


@pytest.mark.parametrize("argv, setup, fragments", [pytest.param(*rest, id=name) for name, *rest in REPORT_CASES])
def test_a_hostile_report_is_one_line_exit_2_and_writes_nothing(finished_run, tmp_path, capfd, argv, setup, fragments):
    r1, r2 = tmp_path / "r1", tmp_path / "r2"
    for copy in (r1, r2):
        shutil.copytree(finished_run, copy, symlinks=True)
    if setup is not None:
        setup(r1)
    fill = lambda text: text.replace("{tmp}", str(tmp_path)).replace("{r1}", str(r1)).replace("{r2}", str(r2))  # noqa: E731
    assert_refused([fill(a) for a in argv], tmp_path, capfd, fragments)


def test_rait_report_on_one_folder_writes_only_its_report(finished_run, tmp_path):
    """Documented to compute nothing: the run's pool, its manifests and pipeline.json stay byte-identical, and the
    rebuilt report equals the one `rait run` wrote (it states the run's own times, read from pipeline.json)."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    manifest = run / "facts" / "pool.jsonl.manifest.json"  # as if written long ago: a rewrite would show
    manifest.write_text(json.dumps(json.loads(manifest.read_text()) | {"created": "2000-01-01T00:00:00+00:00"}))
    before = snapshot(run)
    assert _exit(["report", str(run)]) == 0
    after = snapshot(run)
    changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
    assert all(p.parent == run and p.suffix in (".png", ".html") for p in changed), sorted(changed)
    assert (run / "report.html").read_bytes() == before[run / "report.html"]
    assert after[run / "pipeline.json"] == before[run / "pipeline.json"]
    assert after[run / "facts" / "pool.jsonl.manifest.json"] == before[run / "facts" / "pool.jsonl.manifest.json"]


def test_the_explorer_data_cannot_end_its_script_element_or_open_a_comment(finished_run):
    """A question with `<!--<script>` left the explorer empty in a browser: in the page, the embedded JSON holds no
    `<`, so neither `</script` nor `<!--` nor `<script`, and it parses back to the items as written."""
    from rait.report.explorer import explorer_html, explorer_items, script_json

    page = (finished_run / "report.html").read_text(encoding="utf-8")
    data = page.split('<script type="application/json" id="x-data">')[1].split("</script>")[0]
    assert not any(bad in data.lower() for bad in ("<!--", "<script", "</script"))
    assert HOSTILE_QUESTION in [item["question"] for item in json.loads(data)["items"]]
    rows = [{"track": "t", "test_set": "s", "method": method, "outcome_rows": [
        {"id": "q", "question": HOSTILE_QUESTION + " & <b>", "gold": "</SCRIPT >", "output": "<!-- -->",
         "outcome": "wrong"}]} for method in ("Init-Basic", "M")]
    items = explorer_items(rows)
    embedded = explorer_html(items).split('id="x-data">')[1].split("</script>")[0]
    assert "<" not in embedded and ">" not in embedded and "&" not in embedded
    assert json.loads(embedded)["items"] == items and json.loads(script_json(items)) == items
