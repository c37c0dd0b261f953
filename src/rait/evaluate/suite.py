"""Evaluate one model on several test sets under several prompts, and tabulate the result.

A suite is declared in a small YAML file (see configs/demo.yaml): the model, the test
sets (a dataset spec and a sample size each) and the prompts. Each (test set, prompt)
run is cached in its own folder with a manifest; a rerun with the same settings reuses it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rait.artifacts import read_jsonl, read_manifest, write_json, write_jsonl, write_manifest
from rait.errors import DataError
from rait.evaluate.runner import EvalSettings, evaluate_records, summarize

REFERENCE_PROMPT = "basic"  # Init-Basic: the THS reference of every paper table


@dataclass
class TestSet:
    name: str
    data: str
    sample: int | None = None
    stratify: str | None = None
    track: str = "eval"
    domain: str = "ID"


@dataclass
class SuiteConfig:
    model: str = "default"
    test_sets: list[TestSet] = field(default_factory=list)
    prompts: list[str] = field(default_factory=lambda: ["basic", "refuse"])
    batch_size: int = 16
    n_boot: int = 1000
    seed: int = 0

    @classmethod
    def from_yaml(cls, path: str | Path) -> "SuiteConfig":
        path = Path(path)
        if not path.is_file():
            raise DataError(path, "config file not found")
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise DataError(path, f"unknown setting(s): {', '.join(sorted(unknown))}", field=sorted(unknown)[0])
        test_sets = []
        for i, entry in enumerate(raw.pop("test_sets", []) or []):
            if not isinstance(entry, dict) or not {"name", "data"} <= set(entry):
                raise DataError(path, f"test set #{i + 1} needs 'name' and 'data'", field="test_sets")
            test_sets.append(TestSet(**entry))
        if not test_sets:
            raise DataError(path, "no test sets", field="test_sets")
        return cls(test_sets=test_sets, **raw)


def load_test_records(test_set: TestSet, seed: int):
    """The test set's records: a dataset spec (or a records JSONL path), sampled by seed if asked."""
    from rait.data import load_source, split_records

    spec = test_set.data if ":" in test_set.data else f"jsonl:{test_set.data}"
    records = load_source(spec)
    if test_set.sample is not None and test_set.sample < len(records):
        _, records = split_records(records, test_size=test_set.sample, seed=seed, stratify_by=test_set.stratify)
    return records


def load_for_eval(spec: str):
    """(model, tokenizer, fingerprint) for a model folder, 'default', or a `rait train` output folder."""
    from rait.artifacts import sha256_tree
    from rait.models import model_fingerprint, resolve_model_path

    summary = Path(spec) / "train.json"
    if summary.is_file():
        from rait.train import load_trained

        model, tokenizer = load_trained(spec)
        saved = Path(spec) / json.loads(summary.read_text(encoding="utf-8"))["saved"]
        return model, tokenizer, {"trained": str(Path(spec)), "trained_sha256": sha256_tree(saved)}
    from rait.models import load_model

    path = resolve_model_path(spec)
    model, tokenizer = load_model(path)
    return model, tokenizer, model_fingerprint(path)


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


def run_suite(config: SuiteConfig, out_dir: str | Path) -> list[dict]:
    """Evaluate every (test set, prompt) pair; return one result row per pair and write the report."""
    from rich.progress import Progress

    from rait.models import load_model, model_fingerprint, resolve_model_path
    from rait.report import write_report

    out_dir = Path(out_dir)
    model_path = resolve_model_path(config.model)
    fingerprint = model_fingerprint(model_path)
    model, tokenizer = load_model(model_path)
    prompts = [REFERENCE_PROMPT] + [p for p in config.prompts if p != REFERENCE_PROMPT]
    results = []
    with Progress(transient=True) as progress:
        for test_set in config.test_sets:
            records = load_test_records(test_set, config.seed)
            reference_rows = None
            for prompt in prompts:
                task = progress.add_task(f"{test_set.name} / {prompt}", total=len(records))
                settings = EvalSettings(prompt=prompt, batch_size=config.batch_size)
                rows, summary = run_eval(
                    model, tokenizer, fingerprint, records, settings, out_dir / test_set.name / prompt,
                    config.n_boot, config.seed, reference_rows,
                    on_batch=lambda n, task=task: progress.advance(task, n),
                )
                progress.remove_task(task)
                reference_rows = reference_rows or rows
                results.append({"track": test_set.track, "test_set": test_set.name, "domain": test_set.domain,
                                "method": f"Init-{prompt.capitalize()}", **summary})
    write_report(results, out_dir, title="rait evaluation", notes={"model": str(model_path)})
    return results
