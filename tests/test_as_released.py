"""`as_released` parity: the four differences from the releases that issue 33 lists, each on a hand-made table whose
expected selection is worked out by hand below (CRaFT's `mmlu_RAI.py` / `triviaqa_RAI.py` and its certainty
producer `KQ_triviaqa_train_init_certainty.py`; GRAIT's copy of `mmlu_RAI.py`).

1. the release's MMLU μ: letter columns normalised one at a time, in place;
2. its size rule n_idk = n_total // 10 * 2;
3. Python's ``round(σ, 2)`` of its certainty producer, not pandas' ``round(2)``;
4. a short ranked MCQA pool re-drawn (with replacement) from its certainty order.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from rait.data import write_records
from rait.data.records import QARecord
from rait.errors import DataError, SettingsError
from rait.probe.table import write_table
from rait.select import BuildSettings, CorCerRAIT, SelectionWarning, resolve_sizes, run
from rait.select.released import REHEARSED_TABLE, released_mcqa_mu
from rait.select.stage import follows_release

# The release's μ takes a few float64 roundings (four sums, four divisions), each within half an ulp.
REL = 8 * np.finfo(np.float64).eps


def fit(selector, table):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SelectionWarning)
        return selector.fit(table)


def mcqa_rows(rows):
    """(id, gold letter, raw letter probabilities A-D, σ) -> table rows with the probe's correct μ = p_gold / Σp."""
    return [{"id": qid, "task": "mcqa", "mu": probs["ABCD".index(gold)] / sum(probs), "sigma": sigma,
             "option_probs": probs, "gold_prob": probs["ABCD".index(gold)]} for qid, gold, probs, sigma in rows]


def mcqa_records(golds: dict[str, str]) -> list[QARecord]:
    return [QARecord(id=qid, question=f"Question {qid}?", source="mmlu", split="test", subject="anatomy",
                     choices=["w", "x", "y", "z"], gold=gold) for qid, gold in golds.items()]


def built(out, method: str) -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in (out / f"{method}.jsonl").read_text().splitlines()]
    return [r["id"] for r in rows if r["kind"] == "vanilla"], [r["id"] for r in rows if r["kind"] == "idk"]


# ---------------------------------------------------------------- 1. the release's MMLU μ

# Raw letter probabilities (powers of two, so the probe's μ is exact) that sum to less than 1, as letters do.
QUIRK_ROWS = [
    ("q1", "A", [0.5, 0.125, 0.0625, 0.0625], -0.9),
    ("q2", "B", [0.25, 0.375, 0.03125, 0.03125], -1.0),
    ("q3", "C", [0.25, 0.25, 0.25, 0.125], -1.3),
]


def test_released_mmlu_mu_is_the_in_place_column_normalisation():
    # q1, gold A: A ← 0.5 / 0.75 = 2/3, the correct μ p_gold / Σp.
    assert released_mcqa_mu([0.5, 0.125, 0.0625, 0.0625], 0) == pytest.approx(2 / 3, rel=REL)
    # q2, gold B, Σp = 0.6875, correct μ = 0.375 / 0.6875 = 6/11 ≈ 0.545 (known):
    #   A ← 0.25 / 0.6875 = 4/11; B ← 0.375 / (4/11 + 0.375 + 0.03125 + 0.03125) = (3/8) / (141/176) = 22/47 ≈ 0.468.
    assert released_mcqa_mu([0.25, 0.375, 0.03125, 0.03125], 1) == pytest.approx(22 / 47, rel=REL)
    # q3, gold C, Σp = 0.875, correct μ = 2/7 ≈ 0.286:
    #   A ← 0.25 / 0.875 = 2/7; B ← 0.25 / (2/7 + 0.625) = 14/51;
    #   C ← 0.25 / (2/7 + 14/51 + 0.375) = 0.25 / (2671/2856) = 714/2671 ≈ 0.267.
    assert released_mcqa_mu([0.25, 0.25, 0.25, 0.125], 2) == pytest.approx(714 / 2671, rel=REL)
    # Probabilities that sum to 1 leave every column as it was.
    assert released_mcqa_mu([0.5, 0.25, 0.125, 0.125], 3) == 0.125


