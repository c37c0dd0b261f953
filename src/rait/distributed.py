"""Several processes: who this one is, which share of the work is its own, and how the shares meet.

A stage runs on N processes when `torchrun` or `accelerate launch` starts it N times (one GPU each, or gloo
on CPU) and each copy reads its rank from the environment. The stages split their work the same way:

- the work is cut into fixed units that do not depend on N (probe shards, gradient batches, evaluation
  batches), and unit i belongs to rank i mod N, so one process and N processes compute the same units
  with the same arithmetic and give the same artifact;
- each rank computes its units; the main process (rank 0) alone merges them and writes the artifact, its
  manifest and the progress bar, after every rank has finished, so a failed rank leaves no merged file;
- a rank that raises ends its process with its error; the launcher then stops the others and exits
  non-zero.

`launch(function, kwargs, processes=N)` runs a stage's entry point that way from one process (`rait run
--processes N`): it starts `torchrun --standalone` on this machine and returns rank 0's result, or raises
the failing rank's error. Several machines: start the stage commands with `torchrun`/`accelerate launch` on
each (README, "Several GPUs and machines").
"""

from __future__ import annotations

import importlib
import os
import pickle
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable, TypeVar

from rait.errors import RaitError

T = TypeVar("T")
_CALL, _RESULT, _LOG = "call.pkl", "result.pkl", "launch.log"


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


def launch(function: Callable[..., T], kwargs: dict[str, Any], processes: int) -> T:
    """`function(**kwargs)` on `processes` processes of this machine, under `torchrun --standalone`; rank 0's result.

    `function` is a module-level stage entry point (the workers import it by name) and `kwargs` must pickle.
    The workers' output goes to a log; a failure raises `RaitError` with the failing rank's error and the log's
    tail. One process calls `function` here, directly.
    """
    if processes == 1:
        return function(**kwargs)
    with tempfile.TemporaryDirectory(prefix="rait-launch-") as folder:
        folder = Path(folder)
        with open(folder / _CALL, "wb") as file:
            pickle.dump((function.__module__, function.__qualname__, kwargs), file)
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                   "-m", "rait.distributed", str(folder)]
        with open(folder / _LOG, "wb") as log:
            code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
        if code != 0:
            errors = sorted(folder.glob("error-rank*.txt"))
            first = errors[0].read_text(encoding="utf-8") if errors else _tail(folder / _LOG)
            raise RaitError(f"{function.__module__}.{function.__name__} on {processes} processes failed: {first}")
        with open(folder / _RESULT, "rb") as file:
            return pickle.load(file)


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def _worker(folder: Path) -> None:
    """One rank of a `launch`: call the function; rank 0 keeps the result, a failing rank its error."""
    state = processes()
    with open(folder / _CALL, "rb") as file:
        module, name, kwargs = pickle.load(file)
    function = importlib.import_module(module)
    for part in name.split("."):
        function = getattr(function, part)
    try:
        result = function(**kwargs)
    except BaseException as err:  # noqa: BLE001 — any failure ends this rank, and the launcher reports it
        message = str(err) if isinstance(err, RaitError) else "".join(traceback.format_exception(err)).strip()
        (folder / f"error-rank{state.process_index}.txt").write_text(f"rank {state.process_index}: {message}",
                                                                      encoding="utf-8")
        raise SystemExit(1) from err
    if state.is_main_process:
        with open(folder / _RESULT, "wb") as file:
            pickle.dump(result, file)


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
