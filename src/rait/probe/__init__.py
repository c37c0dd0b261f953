"""Stage 1: probe what the model knows (correctness μ and certainty σ per question).

`run(ProbeSettings, records, out, model=...)` is the stage's entry point; `probe_mcqa` and
`probe_open` take a ready backend (`HFBackend(model, tokenizer)`). Both write the
knowledge table of `rait.probe.table` plus a manifest, resumably (see `shards`).

Names are imported on first use, so that selectors importing `rait.probe.table` do not
pay for torch and transformers.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Backend": "backends", "HFBackend": "backends", "load_backend": "backends",
    "MCQASettings": "mcqa", "probe_mcqa": "mcqa",
    "OpenSettings": "oeqa", "probe_open": "oeqa",
    "SentenceEmbedder": "measures", "entropy": "measures", "mean_pairwise_cosine": "measures", "option_stats": "measures",
    "table_summary": "summary",
    "ProbeSettings": "stage", "run": "stage",
    "merge_flow": "table", "read_table": "table", "validate_table": "table", "write_table": "table",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rait.probe' has no attribute {name!r}")
    return getattr(importlib.import_module(f"rait.probe.{_EXPORTS[name]}"), name)
