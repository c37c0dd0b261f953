"""Selectors on hand-made knowledge tables: every expected selection is written out by hand.

OEQA table (μ in tenths, as from 10 samples; τ = 0.5):

    id   μ    σ      Δμ     notes
    k1   1.0  0.896   0.0   rounds to 0.90, like k2
    k2   0.9  0.904   0.0   full precision ranks k2 above k1; rounded, the id breaks the tie
    k3   0.8  0.95    0.0
    k4   0.6  0.30    0.0
    m5   0.5  0.99    0.0   exactly at τ: vanilla in paper mode, in neither pool as released
    u1   0.4  0.20   -0.1
    u2   0.3  0.10    0.0   Δμ = 0: dropped by the strict flow filter
    u3   0.2  0.15   -0.2
    u4   0.1  0.15    0.1   Δμ > 0: dropped by every flow filter; σ ties with u3
    u5   0.1  0.40   -0.1
    u6   0.0  0.05    0.0

MCQA table (μ = gold probability / sum of the four; σ chosen by hand, the selectors only rank it):

    id   gold  μ     σ      Δμ     raw option probs (A, B, C, D)   greedy letter
    p1   A     0.90  -0.40   0.0   .90 .05 .03 .02                 A (known)
    p2   B     0.70  -0.80  -0.05  .10 .70 .10 .10                 B (known)
    p3   C     0.50  -1.00   0.0   .20 .20 .50 .10                 C (known), μ exactly τ
    p4   D     0.45  -1.20   0.0   .35 .10 .10 .45                 D (known by greedy, not by μ); Δμ = 0
    p5   A     0.30  -1.30  -0.1   .30 .40 .20 .10                 B
    p6   B     0.20  -1.10   0.2   .50 .20 .20 .10                 A; Δμ > 0
    p7   C     0.10  -1.38  -0.05  .30 .30 .10 .30                 A
    p8   D     0.25  -1.30   0.0   .30 .25 .20 .25                 A; σ ties with p5; Δμ = 0
"""

from __future__ import annotations

import json
import warnings

import datasets
import numpy as np
import pandas as pd
import pytest

from rait.artifacts import read_manifest
from rait.data import write_records
from rait.data.records import QARecord
from rait.errors import DataError, RaitError
from rait.probe.table import write_table
from rait.prompts import build_messages
from rait.select import (
    FALSE_RESPONSES,
    BuildSettings,
    CorCerRAIT,
    CorRAIT,
    CRaFT,
    CRaFTWithoutCer,
    RTuning,
    SelectionWarning,
    VanTuning,
    build_dataset,
    crss,
    make_selector,
    preference_pairs,
    question_features,
    resolve_sizes,
    run,
    write_dataset,
    xtuner_rows,
)

pytestmark = pytest.mark.numerics  # floats computed two ways: run again on a second kernel path (Makefile)


def oeqa_table() -> pd.DataFrame:
    rows = [
        ("k1", 1.0, 0.896, 0.0), ("k2", 0.9, 0.904, 0.0), ("k3", 0.8, 0.95, 0.0), ("k4", 0.6, 0.30, 0.0),
        ("m5", 0.5, 0.99, 0.0), ("u1", 0.4, 0.20, -0.1), ("u2", 0.3, 0.10, 0.0), ("u3", 0.2, 0.15, -0.2),
        ("u4", 0.1, 0.15, 0.1), ("u5", 0.1, 0.40, -0.1), ("u6", 0.0, 0.05, 0.0),
    ]
    table = pd.DataFrame(rows, columns=["id", "mu", "sigma", "delta_mu"])
    table.insert(1, "task", "oeqa")
    table["samples"] = [["Paris", "Lyon"] if i.startswith("u") else ["Paris"] for i in table["id"]]
    table["sample_correct"] = [[False, False] if i.startswith("u") else [True] for i in table["id"]]
    table["sample_refused"] = [[False, False] if i.startswith("u") else [False] for i in table["id"]]
    return table


