"""What a person sees in the terminal: rait's own lines and progress bars, not the libraries' (issue 19).

Left alone, every model load prints a "Loading weights" bar (transformers), every training run five dataset
bars ("Tokenizing train dataset", ...) from datasets/TRL and a FutureWarning from inside the trainer. `quiet`
turns those off through the libraries' own switches (their progress-bar and verbosity APIs) and sends their
log records and warnings to a log file when one is given (`rait run` keeps `rait.log` in its run folder), so
nothing is lost; `verbose` leaves every library as it is. Warnings raised by rait itself still reach the
terminal: they are about the user's data or settings.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

# the libraries' own switches, read when each is imported: `rait` sets them before it imports any of them
QUIET_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1",  # huggingface_hub's bars and transformers' "Loading weights"
             "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",  # datasets' map/filter bars inside TRL's trainers
             "TRANSFORMERS_VERBOSITY": "error"}
LIBRARIES = ("transformers", "datasets", "trl", "peft", "accelerate", "huggingface_hub", "sentence_transformers")
SPEED_WINDOW = 600  # seconds of progress behind a bar's rate and ETA: a probe batch can take over rich's default 30
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"
RAIT_DIR = str(Path(__file__).resolve().parent)
_state: dict = {"verbose": False, "quiet": False, "handler": None, "view": None}
_original_showwarning = warnings.showwarning


def quiet(verbose: bool = False, summary_only: bool = False) -> None:
    """Keep the libraries' progress bars, logs and warnings out of the terminal, unless `verbose`; with
    `summary_only`, rait's own progress bars too (`shows_progress`). A switch the user set in the environment
    wins; libraries imported already are switched through their APIs."""
    _state["verbose"], _state["quiet"] = verbose, summary_only
    if verbose:
        warnings.showwarning = _original_showwarning
        return
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    if "transformers" in sys.modules:
        import transformers

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()
        datasets.utils.logging.set_verbosity_error()
    if "huggingface_hub" in sys.modules:
        import huggingface_hub

        huggingface_hub.utils.disable_progress_bars()
    warnings.showwarning = _show_warning


def shows_progress() -> bool:
    """Whether rait's own progress bars are wanted (not under `rait --quiet`)."""
    return not _state["quiet"]


def is_verbose() -> bool:
    """Whether the libraries' own output is let through (`rait --verbose`)."""
    return _state["verbose"]


class Bar:
    """What a long loop reports to: `advance(n)` after each batch; `restart(total)` once the total is known (a
    trainer knows its steps only when training begins)."""

    def __init__(self, progress=None, task=None):
        self._progress, self._task = progress, task

    def advance(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def restart(self, total: int | None) -> None:
        if self._progress is not None:
            self._progress.reset(self._task, total=total)


def progress_columns() -> list:
    """A bar's columns: what, how far, items per second, elapsed and the time left."""
    from rich.progress import (BarColumn, MofNCompleteColumn, ProgressColumn, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed:.2f}/s" if task.speed else "", style="progress.data.speed")

    return [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn()]


@contextmanager
def progress(description: str, total: int | None, completed: int = 0, enabled: bool = True) -> Iterator[Bar]:
    """One long loop's progress bar. Inside `rait run` it is the running stage's bar in the run's live view
    (`use_view`); otherwise its own bar on stderr when that is a terminal. Nothing is drawn when stderr is not a
    terminal (CI, a pipe: plain lines only), under `rait --quiet`, or where the caller says no (`enabled`: a
    caller's `progress=False`, a process other than the main one)."""
    if not enabled:
        yield Bar()
        return
    if _state["view"] is not None:
        with _state["view"].progress(description, total, completed) as bar:
            yield bar
        return
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    if not shows_progress() or not console.is_terminal:
        yield Bar()
        return
    with Progress(*progress_columns(), console=console, speed_estimate_period=SPEED_WINDOW) as bars:
        yield Bar(bars, bars.add_task(description, total=total, completed=completed))


@contextmanager
def use_view(view) -> Iterator[None]:
    """Route every `progress` bar to `view` (an object with the same `progress` context manager) while inside."""
    _state["view"] = view
    try:
        yield
    finally:
        _state["view"] = None


def log_to(path: str | Path | None) -> None:
    """From now on, write the libraries' log records (warnings and up) and their Python warnings to `path`
    (appended); None stops. With `verbose` they reach the terminal as well."""
    root = logging.getLogger()
    if _state["handler"] is not None:
        root.removeHandler(_state["handler"])
        _state["handler"].close()
        _state["handler"] = None
    if path is None:
        return
    handler = _LazyFileHandler(path)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    _state["handler"] = handler
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    import transformers

    transformers.utils.logging.set_verbosity_warning()
    if not _state["verbose"]:
        transformers.utils.logging.disable_default_handler()  # its records reach the file through the root
        transformers.utils.logging.enable_propagation()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """rait's own warnings (about the user's data or settings) in the terminal; the libraries' (deprecations
    inside a trainer, a DataLoader's pin_memory note) in the log file when there is one, else nowhere."""
    if str(Path(filename).resolve()).startswith(RAIT_DIR):
        _original_showwarning(message, category, filename, lineno, file, line)
    elif _state["handler"] is not None:
        logging.getLogger("py.warnings").warning("%s:%s: %s: %s", filename, lineno, category.__name__, message)


class _LazyFileHandler(logging.FileHandler):
    """A log file made at its first record, folder included: a command that fails before anything is logged
    leaves nothing behind (bad input writes nothing)."""

    def __init__(self, path: str | Path):
        super().__init__(path, encoding="utf-8", delay=True)

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()
