"""Balance by subject (`BuildSettings.balance = "subject"`, `rait.select.balance`) on a hand-made facts-like pool.

Open-QA table, τ = 0.5, five subjects with very different known shares (μ ≥ τ known, μ < τ unknown):

    subject            questions  known  unknown (Δμ < 0 of them)   capacity at r = 0.2
    country_capital        20       16     4 (3)                     min(16/0.8, 4/0.2)  = 20
    element_number         20        4    16 (12)                    min(4/0.8, 16/0.2)  = 5
    river_length           20       10    10 (8)                     min(10/0.8, 10/0.2) = 12.5
    flag_color              6        6     0                         0: no unknown question, dropped
    "" (no subject)         4        2     2 (2)                     min(2/0.8, 2/0.2)   = 2.5

At n_total = 30 (24 vanilla / 6 IdK) Cor-RAIT's capacities sum to 40, so every subject gives 3/4 of its capacity:
IdK 3 / 0.75 / 1.875 / 0 / 0.375 and vanilla 12 / 3 / 7.5 / 0 / 1.5, rounded by largest remainder (ties to the
smaller subject name, "" first): IdK 3 / 1 / 2 / 0 / 0, vanilla 12 / 3 / 7 / 0 / 2.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest

from rait.data import write_records
from rait.data.records import QARecord
from rait.errors import DataError, SettingsError
from rait.grads.store import PLAN_FILE, GradientFeatures
from rait.pipeline.config import PipelineConfig
from rait.probe.table import write_table
from rait.select import BuildSettings, CorCerRAIT, CorRAIT, CRaFT, RTuning, SelectionWarning, VanTuning, run
from rait.select.balance import apportion, quotas, with_subjects
from rait.select.grait import GRAIT, adaptive_weights

SUBJECTS = {  # subject: (known, unknown, unknown with Δμ >= 0)
    "country_capital": (16, 4, 1), "element_number": (4, 16, 4), "river_length": (10, 10, 2), "flag_color": (6, 0, 0),
    "": (2, 2, 0),
}
TAU = 0.5


def pool() -> tuple[pd.DataFrame, list[QARecord]]:
    """The table (μ, σ, Δμ spread over each side by a fixed rule) and the records carrying the subjects."""
    rows, records = [], []
    for s, (known, unknown, flat) in SUBJECTS.items():
        name = s or "none"
        for k in range(known + unknown):
            qid = f"{name}/{k:02d}"
            is_known = k < known
            j = k if is_known else k - known
            mu = 1.0 - 0.1 * (j % 5) if is_known else 0.4 - 0.1 * (j % 5)
            sigma = round(0.05 + 0.9 * ((7 * k + len(name)) % 19) / 18, 4)
            delta = 0.0 if not is_known and j < flat else -0.1
            rows.append((qid, "oeqa", mu, sigma, delta))
            records.append(QARecord(id=qid, question=f"Question {qid}?", source="facts", split="train",
                                    answer=f"answer {qid}", subject=s))
    table = pd.DataFrame(rows, columns=["id", "task", "mu", "sigma", "delta_mu"])
    return table, records


def subject_of(records) -> dict[str, str]:
    return {r.id: r.subject for r in records}


def fit(selector, table):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SelectionWarning)
        return selector.fit(table)


def per_subject(selector, records) -> dict[str, tuple[int, int]]:
    of = subject_of(records)
    van, idk = Counter(of[q] for q in selector.vanilla_ids_), Counter(of[q] for q in selector.idk_ids_)
    return {s: (van[s], idk[s]) for s in SUBJECTS}


def assert_share_in_every_subject(counts: dict[str, tuple[int, int]], share: float) -> None:
    for s, (van, idk) in counts.items():
        assert abs(idk - share * (van + idk)) <= 1, (s, van, idk)


def known_unknown(table: pd.DataFrame, ids) -> tuple[set, set]:
    mu = table.set_index("id")["mu"]
    return {q for q in ids if mu[q] >= TAU}, {q for q in ids if mu[q] < TAU}


# ---------------------------------------------------------------- quotas


def test_quotas_are_proportional_to_capacity_with_one_share_everywhere():
    pools = {"country_capital": (16, 4), "element_number": (4, 16), "river_length": (10, 10), "flag_color": (6, 0),
             "": (2, 2)}
    assert quotas(pools, 24, 6, Fraction(1, 5)) == {  # module docstring
        "country_capital": (12, 3), "element_number": (3, 1), "river_length": (7, 2), "flag_color": (0, 0), "": (2, 0)}
    # Asked more than the subjects hold (capacity 40): every subject gives its whole capacity, rounded (IdK 4 / 1 /
    # 2.5 / 0 / 0.5: the last unit goes to "", which ties with river_length and sorts first).
    assert quotas(pools, 80, 20, Fraction(1, 5)) == {
        "country_capital": (16, 4), "element_number": (4, 1), "river_length": (10, 2), "flag_color": (0, 0), "": (2, 1)}
    # No size: whole capacities at idk_share; share 0: every question with a known side, in proportion.
    assert quotas(pools, None, None, Fraction(1, 5)) == quotas(pools, 80, 20, Fraction(1, 5))
    assert quotas(pools, 19, 0, Fraction(0)) == {
        "country_capital": (8, 0), "element_number": (2, 0), "river_length": (5, 0), "flag_color": (3, 0), "": (1, 0)}


def test_apportion_keeps_the_total_and_each_share_within_one():
    reals = {"a": Fraction(7, 3), "b": Fraction(5, 6), "c": Fraction(5, 6)}
    assert apportion(reals, 4) == {"a": 2, "b": 1, "c": 1}
    assert apportion(reals, 3) == {"a": 2, "b": 1, "c": 0}  # tie: the smaller name


# ---------------------------------------------------------------- selectors


@pytest.mark.parametrize("cls", [CorRAIT, CorCerRAIT, CRaFT])
def test_every_subject_gets_the_builds_idk_share(cls):
    table, records = pool()
    table = with_subjects(table, records)
    selector = fit(cls(n_total=30, idk_share=0.2, balance="subject", seed=3), table)
    counts = per_subject(selector, records)
    assert len(selector.vanilla_ids_) == 24 and len(selector.idk_ids_) == 6
    assert_share_in_every_subject(counts, 0.2)
    assert counts["flag_color"] == (0, 0)  # no unknown question: dropped
    van, idk = known_unknown(table, selector.vanilla_ids_ + selector.idk_ids_)
    assert van == set(selector.vanilla_ids_) and idk == set(selector.idk_ids_)
    report = selector.report_["balance"]
    assert report["dropped"] == ["flag_color"] and report["idk_share"] == 0.2
    assert {s: (v["taken"]["vanilla"], v["taken"]["idk"]) for s, v in report["subjects"].items()} == counts
    assert any("flag_color" in w and "0 unknown" in w for w in selector.report_["warnings"])
    # Unbalanced, the IdK side is far from the share in some subject (the problem balance solves).
    plain = per_subject(fit(cls(n_total=30, idk_share=0.2, seed=3), table), records)
    assert any(abs(i - 0.2 * (v + i)) > 1 for v, i in plain.values())


def test_cor_rait_expected_counts_and_draws_from_its_own_permutation():
    table, records = pool()
    selector = fit(CorRAIT(n_total=30, balance="subject", seed=5), with_subjects(table, records))
    assert per_subject(selector, records) == {"country_capital": (12, 3), "element_number": (3, 1),
                                               "river_length": (7, 2), "flag_color": (0, 0), "": (2, 0)}
    # Each subject's questions are the first of that subject the unbalanced whole-pool draw reaches, in its order.
    idk_pool = table[table["mu"] < TAU].sort_values("id").sample(frac=1.0, random_state=5)
    of = subject_of(records)
    firsts = {s: [q for q in idk_pool["id"] if of[q] == s][:n] for s, n in
              {"country_capital": 3, "element_number": 1, "river_length": 2}.items()}
    assert selector.idk_ids_ == [q for q in idk_pool["id"] if q in {x for ids in firsts.values() for x in ids}]


def test_craft_keeps_its_ranking_within_each_subject():
    table, records = pool()
    table = with_subjects(table, records)
    balanced = fit(CRaFT(n_total=30, balance="subject"), table)
    of = subject_of(records)
    for side, ids, pool_mask, descending in (("vanilla", balanced.vanilla_ids_, table["mu"] >= TAU, True),
                                             ("idk", balanced.idk_ids_, (table["mu"] < TAU) & (table["delta_mu"] < 0),
                                              False)):
        candidates = table[pool_mask].sort_values(["sigma", "id"], ascending=[not descending, True], kind="mergesort")
        for s in SUBJECTS:
            mine = [q for q in ids if of[q] == s]
            assert mine == [q for q in candidates["id"] if of[q] == s][:len(mine)], (side, s)
    # The flow filter still applies: no Δμ >= 0 question among the IdK ones.
    assert (table.set_index("id").loc[balanced.idk_ids_, "delta_mu"] < 0).all()


def test_deterministic_for_a_seed_and_independent_of_row_order():
    table, records = pool()
    table = with_subjects(table, records)
    shuffled = table.sample(frac=1.0, random_state=11)
    for cls in (CorRAIT, CRaFT, RTuning, VanTuning):
        a = fit(cls(n_total=30, balance="subject", seed=2), table)
        b = fit(cls(n_total=30, balance="subject", seed=2), shuffled)
        assert (a.vanilla_ids_, a.idk_ids_, a.report_) == (b.vanilla_ids_, b.idk_ids_, b.report_)
    seeds = {tuple(fit(CorRAIT(n_total=30, balance="subject", seed=s), table).idk_ids_) for s in range(6)}
    assert len(seeds) > 1  # the seed still matters


def test_short_pools_warn_and_report_per_subject():
    table, records = pool()
    table = with_subjects(table, records)
    with pytest.warns(SelectionWarning) as caught:
        selector = CRaFT(n_total=100, balance="subject").fit(table)
    messages = [str(w.message) for w in caught]
    assert any("1 subject(s) lack known or unknown candidates" in m and "'flag_color' (6 known, 0 unknown)" in m
               for m in messages)
    # CRaFT's IdK pools (Δμ < 0): 3 / 12 / 8 / 0 / 2, capacities 15 / 5 / 12.5 / 0 / 2.5 = 35 < 100.
    assert any("the subjects hold 28 vanilla / 7 IdK of the 80 / 20 asked" in m for m in messages)
    assert (len(selector.vanilla_ids_), len(selector.idk_ids_)) == (28, 7)
    assert_share_in_every_subject(per_subject(selector, records), 0.2)
    assert selector.report_["balance"]["subjects"]["element_number"] == {"pool": {"vanilla": 4, "idk": 12},
                                                                         "taken": {"vanilla": 4, "idk": 1}}


def test_van_tuning_balance_is_a_stratified_draw():
    table, records = pool()
    selector = fit(VanTuning(n_total=35, balance="subject", seed=1), with_subjects(table, records))
    # Share 0: each subject in proportion to its questions (20, 20, 20, 6, 4 of 70), exactly here.
    assert per_subject(selector, records) == {"country_capital": (10, 0), "element_number": (10, 0),
                                               "river_length": (10, 0), "flag_color": (3, 0), "": (2, 0)}
    assert selector.report_["warnings"] == []


def test_rtuning_balances_its_own_known_split():
    table, records = pool()
    selector = fit(RTuning(known_by="mu", n_total=30, balance="subject"), with_subjects(table, records))
    assert_share_in_every_subject(per_subject(selector, records), 0.2)
    assert (len(selector.vanilla_ids_), len(selector.idk_ids_)) == (24, 6)


def test_selector_needs_the_subject_column_and_refuses_released_and_one_sided_sizes():
    table, records = pool()
    with pytest.raises(DataError, match="field 'subject'"):
        CorRAIT(n_total=30, balance="subject").fit(table)
    with pytest.raises(SettingsError, match="field 'balance'.*as_released"):
        CorRAIT(n_total=30, balance="subject", mode="as_released").fit(with_subjects(table, records))
    with pytest.raises(SettingsError, match="field 'balance'.*n_idk"):
        CorRAIT(n_vanilla=10, balance="subject").fit(with_subjects(table, records))
    with pytest.raises(SettingsError, match="field 'balance': 'topic' is not one of subject"):
        CorRAIT(n_total=30, balance="topic").fit(with_subjects(table, records))


# ---------------------------------------------------------------- GRAIT


def unit_rows(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) + 0.8 * rng.normal(size=(1, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def features_for(ids: list[str]) -> GradientFeatures:
    return GradientFeatures({"refusal": (ids, unit_rows(len(ids), 16, 2)), "answer": (ids, unit_rows(len(ids), 16, 3))})


@pytest.mark.parametrize("rule", ["o1_topk", "random", "greedy_then_bottom"])
def test_grait_balances_and_keeps_its_weights_on_the_ids_it_selects(rule):
    table, records = pool()
    table = with_subjects(table, records)
    features = features_for(list(table["id"]))
    selector = fit(GRAIT(features, n_total=30, rule=rule, balance="subject", seed=4), table)
    counts = per_subject(selector, records)
    assert_share_in_every_subject(counts, 0.2)
    assert counts["flag_color"] == (0, 0)
    assert set(selector.weights_) == set(selector.idk_ids_)
    scores = selector.scores_.set_index("id")
    alpha = scores.loc[selector.idk_ids_, "alpha"].to_numpy()
    np.testing.assert_allclose([selector.weights_[q] for q in selector.idk_ids_], adaptive_weights(alpha))
    assert set(scores.index[scores["selected"]]) == set(selector.idk_ids_)
    if rule == "o1_topk":  # each subject's IdK questions are its most influential ones (I_O1 over the full pool)
        of = subject_of(records)
        ranked = scores.sort_values("influence_o1", ascending=False).index
        for s in SUBJECTS:
            mine = [q for q in selector.idk_ids_ if of[q] == s]
            assert mine == [q for q in ranked if of[q] == s][:len(mine)]
    else:  # greedy_then_bottom keeps at most half a subject's pool: capacities change, the share does not
        assert len(selector.idk_ids_) >= 1


# ---------------------------------------------------------------- the build stage


def write_inputs(tmp_path):
    table, records = pool()
    table_path = write_table(table, tmp_path / "table.jsonl")
    records_path = tmp_path / "pool.jsonl"
    write_records(records_path, records)
    store = tmp_path / "store"  # a merged gradient store of one projection size, as `rait grads` leaves it
    store.mkdir()
    features = features_for(list(table["id"]))
    (store / PLAN_FILE).write_text(json.dumps({"settings": {"dims": [16]}}))
    for form in ("refusal", "answer"):
        ids = list(table["id"])
        (store / f"{form}_ids.json").write_text(json.dumps(ids))
        np.save(store / f"{form}_d16.npy", features.rows(form, ids).astype(np.float32))
    return table_path, records_path, store, records


def build(tmp_path, name, records_store, **settings):
    table_path, records_path, store = records_store
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SelectionWarning)
        return run(BuildSettings(**settings), table_path, records_path, tmp_path / name, gradients=store).summary


def rows_of(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_build_stage_balances_every_method(tmp_path):
    *inputs, records = write_inputs(tmp_path)
    summary = build(tmp_path, "balanced", inputs, n_total=30, balance="subject", seed=1)
    of = subject_of(records)
    assert set(summary["methods"]) == {"van_tuning", "cor_rait", "corcer_rait", "craft_wo_cer", "craft",
                                       "rtuning_unknown", "rtuning_unsure", "grait"}
    for name, entry in summary["methods"].items():
        rows = rows_of(tmp_path / "balanced" / f"{name}.jsonl")
        van = Counter(of[r["id"]] for r in rows if r["kind"] == "vanilla")
        idk = Counter(of[r["id"]] for r in rows if r["kind"] == "idk")
        share = 0.0 if name == "van_tuning" else 0.2
        assert_share_in_every_subject({s: (van[s], idk[s]) for s in SUBJECTS}, share)
        assert entry["report"]["balance"]["by"] == "subject"
        if name != "van_tuning":
            assert van["flag_color"] + idk["flag_color"] == 0 and entry["report"]["balance"]["dropped"] == ["flag_color"]
    grait = rows_of(tmp_path / "balanced" / "grait.jsonl")
    assert sum(r["weight"] for r in grait if r["kind"] == "idk") == pytest.approx(len([r for r in grait if r["kind"] == "idk"]) / 2)
    assert "flag_color" in (tmp_path / "balanced" / "summary.md").read_text()  # the warning is listed


def test_balance_none_changes_nothing(tmp_path):
    *inputs, _ = write_inputs(tmp_path)
    default = build(tmp_path, "default", inputs, n_total=30, seed=1)
    explicit = build(tmp_path, "none", inputs, n_total=30, seed=1, balance=None)
    for name, entry in default["methods"].items():
        assert "balance" not in entry["report"]
        for file in (f"{name}.jsonl", f"xtuner/{name}.json", f"dpo/{name}.jsonl"):
            a, b = tmp_path / "default" / file, tmp_path / "none" / file
            assert a.exists() == b.exists() and (not a.exists() or a.read_bytes() == b.read_bytes()), file
    assert {n: e["report"] for n, e in default["methods"].items()} == {n: e["report"] for n, e in explicit["methods"].items()}
    # The unbalanced selection is the method's own (Cor-RAIT's random draws, here), whatever the subjects.
    table, records = pool()
    plain = fit(CorRAIT(n_total=30, seed=1), table)
    rows = rows_of(tmp_path / "none" / "cor_rait.jsonl")
    assert [r["id"] for r in rows] == plain.vanilla_ids_ + plain.idk_ids_


def test_build_is_deterministic_for_a_seed(tmp_path):
    *inputs, _ = write_inputs(tmp_path)
    build(tmp_path, "a", inputs, n_total=30, balance="subject", seed=7, methods=["cor_rait", "grait"])
    build(tmp_path, "b", inputs, n_total=30, balance="subject", seed=7, methods=["cor_rait", "grait"])
    for name in ("cor_rait", "grait"):
        assert (tmp_path / "a" / f"{name}.jsonl").read_bytes() == (tmp_path / "b" / f"{name}.jsonl").read_bytes()


def test_build_settings_refuse_balance_as_released_and_unknown_values():
    with pytest.raises(SettingsError, match="field 'balance'.*as_released"):
        BuildSettings(n_total=30, balance="subject", mode="as_released")
    with pytest.raises(SettingsError, match="field 'balance': 'relation' is not one of subject"):
        BuildSettings(balance="relation")
    with pytest.raises(SettingsError, match="field 'balance'.*n_idk"):
        BuildSettings(n_vanilla=20, balance="subject")
    assert {s.balance for s in BuildSettings(methods=["cor_rait", "grait"], balance="subject").selectors("x")} == {"subject"}


def test_rait_run_config_reaches_the_build(tmp_path):
    path = tmp_path / "run.yaml"
    track = "tracks:\n  - name: a\n    pool: {data: 'nq:dev'}\n    test_sets: [{name: t, data: 'nq:dev'}]\n"
    path.write_text(track + "    build: {n_total: 10, balance: subject}\n")
    assert PipelineConfig.from_yaml(path).tracks[0].build.balance == "subject"
    for build, words in (("{n_total: 10, balance: relation}", "'relation' is not one of subject"),
                         ("{n_total: 10, balance: subject, mode: as_released}", "as_released"),
                         ("{n_total: 10, balance: 3}", "must be a string")):
        path.write_text(track + f"    build: {build}\n")
        with pytest.raises(DataError) as err:
            PipelineConfig.from_yaml(path)
        assert (err.value.line, err.value.field) == (5, "tracks.0.build.balance") and words in str(err.value)


def test_cli_build_takes_balance(tmp_path):
    from rait.cli import main

    *inputs, records = write_inputs(tmp_path)
    table_path, records_path, _ = inputs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SelectionWarning)
        main(["build", "--table", str(table_path), "--records", str(records_path), "--out", str(tmp_path / "out"),
              "--method", "cor_rait", "--n-total", "30", "--balance", "subject"])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["methods"]["cor_rait"]["report"]["balance"]["dropped"] == ["flag_color"]


@pytest.mark.parametrize("options, words", [(["--balance", "relation"], "--balance: 'relation' is not one of subject"),
                                            (["--balance", "subject", "--mode", "as_released"], "--balance: the as_released")])
def test_cli_build_refuses_a_bad_balance(tmp_path, capsys, options, words):
    from rait.cli import main

    *inputs, _ = write_inputs(tmp_path)
    table_path, records_path, _ = inputs
    with pytest.raises(SystemExit) as done:
        main(["build", "--table", str(table_path), "--records", str(records_path), "--out", str(tmp_path / "out"),
              "--n-total", "30", *options])
    assert done.value.code == 2 and words in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_subjects_restrict_the_candidates_and_combine_with_balance(tmp_path):
    """build.subjects draws the same sample count from fewer kinds of question (the diversity curve)."""
    *inputs, records = write_inputs(tmp_path)
    of = subject_of(records)
    chosen = ["country_capital", "element_number"]
    summary = build(tmp_path, "some", inputs, n_total=12, subjects=chosen, methods=["cor_rait", "craft"], seed=1)
    for name in summary["methods"]:
        rows = rows_of(tmp_path / "some" / f"{name}.jsonl")
        assert {of[r["id"]] for r in rows} <= set(chosen) and len(rows) == 12
    balanced = build(tmp_path, "both", inputs, n_total=10, subjects=chosen, balance="subject", methods=["cor_rait"])
    assert set(balanced["methods"]["cor_rait"]["report"]["balance"]["subjects"]) <= set(chosen)
    with pytest.raises(SettingsError, match="subjects.*'planets' is the subject of no pool question"):
        build(tmp_path, "bad", inputs, n_total=10, subjects=["planets"], methods=["cor_rait"])
    with pytest.raises(SettingsError, match="subjects"):
        BuildSettings(subjects="country_capital")