@pytest.fixture
def quirk_build(tmp_path):
    table_path, records_path = tmp_path / "table.jsonl", tmp_path / "pool.jsonl"
    write_table(pd.DataFrame(mcqa_rows(QUIRK_ROWS)), table_path)
    write_records(records_path, mcqa_records({qid: gold for qid, gold, *_ in QUIRK_ROWS}))
    return table_path, records_path


def test_as_released_build_splits_mmlu_by_the_release_mu(quirk_build, tmp_path):
    table_path, records_path = quirk_build
    probed = table_path.read_bytes()
    settings = dict(methods=["cor_rait", "corcer_rait"], exports=())
    paper = run(BuildSettings(**settings), table_path, records_path, tmp_path / "paper").summary
    released = run(BuildSettings(**settings, mode="as_released"), table_path, records_path, tmp_path / "released").summary
    # Correct μ (paper): q1 2/3 and q2 6/11 ≥ 0.5 are known, q3 2/7 unknown.
    assert built(tmp_path / "paper", "cor_rait") == (["q1", "q2"], ["q3"])
    # Release's μ: q2 falls to 22/47 < 0.5 and changes side; q1 keeps 2/3 (gold A); q3 stays unknown at 714/2671.
    assert built(tmp_path / "released", "cor_rait") == (["q1"], ["q2", "q3"])
    # CorCer-RAIT ranks the IdK pool by σ ascending: q3 (−1.3) before q2 (−1.0).
    assert built(tmp_path / "released", "corcer_rait") == (["q1"], ["q3", "q2"])
    assert released["released_mu"] == {"changed": 2, "of": 3, "delta_mu_from": None}  # q2 and q3
    assert "released_mu" not in paper
    assert table_path.read_bytes() == probed  # the probe's table keeps the correct μ
    # GRAIT's release copies the same μ; R-Tuning has no release mode and reads the table as probed.
    grait, rtuning = BuildSettings(methods=["grait", "rtuning_unknown"], mode="as_released").selectors("grads")
    assert follows_release(grait) and not follows_release(rtuning)


@pytest.mark.parametrize("probs", [None, [0.0, 0.0, 0.0, 0.0], [0.5, "x", 0.1, 0.1]])
def test_as_released_mcqa_build_refuses_a_row_without_letter_probabilities(quirk_build, tmp_path, probs):
    table_path, records_path = quirk_build
    table = pd.DataFrame(mcqa_rows(QUIRK_ROWS))
    table["option_probs"] = [table["option_probs"][0], probs, table["option_probs"][2]]
    write_table(table, table_path)
    with pytest.raises(DataError, match=rf"{table_path}:2: field 'option_probs': needs the raw probability"):
        run(BuildSettings(methods=["cor_rait"], mode="as_released", exports=()), table_path, records_path,
            tmp_path / "out")
    assert not (tmp_path / "out").exists()


# Flow: two unknown questions (gold D) whose Δμ has opposite signs under the two formulas.
#   uniform [1/16] * 4: correct μ 1/4; the release's A ← 1/4, B ← (1/16)/(7/16) = 1/7,
#       C ← (1/16)/(1/4 + 1/7 + 1/8) = 7/58, D ← (1/16)/(1/4 + 1/7 + 7/58 + 1/16) = 203/1871 ≈ 0.1085.
#   [1/8, 1/8, 1/2, 1/8]: correct μ 1/7 ≈ 0.1429; the release's A ← 1/7, B ← (1/8)/(1/7 + 3/4) = 7/50,
#       C ← (1/2)/(1/7 + 7/50 + 5/8) = 700/1271, D ← (1/8)/(1/7 + 7/50 + 700/1271 + 1/8) ≈ 0.1304.
UNIFORM, PEAKED = [0.0625] * 4, [0.125, 0.125, 0.5, 0.125]
FLOW_INITIAL = [("k1", "A", [0.5, 0.125, 0.0625, 0.0625], -0.9), ("f1", "D", UNIFORM, -1.38), ("f2", "D", PEAKED, -1.2)]
FLOW_REHEARSED = [("k1", "A", [0.5, 0.125, 0.0625, 0.0625], -0.9), ("f1", "D", PEAKED, -1.2), ("f2", "D", UNIFORM, -1.38)]


