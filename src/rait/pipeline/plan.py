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

    def estimates(self) -> dict[str, float]:
        """Seconds each stage to run is expected to take, as the live view estimates them: its own time in this
        folder's earlier runs, else the mean time of the stages of its kind (`stage_kind`: the other seeds'
        trainings, the other models' evaluations of the same test set and prompt) that have one; a stage with
        neither has no estimate."""
        from rait.pipeline.view import stage_kind

        by_kind: dict[str, list[float]] = {}
        for stage in self.stages:
            if stage.seconds is not None:
                by_kind.setdefault(stage_kind(stage.name), []).append(stage.seconds)
        estimates = {}
        for stage in self.to_run():
            same = by_kind.get(stage_kind(stage.name))
            if stage.seconds is not None:
                estimates[stage.name] = stage.seconds
            elif same:
                estimates[stage.name] = sum(same) / len(same)
        return estimates

    def table(self) -> Table:
        """The plan as `rait run --dry-run` prints it: a cached stage's seconds are what it took, a stage to run's
        its estimate (`estimates`)."""
        table = Table(title=f"{self.config}: {len(self.stages)} stages into {self.out}")
        for column in ("stage", "key", "state", "seconds"):
            table.add_column(column, justify="right" if column == "seconds" else "left")
        estimates = self.estimates()
        for stage in self.stages:
            state = {"run after": f"run after {stage.after}", "skip": f"skip: {stage.skipped}"}.get(stage.state,
                                                                                                   stage.state)
            seconds = stage.seconds if stage.cached else estimates.get(stage.name)
            table.add_row(stage.name, stage.key or "", state, "" if seconds is None else f"{seconds:.0f}")
        return table

    def summary(self) -> str:
        """One line: how many stages are cached, to run and skipped, and the time the ones to run are expected to
        take."""
        to_run, estimates = self.to_run(), self.estimates()
        cached = sum(stage.cached for stage in self.stages)
        skipped = sum(bool(stage.skipped) for stage in self.stages)
        line = f"{cached} cached, {len(to_run)} to run, {skipped} skipped"
        if estimates:
            line += (f"; about {sum(estimates.values()) / 60:.1f} min for {len(estimates)} of the {len(to_run)} to "
                     "run (their times in this folder's earlier runs, or those of stages of their kind)")
            if len(estimates) < len(to_run):
                line += f", {len(to_run) - len(estimates)} not estimable yet"
        elif to_run:
            line += "; no time on record in this folder to estimate them from (`rait plan` counts each stage's passes)"
        return line
