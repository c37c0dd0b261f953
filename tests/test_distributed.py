"""Issue 20: stages on two real processes (torchrun, gloo on CPU) give what one process gives.

Each test starts `python -m torch.distributed.run --standalone --nproc_per_node 2` on the tiny model, as a
user would with `torchrun`/`accelerate launch`, and compares the artifact with one process's. The gradient
stage's test is in test_grads.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rait.data import QARecord, write_records

pytestmark = pytest.mark.numerics  # floats computed two ways: run again on a second kernel path (Makefile)

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def one_process(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rait", *args], capture_output=True, text=True, env=ENV)


def two_processes(*args: str) -> subprocess.CompletedProcess:
    """`rait ARGS` under torchrun on two processes. A launch whose worker the C++ runtime aborted (SIGABRT, not a
    Python error) is run once more: one such abort was seen in ~12 runs of the evaluation test on a loaded 2-core
    box, in torch's process-group teardown, and never twice in a row; a rait error exits with status 1 and is
    never retried."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "rait", *args]
    result = subprocess.run(command, capture_output=True, text=True, env=ENV)
    if result.returncode != 0 and "Signal 6 (SIGABRT)" in result.stderr:
        result = subprocess.run(command, capture_output=True, text=True, env=ENV)
    return result


def open_pool(path, n: int = 8):
    records = [QARecord(id=f"q{i}", question=f"What is item {i}?", source="toy", split="train", answer=f"a{i}")
               for i in range(n)]
    write_records(path, records)
    return records


def train_on_one_and_two_processes(tmp_path, train: list[str]) -> dict:
    """`train` on one process at batch 4, on two at micro-batch 2 (the same global batch) and on one at batch 2:
    the first two reach the same adapter (float32 round-off: DDP sums the gradients in another order) and the
    same logged loss, while the third ends elsewhere, so the comparison can tell."""
    import torch
    from safetensors.torch import load_file

    runs = {"one": one_process(*train, "--batch-size", "4", "--out", str(tmp_path / "one")),
            "two": two_processes(*train, "--batch-size", "2", "--out", str(tmp_path / "two")),
            "small": one_process(*train, "--batch-size", "2", "--out", str(tmp_path / "small"))}
    for name, result in runs.items():
        assert result.returncode == 0, (name, result.stderr[-2000:])
    adapters = {name: load_file(tmp_path / name / "adapter" / "adapter_model.safetensors") for name in runs}
    summaries = {name: json.loads((tmp_path / name / "train.json").read_text()) for name in runs}
    assert summaries["one"]["optimizer_steps"] == summaries["two"]["optimizer_steps"] == 4
    assert json.loads((tmp_path / "two" / "train.json.manifest.json").read_text())["processes"] == 2
    assert summaries["two"]["train_loss"] == pytest.approx(summaries["one"]["train_loss"], rel=1e-5)
    assert adapters["one"].keys() == adapters["two"].keys()
    for key, one in adapters["one"].items():
        torch.testing.assert_close(adapters["two"][key], one, rtol=1e-4, atol=1e-6, msg=key)
    assert any(not torch.allclose(adapters["small"][key], one, rtol=1e-2, atol=1e-4)
               for key, one in adapters["one"].items())
    return runs


def test_two_processes_probe_the_pool_into_one_processs_table(tmp_path, tiny_model_dir):
    """Shard i is rank i mod 2's; the main process merges: the table is byte-identical to one process's (each
    shard samples from its own seed, whichever rank draws it), and the manifest says 2 processes."""
    open_pool(tmp_path / "pool.jsonl")
    probe = ["probe", "--model", str(tiny_model_dir), "--data", str(tmp_path / "pool.jsonl"), "--k", "2",
             "--max-new-tokens", "6", "--shard-size", "2", "--batch-size", "2"]
    one = one_process(*probe, "--out", str(tmp_path / "one.jsonl"))
    assert one.returncode == 0, one.stderr[-2000:]
    two = two_processes(*probe, "--out", str(tmp_path / "two.jsonl"))
    assert two.returncode == 0, two.stderr[-2000:]
    assert (tmp_path / "two.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    timing = {name: json.loads((tmp_path / f"{name}.jsonl.manifest.json").read_text())["timing"]
              for name in ("one", "two")}
    assert (timing["one"]["processes"], timing["two"]["processes"]) == (1, 2)
    assert timing["two"]["shards"] == 4 and timing["two"]["shards_resumed"] == 0
    assert not (tmp_path / "two.jsonl.work").exists()
    assert two.stdout.count("questions ->") == 1  # the summary line comes from the main process alone


