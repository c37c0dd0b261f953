"""The build stage: turn one knowledge table into every method's training set (selectors, builders, CRSS).

Selectors have the scikit-learn shape (parameters in ``__init__``, work in ``fit(table)``):
Van-Tuning, Cor-RAIT, CorCer-RAIT (= CRaFT w/o Flow), CRaFT w/o Cer, CRaFT, R-Tuning, GRAIT,
registered once in `rait.select.methods`. ``build_dataset`` turns a selector into TRL
prompt-completion rows; ``run(BuildSettings(...), table, records, out)`` is `rait build`.

Names are imported on first use, so that the registry (`rait.select.methods`) can be read
without scikit-learn and pandas.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Selector": "base", "SelectionWarning": "base", "resolve_sizes": "base", "split_by_correctness": "base",
    "build_dataset": "build", "preference_pairs": "build", "write_dataset": "build", "xtuner_rows": "build",
    "CorCerRAIT": "craft", "CorRAIT": "craft", "CRaFT": "craft", "CRaFTWithoutCer": "craft", "VanTuning": "craft",
    "CRSS_THRESHOLDS": "static_conflicts", "crss": "static_conflicts", "question_features": "static_conflicts",
    "GRAIT": "grait", "RULES": "grait",
    "ALIASES": "methods", "DEFAULT_METHODS": "methods", "METHODS": "methods", "Method": "methods",
    "make_selector": "methods", "method_of": "methods",
    "FALSE_RESPONSES": "rtuning", "RTuning": "rtuning",
    "Build": "stage", "BuildSettings": "stage", "run": "stage",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rait.select' has no attribute {name!r}")
    return getattr(importlib.import_module(f"rait.select.{_EXPORTS[name]}"), name)
