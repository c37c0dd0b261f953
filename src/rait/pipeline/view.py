"""What `rait run` shows while it works (issue 19): plain lines, or one live view on a terminal.

`StageLines` prints a line when a stage is found cached, starts, finishes (with its time) or is skipped: the
output for CI, pipes and logs, with no control codes. `LiveView` draws, on an interactive terminal, every planned
stage as a row (done, cached, running, pending, skipped), the running stage's own bar (items/s, ETA; every long
loop reports to it through `rait.terminal.progress`), the elapsed time and an estimate of the time left.

The estimate for a stage not yet run is its time in the folder's previous run (`pipeline.json`, when that run
computed it), else the mean time of this run's finished stages of the same kind (`stage_kind`); stages with
neither are counted and the estimate says "at least".
"""

from __future__ import annotations

import json
import re
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from rich.console import Console, Group
from rich.live import Live
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from rait.terminal import SPEED_WINDOW, Bar, progress_columns

DONE_SHOWN, PENDING_SHOWN = 4, 6  # rows drawn around the running stage; the rest are counted


class StageLines:
    """One plain line per stage event."""

    def __init__(self, console: Console):
        self.console = console

    def plan(self, names: list[str]) -> None:
        """The stages this run expects, in order (a live view draws them as pending)."""

    def cached(self, name: str) -> None:
        self.console.print(f"[dim]cached[/]  {name}")

    def started(self, name: str) -> None:
        self.console.print(f"[bold]run[/]     {name}")

    def finished(self, name: str, seconds: float) -> None:
        self.console.print(f"[green]done[/]    {name} ({seconds:.0f} s)")

    def skipped(self, name: str, why: str) -> None:
        self.console.print(f"[yellow]skip[/]    {name}: {why}")

    def __enter__(self) -> StageLines:
        return self

    def __exit__(self, *exc) -> None:
        return None


def stage_kind(name: str) -> str:
    """What a stage's time is estimated from: its kind without the method or seed ("eval / facts-ID / basic",
    "train", "probe facts-ID"), so that the finished trainings and evaluations estimate the ones to come."""
    step = name.split(": ", 1)[-1]
    step = re.sub(r" \((seed[ -]\d+)\)$", "", step)
    if step.startswith("eval "):
        return "eval / " + " / ".join(step.split(" / ")[1:])
    if step.startswith("train "):
        return "train"
    return re.sub(r"^build.*", "build", step)


def previous_times(out_dir: Path) -> dict[str, float]:
    """Seconds per stage computed by the folder's previous run (its `pipeline.json`), for the estimate."""
    path = out_dir / "pipeline.json"
    try:
        stages = json.loads(path.read_text(encoding="utf-8")).get("stages", [])
    except (OSError, ValueError):
        return {}
    return {s["stage"]: float(s["seconds"]) for s in stages if not s.get("cached") and s.get("seconds") is not None}