def test_a_failing_rank_stops_the_launch_with_its_error_and_nothing_is_merged(tmp_path, tiny_model_dir):
    """Rank 1 finds a stale shard of its own in the work folder and raises; the launch exits non-zero with that
    rank's error, rank 0 (waiting to merge) is stopped, and no table or manifest appears."""
    open_pool(tmp_path / "pool.jsonl")
    out = tmp_path / "table.jsonl"
    work = tmp_path / "table.jsonl.work"
    work.mkdir()
    (work / "shard-00001.json").write_text(json.dumps({"index": 1, "seconds": 0.0, "rows": [{"id": "other"}]}))
    result = two_processes("probe", "--model", str(tiny_model_dir), "--data", str(tmp_path / "pool.jsonl"), "--k", "2",
                           "--max-new-tokens", "6", "--shard-size", "2", "--batch-size", "2", "--out", str(out))
    assert result.returncode != 0
    assert "rank 1: " in result.stderr and "does not hold the questions of its shard" in result.stderr
    assert "[rank0]: Traceback" not in result.stderr  # rank 0, left waiting in a collective, says one line or nothing
    assert not out.exists() and not (tmp_path / "table.jsonl.manifest.json").exists()


def test_two_processes_evaluate_the_items_into_one_processs_outcomes(tmp_path, tiny_model_dir):
    """Items i is rank i mod 2's (7 items: shares of 4 and 3); the main process gathers them in item order and
    writes the outcomes and metrics. The greedy answers equal one process's here; in general a batch of other
    items can move a float near-tie (docs/distributed.md)."""
    open_pool(tmp_path / "items.jsonl", 7)
    evaluate = ["eval", "--model", str(tiny_model_dir), "--data", str(tmp_path / "items.jsonl"), "--batch-size", "2",
                "--max-new-tokens", "6", "--n-boot", "50"]
    one = one_process(*evaluate, "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-2000:]
    two = two_processes(*evaluate, "--out", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr[-2000:]
    assert (tmp_path / "two" / "outcomes.jsonl").read_text() == (tmp_path / "one" / "outcomes.jsonl").read_text()
    metrics = {name: json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("one", "two")}
    assert {k: v for k, v in metrics["two"].items() if k != "seconds"} == {
        k: v for k, v in metrics["one"].items() if k != "seconds"}
    assert json.loads((tmp_path / "two" / "outcomes.jsonl.manifest.json").read_text())["processes"] == 2
    assert two.stdout.count('"pc"') == 1


def test_two_processes_train_to_one_processs_parameters_with_the_same_global_batch(tmp_path, tiny_model_dir):
    """DDP: micro-batch 2 on each of two processes is the global batch of 4 one process takes at once, and the
    weighted objective divides by the samples of the whole global batch (rait.train.weighted): the adapters
    agree to float32 round-off (the gradients are summed in another order), while one process with a global
    batch of 2 ends elsewhere, so the comparison can tell."""
    from rait.prompts import training_example

    records = open_pool(tmp_path / "pool.jsonl", 8)
    rows = [{"weight": [1.0, 0.5, 2.0, 1.0][i % 4],
             **training_example(record, "refuse", "I don't know" if i % 3 == 0 else record.answer)}
            for i, record in enumerate(records)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    train = ["train", "--model", str(tiny_model_dir), "--data", str(data), "--epochs", "2", "--grad-accum", "1",
             "--lora-r", "4", "--lora-alpha", "8", "--lora-dropout", "0", "--lr", "1e-2", "--seed", "3"]
    runs = train_on_one_and_two_processes(tmp_path, train)
    assert runs["two"].stdout.count("optimiser steps") == 1


def test_two_processes_train_dpo_to_one_processs_parameters_with_the_same_global_batch(tmp_path, tiny_model_dir):
    """TRL's DPOTrainer under DDP: each rank's pairs give its share of the mean loss, and DDP averages the ranks'
    gradients, so two processes at micro-batch 2 reach one process's adapter at batch 4 (float32 round-off)."""
    from rait.prompts import training_example

    rows = []
    for i, record in enumerate(open_pool(tmp_path / "pool.jsonl", 8)):
        prompt = training_example(record, "refuse", record.answer)["prompt"]
        chosen, rejected = (record.answer, "I don't know") if i % 2 else ("I don't know", record.answer)
        rows.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
                     "rejected": [{"role": "assistant", "content": rejected}]})
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    train = ["train", "--objective", "dpo", "--model", str(tiny_model_dir), "--data", str(data), "--epochs", "2",
             "--grad-accum", "1", "--lora-r", "4", "--lora-alpha", "8", "--lora-dropout", "0", "--lr", "1e-2",
             "--seed", "3"]
    train_on_one_and_two_processes(tmp_path, train)


def test_rait_run_on_two_processes_gives_one_processs_report(tmp_path, tiny_model_dir):
    """`rait run --processes 2`: the probe, the gradient store (its warm-up at the same global batch: micro-batch
    4 -> 2 per process), the SFT and DPO trainings and the evaluations on two processes, the rest on one; the
    probe table is byte-identical to a one-process run's (the same shards on one thread each: the same kernels),
    the store agrees to round-off (its warm-up is DDP training), every result row is equal, and the stage keys
    the same, so a one-process rerun of the two-process folder computes nothing."""
    import numpy as np
    import pandas as pd

    config = tmp_path / "tiny.yaml"
    config.write_text(f"""
model: {tiny_model_dir}
methods: [cor_rait, grait, dpo_rait]
train: {{epochs: 1, batch_size: 2, grad_accum: 2, lora: {{r: 4, alpha: 8, dropout: 0.0, target_modules: [q_proj, v_proj]}}}}
dpo: {{pairs_from: cor_rait}}
eval: {{batch_size: 4, n_boot: 20, max_new_tokens: {{oeqa: 4}}}}
tracks:
  - name: facts
    pool: {{data: "facts:train", sample: 8}}
    probe: {{k: 2, max_new_tokens: 3, prompt: query_0shot, shard_size: 2}}
    grads: {{n_rehearsal: 4, warmup: {{epochs: 1, batch_size: 4, grad_accum: 1, learning_rate: 0.01, warmup: 0,
                                      lora: {{r: 4, alpha: 16, dropout: 0.0}}}},
             dims: [16], batch_size: 4}}
    build: {{n_total: 4, tau: 0.5}}
    test_sets:
      - {{name: facts-id, data: "facts:test_id", sample: 5, domain: ID}}
""")
    one = one_process("run", str(config), "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-3000:]
    two = one_process("run", str(config), "--out", str(tmp_path / "two"), "--processes", "2")
    assert two.returncode == 0, two.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "pipeline.json").read_text())["processes"] == 2
    facts = {name: tmp_path / name / "facts" for name in ("one", "two")}
    assert (facts["two"] / "probe/table.parquet").read_bytes() == (facts["one"] / "probe/table.parquet").read_bytes()
    # After a DDP warm-up the adapter agrees to round-off only (the all-reduce sums in another order, then Adam divides
    # by sqrt(v) and so enlarges the relative round-off of small gradients), and so do the features. Each stored row is
    # a unit vector, so the error's scale is the row's norm, 1, not each coordinate's size: 1e-5 is 84 float32 ulps
    # at 1.0 (a Xeon measured 1.8e-6; a coordinate of 0.0048 was off by 4e-4 relative, which rtol alone would refuse),
    # while a wrong row (another question's, another adapter's) is off by ~1/sqrt(16) in a typical coordinate.
    for part in ("grads/store/answer_d16.npy", "grads/store/refusal_d16.npy"):
        one_rows, two_rows = np.load(facts["one"] / part), np.load(facts["two"] / part)
        np.testing.assert_allclose(np.linalg.norm(one_rows, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(two_rows, one_rows, rtol=0, atol=1e-5)
    manifests = ["eval/facts-id/Init/basic/outcomes.jsonl", "eval/facts-id/GRAIT/refuse/outcomes.jsonl",
                 "train/cor_rait/train.json", "train/grait/train.json", "train/dpo_rait/train.json"]
    for part in manifests:  # each ran on both processes
        assert json.loads((facts["two"] / f"{part}.manifest.json").read_text())["processes"] == 2, part
    assert json.loads((facts["two"] / "probe/table.parquet.manifest.json").read_text())["timing"]["processes"] == 2
    results = {name: pd.read_csv(tmp_path / name / "results.csv").drop(columns=["seconds"], errors="ignore")
               for name in ("one", "two")}
    pd.testing.assert_frame_equal(results["two"], results["one"])
    keys = {name: [s["key"] for s in json.loads((tmp_path / name / "pipeline.json").read_text())["stages"]]
            for name in ("one", "two")}
    assert keys["two"] == keys["one"]
    again = one_process("run", str(config), "--out", str(tmp_path / "two"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert all(s["cached"] for s in json.loads((tmp_path / "two" / "pipeline.json").read_text())["stages"])


def test_a_failing_worker_fails_the_call_with_its_rank_and_error(tmp_path, tiny_model_dir):
    """`rait run --processes 2` hands stages to a worker group (`Workers`): a rank that raises ends the group, and
    the call raises that rank's error; no table is merged."""
    from rait.distributed import Workers
    from rait.errors import RaitError
    from rait.probe.stage import ProbeSettings, run

    records = open_pool(tmp_path / "pool.jsonl")
    out = tmp_path / "table.jsonl"
    (tmp_path / "table.jsonl.work").mkdir()
    (tmp_path / "table.jsonl.work" / "shard-00001.json").write_text(json.dumps({"rows": [{"id": "other"}]}))
    settings = ProbeSettings(k=2, max_new_tokens=4, shard_size=2, batch_size=2)
    with Workers(2) as workers, pytest.raises(RaitError, match="rank 1: .*does not hold the questions of its shard"):
        workers.run(run, settings=settings, records=records, out=out, model=tiny_model_dir)
    assert not out.exists()


def test_a_global_batch_keeps_its_size_on_several_processes():
    from rait.distributed import split_batch
    from rait.errors import RaitError

    assert split_batch(8, 2, 1) == (8, 2)
    assert split_batch(8, 2, 2) == (8, 1)  # the accumulation first
    assert split_batch(8, 1, 2) == (4, 1)
    assert split_batch(1, 32, 8) == (1, 4)  # GRAIT's warm-up on 8 GPUs
    with pytest.raises(RaitError, match="does not split over 2 processes"):
        split_batch(3, 1, 2)


def test_what_cannot_use_several_processes_refuses_a_launch(tmp_path, monkeypatch, capsys, tiny_model_dir):
    """Under torchrun every rank runs the command: a one-process command (here `rait build`) would do its work
    N times into the same files, and `rait run` would run N pipelines; both stop with one line naming the rank.
    `rait run --processes 2` checks before any work that the config's global batch splits over 2."""
    from rait.cli import main

    def exit_code(argv) -> int:
        try:
            main(argv)
        except SystemExit as exit_:
            return exit_.code or 0
        return 0

    config = tmp_path / "tiny.yaml"
    config.write_text(f"""
model: {tiny_model_dir}
methods: [cor_rait]
train: {{batch_size: 3, grad_accum: 1}}
tracks:
  - name: facts
    pool: {{data: "facts:train", sample: 4}}
    test_sets: [{{name: facts-id, data: "facts:test_id", sample: 2}}]
""")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert exit_code(["build", "--table", "t.parquet", "--records", "p.jsonl", "--out", str(tmp_path / "b")]) == 2
    assert "rank 1: rait build runs as one process" in capsys.readouterr().err
    assert exit_code(["run", str(config), "--out", str(tmp_path / "run")]) == 2
    assert "every rank would run the whole pipeline" in capsys.readouterr().err
    monkeypatch.delenv("WORLD_SIZE")
    assert exit_code(["run", str(config), "--out", str(tmp_path / "run"), "--processes", "2"]) == 2
    err = capsys.readouterr().err
    assert "train" in err and "does not split over 2 processes" in err
    # DPO-RAIT's recipe is the global train, then dpo.train: the error names the entry that set the batch
    dpo = config.read_text().replace("methods: [cor_rait]", "methods: [dpo_rait]\ndpo: {pairs_from: cor_rait}")
    config.write_text(dpo)
    assert exit_code(["run", str(config), "--out", str(tmp_path / "run"), "--processes", "2"]) == 2
    err = capsys.readouterr().err
    assert "field 'train'" in err and "does not split over 2 processes" in err
    config.write_text(dpo.replace("batch_size: 3", "batch_size: 2").replace(
        "dpo: {pairs_from: cor_rait}", "dpo: {pairs_from: cor_rait, train: {batch_size: 1, grad_accum: 1}}"))
    assert exit_code(["run", str(config), "--out", str(tmp_path / "run"), "--processes", "2"]) == 2
    err = capsys.readouterr().err
    assert "field 'dpo.train'" in err and ":4:" in err and "does not split over 2 processes" in err
    assert not (tmp_path / "run" / "facts" / "probe").exists()


def test_a_worker_group_serves_calls_until_closed(tmp_path):
    """`Workers(2)` starts two ranks once; each call runs on both and returns rank 0's result (its share of five
    units: 0, 2, 4), a second call reuses the group, and closing it ends the processes and removes its folder."""
    from rait.distributed import Workers, own_units

    with Workers(2, log=tmp_path / "workers.log") as workers:
        assert workers.run(own_units, count=5) == [0, 2, 4]
        first = workers._process.pid
        assert workers.run(own_units, count=3) == [0, 2]
        assert workers._process.pid == first
        folder, process = workers._folder, workers._process
    assert process.returncode == 0 and not folder.exists()
    assert (tmp_path / "workers.log").exists()


class RecordingView:
    """Stands in for `rait run`'s live view: records every bar `rait.terminal.progress` opens and how far it got."""

    def __init__(self):
        self.bars: list[dict] = []

    def progress(self, description, total, completed=0):
        from contextlib import contextmanager

        from rait.terminal import Bar

        record = {"description": description, "total": total, "completed": completed}
        self.bars.append(record)

        class Recorder(Bar):
            def advance(self, n=1):
                record["completed"] += n

            def restart(self, total):
                record.update(total=total, completed=0)

        @contextmanager
        def bar():
            yield Recorder()
        return bar()


def test_the_workers_bars_are_drawn_by_the_process_that_drives_them(tmp_path, tiny_model_dir):
    """Under `rait run --processes 2` the stage runs in the workers, whose output is a log: rank 0 relays its bar
    (a file), and the driving process draws it in its own view, over all the questions (rank 0's pace stands for
    both ranks'), to the end."""
    from rait.distributed import Workers
    from rait.probe.stage import ProbeSettings, run
    from rait.terminal import use_view

    records = open_pool(tmp_path / "pool.jsonl")
    view = RecordingView()
    with use_view(view), Workers(2) as workers:
        workers.run(run, settings=ProbeSettings(k=2, max_new_tokens=4, shard_size=2, batch_size=2), records=records,
                    out=tmp_path / "table.jsonl", model=tiny_model_dir)
    assert view.bars == [{"description": "open QA, k=2", "total": 8, "completed": 8}]