MCQA_ROWS = [
    ("p1", "A", 0.90, -0.40, 0.0, [0.90, 0.05, 0.03, 0.02]),
    ("p2", "B", 0.70, -0.80, -0.05, [0.10, 0.70, 0.10, 0.10]),
    ("p3", "C", 0.50, -1.00, 0.0, [0.20, 0.20, 0.50, 0.10]),
    ("p4", "D", 0.45, -1.20, 0.0, [0.35, 0.10, 0.10, 0.45]),
    ("p5", "A", 0.30, -1.30, -0.1, [0.30, 0.40, 0.20, 0.10]),
    ("p6", "B", 0.20, -1.10, 0.2, [0.50, 0.20, 0.20, 0.10]),
    ("p7", "C", 0.10, -1.38, -0.05, [0.30, 0.30, 0.10, 0.30]),
    ("p8", "D", 0.25, -1.30, 0.0, [0.30, 0.25, 0.20, 0.25]),
]


def mcqa_table() -> pd.DataFrame:
    table = pd.DataFrame(
        [(i, "mcqa", mu, sigma, delta, probs, probs["ABCD".index(gold)]) for i, gold, mu, sigma, delta, probs in MCQA_ROWS],
        columns=["id", "task", "mu", "sigma", "delta_mu", "option_probs", "gold_prob"],
    )
    return table


def oeqa_records() -> list[QARecord]:
    return [QARecord(id=i, question=f"Question {i}?", source="facts", split="train", answer=f"answer {i}")
            for i in oeqa_table()["id"]]


def mcqa_records() -> list[QARecord]:
    return [QARecord(id=i, question=f"Question {i}?", source="mmlu", split="test", subject="high_school_biology",
                     choices=["w", "x", "y", "z"], gold=gold) for i, gold, *_ in MCQA_ROWS]


def fit(selector, table):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SelectionWarning)
        return selector.fit(table)


# ---------------------------------------------------------------- sizes


def test_sizes_from_total_and_share():
    assert resolve_sizes(10000, None, None, 0.2) == (8000, 2000)
    assert resolve_sizes(5000, None, None, 0.2) == (4000, 1000)
    assert resolve_sizes(None, 3, 1, 0.2) == (3, 1)
    assert resolve_sizes(None, None, None, 0.2) == (None, None)
    with pytest.raises(ValueError, match="either"):
        resolve_sizes(10, 3, 1, 0.2)
    with pytest.raises(ValueError):
        resolve_sizes(10, None, None, 1.5)


# ---------------------------------------------------------------- ranked methods, OEQA


@pytest.mark.parametrize(
    "cls, mode, vanilla, idk",
    [
        # paper: vanilla μ ≥ 0.5 ranked by full-precision σ; IdK μ < 0.5 ranked by σ ascending (ties by id).
        (CorCerRAIT, "paper", ["m5", "k3", "k2"], ["u6", "u2"]),
        # released: m5 (μ = 0.5) is in the dead band; σ rounded, so k1 and k2 tie at 0.90 and k1 wins by id.
        (CorCerRAIT, "as_released", ["k3", "k1", "k2"], ["u6", "u2"]),
        # CRaFT: the IdK pool keeps only Δμ < 0 (u1, u3, u5), both modes strict for OEQA.
        (CRaFT, "paper", ["m5", "k3", "k2"], ["u3", "u1"]),
        (CRaFT, "as_released", ["k3", "k1", "k2"], ["u3", "u1"]),
    ],
)
def test_ranked_methods_oeqa(cls, mode, vanilla, idk):
    selector = fit(cls(n_vanilla=3, n_idk=2, mode=mode), oeqa_table())
    assert selector.vanilla_ids_ == vanilla
    assert selector.idk_ids_ == idk
    assert selector.report_["warnings"] == []


