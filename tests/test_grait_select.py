"""The GRAIT selector: set-mean influence, the released greedy loop, adaptive weights, training rows."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from rait.data.records import QARecord
from rait.errors import DataError
from rait.grads.store import GradientFeatures
from rait.select.build import build_dataset
from rait.grads.features import gradient_examples
from rait.select import METHODS, SelectionWarning, make_selector
from rait.select.grait import GRAIT, adaptive_weights

N = 90


def unit_rows(n: int, d: int, seed: int) -> np.ndarray:
    """Random unit vectors sharing a common direction, like real gradient features (positive mean cosine)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) + 0.8 * rng.normal(size=(1, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def pool():
    """A knowledge table of N questions (μ on a grid, a few exactly at 0.5) and features for both forms."""
    rng = np.random.default_rng(1)
    ids = [f"q{k:03d}" for k in range(N)]
    mu = rng.choice(np.linspace(0, 1, 11), size=N)
    table = pd.DataFrame({"id": ids, "task": "oeqa", "mu": mu, "sigma": rng.random(N)})
    features = GradientFeatures({"refusal": (ids, unit_rows(N, 48, 2)), "answer": (ids, unit_rows(N, 48, 3))})
    return table, features


def brute_force(table: pd.DataFrame, features: GradientFeatures, released: bool = False) -> tuple[dict, dict]:
    """I_O1 and α from the explicit N x N similarity matrix, as the release's loaded .pt files hold it.

    The ik pool is μ ≥ 0.5 (every builder's split) or, as released, μ > 0.5."""
    ids = list(table["id"])
    u = features.rows("refusal", ids)
    s_rr = u @ u.T
    mu = table["mu"].to_numpy()
    ik, idk = np.flatnonzero(mu > 0.5 if released else mu >= 0.5), np.flatnonzero(mu < 0.5)
    influence = {ids[i]: s_rr[i][idk].mean() for i in idk}
    alpha = {ids[i]: s_rr[i][ik].mean() - s_rr[i][idk].mean() for i in idk}
    return influence, alpha


def released_selection(table: pd.DataFrame, features: GradientFeatures, n_van: int, n_idk: int) -> list[str]:
    """A direct transcription of construct_grait_data.py lines 14-64 (GRAIT release), with N x N matrices."""
    data = list(table.itertuples())
    ids = [row.id for row in data]
    u_r = torch.tensor(features.rows("refusal", ids), dtype=torch.float32)
    u_a = torch.tensor(features.rows("answer", ids), dtype=torch.float32)
    idk_idk_inner, idk_van_inner = u_r @ u_r.T, u_r @ u_a.T

    filtered_correct_values = [(index, item.mu) for index, item in enumerate(data) if item.mu > 0.5]
    filtered_incorrect_values = [(index, item.mu) for index, item in enumerate(data) if item.mu < 0.5]
    sorted_entropy_init = sorted(filtered_correct_values, key=lambda x: x[1], reverse=True)
    van_table = [index for index, correct in sorted_entropy_init[:n_van]]
    idk_group = [index for index, correct in filtered_incorrect_values]

    idk_table = []
    idk_sim_dict = {}
    for i in range(n_idk):
        if i == 0:
            for j in idk_group:
                if j not in idk_table:
                    idk_sim_dict[j] = idk_van_inner[j][van_table].sum() + idk_idk_inner[j][idk_table].sum()
        max_id = max(idk_sim_dict, key=idk_sim_dict.get)
        idk_table.append(max_id)
        del idk_sim_dict[max_id]
        for j in idk_sim_dict.keys():
            idk_sim_dict[j] += idk_idk_inner[j][max_id]
    idk_table = sorted(idk_sim_dict, key=idk_sim_dict.get)[:n_idk]
    return [ids[i] for i in idk_table]


@pytest.mark.parametrize("released", [False, True])
def test_set_mean_influence_equals_brute_force(pool, released):
    table, features = pool
    selector = GRAIT(features, n_vanilla=10, n_idk=12, as_released=released).fit(table)
    influence, alpha = brute_force(table, features, released)
    scores = selector.scores_.set_index("id")
    assert set(scores.index) == set(influence)
    np.testing.assert_allclose(scores["influence_o1"], [influence[i] for i in scores.index], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(scores["alpha"], [alpha[i] for i in scores.index], rtol=1e-9, atol=1e-12)


def test_o1_topk_takes_the_most_influential_idk_questions(pool):
    table, features = pool
    selector = GRAIT(features, n_vanilla=10, n_idk=12).fit(table)
    influence, _ = brute_force(table, features)
    assert selector.idk_ids_ == sorted(influence, key=influence.get, reverse=True)[:12]
    assert set(selector.idk_ids_) <= set(table["id"][table["mu"] < 0.5])


def test_vanilla_side_is_the_top_known_questions_by_mu(pool):
    table, features = pool
    selector = GRAIT(features, n_vanilla=10, n_idk=12).fit(table)
    known = table[table["mu"] >= 0.5]
    chosen = table.set_index("id").loc[selector.vanilla_ids_, "mu"]
    assert chosen.min() >= known["mu"].sort_values(ascending=False).iloc[9]
    assert selector.report_["pool"]["between_thresholds"] == 0
    released = GRAIT(features, n_vanilla=10, n_idk=12, as_released=True).fit(table)  # the script drops μ = τ
    assert released.report_["pool"]["between_thresholds"] == int((table["mu"] == 0.5).sum()) > 0


def test_every_builder_splits_known_and_unknown_alike_at_tau(pool):
    """Issue 16: GRAIT kept μ > τ / μ < τ and dropped μ = τ (common with k = 10 samples), while every other builder
    counts μ ≥ τ as known; one split (`split_by_correctness`) now serves all of them."""
    table, features = pool
    table = table.assign(delta_mu=-0.1)  # the flow methods may take every unknown question
    # ... and so may Consistency-RAIT: ten different samples everywhere, so every unknown question's samples disagree
    table = table.assign(samples=[[f"answer {i}" for i in range(10)]] * len(table))
    for tau in (0.5, float(np.linspace(0, 1, 11)[3])):  # grid values of μ (0.3 as the grid writes it)
        known, unknown = int((table["mu"] >= tau).sum()), int((table["mu"] < tau).sum())
        assert (table["mu"] == tau).any()
        for name, method in METHODS.items():
            if method.kind != "sft" or "tau" not in method.parameters:
                continue  # Van-Tuning draws from the whole table
            extra = {"features": features} if method.needs_gradients else {}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SelectionWarning)
                selector = make_selector(name, tau=tau, n_vanilla=5, n_idk=5, **extra).fit(table)
            pools = selector.report_["pool"]
            assert (pools["vanilla"], pools["idk"]) == (known, unknown), (name, tau)


@pytest.mark.parametrize("n_van,n_idk", [(10, 12), (25, 5), (0, 8)])
def test_greedy_then_bottom_is_the_released_loop(pool, n_van, n_idk):
    table, features = pool
    selector = GRAIT(features, n_vanilla=n_van, n_idk=n_idk, rule="greedy_then_bottom").fit(table)
    assert selector.idk_ids_ == released_selection(table, features, n_van, n_idk)


def test_greedy_then_bottom_warns_when_the_pool_is_too_small(pool):
    table, features = pool
    n_pool = int((table["mu"] < 0.5).sum())
    with pytest.warns(UserWarning, match="greedy_then_bottom needs"):
        selector = GRAIT(features, n_vanilla=5, n_idk=n_pool - 3, rule="greedy_then_bottom").fit(table)
    assert len(selector.idk_ids_) == 3


def test_weights_sum_to_half_the_idk_count_and_follow_the_sign(pool):
    table, features = pool
    for sign in (-1, 1):
        selector = GRAIT(features, n_vanilla=10, n_idk=12, weight_sign=sign).fit(table)
        weights = np.array([selector.weights_[i] for i in selector.idk_ids_])
        assert weights.sum() == pytest.approx(12 / 2)
        assert (weights > 0).all()
        alpha = selector.scores_.set_index("id").loc[selector.idk_ids_, "alpha"].to_numpy()
        order = np.argsort(alpha)
        assert np.all(np.diff(weights[order]) * sign >= 0)  # -1: higher α (over-refusal pull) weighs less
        assert set(selector.weights_) == set(selector.idk_ids_)


def test_adaptive_weights_match_the_released_softmax():
    alpha = np.array([0.03, -0.01, 0.02, 0.0])
    exp = {i: np.exp(a / 0.05) for i, a in enumerate(alpha)}  # release: exp(α/0.05) / (Σ exp / 500), N = 1000
    total = sum(exp.values()) / (len(alpha) / 2)
    np.testing.assert_allclose(adaptive_weights(alpha, weight_sign=1), [exp[i] / total for i in range(4)])


def test_as_released_writes_weight_one(pool):
    table, features = pool
    selector = GRAIT(features, n_vanilla=10, n_idk=12, as_released=True).fit(table)
    assert selector.weights_ == {}
    assert selector.scores_.loc[selector.scores_["selected"], "weight"].eq(1.0).all()


def test_random_rule_is_seeded(pool):
    table, features = pool
    a = GRAIT(features, n_vanilla=10, n_idk=12, rule="random", seed=3).fit(table).idk_ids_
    b = GRAIT(features, n_vanilla=10, n_idk=12, rule="random", seed=3).fit(table).idk_ids_
    c = GRAIT(features, n_vanilla=10, n_idk=12, rule="random", seed=4).fit(table).idk_ids_
    assert a == b and a != c
    assert set(a) <= set(table["id"][table["mu"] < 0.5])


def test_missing_features_name_the_question(pool):
    table, features = pool
    partial = GradientFeatures({"refusal": (list(table["id"][:-1]), features.rows("refusal", list(table["id"][:-1])))})
    table = table.assign(mu=0.0)
    with pytest.raises(DataError, match=repr(table["id"].iloc[-1])):
        GRAIT(partial, n_vanilla=0, n_idk=5).fit(table)


def test_training_rows_carry_the_weights(pool):
    table, features = pool
    records = [QARecord(id=i, question=f"Question number {k}?", source="nq", split="dev", answer=f"answer {k}")
               for k, i in enumerate(table["id"])]
    rows = build_dataset(GRAIT(features, n_vanilla=10, n_idk=12), table, records)
    idk = [r for r in rows if r["kind"] == "idk"]
    assert len(rows) == 22 and len(idk) == 12
    assert all(r["method"] == "grait" for r in rows)
    assert sum(r["weight"] for r in idk) == pytest.approx(6.0)
    assert all(r["weight"] == 1.0 for r in rows if r["kind"] == "vanilla")
    assert {r["completion"][0]["content"] for r in idk} == {"I don't know"}


def test_gradient_examples_are_rendered_like_the_training_rows(pool):
    table, features = pool
    records = [QARecord(id=i, question=f"Question number {k}?", source="nq", split="dev", answer=f"answer {k}")
               for k, i in enumerate(table["id"])]
    rows = build_dataset(GRAIT(features, n_vanilla=10, n_idk=12), table, records)
    by_id = {r.id: r for r in records}
    for row in (rows[0], rows[-1]):  # one vanilla, one IdK row
        examples = gradient_examples([by_id[row["id"]]])
        assert [(e.id, e.form) for e in examples] == [(row["id"], "answer"), (row["id"], "refusal")]
        same_form = examples[0] if row["kind"] == "vanilla" else examples[1]
        assert (same_form.prompt, same_form.completion) == (row["prompt"], row["completion"])
