"""CRaFT rehearsal: which questions are rehearsed, the flow merged by id, and the end-to-end run on the tiny model."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from rait.artifacts import read_manifest, write_manifest
from rait.data.records import QARecord
from rait.errors import DataError, RaitError
from rait.models import load_model, model_fingerprint
from rait.probe.table import write_table
from rait.prompts import mcqa_question_text
from rait.rehearse import RehearseSettings, probe_settings, rehearse, select_rehearsal
from rait.rehearse import run as rehearse_table
from rait.train import LoraSettings, TrainSettings

pytestmark = pytest.mark.numerics  # floats computed two ways: run again on a second kernel path (Makefile)

FAST = TrainSettings(lora=LoraSettings(r=4, alpha=8, dropout=0.0), epochs=1, batch_size=2, grad_accum=1, learning_rate=5e-2,
                     warmup=0.0)


def open_record(i: int) -> QARecord:
    return QARecord(id=f"q{i:02d}", question=f"What is the capital of country {i}?", source="facts", split="train",
                    answer=f"City {i}", aliases=[f"city{i}"])


def mcqa_record(i: int) -> QARecord:
    return QARecord(id=f"m{i:02d}", question=f"Which letter is number {i}?", source="mmlu", split="test",
                    subject="high_school_biology", choices=["one", "two", "three", "four"], gold="ABCD"[i % 4])


def open_table(rows: list[tuple[float, float]]) -> pd.DataFrame:
    """An open-QA knowledge table; every sample is the gold answer when mu is 1."""
    out = []
    for i, (mu, sigma) in enumerate(rows):
        correct = [j < round(mu * 4) for j in range(4)]
        out.append({"id": f"q{i:02d}", "task": "oeqa", "mu": mu, "sigma": sigma,
                    "samples": [f"City {i}" if ok else "no idea" for ok in correct], "sample_correct": correct,
                    "sample_refused": [False] * 4})
    return pd.DataFrame(out)


def mcqa_table(gold_probs: list[float]) -> pd.DataFrame:
    return pd.DataFrame([{"id": f"m{i:02d}", "task": "mcqa", "mu": 0.9, "sigma": -0.1, "gold_prob": p,
                          "option_probs": [p, 0.0, 0.0, 0.0]} for i, p in enumerate(gold_probs)])


# ---------------------------------------------------------------- selection


def test_open_qa_needs_correct_and_certain_at_the_boundary():
    table = open_table([(1.0, 0.995), (1.0, 0.994), (0.9, 1.0), (1.0, 1.0), (0.995, 0.999)])
    rows = select_rehearsal(table, [open_record(i) for i in range(5)], RehearseSettings(n=10))
    assert sorted(r["id"] for r in rows) == ["q00", "q03", "q04"]


def test_mcqa_needs_raw_gold_probability_strictly_above():
    table = mcqa_table([0.999, 0.99, 0.9901, 0.5])
    rows = select_rehearsal(table, [mcqa_record(i) for i in range(4)], RehearseSettings(n=10))
    assert sorted(r["id"] for r in rows) == ["m00", "m02"]


def test_mcqa_table_without_gold_prob_is_refused():
    with pytest.raises(DataError, match="gold_prob"):
        select_rehearsal(mcqa_table([0.999]).drop(columns="gold_prob"), [mcqa_record(0)])


def test_n_is_a_seeded_draw_independent_of_row_order():
    table = open_table([(1.0, 1.0)] * 40)
    records = [open_record(i) for i in range(40)]
    first = [r["id"] for r in select_rehearsal(table, records, RehearseSettings(n=10, seed=3))]
    shuffled = [r["id"] for r in select_rehearsal(table.sample(frac=1, random_state=1), records,
                                                  RehearseSettings(n=10, seed=3))]
    assert len(first) == 10 and len(set(first)) == 10
    assert sorted(first) == sorted(shuffled)
    assert sorted(first) != sorted(r["id"] for r in select_rehearsal(table, records, RehearseSettings(n=10, seed=4)))
    assert len(select_rehearsal(table, records, RehearseSettings(n=1000))) == 40  # n = 1000 or what exists


def test_targets_gold_or_the_models_own_most_frequent_correct_answer():
    table = open_table([(1.0, 1.0)])
    table.at[0, "samples"] = [" The capital is City 0.", "City 0", "City 0 ", "wrong"]
    table.at[0, "sample_correct"] = [True, True, True, False]
    record = open_record(0)
    gold = select_rehearsal(table, [record])[0]
    own = select_rehearsal(table, [record], RehearseSettings(target="own"))[0]
    assert gold["completion"] == [{"role": "assistant", "content": "City 0"}]
    assert own["completion"] == [{"role": "assistant", "content": "City 0"}]
    table.at[0, "samples"] = ["It is City 0.", "It is City 0.", "City 0", "City 0?"]
    table.at[0, "sample_correct"] = [True, True, True, False]
    assert select_rehearsal(table, [record], RehearseSettings(target="own"))[0]["completion"][0]["content"] == "It is City 0."
    assert gold["prompt"] == [{"role": "user", "content": record.question}]  # the plain (BASIC1) prompt


def test_mcqa_rows_use_the_basic_hint_and_the_gold_letter():
    record = mcqa_record(2)
    row = select_rehearsal(mcqa_table([0.0, 0.0, 0.999]), [mcqa_record(i) for i in range(3)], RehearseSettings(target="own"))[0]
    assert row["prompt"] == [{"role": "user", "content": mcqa_question_text(record, "basic")}]
    assert row["completion"] == [{"role": "assistant", "content": "C"}]


def test_a_table_question_missing_from_the_pool_is_an_error():
    with pytest.raises(DataError, match="q01"):
        select_rehearsal(open_table([(1.0, 1.0), (1.0, 1.0)]), [open_record(0)], RehearseSettings(n=10))


# ---------------------------------------------------------------- rehearse


def stub_probe(mu_after: dict[str, float], seen: list):
    """A probe that returns fixed correctness, rows in reverse order, and remembers the model it got."""

    def probe(model, tokenizer, records, out):
        with torch.no_grad():
            seen.append(model(**tokenizer("Question: what?", return_tensors="pt")).logits)
        rows = [{"id": r.id, "task": "oeqa", "mu": mu_after[r.id], "sigma": 0.5} for r in reversed(records)]
        return pd.DataFrame(rows)

    return probe


def test_rehearse_trains_reprobes_and_merges_the_flow_by_id(tiny_model_dir, tmp_path):
    table = open_table([(1.0, 1.0), (0.25, 0.3), (1.0, 1.0), (0.5, 0.9), (0.0, 0.2)])
    records = [open_record(i) for i in range(5)]
    mu_after = {"q00": 1.0, "q01": 0.75, "q02": 0.5, "q03": 0.5, "q04": 0.25}
    seen: list = []
    result = rehearse(table, records, tmp_path, stub_probe(mu_after, seen), model=tiny_model_dir,
                      settings=RehearseSettings(train=FAST), progress=False)

    assert result.rehearsal_samples == 2 and result.optimizer_steps == 1 and result.updates == 1
    flow = result.flow.set_index("id")
    for qid, after in mu_after.items():
        assert flow.at[qid, "mu_rehearsal"] == after
        assert flow.at[qid, "delta_mu"] == pytest.approx(after - table.set_index("id").at[qid, "mu"])
    base, tokenizer = load_model(tiny_model_dir)
    with torch.no_grad():
        before = base(**tokenizer("Question: what?", return_tensors="pt")).logits
    assert not torch.allclose(seen[0], before, atol=1e-3)  # the probe saw the rehearsed model

    manifest = read_manifest(tmp_path / "flow_table.jsonl")
    assert (manifest["optimizer_steps"], manifest["updates"], manifest["stage"]) == (1, 1, "rehearse")
    summary = json.loads((tmp_path / "flow_summary.json").read_text())
    assert summary["mu_below_0.5"]["n"] == 2 and summary["mu_below_0.5"]["rose"] == 1.0
    assert (tmp_path / "delta_mu.png").stat().st_size > 0
    assert len((tmp_path / "rehearsal_data.jsonl").read_text().splitlines()) == 2


def test_zero_optimiser_updates_is_not_a_rehearsal(tiny_model_dir, tmp_path):
    """One step, taken at the warm-up's learning rate 0 (no step at all, epochs 0, is refused by TrainSettings)."""
    settings = TrainSettings(lora=LoraSettings(r=4), epochs=1, batch_size=2, warmup=0.5)
    table = open_table([(1.0, 1.0), (0.0, 0.2)])
    with pytest.raises(RaitError, match="zero optimiser updates"):
        rehearse(table, [open_record(0), open_record(1)], tmp_path, stub_probe({}, []), model=tiny_model_dir,
                 settings=RehearseSettings(train=settings), progress=False)


