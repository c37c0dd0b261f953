from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rait.evaluate.metrics import (
    abstain_scores,
    auroc,
    auroc_ci,
    average_precision,
    bootstrap_ci,
    effective_reliability,
    honesty_score,
    knowledge_quadrants,
    macro_average,
    over_refusal,
    paired_bootstrap,
    prudence,
    rates,
    reliable_accuracy,
    seed_bootstrap_ci,
    seed_paired_bootstrap,
    ths,
    ths_ci,
    ths_of,
)
from rait.data.scoring import Outcome

C, W, R, U = "correct", "wrong", "refused", "unparsed"

# --------------------------------------------------------------------------- golden THS

# CRaFT (AAAI'25) Table 2 as printed: per method, (Pc, Pw, THS) for MMLU, ARC-c, TriviaQA, NQ.
DATASETS = ("MMLU", "ARC-c", "TriviaQA", "NQ")
TABLE_2 = {
    "LLaMA2-7B-Chat": {
        "Init-Basic": [(45.6, 52.8, 0.0), (53.9, 46.0, 0.0), (54.0, 46.0, 0.0), (29.3, 70.7, 0.0)],
        "Init-Refuse": [(36.4, 38.9, 3.9), (44.4, 35.7, 2.6), (37.0, 21.7, 11.5), (20.8, 38.6, 4.8)],
        "Van-Tuning": [(46.9, 53.1, 1.2), (54.5, 45.5, 1.2), (48.6, 44.5, -3.7), (18.3, 50.2, -2.5)],
        "Cor-RAIT": [(44.5, 39.6, 11.3), (55.8, 38.1, 11.1), (41.3, 18.3, 19.7), (16.2, 27.6, 4.7)],
        "CRaFT": [(43.9, 36.4, 12.5), (54.7, 35.9, 12.6), (38.5, 12.9, 23.3), (15.8, 22.4, 6.5)],
        "w/o Flow": [(39.7, 31.0, 13.0), (51.4, 32.3, 13.5), (45.2, 20.5, 21.1), (21.2, 38.8, 5.2)],
        "w/o Cer": [(38.4, 32.1, 11.5), (52.5, 32.9, 13.9), (38.5, 15.7, 20.1), (14.6, 22.1, 5.4)],
    },
    "LLaMA3-8B-Instruct": {
        "Init-Basic": [(66.8, 33.1, 0.0), (80.6, 19.5, 0.0), (66.8, 33.2, 0.0), (40.3, 59.7, 0.0)],
        "Init-Refuse": [(50.0, 17.0, 15.6), (65.3, 14.4, 5.6), (53.9, 20.8, 12.0), (31.1, 38.6, 5.0)],
        "Van-Tuning": [(69.5, 30.5, 8.0), (80.3, 19.7, -1.3), (55.0, 38.1, -21.8), (21.0, 48.5, -11.7)],
        "Cor-RAIT": [(63.9, 21.6, 20.4), (79.4, 16.2, 12.2), (45.4, 13.2, 18.8), (17.2, 25.6, -0.1)],
        "CRaFT": [(53.3, 9.6, 34.0), (74.1, 12.7, 21.4), (43.5, 10.9, 21.5), (19.0, 27.5, 0.4)],
        "w/o Flow": [(57.5, 15.3, 27.2), (75.8, 14.9, 13.9), (49.1, 18.0, 12.8), (22.3, 41.6, -5.8)],
        "w/o Cer": [(62.1, 18.4, 25.0), (78.2, 17.3, 6.5), (43.0, 11.2, 20.5), (15.8, 23.5, -0.1)],
    },
}
# The four MMLU cells whose printed THS does not follow from the printed macro Pc/Pw
# (CRaFT, AAAI 2025, Table 2); MMLU Pc/Pw are means over 57 subjects, so the table likely mixes aggregations.
KNOWN_OUTLIERS = {
    ("LLaMA2-7B-Chat", "Init-Refuse", "MMLU"),
    ("LLaMA2-7B-Chat", "Cor-RAIT", "MMLU"),
    ("LLaMA2-7B-Chat", "w/o Cer", "MMLU"),
    ("LLaMA3-8B-Instruct", "w/o Flow", "MMLU"),
}


def rounding_bound(pw: float, pc0: float, pw0: float) -> float:
    """First-order error of THS from ±0.05 rounding of Pc, Pw, Pc0, Pw0 and of the printed THS."""
    h = 0.05
    return h + h * pc0 / pw0 + h * pw / pw0 + h * pw * pc0 / pw0**2 + h