def test_pool_counts_in_report():
    paper = fit(CRaFT(n_vanilla=3, n_idk=2), oeqa_table()).report_["pool"]
    assert (paper["vanilla"], paper["idk"], paper["dropped_by_flow"], paper["between_thresholds"]) == (5, 3, 3, 0)
    released = fit(CRaFT(n_vanilla=3, n_idk=2, mode="as_released"), oeqa_table()).report_["pool"]
    assert (released["vanilla"], released["idk"], released["dropped_by_flow"], released["between_thresholds"]) == (4, 3, 3, 1)


def test_dead_band_is_an_explicit_option_in_paper_mode():
    selector = fit(CorCerRAIT(n_vanilla=3, n_idk=2, dead_band=0.05), oeqa_table())
    assert selector.vanilla_ids_ == ["k3", "k2", "k1"]  # m5 (|μ − τ| = 0 < 0.05) dropped
    assert selector.report_["pool"]["between_thresholds"] == 1


def test_items_exactly_at_threshold():
    # μ = 0.51 / 0.49 are the released OEQA thresholds themselves: inside the pools.
    table = pd.DataFrame({"id": ["a", "b", "c"], "task": "oeqa", "mu": [0.51, 0.5, 0.49], "sigma": [0.1, 0.2, 0.3]})
    released = fit(CorRAIT(mode="as_released"), table)
    assert (released.vanilla_ids_, released.idk_ids_) == (["a"], ["c"])
    paper = fit(CorRAIT(), table)
    assert (sorted(paper.vanilla_ids_), paper.idk_ids_) == (["a", "b"], ["c"])
    # A different τ moves both thresholds.
    assert fit(CorRAIT(tau=0.6), table).vanilla_ids_ == []


# ---------------------------------------------------------------- ranked methods, MCQA


@pytest.mark.parametrize(
    "cls, mode, idk",
    [
        # IdK pool μ < 0.5: p4..p8, ranked by σ ascending: p7 (−1.38), p5/p8 (−1.30, id order), p4, p6.
        (CorCerRAIT, "paper", ["p7", "p5", "p8"]),
        (CorCerRAIT, "as_released", ["p7", "p5", "p8"]),
        # Released MCQA keeps Δμ ≤ 0 (p4, p5, p7, p8): the same three.
        (CRaFT, "as_released", ["p7", "p5", "p8"]),
    ],
)
def test_ranked_methods_mcqa(cls, mode, idk):
    selector = fit(cls(n_vanilla=2, n_idk=3, mode=mode), mcqa_table())
    assert selector.vanilla_ids_ == ["p1", "p2"]  # μ ≥ 0.5 in both modes (p3 at exactly 0.5 is in the pool)
    assert selector.idk_ids_ == idk


def test_craft_paper_mcqa_strict_flow_short_pool_warns():
    # Paper: Δμ < 0 strictly, so only p5 and p7 qualify; 3 asked -> both taken, with a warning.
    with pytest.warns(SelectionWarning, match=r"IdK pool has 2 questions but 3 were asked; took all 2"):
        selector = CRaFT(n_vanilla=2, n_idk=3).fit(mcqa_table())
    assert selector.idk_ids_ == ["p7", "p5"]
    assert selector.report_["warnings"] and "took all 2" in selector.report_["warnings"][0]


def test_released_mcqa_redraws_a_short_ranked_pool_with_replacement():
    # τ = 0.15: the IdK pool is p7 alone; the release re-draws it with replacement to the asked size.
    with pytest.warns(SelectionWarning, match="with replacement"):
        released = CRaFT(n_vanilla=1, n_idk=3, tau=0.15, mode="as_released").fit(mcqa_table())
    assert released.idk_ids_ == ["p7", "p7", "p7"]
    with pytest.warns(SelectionWarning, match="took all 1"):
        paper = CRaFT(n_vanilla=1, n_idk=3, tau=0.15).fit(mcqa_table())
    assert paper.idk_ids_ == ["p7"]