def test_released_mmlu_mu_of_the_two_flow_probes():
    assert released_mcqa_mu(UNIFORM, 3) == pytest.approx(203 / 1871, rel=REL)
    assert released_mcqa_mu(PEAKED, 3) == pytest.approx(0.130398, abs=1e-6)


@pytest.fixture
def flow_build(tmp_path):
    initial, rehearsed = pd.DataFrame(mcqa_rows(FLOW_INITIAL)), pd.DataFrame(mcqa_rows(FLOW_REHEARSED))
    flow = initial.assign(mu_rehearsal=rehearsed["mu"], delta_mu=rehearsed["mu"] - initial["mu"])
    folder = tmp_path / "rehearse"
    write_table(flow, folder / "flow_table.jsonl")
    write_table(rehearsed, folder / REHEARSED_TABLE)
    write_records(tmp_path / "pool.jsonl", mcqa_records({qid: gold for qid, gold, *_ in FLOW_INITIAL}))
    return folder / "flow_table.jsonl", tmp_path / "pool.jsonl"


def test_as_released_craft_takes_delta_mu_from_the_release_mu_of_both_probes(flow_build, tmp_path):
    table_path, records_path = flow_build
    settings = dict(methods=["craft"], exports=())
    run(BuildSettings(**settings), table_path, records_path, tmp_path / "paper")
    summary = run(BuildSettings(**settings, mode="as_released"), table_path, records_path, tmp_path / "released").summary
    # Correct μ: f1 1/4 → 1/7 (Δμ < 0, kept), f2 1/7 → 1/4 (Δμ > 0, dropped).
    assert built(tmp_path / "paper", "craft") == (["k1"], ["f1"])
    # Release's μ: f1 0.1085 → 0.1304 (Δμ > 0, dropped), f2 0.1304 → 0.1085 (Δμ ≤ 0, kept).
    assert built(tmp_path / "released", "craft") == (["k1"], ["f2"])
    assert summary["released_mu"]["delta_mu_from"] == str(table_path.parent / REHEARSED_TABLE)


