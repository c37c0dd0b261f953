"""Abstention without training (rait.evaluate.abstain): the rule, the validation threshold, P(IK), risk-coverage."""

from __future__ import annotations

import numpy as np
import pytest

from rait.data import testsets
from rait.errors import RaitError, SettingsError
from rait.evaluate.abstain import abstained, abstained_rows, choose_threshold, fit_p_ik, risk_coverage
from rait.pipeline.rows import rule_rows

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
    tests = [(testsets.TestSet(name="validation", data="-", domain="VAL"), []),
             (testsets.TestSet(name="t", data="-"), [])]
    references = {"validation": ("k", rows(VALIDATION[0], "v")), "t": ("k", rows(test_outcomes, "t"))}
    confidence = {"validation": {f"v{i}": c for i, c in enumerate(VALIDATION[1])},
                  "t": {f"t{i}": c for i, c in enumerate(test_confidence)}}
    found, curves = rule_rows("facts", tests, "Self-consistency (σ)", confidence, references, n_boot=20, seed=0)
    result = {row["test_set"]: row for row in found}
    assert {point["test_set"] for point in curves} == {"validation", "t"}
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


def _rows(outcomes: list[str], prefix: str = "q") -> list[dict]:
    return [{"id": f"{prefix}{i}", "output": f"{prefix}{i}-{outcome}", "outcome": outcome}
            for i, outcome in enumerate(outcomes)]


def test_the_veto_gives_back_init_basics_answer_only_where_the_tuned_model_refuses_and_sigma_reaches_tau():
    from rait.evaluate.abstain import vetoed

    tuned = _rows(["refused", "refused", "correct", "refused"])
    tuned[2]["output"] = "tuned answer"
    reference = _rows(["correct", "wrong", "wrong", "correct"])
    sigma = {"q0": 0.9, "q1": 0.4, "q2": 0.9, "q3": 0.5}
    kept = vetoed(tuned, reference, sigma, tau=0.5)
    assert [row["outcome"] for row in kept] == ["correct", "refused", "correct", "correct"]
    assert kept[0]["output"] == "q0-correct" and kept[2]["output"] == "tuned answer"  # an answer is never replaced
    assert [row.get("vetoed", False) for row in kept] == [True, False, False, True]
    assert vetoed(tuned, reference, sigma, tau=float("inf")) == tuned
    with pytest.raises(ValueError):
        vetoed(tuned, reference[::-1], sigma, tau=0.5)


def test_the_veto_threshold_is_chosen_on_validation_by_the_written_rule():
    """Golden, worked by hand (THS in points against Init-Basic; docs/transfer.md's second-round rule). In domain,
    Init-Basic is [correct, wrong], the tuned model refuses both, σ = [0.95, 0.65]: THS 0 at τ ≤ 0.65 (both given
    back), +50 for 0.65 < τ ≤ 0.95, 0 above. On the transfer set Init-Basic is [correct, correct, wrong, wrong], the
    tuned model refuses all, σ = [0.9, 0.6, 0.8, 0.3]: THS +25 at τ = 0.6 (over-refusal 0 %) and at τ = 0.9
    (over-refusal 50 %), 0 at every other candidate."""
    from rait.evaluate.abstain import VetoSettings, choose_veto_threshold

    sets = {"validation": (_rows(["refused"] * 2, "v"), _rows(["correct", "wrong"], "v"), {"v0": 0.95, "v1": 0.65}),
            "validation-ood": (_rows(["refused"] * 4), _rows(["correct", "correct", "wrong", "wrong"]),
                               {"q0": 0.9, "q1": 0.6, "q2": 0.8, "q3": 0.3})}
    assert choose_veto_threshold(sets, "validation", VetoSettings()) == (0.6, True)  # the tie: less over-refusal
    assert choose_veto_threshold(sets, "validation", VetoSettings(floor=10)) == (0.9, True)  # 0.6 is below the floor
    assert choose_veto_threshold(sets, "validation", VetoSettings(floor=60)) == (0.6, False)  # none reaches it
    assert choose_veto_threshold({"validation": sets["validation"]}, "validation", VetoSettings()) == (0.95, True)
    with pytest.raises(SettingsError):
        VetoSettings(margin=-1)
