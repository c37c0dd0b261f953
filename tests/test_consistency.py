"""Consistency-RAIT (docs/transfer.md): Cor-RAIT's IdK side limited to what the model's own samples disagree on."""

from __future__ import annotations

import warnings

import pandas as pd
import pytest

from rait.errors import DataError
from rait.select import SelectionWarning
from rait.select.consistency import ConsistencyRAIT, majority_agreement
from rait.select.methods import METHODS


def test_majority_agreement_is_the_share_of_the_most_common_normalised_answer():
    assert majority_agreement(["Paris", "paris.", "The Paris", "Lyon"]) == 0.75  # SQuAD normalisation
    assert majority_agreement(["a dog", "cat", "bird", "fish"]) == 0.25
    assert majority_agreement(["x", "I don't know", "I'm not sure"], [False, True, True]) == pytest.approx(2 / 3)
    assert majority_agreement([]) == 0.0


def table() -> pd.DataFrame:
    """Six known questions, three unknown ones the samples disagree on, three answered wrong consistently."""
    rows = []
    for i in range(6):
        rows.append((f"known/{i}", 0.9, ["Paris"] * 9 + ["Lyon"]))
    for i in range(3):
        rows.append((f"unsure/{i}", 0.1, ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]))
    for i in range(3):
        rows.append((f"wrong/{i}", 0.0, ["Lyon"] * 8 + ["Nice", "Nice"]))
    return pd.DataFrame({"id": [r[0] for r in rows], "task": "oeqa", "mu": [r[1] for r in rows], "sigma": 0.5,
                         "samples": [r[2] for r in rows], "sample_correct": [[False] * 10] * len(rows),
                         "sample_refused": [[False] * 10] * len(rows)})


def test_idk_side_keeps_only_the_questions_the_samples_disagree_on():
    selector = ConsistencyRAIT(n_vanilla=4, n_idk=3, seed=1).fit(table())
    assert sorted(selector.idk_ids_) == ["unsure/0", "unsure/1", "unsure/2"]
    assert all(qid.startswith("known/") for qid in selector.vanilla_ids_) and len(selector.vanilla_ids_) == 4
    pool = selector.report_["pool"]
    assert (pool["idk"], pool["dropped_by_agreement"]) == (3, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SelectionWarning)
        everything = ConsistencyRAIT(n_vanilla=4, n_idk=6, agreement_max=1.0).fit(table())  # 0.8 < 1.0: all kept
        none = ConsistencyRAIT(n_vanilla=4, n_idk=3, agreement_max=0.0).fit(table())
    assert len(everything.idk_ids_) == 6 and none.idk_ids_ == []


def test_it_needs_open_qa_samples_and_paper_mode():
    with pytest.raises(DataError, match="samples"):
        ConsistencyRAIT(n_total=4).fit(table().drop(columns=["samples"]))
    with pytest.raises(DataError, match="mode"):
        ConsistencyRAIT(n_total=4, mode="as_released").fit(table())


def test_registered_as_an_sft_method_outside_the_defaults():
    method = METHODS["consistency_rait"]
    assert (method.label, method.kind, method.default) == ("Consistency-RAIT", "sft", False)
    assert method.selector is ConsistencyRAIT and "agreement_max" in method.parameters
    assert not method.needs_flow and not method.needs_gradients and method.needs_samples
