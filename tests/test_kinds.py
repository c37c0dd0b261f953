"""The kinds of method (`rait.pipeline.kinds`): one strategy per registry kind, and the comparisons they give."""

from __future__ import annotations

from rait.pipeline.kinds import CLAIMED_ORDER, KINDS, comparisons, kind_of
from rait.report.results import REFERENCE
from rait.select.methods import METHODS


def test_every_registered_kind_has_a_strategy():
    assert {method.kind for method in METHODS.values()} <= set(KINDS)
    assert all(kind_of(name).trains == method.trains for name, method in METHODS.items())


def test_comparisons_follow_the_registry():
    """Each SFT method against the untouched model (in the registry's order), the papers' claimed ordering, then each
    method of another kind against the untouched model and SFT tuning's two main recipes: a method added to the
    registry gets its comparisons with no list to edit."""
    pairs = comparisons()
    sft = [m.label for m in METHODS.values() if m.kind == "sft"]
    other = [m.label for m in METHODS.values() if m.kind != "sft"]
    assert pairs[:len(sft)] == [(label, REFERENCE) for label in sft]
    assert pairs[len(sft):len(sft) + len(CLAIMED_ORDER)] == CLAIMED_ORDER
    assert pairs[len(sft) + len(CLAIMED_ORDER):] == [(label, b) for label in other
                                                     for b in (REFERENCE, "Cor-RAIT", "CRaFT")]
    labels = {m.label for m in METHODS.values()} | {REFERENCE}
    assert all(a in labels and b in labels for a, b in pairs)  # no comparison names a row that cannot exist


def test_the_build_writes_what_each_trained_kind_reads(tmp_path):
    """SFT methods read their own selection, DPO-RAIT the selection it takes its pairs from, GRPO-RAIT the pool."""
    from types import SimpleNamespace

    config = SimpleNamespace(dpo=SimpleNamespace(pairs_from="cor_rait"), grpo=SimpleNamespace(start_from="cor_rait"))
    datasets, pool = {"cor_rait": tmp_path / "build" / "cor_rait.jsonl"}, tmp_path / "pool.jsonl"
    assert kind_of("cor_rait").data("cor_rait", config, tmp_path, datasets, pool) == datasets["cor_rait"]
    assert kind_of("dpo_rait").selections("dpo_rait", config) == ["cor_rait"]
    assert kind_of("dpo_rait").data("dpo_rait", config, tmp_path, datasets, pool) == (
        tmp_path / "build" / "dpo" / "cor_rait.jsonl")
    assert kind_of("grpo_rait").data("grpo_rait", config, tmp_path, datasets, pool) == pool
    assert kind_of("grpo_rait").start(config) == "cor_rait" and kind_of("grpo_rait").last
    assert not kind_of("grpo_rait").on_processes and kind_of("cor_rait").on_processes