def test_nothing_known_is_an_error(tiny_model_dir, tmp_path):
    with pytest.raises(RaitError, match="rehearsal filter"):
        rehearse(open_table([(0.5, 1.0)]), [open_record(0)], tmp_path, stub_probe({}, []), model=tiny_model_dir,
                 progress=False)


def test_rehearse_table_reprobes_with_the_manifest_settings(tiny_model_dir, tmp_path):
    """End to end with the real MCQA probe on the tiny model: identical settings, flow by id."""
    from rait.probe import HFBackend, MCQASettings, probe_mcqa

    records = [mcqa_record(i) for i in range(6)]
    settings = MCQASettings(shots=0, batch_size=4)
    model, tokenizer = load_model(tiny_model_dir)
    probe_mcqa(HFBackend(model, tokenizer), records, tmp_path / "initial.jsonl", settings=settings, progress=False)
    assert probe_settings(read_manifest(tmp_path / "initial.jsonl")) == settings

    result = rehearse_table(RehearseSettings(gold_prob_min=0.0, train=FAST), tmp_path / "initial.jsonl", records,
                            tmp_path / "run", model=tiny_model_dir, progress=False)
    after = read_manifest(tmp_path / "run" / "rehearsed_table.jsonl")
    assert after["settings"] == read_manifest(tmp_path / "initial.jsonl")["settings"]
    assert after["model"]["base"]["weights_sha256"] == model_fingerprint(tiny_model_dir)["weights_sha256"]
    assert result.optimizer_steps == 3
    assert set(result.flow["id"]) == {r.id for r in records}
    assert (result.flow["delta_mu"] != 0).any()


def test_rehearse_table_refuses_a_table_probed_with_another_model(tiny_model_dir, tmp_path):
    table_path = write_table(open_table([(1.0, 1.0)]), tmp_path / "t.jsonl")
    write_manifest(table_path, stage="probe", model={"weights_sha256": "not this model"}, settings={},
                   extra={"task": "oeqa"})
    with pytest.raises(RaitError, match="another model"):
        rehearse_table(RehearseSettings(), table_path, [open_record(0)], tmp_path / "run", model=tiny_model_dir,
                       progress=False)