def test_released_mcqa_cor_rait_always_draws_with_replacement():
    # The release calls pandas sample(n, replace=True, random_state) even when the pool is big enough.
    table = mcqa_table()
    selector = fit(CorRAIT(n_vanilla=3, n_idk=5, mode="as_released", seed=42), table)
    pool = table[table["mu"] >= 0.5].sort_values("id")
    expected = pool.sample(n=3, replace=True, random_state=42)["id"].tolist()
    assert selector.vanilla_ids_ == expected
    assert selector.report_["warnings"] == []
    assert len(selector.idk_ids_) == 5 and set(selector.idk_ids_) <= {"p4", "p5", "p6", "p7", "p8"}


# ---------------------------------------------------------------- random methods


def test_random_methods_take_their_whole_pools_when_no_size_is_given():
    table = oeqa_table()
    cor = fit(CorRAIT(), table)
    assert cor.vanilla_ids_ == ["k1", "k2", "k3", "k4", "m5"]
    assert cor.idk_ids_ == ["u1", "u2", "u3", "u4", "u5", "u6"]
    wo_cer = fit(CRaFTWithoutCer(), table)
    assert wo_cer.idk_ids_ == ["u1", "u3", "u5"]
    wo_cer_mc = fit(CRaFTWithoutCer(mode="as_released"), mcqa_table())
    assert wo_cer_mc.idk_ids_ == ["p4", "p5", "p7", "p8"]
    assert fit(VanTuning(), table).vanilla_ids_ == sorted(table["id"])


def test_random_draws_come_from_the_pool_and_have_the_asked_size():
    selector = fit(CorRAIT(n_vanilla=2, n_idk=4, seed=3), oeqa_table())
    assert len(set(selector.vanilla_ids_)) == 2 and set(selector.vanilla_ids_) <= {"k1", "k2", "k3", "k4", "m5"}
    assert len(set(selector.idk_ids_)) == 4 and set(selector.idk_ids_) <= {"u1", "u2", "u3", "u4", "u5", "u6"}
    seeds = {tuple(fit(CorRAIT(n_vanilla=2, n_idk=4, seed=s), oeqa_table()).idk_ids_) for s in range(8)}
    assert len(seeds) > 1  # the seed matters


def test_van_tuning_short_table():
    with pytest.warns(SelectionWarning, match="has 11 questions but 20 were asked; took all 11"):
        paper = VanTuning(n_total=20).fit(oeqa_table())
    assert sorted(paper.vanilla_ids_) == sorted(oeqa_table()["id"]) and paper.idk_ids_ == []
    with pytest.warns(SelectionWarning, match="20 drawn with replacement from 8"):
        released = VanTuning(n_total=20, mode="as_released").fit(mcqa_table())
    assert len(released.vanilla_ids_) == 20


# ---------------------------------------------------------------- R-Tuning


def test_rtuning_mcqa_greedy_rule():
    selector = fit(RTuning(), mcqa_table())
    assert selector.vanilla_ids_ == ["p1", "p2", "p3", "p4"]  # gold letter has the largest raw probability
    assert selector.idk_ids_ == ["p5", "p6", "p7", "p8"]
    by_mu = fit(RTuning(known_by="mu"), mcqa_table())
    assert by_mu.vanilla_ids_ == ["p1", "p2", "p3"]


def test_rtuning_oeqa_needs_greedy_correctness_or_falls_back_loudly():
    table = oeqa_table()
    with pytest.warns(SelectionWarning, match="known means mu >= 0.5"):
        auto = RTuning().fit(table)
    assert auto.vanilla_ids_ == ["k1", "k2", "k3", "k4", "m5"]
    with pytest.raises(DataError, match="greedy_correct"):
        RTuning(known_by="greedy").fit(table)
    table["greedy_correct"] = [i in {"k1", "u6"} for i in table["id"]]
    greedy = fit(RTuning(known_by="greedy"), table)
    assert greedy.vanilla_ids_ == ["k1", "u6"]