class LiveView(StageLines):
    """Every stage as a row, the running stage's bar, elapsed and estimated time left, redrawn in place."""

    def __init__(self, console: Console, title: str, previous: dict[str, float] | None = None):
        super().__init__(console)
        self.title, self.previous = title, previous or {}
        self.names: list[str] = []
        self.state: dict[str, str] = {}
        self.seconds: dict[str, float] = {}
        self.running: str | None = None
        self.lock = threading.RLock()
        self.started_at = self.stage_started = time.perf_counter()
        self.bars = Progress(*progress_columns(), console=console, speed_estimate_period=SPEED_WINDOW)
        # what else is printed meanwhile (rait's warnings about the data) goes above the view, not through it
        self.live = Live(console=console, get_renderable=self.render, refresh_per_second=4, transient=False,
                         redirect_stdout=True, redirect_stderr=True)

    def __enter__(self) -> LiveView:
        self.live.start()
        return self

    def __exit__(self, *exc) -> None:
        self.running = None
        self.live.stop()

    def plan(self, names: list[str]) -> None:
        with self.lock:
            for name in names:
                if name not in self.state:
                    self.names.append(name)
                    self.state[name] = "pending"

    def _mark(self, name: str, state: str, seconds: float | None = None) -> None:
        with self.lock:  # the view is drawn from its own thread
            if name not in self.state:
                self.names.append(name)
            self.state[name] = state
            if seconds is not None:
                self.seconds[name] = seconds
        self._redraw()

    def _redraw(self) -> None:
        """Draw now, not at the next tick: every stage and every bar appears at least once, however fast."""
        if self.live.is_started:
            self.live.refresh()

    def cached(self, name: str) -> None:
        self._mark(name, "cached")

    def started(self, name: str) -> None:
        self.running, self.stage_started = name, time.perf_counter()
        self._mark(name, "running")

    def finished(self, name: str, seconds: float) -> None:
        self.running = None  # its bars went with the loops that drew them (`progress`)
        self._mark(name, "done", seconds)

    def skipped(self, name: str, why: str) -> None:
        self._mark(name, "skipped", 0.0)

    @contextmanager
    def progress(self, description: str, total: int | None, completed: int = 0) -> Iterator[Bar]:
        """The running stage's bar (what `rait.terminal.progress` draws while this view is in use)."""
        task = self.bars.add_task(description, total=total, completed=completed)
        self._redraw()
        try:
            yield Bar(self.bars, task)
        finally:
            if task in self.bars.task_ids:
                self.bars.remove_task(task)

    # ------------------------------------------------------------ estimate and drawing

    def estimate(self, name: str) -> float | None:
        """Seconds a stage not yet finished is expected to take, or None when nothing tells."""
        if name in self.previous:
            return self.previous[name]
        same = [s for n, s in self.seconds.items() if self.state[n] == "done" and stage_kind(n) == stage_kind(name)]
        return sum(same) / len(same) if same else None

    def time_left(self) -> tuple[float, int]:
        """(seconds expected for the stages not finished, how many of them have no estimate)."""
        left, unknown = 0.0, 0
        for name in self.names:
            if self.state[name] not in ("pending", "running"):
                continue
            if name == self.running and self.bars.tasks and self.bars.tasks[-1].time_remaining is not None:
                left += self.bars.tasks[-1].time_remaining
                continue
            guess = self.estimate(name)
            if guess is None:
                unknown += 1
            else:
                left += max(0.0, guess - (time.perf_counter() - self.stage_started if name == self.running else 0.0))
        return left, unknown

    def render(self) -> Group:
        with self.lock:
            return self._render()

    def _render(self) -> Group:
        elapsed = time.perf_counter() - self.started_at
        left, unknown = self.time_left()
        finished = sum(self.state[n] in ("done", "cached", "skipped") for n in self.names)
        if not unknown:
            estimate = f"left ≈ {_clock(left)}  ·  total ≈ {_clock(elapsed + left)}"
        else:
            estimate = (f"left ≥ {_clock(left)}, " if left else "left: ") + \
                f"{unknown} stage{'s' * (unknown != 1)} not yet estimable"
        header = Text.assemble((self.title, "bold"), f"  ·  {finished}/{len(self.names)} stages  ·  elapsed "
                               f"{_clock(elapsed)}  ·  {estimate}")
        table = Table.grid(padding=(0, 1))
        table.add_column(width=1)
        table.add_column()
        table.add_column(justify="right")
        first_open = next((i for i, n in enumerate(self.names) if self.state[n] in ("running", "pending")),
                          len(self.names))
        start, stop = max(0, first_open - DONE_SHOWN), min(len(self.names), first_open + PENDING_SHOWN + 1)
        if start:
            table.add_row("", Text(f"… {start} earlier stages", style="dim"), "")
        for name in self.names[start:stop]:
            table.add_row(*self._row(name))
        if stop < len(self.names):
            table.add_row("", Text(f"… {len(self.names) - stop} more", style="dim"), "")
        parts = [header, table]
        if self.running and self.bars.tasks:
            parts.append(self.bars.get_renderable())
        return Group(*parts)

    def _row(self, name: str) -> tuple:
        state = self.state[name]
        if state == "running":
            return Text("▶", style="bold yellow"), Text(name, style="bold"), _clock(time.perf_counter() - self.stage_started)
        if state == "done":
            return Text("✓", style="green"), name, _clock(self.seconds[name])
        if state == "cached":
            return Text("✓", style="dim"), Text(name, style="dim"), Text("cached", style="dim")
        if state == "skipped":
            return Text("–", style="yellow"), Text(name, style="yellow"), Text("skipped", style="yellow")
        guess = self.estimate(name)
        return Text("·", style="dim"), Text(name, style="dim"), Text(f"≈ {_clock(guess)}" if guess else "", style="dim")


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def stage_view(console: Console, out_dir: Path, title: str, live: bool) -> StageLines:
    """The live view on an interactive terminal (not under --quiet or --verbose), plain lines otherwise."""
    if live and console.is_terminal and not console.quiet:
        return LiveView(console, title, previous_times(out_dir))
    return StageLines(console)