def test_as_released_flow_build_without_a_complete_rehearsal_probe_is_refused_before_any_work(flow_build, tmp_path):
    table_path, records_path = flow_build
    (table_path.parent / REHEARSED_TABLE).unlink()
    with pytest.raises(DataError, match=rf"{REHEARSED_TABLE}: missing: as_released recomputes Δμ"):
        run(BuildSettings(methods=["craft"], mode="as_released", exports=()), table_path, records_path,
            tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # A re-probe that lacks a question of the flow table is refused by name, too.
    write_table(pd.DataFrame(mcqa_rows(FLOW_REHEARSED[:2])), table_path.parent / REHEARSED_TABLE)
    with pytest.raises(DataError, match=rf"{REHEARSED_TABLE}: field 'id': question 'f2' was not re-probed"):
        run(BuildSettings(methods=["craft"], mode="as_released", exports=()), table_path, records_path,
            tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (table_path.parent / REHEARSED_TABLE).unlink()
    # A method without the flow builds, on the release's μ alone.
    run(BuildSettings(methods=["cor_rait"], mode="as_released", exports=()), table_path, records_path, tmp_path / "out")
    assert built(tmp_path / "out", "cor_rait") == (["k1"], ["f1", "f2"])


# ---------------------------------------------------------------- 2. the release's size rule


def test_released_size_rule_rounds_the_idk_count_down_to_an_even_number():
    # 505: the release's 505 // 10 * 2 = 50 * 2 = 100 IdK; rait's round(0.2 * 505) = round(101.0) = 101.
    assert resolve_sizes(505, None, None, 0.2, released=True) == (405, 100)
    assert resolve_sizes(505, None, None, 0.2) == (404, 101)
    # Explicit counts are taken as given in both modes.
    assert resolve_sizes(None, 7, 3, 0.2, released=True) == (7, 3)
    with pytest.raises(ValueError, match="idk_share 0.3 has no released rule"):
        resolve_sizes(100, None, None, 0.3, released=True)
    with pytest.raises(SettingsError, match="field 'idk_share'"):
        BuildSettings(n_total=100, idk_share=0.3, mode="as_released")


def test_released_size_rule_in_a_selection():
    # Open QA, 14 known (μ 0.9) and 4 unknown (μ 0.1) questions, σ falling with the id on the known side and
    # rising on the unknown side, so the ranking is the id order on both.
    known = [(f"k{n:02d}", 0.9, 1 - n / 100) for n in range(1, 15)]
    unknown = [(f"u{n}", 0.1, n / 100) for n in range(1, 5)]
    table = pd.DataFrame(known + unknown, columns=["id", "mu", "sigma"]).assign(task="oeqa")
    # n_total = 14: released 14 // 10 * 2 = 2 IdK and 12 vanilla; paper round(2.8) = 3 IdK and 11 vanilla.
    released = fit(CorCerRAIT(n_total=14, mode="as_released"), table)
    assert (released.vanilla_ids_, released.idk_ids_) == ([k for k, *_ in known[:12]], ["u1", "u2"])
    paper = fit(CorCerRAIT(n_total=14), table)
    assert (paper.vanilla_ids_, paper.idk_ids_) == ([k for k, *_ in known[:11]], ["u1", "u2", "u3"])


# ---------------------------------------------------------------- 3. the release's rounding of σ


def test_released_certainty_is_rounded_by_python_round():
    # The midpoint 0.215 is stored as 0.21499999999999999…: Python's round gives 0.21, pandas scales by 100 first
    # (21.5, an exact midpoint after rounding) and gives 0.22.
    assert round(0.215, 2) == 0.21 and pd.Series([0.215]).round(2)[0] == 0.22
    table = pd.DataFrame([("a", 0.9, 0.215), ("b", 0.9, 0.218), ("u1", 0.1, 0.215), ("u2", 0.1, 0.212)],
                         columns=["id", "mu", "sigma"]).assign(task="oeqa")
    selector = fit(CorCerRAIT(n_vanilla=1, n_idk=1, mode="as_released"), table)
    # Vanilla, σ descending: b 0.22 > a 0.21 → b (with pandas' rounding a and b tie at 0.22 and a wins by id).
    # IdK, σ ascending: u1 0.21 and u2 0.21 tie → u1 by id (with pandas' rounding u2 0.21 < u1 0.22 → u2).
    assert (selector.vanilla_ids_, selector.idk_ids_) == (["b"], ["u1"])


# ---------------------------------------------------------------- 4. a short ranked MCQA pool, re-drawn


def test_released_short_ranked_pool_is_redrawn_from_its_certainty_order():
    table = pd.DataFrame(mcqa_rows([
        ("k1", "A", [0.5, 0.125, 0.0625, 0.0625], -0.9),
        ("u1", "A", [0.0625, 0.25, 0.25, 0.25], -1.0),
        ("u2", "A", [0.0625, 0.25, 0.25, 0.25], -1.3),
        ("u3", "A", [0.0625, 0.25, 0.25, 0.25], -1.2),
    ]))
    # IdK pool u1-u3 (μ 1/13), ranked by σ ascending: u2 (−1.3), u3 (−1.2), u1 (−1.0) — the release's
    # nlargest(entropy) order. 5 asked of 3: pandas' sample(5, replace=True, random_state=42) draws positions
    # RandomState(42).choice(3, 5) = [2, 0, 2, 2, 0] of that order: u1, u2, u1, u1, u2.
    assert np.random.RandomState(42).choice(3, 5).tolist() == [2, 0, 2, 2, 0]
    with pytest.warns(SelectionWarning, match="in certainty order"):
        selector = CorCerRAIT(n_vanilla=1, n_idk=5, mode="as_released", seed=42).fit(table)
    assert selector.idk_ids_ == ["u1", "u2", "u1", "u1", "u2"]  # from the id order it would be u3, u1, u3, u3, u1
    # The release's own two calls on its ranked frame give the same draw.
    idk = table[table["id"] != "k1"].assign(entropy=lambda t: -t["sigma"])
    assert idk.nlargest(5, "entropy", keep="all").sample(n=5, replace=True, random_state=42)["id"].tolist() \
        == selector.idk_ids_