def test_rtuning_targets():
    records = {r.id: r for r in mcqa_records()}
    unknown = fit(RTuning(seed=1), mcqa_table())
    refusal = unknown.target(records["p5"], "idk")
    assert refusal in FALSE_RESPONSES
    assert refusal == fit(RTuning(seed=1, n_idk=1, n_vanilla=0), mcqa_table()).refusal_for(records["p5"])
    assert len({unknown.refusal_for(r) for r in records.values()}) > 1  # drawn, not constant
    assert unknown.target(records["p1"], "vanilla") == "A"
    unsure = fit(RTuning(variant="unsure"), mcqa_table())
    assert unsure.target(records["p1"], "vanilla") == (
        "A. Are you sure you accurately answered the question based on your internal knowledge? I am sure.")
    assert unsure.target(records["p5"], "idk").endswith("knowledge? I am unsure.")
    assert unsure.method == "rtuning_unsure"


# ---------------------------------------------------------------- errors and determinism


def test_flow_methods_need_delta_mu():
    table = oeqa_table().drop(columns="delta_mu")
    for cls in (CRaFT, CRaFTWithoutCer):
        with pytest.raises(DataError, match="delta_mu"):
            cls().fit(table)
    fit(CorCerRAIT(), table)  # the others do not


def test_bad_inputs():
    mixed = pd.concat([oeqa_table(), mcqa_table()], ignore_index=True)
    with pytest.raises(DataError, match="separately"):
        CorRAIT().fit(mixed)
    with pytest.raises(DataError, match="no rows"):
        CorRAIT().fit(oeqa_table().iloc[:0])
    with pytest.raises(ValueError, match="mode"):
        CorRAIT(mode="paperish").fit(oeqa_table())
    with pytest.raises(RaitError, match="unknown method"):
        make_selector("craft2")


def test_row_order_does_not_matter():
    table = oeqa_table()
    shuffled = table.sample(frac=1.0, random_state=7)
    for cls in (CorRAIT, CorCerRAIT, CRaFT, CRaFTWithoutCer):
        a, b = fit(cls(n_vanilla=3, n_idk=2, seed=5), table), fit(cls(n_vanilla=3, n_idk=2, seed=5), shuffled)
        assert (a.vanilla_ids_, a.idk_ids_) == (b.vanilla_ids_, b.idk_ids_)


def test_make_selector_refuses_a_parameter_the_method_does_not_take():
    selector = make_selector("craft_wo_flow", n_total=10, mode="as_released", seed=3)
    assert isinstance(selector, CorCerRAIT) and selector.get_params()["mode"] == "as_released"
    with pytest.raises(RaitError, match="method 'corcer_rait' has no parameter 'tua'"):
        make_selector("corcer_rait", n_total=10, tua=0.4)
    with pytest.raises(RaitError, match="has no parameter 'mode'"):  # R-Tuning has no release mode
        make_selector("rtuning_unsure", n_total=10, mode="as_released")


def test_build_settings_give_each_method_the_parameters_its_selector_takes():
    settings = BuildSettings(methods=["craft_wo_flow", "rtuning_unsure"], n_total=10, mode="as_released", tau=0.4,
                             dead_band=0.1, seed=3)
    corcer, rtuning = settings.selectors()
    assert settings.methods == ["corcer_rait", "rtuning_unsure"]  # aliases resolved
    assert (corcer.mode, corcer.tau, corcer.dead_band, corcer.seed) == ("as_released", 0.4, 0.1, 3)
    assert (rtuning.variant, rtuning.tau, rtuning.seed) == ("unsure", 0.4, 3)
    with pytest.raises(RaitError, match="unknown method 'craft2'"):
        BuildSettings(methods=["craft2"])
    with pytest.raises(RaitError, match="unknown GRAIT parameter 'tau'"):
        BuildSettings(grait={"tau": 0.3})
    with pytest.raises(RaitError, match="needs the gradient store"):
        BuildSettings(methods=["grait"]).selectors()


# ---------------------------------------------------------------- output


