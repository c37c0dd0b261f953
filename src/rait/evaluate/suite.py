"""Test sets and cached evaluation runs, shared by `rait eval` and `rait run`.

A test set is a dataset spec (or records file) with an optional seeded sample. Each (model,
test set, prompt) run is cached in its own folder with a manifest; a rerun with the same
settings reuses it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rait.artifacts import read_jsonl, read_manifest, write_json, write_jsonl, write_manifest
from rait.evaluate.runner import EvalSettings, evaluate_records, summarize

REFERENCE_PROMPT = "basic"  # Init-Basic: the THS reference of every paper table


@dataclass
class TestSet:
    name: str
    data: str
    sample: int | None = None
    stratify: str | None = None
    domain: str = "ID"
    max_chars: int | None = None  # keep questions whose text and options are at most this long


def record_chars(record) -> int:
    """Length of what a prompt shows of a record: the question and its options."""
    return len(record.question) + sum(len(c) for c in record.choices or ())


def load_test_records(test_set: TestSet, seed: int):
    """The test set's records: a dataset spec (or a records JSONL path), length-filtered and sampled by seed if asked.

    `max_chars` is for small budgets: on a CPU one long MMLU passage in a batch pads every row to its length.
    """
    from rait.data import load_source, split_records

    spec = test_set.data if ":" in test_set.data else f"jsonl:{test_set.data}"
    records = load_source(spec)
    if test_set.max_chars is not None:
        records = [r for r in records if record_chars(r) <= test_set.max_chars]
    if test_set.sample is not None and test_set.sample < len(records):
        _, records = split_records(records, test_size=test_set.sample, seed=seed, stratify_by=test_set.stratify)
    return records


def load_for_eval(spec: str):
    """(model, tokenizer, fingerprint) for a model folder, 'default', or a `rait train` output folder."""
    from rait.models import model_fingerprint, resolve_model_path

    if (Path(spec) / "train.json").is_file():
        from rait.train import load_trained

        model, tokenizer = load_trained(spec)
        return model, tokenizer, trained_fingerprint(spec)
    from rait.models import load_model

    path = resolve_model_path(spec)
    model, tokenizer = load_model(path)
    return model, tokenizer, model_fingerprint(path)


def trained_fingerprint(spec: str | Path) -> dict:
    """A `rait train` output, by its folder and the hash of what it saved (adapter or model)."""
    from rait.artifacts import sha256_tree

    summary = json.loads((Path(spec) / "train.json").read_text(encoding="utf-8"))
    return {"trained": str(Path(spec)), "trained_sha256": sha256_tree(Path(spec) / summary["saved"])}


class EvalModels:
    """The models of one evaluation stage, the base model loaded once.

    `use(spec)` gives (model, tokenizer, fingerprint) for the base, for a LoRA `rait train`
    output of that base (its adapter merged into the loaded base for the turn:
    `rait.train.adapter_merged`, the weights `load_trained` would load), or for anything
    else (loaded on its own, as `load_for_eval`).
    """

    def __init__(self, base: str | Path):
        from rait.models import resolve_model_path

        self.base_path = resolve_model_path(base)
        self._base: tuple | None = None

    def _loaded_base(self) -> tuple:
        if self._base is None:
            from rait.models import load_model, model_fingerprint

            self._base = (*load_model(self.base_path), model_fingerprint(self.base_path))
        return self._base

    @contextmanager
    def use(self, spec: str | Path) -> Iterator[tuple]:
        from rait.models import resolve_model_path
        from rait.train import adapter_merged, lora_base

        if (Path(spec) / "train.json").is_file():
            if lora_base(spec) == self.base_path:
                model, tokenizer, _ = self._loaded_base()
                with adapter_merged(model, spec) as merged:
                    yield merged, tokenizer, trained_fingerprint(spec)
                return
        elif resolve_model_path(spec) == self.base_path:
            yield self._loaded_base()
            return
        yield load_for_eval(str(spec))


def run_eval(model, tokenizer, fingerprint: dict, records, settings: EvalSettings, out_dir: Path, n_boot: int, seed: int,
             reference_rows=None, on_batch=None) -> tuple[list[dict], dict]:
    """One (model, test set, prompt) evaluation, cached in `out_dir` by its manifest."""
    outcomes_path, metrics_path = out_dir / "outcomes.jsonl", out_dir / "metrics.json"
    identity = {"model": fingerprint, "settings": settings.as_dict(), "items": [r.id for r in records]}
    if outcomes_path.exists() and metrics_path.exists():
        manifest = read_manifest(outcomes_path)
        if manifest.get("identity") == identity:
            rows = read_jsonl(outcomes_path)
            return rows, json.loads(metrics_path.read_text(encoding="utf-8"))
    start = time.perf_counter()
    rows = evaluate_records(model, tokenizer, records, settings, on_batch=on_batch)
    seconds = time.perf_counter() - start
    summary = summarize(rows, reference_rows, n_boot=n_boot, seed=seed) | {"seconds": round(seconds, 2)}
    write_jsonl(outcomes_path, rows)
    write_json(metrics_path, summary)
    write_manifest(outcomes_path, stage="evaluate", model=fingerprint, settings=settings.as_dict(), seed=seed,
                   extra={"identity": identity})
    return rows, summary
