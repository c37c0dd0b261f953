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

from rait.data import QARecord, write_records

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def one_process(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rait", *args], capture_output=True, text=True, env=ENV)


def two_processes(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "rait", *args], capture_output=True, text=True, env=ENV)


def open_pool(path, n: int = 8):
    records = [QARecord(id=f"q{i}", question=f"What is item {i}?", source="toy", split="train", answer=f"a{i}")
               for i in range(n)]
    write_records(path, records)
    return records


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