def test_craft_table_2_ths_within_rounding_except_the_four_known_mmlu_cells():
    failing, checked = set(), 0
    for model, rows in TABLE_2.items():
        for method, cells in rows.items():
            if method == "Init-Basic":
                continue
            for dataset, (pc, pw, printed), (pc0, pw0, _) in zip(DATASETS, cells, rows["Init-Basic"]):
                checked += 1
                if abs(ths(pc, pw, pc0, pw0) - printed) > rounding_bound(pw, pc0, pw0):
                    failing.add((model, method, dataset))
    assert checked == 48
    assert failing == KNOWN_OUTLIERS


def test_ths_worked_example_and_paper_table_1():
    assert ths(53.3, 9.6, 66.8, 33.1) == pytest.approx(33.93, abs=0.005)
    # CRaFT Table 1: constructed models against an initial model at (0.5, 0.5)
    constructed = {(0.3, 0.2): 0.1, (0.3, 0.15): 0.15, (0.5, 0.0): 0.5, (1.0, 0.0): 1.0}
    for (pc, pw), expected in constructed.items():
        assert ths(pc, pw, 0.5, 0.5) == pytest.approx(expected)


unit = st.floats(min_value=0.0, max_value=1.0)


@given(pc=unit, pw=unit, pc0=unit, pw0=st.floats(min_value=0.01, max_value=1.0))
def test_ths_geometry(pc, pw, pc0, pw0):
    assert ths(pc0, pw0, pc0, pw0) == pytest.approx(0.0, abs=1e-12)  # the reference scores 0
    assert ths(1.0, 0.0, pc0, pw0) == 1.0  # the perfect model scores 1 (100 %)
    assert ths(100 * pc, 100 * pw, 100 * pc0, 100 * pw0) == pytest.approx(100 * ths(pc, pw, pc0, pw0), abs=1e-9)
    # only the direction of the reference matters
    assert ths(pc, pw, 2 * pc0, 2 * pw0) == pytest.approx(ths(pc, pw, pc0, pw0), abs=1e-9)


def test_ths_undefined_without_reference_errors():
    with pytest.raises(ValueError, match="undefined"):
        ths(50.0, 10.0, 100.0, 0.0)


# --------------------------------------------------------------------------- rates


def test_rates_in_percent_of_all_items():
    assert rates([C, W, R, U, C]) == {"pc": 40.0, "pw": 20.0, "pr": 20.0, "pu": 20.0, "n": 5}


def test_rates_accepts_series_and_enum_values():
    outcomes = [Outcome.CORRECT, Outcome.REFUSED, Outcome.REFUSED, Outcome.WRONG]
    assert rates(outcomes) == rates(pd.Series([C, R, R, W])) == rates(np.array([C, R, R, W]))
    assert rates(outcomes)["pr"] == 50.0


@pytest.mark.parametrize("bad", [[], [C, "correct "], [C, "idk"]])
def test_rates_rejects_empty_and_unknown_labels(bad):
    with pytest.raises(ValueError):
        rates(bad)


def test_macro_average_weights_groups_equally():
    outcomes = [C, W, C, C, C, R]
    groups = ["g1", "g1", "g2", "g2", "g2", "g2"]
    macro = macro_average(outcomes, groups, reference=(50.0, 25.0))
    assert macro["pc"] == 62.5 and macro["pw"] == 25.0 and macro["pr"] == 12.5 and macro["pu"] == 0.0
    assert macro["n"] == 6 and macro["n_groups"] == 2
    assert macro["ths"] == 12.5  # 62.5 - 25 * 50 / 25
    assert rates(outcomes)["pc"] == pytest.approx(200 / 3)  # micro average differs


def test_ths_of_reference_outcomes_micro_and_macro():
    reference = [C, W, W, C]  # (50, 50)
    assert ths_of([C, R, R, C], reference) == 50.0
    assert ths_of(reference, reference) == 0.0
    groups = ["a", "a", "a", "b"]  # reference macro: pc (33.3 + 100) / 2, pw (66.7 + 0) / 2
    assert ths_of([C, R, R, C], reference, groups) == pytest.approx(ths(200 / 3, 0.0, 200 / 3, 100 / 3))


# --------------------------------------------------------------------------- abstention family

OUTCOMES = [C, R, W, R, W, C, U, R]
KNOWN = [True, True, True, False, False, False, False, False]


def test_over_refusal_prudence_honesty():
    assert over_refusal(OUTCOMES, KNOWN) == pytest.approx(100 / 3)  # 1 of the 3 known refused
    # unknown and not now correct: items 3, 4, 6, 7; refused: 3 and 7
    assert prudence(OUTCOMES, KNOWN) == 50.0
    assert honesty_score(OUTCOMES, KNOWN) == pytest.approx((100 - 100 / 3 + 50) / 2)


def test_undefined_shares_are_nan():
    assert math.isnan(over_refusal([R, W], [False, False]))
    assert math.isnan(honesty_score([R, W], [False, False]))
    assert math.isnan(reliable_accuracy([R, R]))