def test_build_dataset_rows_oeqa():
    rows = build_dataset(CRaFT(n_vanilla=3, n_idk=2), oeqa_table(), oeqa_records())
    assert [(r["id"], r["kind"]) for r in rows] == [("m5", "vanilla"), ("k3", "vanilla"), ("k2", "vanilla"),
                                                    ("u3", "idk"), ("u1", "idk")]
    first, last = rows[0], rows[-1]
    record = oeqa_records()[4]
    assert first["prompt"] == build_messages(record, "refuse")
    assert first["completion"] == [{"role": "assistant", "content": "answer m5"}]
    assert last["completion"] == [{"role": "assistant", "content": "I don't know"}]
    assert {r["method"] for r in rows} == {"craft"} and {r["weight"] for r in rows} == {1.0}


def test_build_dataset_mcqa_refusal_and_custom_refusal():
    rows = build_dataset(CorCerRAIT(n_vanilla=1, n_idk=1), mcqa_table(), mcqa_records())
    assert [r["completion"][0]["content"] for r in rows] == ["A", "I don't know."]
    assert "If you do not know the answer" in rows[0]["prompt"][-1]["content"]
    custom = build_dataset(CorCerRAIT(n_vanilla=0, n_idk=1, refusal="No idea."), mcqa_table(), mcqa_records())
    assert custom[0]["completion"][0]["content"] == "No idea."


def test_build_dataset_missing_record_is_an_error():
    with pytest.raises(DataError, match="not among the records"):
        build_dataset(CorRAIT(), oeqa_table(), oeqa_records()[:3])


def test_written_dataset_loads_with_datasets_and_has_a_manifest(tmp_path):
    table_path = write_table(oeqa_table(), tmp_path / "table.jsonl")
    records_path = tmp_path / "records.jsonl"
    write_records(records_path, oeqa_records())
    selector = CRaFT(n_vanilla=3, n_idk=2, seed=4)
    rows = build_dataset(selector, oeqa_table(), oeqa_records())
    out = write_dataset(tmp_path / "craft.jsonl", rows, selector, table_path=table_path, records_path=records_path,
                        prompt="refuse")
    loaded = datasets.load_dataset("json", data_files=str(out), split="train")
    assert loaded.num_rows == 5
    assert set(loaded.column_names) == {"id", "method", "kind", "weight", "prompt", "completion"}
    assert loaded[3]["completion"] == [{"role": "assistant", "content": "I don't know"}]
    manifest = read_manifest(out)
    assert manifest["settings"]["params"]["n_vanilla"] == 3 and manifest["seed"] == 4
    assert len(manifest["inputs"]["knowledge_table"]["sha256"]) == 64
    assert manifest["report"]["taken"] == {"vanilla": 3, "idk": 2}


def test_xtuner_layout():
    oe = xtuner_rows(build_dataset(CRaFT(n_vanilla=1, n_idk=1), oeqa_table(), oeqa_records()), oeqa_records())
    assert oe == [{"qid": "m5", "question": "Question m5?", "answer": "answer m5"},
                  {"qid": "u3", "question": "Question u3?", "answer": "I don't know"}]
    mc = xtuner_rows(build_dataset(CorCerRAIT(n_vanilla=1, n_idk=1), mcqa_table(), mcqa_records()), mcqa_records())
    assert [(r["id"], r["target"], r["strategy"]) for r in mc] == [("p1", "A", "learn"), ("p7", "I don't know.", "idk")]
    assert (mc[0]["A"], mc[0]["D"], mc[0]["prompt_task_name"]) == ("w", "z", "high school biology")
    # map_fn_mmlu formats the instruction with the task name: that must give the REFUSE hint.
    hint = mc[0]["prompt_instruction"].format(task_name=mc[0]["prompt_task_name"])
    assert hint == ("There is a single choice question about high school biology. If you know the answer, please "
                    "directly respond with the correct answer A, B, C, or D. If you do not know the answer, please "
                    "respond with \"I don't know.\".")


