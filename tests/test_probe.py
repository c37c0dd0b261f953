"""The knowledge probe on the tiny random model: formulas, shapes, determinism, resumption."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from rait.artifacts import read_manifest
from rait.data.records import QARecord
from rait.errors import RaitError
from rait.probe.backends import HFBackend
from rait.probe.mcqa import MCQASettings, letter_token_ids, probe_mcqa
from rait.probe.measures import entropy, mean_pairwise_cosine, option_stats
from rait.probe.oeqa import OpenSettings, probe_open, score_samples
from rait.probe.stage import run as run_probe
from rait.probe.table import read_table

pytestmark = pytest.mark.numerics  # floats computed two ways: run again on a second kernel path (Makefile)

SUBJECT = "high_school_biology"


def byte_embedder(texts):
    """A cheap deterministic stand-in for MiniLM: byte counts (+1, so "" is not a zero vector)."""
    return np.array([np.bincount(np.frombuffer(t.encode(), np.uint8), minlength=256) + 1.0 for t in texts])


def mcqa(i: int, split: str = "test", gold: str = "B") -> QARecord:
    return QARecord(id=f"{SUBJECT}/{split}/{i}", question=f"What is the capital {i}?", source="mmlu", split=split,
                    subject=SUBJECT, choices=["Paris", "New Delhi", "Jupiter", "York"], gold=gold,
                    metadata={"subject_name": "high school biology"})


def oeqa(i: int, answer: str = "Paris", **metadata) -> QARecord:
    return QARecord(id=f"nq/{i}", question=f"who is the president of the river {i}", source="nq", split="train",
                    answer=answer, metadata=metadata)


@pytest.fixture
def backend(tiny_model):
    return HFBackend(*tiny_model)


EXEMPLARS = [mcqa(i, split="val", gold="ABCDA"[i]) for i in range(5)]
FAST_OPEN = OpenSettings(k=3, max_new_tokens=4, batch_size=2, shard_size=2)


# ------------------------------------------------------------------ formulas


def test_entropy_on_known_distributions():
    assert entropy([0.25] * 4) == pytest.approx(math.log(4))
    assert entropy([0.5, 0.5, 0.0, 0.0]) == pytest.approx(math.log(2))
    assert entropy([1.0, 0.0, 0.0, 0.0]) == 0.0


def test_option_stats_normalise_mu_but_not_the_entropy():
    mu, sigma = option_stats([0.1, 0.1, 0.1, 0.1], gold_index=2)
    assert mu == pytest.approx(0.25)
    assert sigma == pytest.approx(4 * 0.1 * math.log(0.1))  # -H of the raw probabilities
    _, sigma_normalised = option_stats([0.1, 0.1, 0.1, 0.1], gold_index=2, normalized_entropy=True)
    assert sigma_normalised == pytest.approx(-math.log(4))
    mu, _ = option_stats([0.3, 0.1, 0.05, 0.05], gold_index=0)
    assert mu == pytest.approx(0.6)


def test_mean_pairwise_cosine():
    e = np.eye(3)
    assert mean_pairwise_cosine(np.stack([e[0]] * 10) * 3.0) == pytest.approx(1.0, abs=1e-12)
    assert mean_pairwise_cosine(e) == pytest.approx(0.0)
    assert mean_pairwise_cosine(np.stack([e[0], e[0], e[1]])) == pytest.approx(2 / 6)  # 2 of 6 ordered pairs agree
    assert mean_pairwise_cosine(np.stack([e[0], -e[0]])) == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        mean_pairwise_cosine(e[:1])


def test_score_samples_flags_and_match_mode():
    record = oeqa(0, answer="7")
    answers = ["It was 1978.", "7", "I don't know, maybe 7", "seven"]
    row = score_samples(record, answers, byte_embedder(answers), OpenSettings())
    assert row["sample_correct"] == [True, True, False, False]  # papers' containment: "7" is in "1978"
    assert row["sample_refused"] == [False, False, True, False]
    assert row["mu"] == 0.5
    word = score_samples(oeqa(0, answer="7", match_mode="word"), answers, byte_embedder(answers), OpenSettings())
    assert word["sample_correct"] == [False, True, False, False]  # the record's own match mode wins


# ------------------------------------------------------------------ MCQA


def test_letter_token_ids_cover_both_spellings(tiny_model):
    _, tokenizer = tiny_model
    ids = letter_token_ids(tokenizer, "ABCD")
    for letter, found in ids.items():
        assert {tokenizer.decode([i]).strip() for i in found} == {letter}
        assert tokenizer(letter, add_special_tokens=False)["input_ids"][0] in found
        assert tokenizer(" " + letter, add_special_tokens=False)["input_ids"][0] in found


SHOTS = "Question: the capital of France?\nAnswer: Paris\nQuestion: who wrote the novel?\nAnswer: Sinclair Lewis\n"


@pytest.mark.parametrize("prompts", [
    ["Question: who is the president", "A", "The capital of India is New Delhi. The largest planet is"],
    [SHOTS + "Question: who is the president?\nAnswer:", SHOTS + "Question: x?\nAnswer:",
     SHOTS + "Question: the largest planet, by mass?\nAnswer:"],
], ids=["unrelated", "shared-shots"])
def test_next_token_probs_batched_equal_one_by_one(backend, tiny_model, prompts):
    model, tokenizer = tiny_model
    every_id = list(range(len(tokenizer)))
    batched = backend.next_token_probs(prompts, every_id, batch_size=3, add_special_tokens=False)
    assert batched.shape == (3, len(tokenizer))
    assert batched.sum(axis=1) == pytest.approx(np.ones(3))  # a full softmax, read at every id
    for row, prompt in zip(batched, prompts):
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            alone = torch.softmax(model(**ids).logits[0, -1], dim=-1).numpy()
        np.testing.assert_allclose(row, alone, atol=1e-6)


@pytest.mark.parametrize("contexts, continuations", [
    (["Question: who wrote the novel?\nAnswer:", "Q:"], [" Sinclair Lewis", " Paris and the largest planet"]),
    ([SHOTS + "Question: the capital of India?\nAnswer:"] * 3, [" New Delhi", " Paris", " the largest planet is"]),
], ids=["unrelated", "one-context-several-options"])
def test_continuation_logprobs_match_a_plain_forward(backend, tiny_model, contexts, continuations):
    model, tokenizer = tiny_model
    got = backend.continuation_logprobs(contexts, continuations, batch_size=3, add_special_tokens=False)
    for context, continuation, logprobs in zip(contexts, continuations, got):
        ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
        cont = tokenizer(continuation, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ctx + cont])).logits[0]
        expected = torch.log_softmax(logits, -1)[len(ctx) - 1:-1].gather(-1, torch.tensor(cont)[:, None])[:, 0]
        assert logprobs.shape == (len(cont),)
        np.testing.assert_allclose(logprobs, expected.numpy(), atol=1e-5)


@pytest.mark.parametrize("scoring", ["letter", "cloze"])
def test_mcqa_table(backend, tmp_path, scoring):
    pool = [mcqa(i, gold="ABCD"[i % 4]) for i in range(5)]
    settings = MCQASettings(scoring=scoring, batch_size=3, shard_size=2)
    table = probe_mcqa(backend, pool, tmp_path / "k.parquet", exemplars=EXEMPLARS, settings=settings, progress=False)
    back = read_table(tmp_path / "k.parquet")
    assert list(back.columns) == ["id", "task", "mu", "sigma", "option_probs", "gold_prob"]
    assert list(back["id"]) == [r.id for r in pool]
    for record, row in zip(pool, table.itertuples()):
        probs = np.asarray(row.option_probs)
        gold = record.letters.index(record.gold)
        assert len(probs) == 4 and (probs > 0).all() and row.gold_prob == probs[gold]
        assert row.mu == pytest.approx(probs[gold] / probs.sum())
        assert -math.log(4) - 1e-9 <= row.sigma <= 0
    if scoring == "letter":
        assert (table["option_probs"].map(sum) < 1).all()  # raw next-token probabilities
    assert not (tmp_path / "k.parquet.work").exists()


def test_mcqa_letter_probe_equals_a_manual_forward(backend, tiny_model, tmp_path):
    from rait.prompts import render

    model, tokenizer = tiny_model
    record = mcqa(0, gold="C")
    table = probe_mcqa(backend, [record], tmp_path / "k.jsonl", exemplars=EXEMPLARS, progress=False)
    prompt = render(record, "query_kshot_mcqa", tokenizer, shots=EXEMPLARS, n_shots=5, chat=False)
    with torch.no_grad():
        probs = torch.softmax(model(**tokenizer(prompt, return_tensors="pt")).logits[0, -1], -1)
    expected = [float(probs[ids].sum()) for ids in letter_token_ids(tokenizer, "ABCD").values()]
    np.testing.assert_allclose(table["option_probs"][0], expected, rtol=1e-5)


def test_mcqa_needs_enough_exemplars_and_keeps_them_out_of_the_pool(backend, tmp_path):
    with pytest.raises(RaitError, match="only 2 exemplar"):
        probe_mcqa(backend, [mcqa(0)], tmp_path / "k.jsonl", exemplars=EXEMPLARS[:2], progress=False)
    with pytest.raises(RaitError, match="its own exemplars"):
        probe_mcqa(backend, [EXEMPLARS[0]], tmp_path / "k.jsonl", exemplars=EXEMPLARS, progress=False)


# ------------------------------------------------------------------ open QA


def test_open_table_shapes_and_determinism(backend, tmp_path):
    pool = [oeqa(i) for i in range(5)]
    first = probe_open(backend, pool, tmp_path / "a.jsonl", embedder=byte_embedder, settings=FAST_OPEN, progress=False)
    again = probe_open(backend, pool, tmp_path / "b.jsonl", embedder=byte_embedder, settings=FAST_OPEN, progress=False)
    other = OpenSettings(**{**FAST_OPEN.__dict__, "seed": 1})
    reseeded = probe_open(backend, pool, tmp_path / "c.jsonl", embedder=byte_embedder, settings=other, progress=False)
    assert list(first.columns) == ["id", "task", "mu", "sigma", "samples", "sample_correct", "sample_refused"]
    assert all(len(s) == 3 for col in ("samples", "sample_correct", "sample_refused") for s in first[col])
    pd.testing.assert_frame_equal(first, again)
    assert list(first["samples"]) != list(reseeded["samples"])
    pd.testing.assert_frame_equal(read_table(tmp_path / "a.jsonl")[first.columns], first, check_dtype=False)


def test_resume_after_interrupt_gives_the_identical_table(backend, tmp_path):
    pool = [oeqa(i) for i in range(5)]  # 3 shards of 2, 2, 1 questions
    whole = probe_open(backend, pool, tmp_path / "whole.jsonl", embedder=byte_embedder, settings=FAST_OPEN, progress=False)

    calls = []
    sample = backend.sample

    def killed_after_one_shard(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return sample(*args, **kwargs)

    backend.sample = killed_after_one_shard
    out = tmp_path / "resumed.jsonl"
    with pytest.raises(KeyboardInterrupt):
        probe_open(backend, pool, out, embedder=byte_embedder, settings=FAST_OPEN, progress=False)
    assert sorted(p.name for p in (tmp_path / "resumed.jsonl.work").iterdir()) == ["run.json", "shard-00000.json"]
    assert not out.exists()

    calls.clear()
    backend.sample = lambda *args, **kwargs: (calls.append(1), sample(*args, **kwargs))[1]
    resumed = probe_open(backend, pool, out, embedder=byte_embedder, settings=FAST_OPEN, progress=False)
    assert len(calls) == 2  # only the two unfinished shards ran
    pd.testing.assert_frame_equal(resumed, whole)
    assert read_manifest(out)["timing"]["shards_resumed"] == 1


def test_work_folder_of_another_run_is_refused(backend, tmp_path):
    pool = [oeqa(i) for i in range(3)]
    out = tmp_path / "k.jsonl"
    probe_open(backend, pool, out, embedder=byte_embedder, settings=FAST_OPEN, progress=False, keep_work=True)
    changed = OpenSettings(**{**FAST_OPEN.__dict__, "temperature": 0.7})
    with pytest.raises(RaitError, match="'settings' differs"):
        probe_open(backend, pool, out, embedder=byte_embedder, settings=changed, progress=False)


def test_manifest_records_what_produced_the_table(backend, tmp_path):
    out = tmp_path / "k.parquet"
    probe_open(backend, [oeqa(0), oeqa(1)], out, embedder=byte_embedder, settings=FAST_OPEN, progress=False)
    manifest = read_manifest(out)
    assert manifest["stage"] == "probe" and manifest["task"] == "oeqa" and manifest["seed"] == 0
    assert {k: manifest["settings"][k] for k in ("k", "temperature", "top_k", "top_p", "prompt", "batch_size")} == \
        {"k": 3, "temperature": 1.0, "top_k": 50, "top_p": 0.9, "prompt": "query_3shot", "batch_size": 2}
    assert "Answer the following question as simple as possible." in manifest["prompt"]["example"]
    assert len(manifest["model"]["weights_sha256"]) == 64 and len(manifest["data"]["sha256"]) == 64
    assert manifest["backend"]["dtype"] == "float32" and manifest["timing"]["compute_seconds"] > 0


def test_run_probe_rejects_a_mixed_pool(tmp_path):
    with pytest.raises(RaitError, match="all multiple-choice or all open QA"):
        run_probe(None, [mcqa(0), oeqa(0)], tmp_path / "k.jsonl")


@pytest.mark.slow
def test_minilm_certainty_is_one_for_identical_answers():
    from rait.probe.measures import SentenceEmbedder

    embedder = SentenceEmbedder(device="cpu")
    same = ["Paris"] * 10
    assert score_samples(oeqa(0), same, embedder(same), OpenSettings())["sigma"] == pytest.approx(1.0, abs=1e-6)
    mixed = ["Paris", "Paris", "Berlin", "a banana"]
    sigma = score_samples(oeqa(0), mixed, embedder(mixed), OpenSettings())["sigma"]
    assert 0 < sigma < 1


def test_one_probe_settings_class_fills_each_tasks_defaults_and_refuses_the_other_tasks_fields():
    from rait.errors import SettingsError
    from rait.probe.mcqa import MCQASettings
    from rait.probe.oeqa import OpenSettings
    from rait.probe.stage import ProbeSettings

    assert ProbeSettings().for_task("oeqa") == OpenSettings()
    assert ProbeSettings().for_task("mcqa") == MCQASettings()
    assert ProbeSettings(k=4, batch_size=2).for_task("oeqa") == OpenSettings(k=4, batch_size=2)
    assert ProbeSettings(shots=0, seed=3).for_task("mcqa") == MCQASettings(shots=0)  # MCQA does not sample
    with pytest.raises(SettingsError, match="'k'.*open-QA setting; this pool is MCQA"):
        ProbeSettings(k=4).for_task("mcqa")
    with pytest.raises(SettingsError, match="'scoring'.*MCQA setting; this pool is open QA"):
        ProbeSettings(scoring="cloze").for_task("oeqa")
    with pytest.raises(SettingsError, match="a pool is one or the other"):
        ProbeSettings(k=4, shots=2)
    with pytest.raises(SettingsError, match="'k'"):  # each value checked by the class that uses it
        ProbeSettings(k=1)
    with pytest.raises(SettingsError, match="'batch_size'"):
        ProbeSettings(batch_size=0)


@pytest.mark.usefixtures("shipped_data")
def test_rait_probe_refuses_an_option_of_the_other_task(tmp_path, capsys):
    from rait.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["probe", "--data", "mmlu:dev", "--sample", "2", "--k", "4", "--out", str(tmp_path / "t.parquet")])
    assert exit_.value.code == 2 and "--k: is an open-QA setting; this pool is MCQA" in capsys.readouterr().err
    assert not (tmp_path / "t.parquet").exists()