def test_abstain_scores_against_hand_counts():
    # truth = unknown; refused = items 1, 3, 7 -> TP 2 (3, 7), FP 1 (1), FN 3 (4, 5, 6), TN 2 (0, 2)
    scores = abstain_scores(OUTCOMES, [not k for k in KNOWN])
    assert scores["precision"] == pytest.approx(200 / 3)
    assert scores["recall"] == pytest.approx(40.0)
    assert scores["f1"] == pytest.approx(50.0)
    assert scores["accuracy"] == pytest.approx(50.0)


def test_reliable_accuracy_and_effective_reliability():
    assert reliable_accuracy(OUTCOMES) == 40.0  # answered: C W W C U
    assert effective_reliability(OUTCOMES) == -12.5  # (2 - 3) / 8
    assert effective_reliability([C, C, R, R]) == 50.0


def test_knowledge_quadrants_and_truthful():
    quadrants = knowledge_quadrants(OUTCOMES, KNOWN)
    assert quadrants == {"ik_ik": 25.0, "ik_idk": 25.0, "idk_ik": 12.5, "idk_idk": 37.5, "truthful": 50.0}


def test_ranking_metrics_of_confidence():
    outcomes, confidence = [C, W, C, R], [0.9, 0.8, 0.7, 0.1]
    assert average_precision(outcomes, confidence) == pytest.approx(100 * (0.5 * 1 + 0.5 * 2 / 3))
    assert auroc(outcomes, confidence) == pytest.approx(75.0)  # 3 of 4 correct/not-correct pairs ordered
    with pytest.raises(ValueError):
        auroc([C, C], [0.1, 0.2])
    with pytest.raises(ValueError):
        average_precision([C, W], [0.1])


def test_per_item_arrays_must_match_length():
    with pytest.raises(ValueError, match="known"):
        over_refusal([C, W], [True])


# --------------------------------------------------------------------------- bootstrap


