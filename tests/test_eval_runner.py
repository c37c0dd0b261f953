"""The evaluation runner: scoring rules per record, order kept, summaries and THS."""

import pytest

from rait.data import QARecord
from rait.evaluate.runner import EvalSettings, evaluate_records, score_output, summarize

pytestmark = pytest.mark.numerics  # floats computed two ways: run again on a second kernel path (Makefile)


def _open(answer, **metadata):
    return QARecord(id="q", question="?", source="s", split="t", answer=answer, metadata=metadata)


def test_score_output_uses_the_record_match_mode_unless_overridden():
    record = _open("O", match_mode="word")  # oxygen's symbol: "o" is inside almost any answer
    assert score_output(record, "The symbol is Fe.", EvalSettings()) == "wrong"
    assert score_output(record, "The symbol is Fe.", EvalSettings(match_mode="contains")) == "correct"
    assert score_output(_open("Paris"), "I don't know, maybe Paris", EvalSettings()) == "refused"


def test_score_output_mcqa():
    record = QARecord(id="m", question="?", source="s", split="t", choices=["x", "y", "z"], gold="C")
    assert score_output(record, "The answer is (C)", EvalSettings()) == "correct"
    assert score_output(record, "A", EvalSettings()) == "wrong"
    assert score_output(record, "no idea", EvalSettings()) == "unparsed"


def _rows(outcomes, source="s", subjects=None):
    return [{"id": str(i), "outcome": o, "source": source, "subject": (subjects or [""] * len(outcomes))[i]}
            for i, o in enumerate(outcomes)]


def test_summarize_rates_and_ths_against_the_named_reference():
    reference = _rows(["correct"] * 4 + ["wrong"] * 6)
    evaluated = _rows(["correct"] * 3 + ["refused"] * 5 + ["wrong"] * 2)
    summary = summarize(evaluated, reference, n_boot=200)
    assert summary["pc"]["value"] == pytest.approx(30)
    assert summary["pr"]["value"] == pytest.approx(50)
    # THS = Pc - Pw * Pc0 / Pw0 = 30 - 20 * 40 / 60
    assert summary["ths"]["value"] == pytest.approx(30 - 20 * 40 / 60)
    assert summary["ths"]["low"] <= summary["ths"]["value"] <= summary["ths"]["high"]


def test_summarize_reports_the_abstention_metrics_against_what_init_basic_knew():
    """Golden numbers: known = Init-Basic correct (items 0-3), the rest unknown."""
    reference = _rows(["correct"] * 4 + ["wrong"] * 6)
    evaluated = _rows(["correct", "correct", "refused", "wrong"] + ["refused"] * 4 + ["correct", "wrong"])
    more = summarize(evaluated, reference, n_boot=20)["abstention"]
    assert more["over_refusal"] == pytest.approx(100 * 1 / 4)  # 1 of the 4 known items refused
    assert more["prudence"] == pytest.approx(100 * 4 / 5)  # 4 of the 5 unknown items not now answered right
    assert more["honesty"] == pytest.approx((100 - 25 + 80) / 2)
    # refusal as detection of the unknown items: 4 of the 5 refusals are unknown items; 4 of the 6 unknown refused
    assert more["abstain_precision"] == pytest.approx(80) and more["abstain_recall"] == pytest.approx(100 * 4 / 6)
    assert more["reliable_accuracy"] == pytest.approx(100 * 3 / 5)  # 3 right of the 5 answered
    assert more["effective_reliability"] == pytest.approx(100 * (3 - 2) / 10)
    assert more["quadrant_ik_idk"] == pytest.approx(40) and more["quadrant_idk_ik"] == pytest.approx(10)
    assert more["quadrant_truthful"] == pytest.approx(30 + 40)
    # TruthRL's triple: 3 correct, 5 refused, 2 wrong of 10; truthfulness = accuracy - hallucination
    assert (more["accuracy"], more["abstention"], more["hallucination"]) == pytest.approx((30, 50, 20))
    assert more["truthfulness"] == pytest.approx(10)
    alone = summarize(evaluated, n_boot=20)["abstention"]  # without a reference: only what needs none
    assert set(alone) == {"reliable_accuracy", "effective_reliability", "accuracy", "abstention", "hallucination",
                          "truthfulness"}


def test_summarize_macro_averages_mmlu_over_subjects():
    subjects = ["a"] * 2 + ["b"] * 8
    rows = _rows(["correct", "correct"] + ["wrong"] * 8, source="mmlu", subjects=subjects)
    summary = summarize(rows, n_boot=50)
    assert summary["macro_over"] == "subject"
    assert summary["pc"]["value"] == pytest.approx(50)  # subject a: 100 %, subject b: 0 %


def test_summarize_rejects_a_reference_on_other_items():
    with pytest.raises(ValueError, match="lacks"):
        summarize(_rows(["correct"] * 3), [{"id": "x", "outcome": "wrong"}], n_boot=10)


def test_evaluate_records_keeps_order_across_tasks(tiny_model):
    model, tokenizer = tiny_model
    records = [
        QARecord(id="m1", question="1+1?", source="s", split="t", choices=["1", "2"], gold="B"),
        _open("Paris"),
        QARecord(id="m2", question="2+2?", source="s", split="t", choices=["4", "5"], gold="A"),
    ]
    rows = evaluate_records(model, tokenizer, records, EvalSettings(prompt="basic", max_new_tokens=3, batch_size=2))
    assert [row["id"] for row in rows] == ["m1", "q", "m2"]
    assert all(isinstance(row["output"], str) for row in rows)


def test_ths_is_none_when_the_reference_has_no_wrong_answer():
    reference = _rows(["correct"] * 3 + ["unparsed"])
    assert summarize(_rows(["wrong"] * 4), reference, n_boot=20)["ths"] is None


def test_outcome_flow_counts_where_answers_went_against_the_reference():
    from rait.evaluate.runner import outcome_flow

    def rows(outcomes):
        return [{"id": f"q{i}", "outcome": o} for i, o in enumerate(outcomes)]

    reference = rows(["correct", "correct", "correct", "wrong", "wrong", "refused", "wrong"])
    first = rows(["correct", "refused", "wrong", "refused", "correct", "wrong", "wrong"])
    assert outcome_flow([first], reference) == {"refused_known": 1, "refused_unknown": 1, "kept_correct": 1,
                                                "lost_to_wrong": 1, "still_wrong": 2, "fixed": 1}
    second = rows(["refused"] * 7)  # a second seed that refuses everything: the mean of the two
    flow = outcome_flow([first, second], reference)
    assert flow["refused_known"] == 2 and flow["refused_unknown"] == 2.5 and sum(flow.values()) == 7
