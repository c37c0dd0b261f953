"""Several processes: who this one is, which share of the work is its own, and how the shares meet.

A stage runs on N processes when `torchrun` or `accelerate launch` starts it N times (one GPU each, or gloo
on CPU) and each copy reads its rank from the environment. The stages split their work the same way:

- the work is cut into fixed units that do not depend on N (probe shards, gradient batches, evaluation
  items; training's micro-batches are DDP's), and unit i belongs to rank i mod N: the probe and the gradient
  stage compute the same units with the same arithmetic as one process and give its artifact byte for byte,
  training and evaluation agree with it to round-off (docs/distributed.md);
- each rank computes its units; the main process (rank 0) alone merges them and writes the artifact, its
  manifest and the progress bar, after every rank has finished, so a failed rank leaves no merged file;
- a rank that raises ends its process with its error; the launcher then stops the others and exits
  non-zero.

`Workers(N)` runs stage entry points that way for one process that drives them (`rait run --processes N`):
N workers started once on this machine, each call given to all of them, rank 0's result returned, a failing
rank's error raised. Several machines: start the stage commands with `torchrun`/`accelerate launch` on each
(docs/distributed.md).
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, TypeVar

from rait.artifacts import atomic_path, write_json
from rait.errors import RaitError
from rait.terminal import Bar, progress, use_view

T = TypeVar("T")
RELAY_SECONDS = 0.5  # how often a worker's relayed bar writes its state


def processes():
    """This process's place among those `torchrun`/`accelerate launch` started (accelerate's `PartialState`).

    Without a GPU, accelerate joins the processes (gloo) only when told it runs on CPU; left alone, every
    rank would think itself alone and do all the work.
    """
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def launched() -> bool:
    """Whether a launcher started this process as one of several (before anything joins them)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def own_units(count: int, state=None) -> list[int]:
    """The units (0 … count−1) that are this rank's: unit i belongs to rank i mod N."""
    state = state or processes()
    return list(range(state.process_index, count, state.num_processes))


def gather_units(own: dict[int, T], count: int, state=None) -> list[T] | None:
    """Every rank's `own` results (unit index → result) in unit order, on the main process; None elsewhere."""
    state = state or processes()
    if state.num_processes == 1:
        merged = own
    else:
        from accelerate.utils import gather_object

        merged = {}
        for part in gather_object([own]):
            merged.update(part)
    if not state.is_main_process:
        return None
    missing = [i for i in range(count) if i not in merged]
    if missing:
        raise RuntimeError(f"units {missing[:5]} were computed by no process")
    return [merged[i] for i in range(count)]


def share_progress(advance: Callable[[int], None] | None, share: int, total: int) -> Callable[[int], None] | None:
    """The main process's progress on its `share` of the items, reported as progress on all `total` (the ranks'
    shares are equal to within one unit, so the main one's pace is the group's)."""
    if advance is None or share == total:
        return advance
    done = [0, 0]  # items of the share, items reported

    def report(n: int) -> None:
        done[0] += n
        shown = total if done[0] >= share else done[0] * total // max(share, 1)
        advance(shown - done[1])
        done[1] = shown
    return report


def split_batch(batch_size: int, grad_accum: int, processes: int) -> tuple[int, int]:
    """(micro-batch, accumulation) per process that keep one process's global batch `batch_size × grad_accum`.

    Under N processes the global batch is micro-batch × accumulation × N, so `rait run --processes N` divides
    the accumulation by N where it can, else the micro-batch; a recipe whose global batch does not split is
    refused rather than silently changed.
    """
    if grad_accum % processes == 0:
        return batch_size, grad_accum // processes
    if batch_size % processes == 0:
        return batch_size // processes, grad_accum
    raise RaitError(f"a global batch of {batch_size} x {grad_accum} does not split over {processes} processes: make "
                    f"batch_size or grad_accum a multiple of {processes}")


