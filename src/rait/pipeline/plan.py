"""A run's plan: every stage of every track and seed, in the order `rait run` goes through them, with its key.

`rait.pipeline.run.resolve` makes it from a config before any work (nothing is loaded but the data, nothing is
written): `rait run` then executes it (each stage it runs must be the planned one, under the planned key), the
live view draws it, and `rait run --dry-run` prints it. A stage's key is the hash of its settings and of the keys
of what it reads, so most keys are known before anything runs; a few hash an earlier stage's output (a training
hashes the training set its build writes; the diagnosis, the untrained model's answers), and those are known
once that stage has finished: until then the plan names the stage they wait for (`after`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table


@dataclass(frozen=True)
class PlannedStage:
    """One stage: its name (as the live view and `pipeline.json` show it), its folder and its key's parts."""

    name: str
    folder: Path
    parts: dict[str, Any] | None = None  # None: they hash what `after` writes
    key: str | None = None
    cached: bool = False  # the folder finished under this key: the run reads it
    after: str | None = None
    skipped: str | None = None  # why it has nothing to do, read from a finished build
    seconds: float | None = None  # cached: what it took; else its time in this folder's last run, if any

    @property
    def state(self) -> str:
        if self.skipped:
            return "skip"
        if self.cached:
            return "cached"
        return "run" if self.key else "run after"


@dataclass(frozen=True)
class RunPlan:
    """The stages of a run, in order, resolved from its config (`rait.pipeline.run.resolve`)."""

    config: str
    out: Path
    model: str
    stages: tuple[PlannedStage, ...] = field(default_factory=tuple)

    def names(self) -> list[str]:
        return [stage.name for stage in self.stages]

    def by_name(self) -> dict[str, PlannedStage]:
        return {stage.name: stage for stage in self.stages}

    def to_run(self) -> list[PlannedStage]:
        return [stage for stage in self.stages if not stage.cached and not stage.skipped]

    def table(self) -> Table:
        """The plan as `rait run --dry-run` prints it."""
        table = Table(title=f"{self.config}: {len(self.stages)} stages into {self.out}")
        for column in ("stage", "key", "state", "seconds"):
            table.add_column(column, justify="right" if column == "seconds" else "left")
        for stage in self.stages:
            state = {"run after": f"run after {stage.after}", "skip": f"skip: {stage.skipped}"}.get(stage.state,
                                                                                                   stage.state)
            table.add_row(stage.name, stage.key or "", state, "" if stage.seconds is None else f"{stage.seconds:.0f}")
        return table

    def summary(self) -> str:
        """One line: how many stages are cached, to run and skipped, and what the ones to run took before."""
        to_run = self.to_run()
        known = [stage.seconds for stage in to_run if stage.seconds is not None]
        cached = sum(stage.cached for stage in self.stages)
        skipped = sum(bool(stage.skipped) for stage in self.stages)
        line = f"{cached} cached, {len(to_run)} to run, {skipped} skipped"
        if known:
            line += (f"; {sum(known) / 60:.1f} min for the {len(known)} of them that this folder's earlier runs "
                     "computed" + ("" if len(known) == len(to_run) else ", the others not timed yet"))
        elif to_run:
            line += "; no time on record for them in this folder (`rait plan` estimates each stage's passes)"
        return line