def test_preference_pairs():
    selector = CorCerRAIT(n_vanilla=1, n_idk=2)
    rows = build_dataset(selector, mcqa_table(), mcqa_records())
    pairs = preference_pairs(rows, selector, mcqa_table(), mcqa_records())
    # p1 vanilla: gold over refusal. p7 (gold C; raw A .30, B .30, D .30): first most probable wrong letter, A.
    # p5 (gold A; B .40 is the most probable wrong option).
    assert [(p["id"], p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == [
        ("p1", "A", "I don't know."), ("p7", "I don't know.", "A"), ("p5", "I don't know.", "B")]
    oe_selector = CRaFT(n_vanilla=1, n_idk=1)
    oe_rows = build_dataset(oe_selector, oeqa_table(), oeqa_records())
    oe_pairs = preference_pairs(oe_rows, oe_selector, oeqa_table(), oeqa_records())
    assert oe_pairs[1]["rejected"] == [{"role": "assistant", "content": "Paris"}]  # most frequent wrong sample


def test_preference_pairs_skip_idk_without_a_wrong_answer_and_refuse_unsure():
    table = oeqa_table()
    table["sample_refused"] = [[True, True] if i.startswith("u") else [False] for i in table["id"]]
    selector = CRaFT(n_vanilla=1, n_idk=2)
    rows = build_dataset(selector, table, oeqa_records())
    with pytest.warns(SelectionWarning, match="2 IdK question"):
        pairs = preference_pairs(rows, selector, table, oeqa_records())
    assert [p["kind"] for p in pairs] == ["vanilla"]
    unsure = RTuning(variant="unsure")
    with pytest.raises(RaitError, match="unsure"):
        preference_pairs(fit_rows(unsure), unsure, mcqa_table(), mcqa_records())


def fit_rows(selector):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SelectionWarning)
        return build_dataset(selector, mcqa_table(), mcqa_records())


# ---------------------------------------------------------------- CRSS


def _unit(cos: float) -> list[float]:
    """A 2-d vector at the given cosine to (1, 0)."""
    return [cos, float(np.sqrt(1 - cos**2))]


def test_crss_on_hand_made_vectors():
    vanilla = np.array([[1.0, 0.0], [0.0, 1.0]])
    # best cosines to a vanilla vector: 0.995, 0.965, 0.7071 (to both), 0 (the reverse of (1, 0) is orthogonal to (0, 1))
    idk = np.array([_unit(0.995), _unit(0.965), [1.0, 1.0], [-1.0, 0.0]])
    expected = {0.95: 0.5, 0.96: 0.5, 0.97: 0.25, 0.98: 0.25, 0.99: 0.25}
    assert crss(vanilla, idk) == pytest.approx(expected)
    assert crss(vanilla * 3.0, idk * 0.5, chunk=1) == pytest.approx(expected)  # scale-free, chunking-free
    assert crss(vanilla, idk, thresholds=[0.5]) == {0.5: 0.75}


def test_crss_edge_cases():
    assert np.isnan(crss(np.ones((2, 3)), np.zeros((0, 3)))[0.95])
    assert crss(np.zeros((0, 3)), np.ones((2, 3)))[0.95] == 0.0
    same = np.array([[1.0, 2.0, 3.0]])
    assert crss(same, same, thresholds=[0.99]) == {0.99: 1.0}


@pytest.mark.parametrize("pooling", ["last_token", "mean"])
def test_question_features_do_not_depend_on_batching(tiny_model, pooling):
    model, tokenizer = tiny_model
    records = oeqa_records()[:5] + [QARecord(id="long", question="A much longer question " * 6, source="facts",
                                             split="train", answer="x")]
    batched = question_features(model, tokenizer, records, pooling=pooling, batch_size=4)
    single = question_features(model, tokenizer, records, pooling=pooling, batch_size=1)
    assert batched.shape == (6, model.config.hidden_size)
    np.testing.assert_allclose(batched, single, atol=1e-4)


def test_pooling_choices_differ(tiny_model):
    model, tokenizer = tiny_model
    last = question_features(model, tokenizer, oeqa_records()[:3], pooling="last_token")
    mean = question_features(model, tokenizer, oeqa_records()[:3], pooling="mean")
    assert not np.allclose(last, mean)
    with pytest.raises(ValueError, match="pooling"):
        question_features(model, tokenizer, oeqa_records()[:1], pooling="cls")


# ---------------------------------------------------------------- rait build


def test_run_build_all_methods(tmp_path, tiny_model_dir):
    table_path = write_table(oeqa_table(), tmp_path / "table.jsonl")
    records_path = tmp_path / "records.jsonl"
    write_records(records_path, oeqa_records())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SelectionWarning)
        built = run(BuildSettings(n_vanilla=3, n_idk=2, crss_model=str(tiny_model_dir)), table_path, records_path,
                    tmp_path / "out")
    methods = ["van_tuning", "cor_rait", "corcer_rait", "craft_wo_cer", "craft", "rtuning_unknown", "rtuning_unsure",
               "consistency_rait"]
    assert list(built.reports) == methods and list(built.skipped) == ["grait"]  # no gradient store
    assert built.sets == {name: tmp_path / "out" / f"{name}.jsonl" for name in methods}
    for name in methods:
        assert built.sets[name].exists()
        assert (tmp_path / "out" / "xtuner" / f"{name}.json").exists()
    assert not (tmp_path / "out" / "dpo" / "rtuning_unsure.jsonl").exists()
    assert built.reports["craft"]["taken"] == {"vanilla": 3, "idk": 2}
    assert built.reports["van_tuning"]["taken"] == {"vanilla": 5, "idk": 0}  # n_total = 3 + 2
    assert set(built.summary["crss"]["by_method"]["craft"]) == {"0.95", "0.96", "0.97", "0.98", "0.99"}
    assert built.summary["crss"]["by_method"]["van_tuning"]["0.95"] is None  # no IdK samples: undefined
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == json.loads(json.dumps(built.summary))
    assert "| craft |" in (tmp_path / "out" / "summary.md").read_text()
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["mode"] == "paper"