class Workers:
    """N processes of this machine, started once (`torchrun --standalone`), that run stage entry points as one group.

    `rait run --processes N` keeps its own single process for the plan, the cache and the stages that run on one,
    and hands each stage that can use N processes to the workers: `workers.run(function, **kwargs)` gives every
    worker the call (the workers each import `function` by name, so it is a module-level entry point and `kwargs`
    pickle), and returns rank 0's result. The workers start at the first call, so a run whose stages are all cached
    starts none. A failing rank stops the group; the call then raises `RaitError` with that rank's error.
    With one process, `run` calls the function here.
    """

    POLL_SECONDS = 0.05

    def __init__(self, processes: int = 1, log: str | Path | None = None):
        self.processes, self.log = processes, Path(log) if log is not None else None
        self._process: subprocess.Popen | None = None
        self._folder: Path | None = None
        self._calls = 0

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, kind, value, trace) -> None:
        self.close(stop_now=kind is not None)

    def run(self, function: Callable[..., T], **kwargs: Any) -> T:
        if self.processes == 1:
            return function(**kwargs)
        if self._process is None:
            self._start()
        _release_memory()  # what this process's own stages cached on GPU 0 is worker 0's to use now
        index, self._calls = self._calls, self._calls + 1
        _write_pickle(self._folder / f"call-{index:05d}.pkl", (function.__module__, function.__qualname__, kwargs))
        result = self._folder / f"result-{index:05d}.pkl"
        bars = FollowedBars(self._folder / f"progress-{index:05d}.json")  # rank 0's bars, drawn here
        try:
            while not result.exists():
                bars.poll()
                if self._process.poll() is not None:
                    self._process = None
                    # the first error is the cause: the other ranks fail after it, in a collective whose peer is gone
                    errors = sorted(self._folder.glob("error-rank*.txt"), key=lambda path: path.stat().st_mtime_ns)
                    first = errors[0].read_text(encoding="utf-8") if errors else _tail(self._log_path)
                    raise RaitError(f"{function.__module__}.{function.__name__} on {self.processes} processes "
                                    f"failed: {first}")
                time.sleep(self.POLL_SECONDS)
            bars.poll()
        finally:
            bars.close()
        with open(result, "rb") as file:
            value = pickle.load(file)
        result.unlink()
        return value

    def close(self, stop_now: bool = False) -> None:
        """Tell the workers to stop once their call is done and wait for them, or (`stop_now`: the caller failed or
        was interrupted) stop them at once; their folder goes."""
        if self._process is not None:
            if stop_now:
                self._process.terminate()  # torchrun stops its workers on SIGTERM
            else:
                _write_pickle(self._folder / f"call-{self._calls:05d}.pkl", None)
            try:
                self._process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def _start(self) -> None:
        self._folder = Path(tempfile.mkdtemp(prefix="rait-workers-"))
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={self.processes}",
                   "-m", "rait.distributed", str(self._folder), str(os.getpid())]
        self._log_path = self.log or self._folder / "workers.log"
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._log_path, "ab") as log:  # the workers' own output; a failure quotes its tail
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def _write_pickle(path: Path, value: Any) -> None:
    """Whole or not at all: the reader polls for the name."""
    with atomic_path(path) as partial, open(partial, "wb") as file:
        pickle.dump(value, file)


class RelayView:
    """A worker's stand-in for `rait run`'s live view (`rait.terminal.use_view`): each bar's state (description,
    total, completed) goes to a file, at most every RELAY_SECONDS, for the driving process to draw (`FollowedBars`)."""

    def __init__(self, path: Path):
        self.path = path

    @contextmanager
    def progress(self, description: str, total: int | None, completed: int = 0):
        yield RelayBar(self.path, {"description": description, "total": total, "completed": completed})


class RelayBar(Bar):
    def __init__(self, path: Path, state: dict):
        super().__init__()
        self.path, self.state = path, state
        self._write()

    def advance(self, n: int = 1) -> None:
        self.state["completed"] += n
        if time.monotonic() - self._written >= RELAY_SECONDS or self.state["completed"] == self.state["total"]:
            self._write()

    def restart(self, total: int | None) -> None:
        self.state |= {"total": total, "completed": 0}
        self._write()

    def _write(self) -> None:
        write_json(self.path, self.state)
        self._written = time.monotonic()


class FollowedBars:
    """Draws, with `rait.terminal.progress`, the bars a worker relays (`RelayView`): `poll()` often, then `close()`.
    A new description closes the bar before it and opens its own."""

    def __init__(self, path: Path):
        self.path, self._stamp, self._shown, self._bar, self._open = path, None, None, None, None

    def poll(self) -> None:
        try:
            stamp = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return
        if stamp == self._stamp:
            return
        self._stamp = stamp
        state = json.loads(self.path.read_text(encoding="utf-8"))
        if self._shown is None or state["description"] != self._shown["description"]:
            self.close()
            self._open = progress(state["description"], state["total"], state["completed"])
            self._bar = self._open.__enter__()
        elif state["total"] != self._shown["total"] or state["completed"] < self._shown["completed"]:
            self._bar.restart(state["total"])
            self._bar.advance(state["completed"])
        else:
            self._bar.advance(state["completed"] - self._shown["completed"])
        self._shown = state

    def close(self) -> None:
        if self._open is not None:
            self._open.__exit__(None, None, None)
        self._shown, self._bar, self._open = None, None, None


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def _serve(folder: Path, driver: int) -> None:
    """One worker of a `Workers` group: run each call as it comes; rank 0 keeps the results, a failing rank its
    error. Stops when told, or when the process that started the group is gone."""
    state = processes()
    for index in itertools.count():
        call_path = folder / f"call-{index:05d}.pkl"
        while not call_path.exists():
            if not _alive(driver):
                return
            time.sleep(Workers.POLL_SECONDS)
        with open(call_path, "rb") as file:
            call = pickle.load(file)
        if call is None:
            return
        module, name, kwargs = call
        function = importlib.import_module(module)
        for part in name.split("."):
            function = getattr(function, part)
        try:
            relay = RelayView(folder / f"progress-{index:05d}.json")
            with use_view(relay) if state.is_main_process else nullcontext():
                result = function(**kwargs)
        except BaseException as err:  # noqa: BLE001 - any failure ends this rank, and the caller reports it
            message = str(err) if isinstance(err, RaitError) else "".join(traceback.format_exception(err)).strip()
            (folder / f"error-rank{state.process_index}.txt").write_text(f"rank {state.process_index}: {message}",
                                                                          encoding="utf-8")
            raise SystemExit(1) from err
        if state.is_main_process:
            _write_pickle(folder / f"result-{index:05d}.pkl", result)
        _release_memory()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _release_memory() -> None:
    """Give cached GPU memory back: between calls a worker holds no model, and the driving process's own stages
    share GPU 0 with worker 0."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


if __name__ == "__main__":
    _serve(Path(sys.argv[1]), int(sys.argv[2]))
