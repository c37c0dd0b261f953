"""`rait run`'s terminal view (issue 19): the live rows, the running stage's bar, the estimate, plain lines."""

from __future__ import annotations

import io
import json

from rich.console import Console

from rait import terminal
from rait.pipeline.view import LiveView, StageLines, previous_times, stage_kind, stage_view

PLAN = ["facts: probe", "facts: train cor_rait", "facts: train craft", "facts: eval Cor-RAIT / facts-ID / refuse",
        "facts: eval CRaFT / facts-ID / refuse"]


def drawn(view: LiveView) -> str:
    console = Console(file=io.StringIO(), width=140, color_system=None)
    console.print(view.render())
    return console.file.getvalue()


def terminal_console() -> Console:
    return Console(file=io.StringIO(), force_terminal=True, width=140)


def test_stage_kinds_group_stages_that_take_alike():
    assert stage_kind("facts: train cor_rait (seed 1)") == stage_kind("facts: train craft") == "train"
    assert stage_kind("facts: eval CRaFT / facts-ID / refuse (seed-2)") == "eval / facts-ID / refuse"
    assert stage_kind("facts: eval CRaFT / facts-OOD / refuse") != stage_kind("facts: eval CRaFT / facts-ID / refuse")
    assert stage_kind("facts: build (seed 0)") == "build" and stage_kind("facts: probe facts-ID") == "probe facts-ID"


def test_the_live_view_draws_every_planned_stage_with_its_state_and_the_running_stage_bar():
    view = LiveView(terminal_console(), "rait run demo.yaml")
    view.plan(PLAN)
    view.cached("facts: probe")
    view.started("facts: train cor_rait")
    with view.progress("train", None) as bar:
        bar.restart(10)
        bar.advance(3)
        text = drawn(view)
        assert "3/10" in text and "ETA" in text
    lines = text.splitlines()
    assert "0/5 stages" not in lines[0] and "1/5 stages" in lines[0]  # the cached stage counts as finished
    assert any(line.startswith("✓ facts: probe") and line.rstrip().endswith("cached") for line in lines)
    assert any(line.startswith("▶ facts: train cor_rait") for line in lines)
    assert [line[0] for line in lines if "facts: eval" in line] == ["·", "·"]
    assert "not yet estimable" in lines[0]  # nothing has been timed yet
    view.finished("facts: train cor_rait", 20.0)
    view.skipped("facts: train craft", "selected no samples")
    text = drawn(view)
    assert "train ━" not in text  # the finished stage's bar is gone
    assert any(line.startswith("– facts: train craft") and "skipped" in line for line in text.splitlines())


def test_the_estimate_comes_from_the_previous_run_then_from_finished_stages_of_the_same_kind(tmp_path):
    (tmp_path / "pipeline.json").write_text(json.dumps({"stages": [
        {"stage": "facts: eval Cor-RAIT / facts-ID / refuse", "cached": False, "seconds": 40.0},
        {"stage": "facts: probe", "cached": True, "seconds": 99.0}]}))  # a cached stage's time is not a measurement
    previous = previous_times(tmp_path)
    assert previous == {"facts: eval Cor-RAIT / facts-ID / refuse": 40.0}
    view = LiveView(terminal_console(), "t", previous)
    view.plan(PLAN)
    assert view.estimate("facts: eval Cor-RAIT / facts-ID / refuse") == 40.0
    assert view.estimate("facts: train craft") is None and view.estimate("facts: eval CRaFT / facts-ID / refuse") is None
    view.started("facts: probe")
    view.finished("facts: probe", 5.0)
    view.started("facts: train cor_rait")
    view.finished("facts: train cor_rait", 30.0)
    assert view.estimate("facts: train craft") == 30.0  # another training of this run
    left, unknown = view.time_left()
    assert unknown == 1 and left == 30.0 + 40.0  # CRaFT's evaluation: no evaluation of its kind finished yet
    view.started("facts: train craft")
    view.finished("facts: train craft", 10.0)
    view.started("facts: eval Cor-RAIT / facts-ID / refuse")
    view.finished("facts: eval Cor-RAIT / facts-ID / refuse", 50.0)
    left, unknown = view.time_left()
    assert (left, unknown) == (50.0, 0)
    assert "left ≈ 0:50" in drawn(view).splitlines()[0]


def test_plain_lines_where_the_terminal_is_not_interactive_or_quiet(tmp_path):
    piped = Console(file=io.StringIO(), width=140)
    assert type(stage_view(piped, tmp_path, "t", live=True)) is StageLines
    assert isinstance(stage_view(terminal_console(), tmp_path, "t", live=True), LiveView)
    assert type(stage_view(terminal_console(), tmp_path, "t", live=False)) is StageLines  # --verbose, `rait report`
    hushed = terminal_console()
    hushed.quiet = True
    assert type(stage_view(hushed, tmp_path, "t", live=True)) is StageLines
    lines = StageLines(piped)
    lines.started("facts: probe")
    lines.finished("facts: probe", 12.4)
    lines.skipped("facts: train craft", "selected no samples")
    assert piped.file.getvalue().splitlines() == ["run     facts: probe", "done    facts: probe (12 s)",
                                                  "skip    facts: train craft: selected no samples"]
    assert "\x1b" not in piped.file.getvalue()


def test_a_loop_reports_to_the_live_view_while_it_is_in_use(capsys):
    view = LiveView(terminal_console(), "t")
    view.plan(PLAN)
    view.started("facts: probe")
    with terminal.use_view(view):
        with terminal.progress("probe", 8) as bar:
            bar.advance(5)
            assert "5/8" in drawn(view)
    assert not view.bars.tasks
    with terminal.progress("probe", 8) as bar:  # no view, stderr captured (not a terminal): nothing drawn
        bar.advance(5)
    assert capsys.readouterr().err == ""
