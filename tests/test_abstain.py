"""Abstention without training (rait.evaluate.abstain): the rule, the validation threshold, P(IK), risk-coverage."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from rait.data import testsets
from rait.errors import RaitError
from rait.evaluate.abstain import abstained, abstained_rows, choose_threshold, fit_p_ik, risk_coverage
from rait.pipeline.run import TrackRun

VALIDATION = (["correct", "correct", "wrong", "wrong", "correct", "wrong"], [0.9, 0.8, 0.7, 0.2, 0.6, 0.1])


def rows(outcomes, prefix):
    return [{"id": f"{prefix}{i}", "outcome": o, "output": "x", "source": "facts", "subject": ""}
            for i, o in enumerate(outcomes)]


def test_the_rule_refuses_below_the_threshold_and_keeps_the_rest():
    assert abstained(["correct", "wrong", "wrong"], [0.9, 0.5, 0.1], 0.5) == ["correct", "wrong", "refused"]
    kept = abstained_rows(rows(["correct", "wrong"], "q"), [0.9, 0.1], 0.5)
    assert kept[0]["output"] == "x" and (kept[1]["outcome"], kept[1]["output"]) == ("refused", "I don't know")
    assert [row["confidence"] for row in kept] == [0.9, 0.1]


def test_the_threshold_is_the_best_ths_on_these_items_ties_to_the_lowest():
    """Hand-computed: THS = Pc - Pw here (Init-Basic 50/50); t = 0.6 and t = 0.8 both give 33.3, 0.6 answers more."""
    outcomes, confidence = VALIDATION
    assert choose_threshold(outcomes, confidence, outcomes) == 0.6


def test_the_pipeline_chooses_the_threshold_on_validation_never_on_a_test_set():
    test_outcomes, test_confidence = ["correct", "wrong", "correct"], [0.65, 0.9, 0.3]
    assert choose_threshold(test_outcomes, test_confidence, test_outcomes) != 0.6  # the case tells them apart
    track = TrackRun.__new__(TrackRun)
    track.track, track.curves = SimpleNamespace(name="facts"), []
    track.config = SimpleNamespace(eval=SimpleNamespace(n_boot=20), seed=0)
    track.tests = [(testsets.TestSet(name="validation", data="-", domain="VAL"), []),
                   (testsets.TestSet(name="t", data="-"), [])]
    references = {"validation": ("k", rows(VALIDATION[0], "v")), "t": ("k", rows(test_outcomes, "t"))}
    confidence = {"validation": {f"v{i}": c for i, c in enumerate(VALIDATION[1])},
                  "t": {f"t{i}": c for i, c in enumerate(test_confidence)}}
    result = {row["test_set"]: row for row in track.no_training("self_consistency", confidence, references)}
    assert result["t"]["threshold"] == result["validation"]["threshold"] == 0.6
    assert [row["outcome"] for row in result["t"]["outcome_rows"]] == ["correct", "wrong", "refused"]
    assert result["t"]["method"] == "Self-consistency (σ)"


def test_risk_coverage_and_aurc_by_hand():
    coverage, risk, aurc = risk_coverage(["correct", "wrong", "correct", "refused"], [0.9, 0.8, 0.7, 0.1])
    assert coverage.tolist() == [0.25, 0.5, 0.75, 1.0]
    assert risk.tolist() == pytest.approx([0.0, 1 / 2, 1 / 3, 2 / 4])  # a refusal is not a correct answer
    assert aurc == pytest.approx((0 + 1 / 2 + 1 / 3 + 1 / 2) / 4)


def test_p_ik_separates_known_from_unknown_and_needs_both():
    rng = np.random.default_rng(0)
    known = np.array([True] * 20 + [False] * 20)
    features = rng.normal(size=(40, 8)) + known[:, None] * 3.0
    probe = fit_p_ik(features, known)
    scores = probe.predict_proba(features)[:, 1]
    assert scores[known].min() > scores[~known].max()
    with pytest.raises(RaitError, match="both sides"):
        fit_p_ik(features, np.ones(40, dtype=bool))
