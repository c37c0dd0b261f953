"""CRaFT's rehearsal stage: fine-tune on known questions, re-probe the pool, keep the knowledge flow Δμ by id.

`run(RehearseSettings(...), table, records, out, model=...)` is the stage (`rait rehearse`, and
`rait run` for the methods that need the flow); `select_rehearsal` and `rehearse` are its parts.
It sits between the probe (whose table it reads and whose settings it re-probes with) and the
build (whose CRaFT selectors read Δμ).
"""

from __future__ import annotations

from rait.rehearse.stage import (
    TARGETS,
    RehearsalResult,
    RehearseSettings,
    flow_summary,
    knowledge_probe,
    plot_delta_mu,
    probe_settings,
    rehearsal_recipe,
    rehearse,
    run,
    select_rehearsal,
)

__all__ = [
    "TARGETS",
    "RehearsalResult",
    "RehearseSettings",
    "flow_summary",
    "knowledge_probe",
    "plot_delta_mu",
    "probe_settings",
    "rehearsal_recipe",
    "rehearse",
    "run",
    "select_rehearsal",
]