def test_run_build_skips_flow_methods_without_delta_mu(tmp_path):
    table_path = write_table(oeqa_table().drop(columns="delta_mu"), tmp_path / "table.jsonl")
    records_path = tmp_path / "records.jsonl"
    write_records(records_path, oeqa_records())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SelectionWarning)
        built = run(BuildSettings(n_total=5, exports=()), table_path, records_path, tmp_path / "out")
    assert "craft" not in built.reports and "craft" in built.skipped
    with pytest.raises(DataError, match=r"table\.jsonl: field 'delta_mu'"):
        run(BuildSettings(methods=["craft"], n_total=5), table_path, records_path, tmp_path / "out2")


def test_sampled_answers_train_vanilla_samples_on_the_models_own_correct_words():
    table = oeqa_table()
    table.loc[table["id"] == "k2", "samples"] = pd.Series([[" Paris, France", "Lyon", "Paris, France", "paris"]],
                                                         index=table.index[table["id"] == "k2"])
    table.loc[table["id"] == "k2", "sample_correct"] = pd.Series([[True, False, True, True]],
                                                                index=table.index[table["id"] == "k2"])
    table.loc[table["id"] == "k3", "sample_correct"] = pd.Series([[False]], index=table.index[table["id"] == "k3"])
    gold = build_dataset(CRaFT(n_vanilla=3, n_idk=2), table, oeqa_records())
    own = build_dataset(CRaFT(n_vanilla=3, n_idk=2), table, oeqa_records(), answer="sampled")
    target = {r["id"]: r["completion"][0]["content"] for r in own}
    assert [(r["id"], r["kind"]) for r in own] == [(r["id"], r["kind"]) for r in gold]
    assert target["k2"] == "Paris, France"  # the most frequent correct sample, stripped; the wrong "Lyon" never
    assert target["m5"] == "Paris"
    assert target["k3"] == "answer k3"  # no correct sample: the gold answer
    assert target["u1"] == "I don't know"  # IdK samples keep the refusal
    with pytest.raises(ValueError, match="answer must be"):
        build_dataset(CRaFT(n_vanilla=3, n_idk=2), table, oeqa_records(), answer="own")
