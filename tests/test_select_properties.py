"""Properties of every selector on random knowledge tables (hypothesis).

- vanilla and IdK never share a question, and each side comes from its own pool;
- sizes are as asked when the pools allow it, else the whole pool with a warning
  (or, for the released MCQA draws with replacement, exactly as asked);
- the same seed gives the same output, whatever the row order of the table.
"""

from __future__ import annotations

import warnings

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from rait.select import CorCerRAIT, CorRAIT, CRaFT, CRaFTWithoutCer, RTuning, SelectionWarning, VanTuning

RAIT = (CorRAIT, CorCerRAIT, CRaFTWithoutCer, CRaFT)
FAST = settings(max_examples=50, deadline=None)


@st.composite
def tables(draw):
    task = draw(st.sampled_from(["oeqa", "mcqa"]))
    n = draw(st.integers(1, 25))
    if task == "oeqa":
        mu = st.sampled_from([i / 10 for i in range(11)])
        sigma = st.floats(0, 1)
    else:
        mu = st.floats(0, 1)
        sigma = st.floats(-1.4, 0)
    rows = [
        {"id": f"q{i:02d}", "task": task, "mu": draw(mu), "sigma": draw(sigma),
         "delta_mu": draw(st.sampled_from([-0.2, -0.1, 0.0, 0.1]))}
        for i in range(n)
    ]
    return pd.DataFrame(rows, columns=["id", "task", "mu", "sigma", "delta_mu"])


def quiet_fit(selector, table):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SelectionWarning)
        selector.fit(table)
    return selector, [w for w in caught if issubclass(w.category, SelectionWarning)]


def pool_sizes(table, mode, uses_flow, tau=0.5):
    """Pool sizes straight from the rules (CRaFT Algorithm 1 and its release, docs/build.md), independent of the selectors' code."""
    mu, delta = table["mu"], table["delta_mu"]
    if mode == "as_released" and (table["task"] == "oeqa").all():
        known, unknown, flow = mu >= tau + 0.01, mu <= tau - 0.01, delta < 0
    elif mode == "as_released":
        known, unknown, flow = mu >= tau, mu < tau, delta <= 0
    else:
        known, unknown, flow = mu >= tau, mu < tau, delta < 0
    return int(known.sum()), int((unknown & flow).sum() if uses_flow else unknown.sum())


@FAST
@given(table=tables(), cls=st.sampled_from(RAIT), mode=st.sampled_from(["paper", "as_released"]),
       n_van=st.integers(0, 12), n_idk=st.integers(0, 6), seed=st.integers(0, 3))
def test_rait_selectors(table, cls, mode, n_van, n_idk, seed):
    selector, caught = quiet_fit(cls(n_vanilla=n_van, n_idk=n_idk, mode=mode, seed=seed), table)
    vanilla, idk = selector.vanilla_ids_, selector.idk_ids_
    assert not set(vanilla) & set(idk)

    mu = table.set_index("id")["mu"]
    assert all(mu[i] >= 0.5 for i in vanilla)
    assert all(mu[i] < 0.5 for i in idk)
    if cls.uses_flow:
        delta = table.set_index("id")["delta_mu"]
        assert all(delta[i] <= 0 for i in idk)

    with_replacement = mode == "as_released" and table["task"].eq("mcqa").all()
    pool_van, pool_idk = pool_sizes(table, mode, cls.uses_flow)
    for taken, asked, pool in ((vanilla, n_van, pool_van), (idk, n_idk, pool_idk)):
        if with_replacement and pool > 0:
            assert len(taken) == asked
        else:
            assert len(taken) == min(asked, pool)
            assert len(set(taken)) == len(taken)
    short = pool_van < n_van or pool_idk < n_idk
    assert bool(caught) == short == bool(selector.report_["warnings"])

    again, _ = quiet_fit(cls(n_vanilla=n_van, n_idk=n_idk, mode=mode, seed=seed), table.iloc[::-1])
    assert (again.vanilla_ids_, again.idk_ids_) == (vanilla, idk)


@FAST
@given(table=tables(), n=st.integers(0, 30), mode=st.sampled_from(["paper", "as_released"]), seed=st.integers(0, 3))
def test_van_tuning(table, n, mode, seed):
    selector, caught = quiet_fit(VanTuning(n_total=n, mode=mode, seed=seed), table)
    assert selector.idk_ids_ == []
    if mode == "as_released" and table["task"].eq("mcqa").all() and len(table):
        assert len(selector.vanilla_ids_) == n
    else:
        assert len(set(selector.vanilla_ids_)) == len(selector.vanilla_ids_) == min(n, len(table))
    assert bool(caught) == (len(table) < n)
    again, _ = quiet_fit(VanTuning(n_total=n, mode=mode, seed=seed), table.sample(frac=1.0, random_state=1))
    assert again.vanilla_ids_ == selector.vanilla_ids_


@FAST
@given(table=tables(), variant=st.sampled_from(["unknown", "unsure"]), n_total=st.integers(0, 20),
       seed=st.integers(0, 3))
def test_rtuning(table, variant, n_total, seed):
    selector, _ = quiet_fit(RTuning(variant=variant, known_by="mu", n_total=n_total, seed=seed), table)
    n_idk = round(n_total * 0.2)
    pool_van, pool_idk = pool_sizes(table, "paper", uses_flow=False)
    assert len(selector.vanilla_ids_) == min(n_total - n_idk, pool_van)
    assert len(selector.idk_ids_) == min(n_idk, pool_idk)
    assert not set(selector.vanilla_ids_) & set(selector.idk_ids_)
    again, _ = quiet_fit(RTuning(variant=variant, known_by="mu", n_total=n_total, seed=seed), table.iloc[::-1])
    assert (again.vanilla_ids_, again.idk_ids_) == (selector.vanilla_ids_, selector.idk_ids_)