def random_outcomes(p_correct: float, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.choice([C, W, R], size=n, p=[p_correct, (1 - p_correct) / 2, (1 - p_correct) / 2])


def test_bootstrap_is_deterministic_and_covers_the_estimate():
    outcomes = random_outcomes(0.5, 300, seed=1)
    pc = lambda o: rates(o)["pc"]  # noqa: E731
    first = bootstrap_ci(outcomes, pc, n_boot=300, seed=7)
    assert first == bootstrap_ci(outcomes, pc, n_boot=300, seed=7)
    assert first != bootstrap_ci(outcomes, pc, n_boot=300, seed=8)
    assert first.estimate == rates(outcomes)["pc"]
    assert first.low < first.estimate < first.high
    # the width is about 2 * 1.96 standard errors of a proportion
    se = 100 * math.sqrt(0.5 * 0.5 / 300)
    assert 2 * 1.96 * se * 0.7 < first.high - first.low < 2 * 1.96 * se * 1.3


def test_ths_ci_resamples_model_and_reference_jointly():
    outcomes = random_outcomes(0.5, 200, seed=2)
    # against itself THS is 0 on every joint resample; independent resampling would spread it
    assert ths_ci(outcomes, outcomes.copy(), n_boot=200) == ths_ci(outcomes, outcomes, n_boot=200)
    interval = ths_ci(outcomes, outcomes, n_boot=200)
    assert (interval.estimate, interval.low, interval.high) == (0.0, 0.0, 0.0)
    reference = random_outcomes(0.4, 200, seed=3)
    interval = ths_ci(outcomes, reference, n_boot=200)
    assert interval.low < interval.estimate == ths_of(outcomes, reference) < interval.high


def test_grouped_bootstrap_keeps_every_group_at_its_size():
    outcomes = random_outcomes(0.5, 60, seed=4)
    groups = np.repeat(["x", "y", "z"], [10, 20, 30])
    size_of_x = bootstrap_ci(outcomes, lambda o, g: float((g == "x").sum()), groups=groups, n_boot=50)
    assert (size_of_x.low, size_of_x.high) == (10.0, 10.0)
    macro = ths_ci(outcomes, random_outcomes(0.4, 60, seed=5), groups=groups, n_boot=100)
    assert macro.low <= macro.estimate <= macro.high


def test_groups_of_one_item_are_pooled_not_frozen():
    """A sample with one item per subject: the macro average is the plain mean, so its interval must be
    the plain bootstrap's, not the zero-width one of resampling each item within its own subject."""
    outcomes = random_outcomes(0.5, 40, seed=8)
    pc = lambda o, g: rates(o)["pc"]  # noqa: E731
    per_item = bootstrap_ci(outcomes, pc, groups=np.arange(40), n_boot=200)
    assert per_item == bootstrap_ci(outcomes, lambda o: rates(o)["pc"], n_boot=200)
    assert per_item.high - per_item.low > 10
    mixed = np.concatenate([np.repeat(["x", "y"], 10), np.arange(20).astype(str)])
    size_of_x = bootstrap_ci(outcomes, lambda o, g: float((g == "x").sum()), groups=mixed, n_boot=50)
    assert (size_of_x.low, size_of_x.high) == (10.0, 10.0)
    assert bootstrap_ci(outcomes[20:], pc, groups=mixed[20:], n_boot=200).high > rates(outcomes[20:])["pc"]


def test_paired_bootstrap_separates_different_methods_from_identical_ones():
    pc = lambda o: rates(o)["pc"]  # noqa: E731
    strong, weak = random_outcomes(0.8, 200, seed=6), random_outcomes(0.4, 200, seed=7)
    clear = paired_bootstrap(strong, weak, pc, n_boot=500)
    assert clear.difference == rates(strong)["pc"] - rates(weak)["pc"] > 0
    assert clear.low > 0 and clear.p_value < 0.01

    same = paired_bootstrap(strong, strong.copy(), pc, n_boot=500)
    assert (same.difference, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)

    swapped = strong.copy()
    correct, wrong = np.flatnonzero(swapped == C)[0], np.flatnonzero(swapped == W)[0]
    swapped[[correct, wrong]] = [W, C]  # same Pc, two items traded
    assert paired_bootstrap(strong, swapped, pc, n_boot=500).p_value > 0.5


def test_paired_bootstrap_of_ths_with_shared_reference():
    reference = random_outcomes(0.5, 200, seed=8)
    strong, weak = random_outcomes(0.7, 200, seed=9), random_outcomes(0.3, 200, seed=10)
    result = paired_bootstrap(strong, weak, ths_of, reference=reference, n_boot=300)
    assert result.difference == pytest.approx(ths_of(strong, reference) - ths_of(weak, reference))
    assert result.p_value < 0.01
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap(strong, weak[:-1], ths_of, reference=reference)


# --------------------------------------------------------------------------- seeds and items


def test_seed_interval_is_the_mean_over_seeds_and_widens_with_seed_spread():
    pc = lambda o: rates(o)["pc"]  # noqa: E731
    items = 200
    alike = [random_outcomes(0.5, items, seed=20)] * 3
    apart = [random_outcomes(p, items, seed=21 + i) for i, p in enumerate((0.2, 0.5, 0.8))]
    same = seed_bootstrap_ci(alike, pc, n_boot=400)
    assert same == bootstrap_ci(alike[0], pc, n_boot=400)  # identical seeds add no spread
    spread = seed_bootstrap_ci(apart, pc, n_boot=400)
    assert spread.estimate == pytest.approx(np.mean([pc(o) for o in apart]))
    item_only = bootstrap_ci(np.concatenate(apart), pc, n_boot=400)  # the seeds' items pooled: no seed variation
    assert spread.high - spread.low > 2 * (item_only.high - item_only.low)
    assert spread.low < 35 < 65 < spread.high  # 3 seeds at 20, 50, 80 % correct


def test_seed_paired_comparison_sees_a_difference_larger_than_the_seed_spread():
    pc = lambda o: rates(o)["pc"]  # noqa: E731
    strong = [random_outcomes(p, 300, seed=30 + i) for i, p in enumerate((0.75, 0.8, 0.85))]
    weak = [random_outcomes(p, 300, seed=40 + i) for i, p in enumerate((0.35, 0.4, 0.45))]
    result = seed_paired_bootstrap(strong, weak, pc, n_boot=400)
    assert result.difference == pytest.approx(np.mean([pc(o) for o in strong]) - np.mean([pc(o) for o in weak]))
    assert result.low > 0 and result.p_value < 0.01
    noisy = [random_outcomes(p, 300, seed=50 + i) for i, p in enumerate((0.3, 0.6, 0.9))]
    assert seed_paired_bootstrap(noisy, [random_outcomes(0.6, 300, seed=60)] * 3, pc, n_boot=400).p_value > 0.05
    with pytest.raises(ValueError, match="same length"):
        seed_paired_bootstrap(strong, [w[:-1] for w in weak], pc)


def test_auroc_interval_is_around_auroc_and_degenerate_resamples_are_left_out():
    rng = np.random.default_rng(70)
    outcomes = random_outcomes(0.3, 120, seed=71)
    signal = (outcomes == C) * 0.3 + rng.random(120)  # a noisy but real signal
    interval = auroc_ci(outcomes, signal, n_boot=300)
    assert interval.estimate == auroc(outcomes, signal)
    assert 50 < interval.low < interval.estimate < interval.high <= 100
    perfect = auroc_ci([C, W, C, W, R, C], [0.9, 0.1, 0.8, 0.2, 0.0, 0.7], n_boot=200)
    assert (perfect.estimate, perfect.low, perfect.high) == (100.0, 100.0, 100.0)
