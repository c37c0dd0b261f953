"""Stage 2: turn one knowledge table into every method's training set (selectors, builders, CRSS).

Selectors have the scikit-learn shape (parameters in ``__init__``, work in ``fit(table)``):
Van-Tuning, Cor-RAIT, CorCer-RAIT (= CRaFT w/o Flow), CRaFT w/o Cer, CRaFT, R-Tuning, GRAIT.
``build_dataset`` turns a selector into TRL prompt-completion rows; ``run_build`` is `rait build`.
"""

from __future__ import annotations

from rait.select.base import Selector, SelectionWarning, resolve_sizes
from rait.select.build import (
    SELECTORS,
    build_dataset,
    make_selector,
    preference_pairs,
    run_build,
    write_dataset,
    xtuner_rows,
)
from rait.select.craft import CorCerRAIT, CorRAIT, CRaFT, CRaFTWithoutCer, VanTuning
from rait.select.grait import GRAIT, RULES, gradient_examples
from rait.select.crss import CRSS_THRESHOLDS, crss, question_features
from rait.select.rtuning import FALSE_RESPONSES, RTuning

__all__ = [
    "GRAIT",
    "RULES",
    "gradient_examples",
    "CRSS_THRESHOLDS",
    "FALSE_RESPONSES",
    "SELECTORS",
    "CRaFT",
    "CRaFTWithoutCer",
    "CorCerRAIT",
    "CorRAIT",
    "RTuning",
    "SelectionWarning",
    "Selector",
    "VanTuning",
    "build_dataset",
    "crss",
    "make_selector",
    "preference_pairs",
    "question_features",
    "resolve_sizes",
    "run_build",
    "write_dataset",
    "xtuner_rows",
]
