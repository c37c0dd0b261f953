"""Cached evaluation runs, shared by `rait eval` and `rait run`.

Each (model, test set, prompt) run is cached in its own folder with a manifest; a rerun with the same
settings reuses it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from rait.artifacts import (changed_field, read_json_object, read_jsonl, read_manifest, write_json, write_jsonl,
                            write_manifest)
from rait.distributed import gather_units, own_units, processes, share_progress
from rait.evaluate.runner import EvalSettings, evaluate_records, summarize
from rait.terminal import progress

REFERENCE_PROMPT = "basic"  # Init-Basic: the THS reference of every paper table
MODEL_NOTES = "rait.json"  # written by `rait export` beside the model or adapter: how the model is meant to be asked
ADAPTER_CONFIG = "adapter_config.json"  # peft's


def exported_adapter_base(spec: str | Path) -> tuple[str, str | None] | None:
    """(base, revision) of an adapter-only `rait export` folder (peft's adapter files beside rait.json), else None:
    rait's default model where rait.json names its Hub id, else the base the adapter's own config names (a Hub id
    at its commit, or a folder), as peft's `AutoPeftModelForCausalLM` would find it."""
    from rait.errors import DataError
    from rait.models.default import DEFAULT_BASE_ID

    folder = Path(spec)
    if not ((folder / ADAPTER_CONFIG).is_file() and (folder / MODEL_NOTES).is_file()):
        return None
    notes, config = read_json_object(folder / MODEL_NOTES), read_json_object(folder / ADAPTER_CONFIG)
    if notes.get("base_model") == DEFAULT_BASE_ID:
        return "default", None
    base = config.get("base_model_name_or_path")
    if not isinstance(base, str) or not base:
        raise DataError(folder / ADAPTER_CONFIG, f"names no base model, got {base!r}", field="base_model_name_or_path")
    return base, config.get("revision")


def load_for_eval(spec: str):
    """(model, tokenizer, fingerprint) for a model folder, 'default', a `rait train` output folder, or an
    adapter-only `rait export` folder (the adapter merged into its base)."""
    if (Path(spec) / "train.json").is_file():
        from rait.train import load_trained

        model, tokenizer = load_trained(spec)
    elif (base := exported_adapter_base(spec)) is not None:
        from rait.train import load_with_adapter

        model, tokenizer = load_with_adapter(spec, *base)
    else:
        from rait.models import load_model, resolve_model_path

        model, tokenizer = load_model(resolve_model_path(spec))
    return model, tokenizer, fingerprint_of(spec)


def fingerprint_of(spec: str | Path) -> dict:
    """The identity of a model folder, 'default', or a `rait train` output, without loading it."""
    from rait.models import model_fingerprint, resolve_model_path

    if (Path(spec) / "train.json").is_file():
        return trained_fingerprint(spec)
    if (base := exported_adapter_base(spec)) is not None:
        from rait.artifacts import sha256_tree

        return {"adapter": str(Path(spec)), "adapter_sha256": sha256_tree(Path(spec)),
                "base": model_fingerprint(resolve_model_path(*base))}
    return model_fingerprint(resolve_model_path(str(spec)))


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
        elif exported_adapter_base(spec) is None and resolve_model_path(spec) == self.base_path:
            yield self._loaded_base()
            return
        yield load_for_eval(str(spec))


def read_reference(folder: str | Path, ids: list[str]) -> list[dict]:
    """The outcome rows of a reference run (Init-Basic, for THS) for `ids`, the items evaluated, in their order: THS
    compares item by item, so the run must hold each of them once, with an outcome of the scorer's (a run over
    more items, e.g. the whole set of a sample, serves)."""
    from rait.artifacts import iter_jsonl_objects
    from rait.data.scoring import Outcome
    from rait.errors import DataError

    path = Path(folder) / "outcomes.jsonl"
    outcomes = tuple(outcome.value for outcome in Outcome)
    rows: dict[str, dict] = {}
    for line, row in iter_jsonl_objects(path):
        qid, outcome = row.get("id"), row.get("outcome")
        if not isinstance(qid, str):
            raise DataError(path, f"must be a string, got {qid!r}", line=line, field="id")
        if qid in rows:
            raise DataError(path, f"{qid!r} appears on an earlier line too", line=line, field="id")
        if outcome not in outcomes:
            raise DataError(path, f"{outcome!r} is not one of {', '.join(outcomes)}", line=line, field="outcome")
        rows[qid] = row
    if missing := [i for i in ids if i not in rows]:
        raise DataError(path, f"a run over other items: it lacks {len(missing)} of the {len(ids)} items evaluated, "
                        f"e.g. {missing[0]!r}; evaluate the reference on the same items", field="id")
    return [rows[i] for i in ids]


class Evaluation(NamedTuple):
    """What the evaluation stage returns: the per-item outcome rows (`outcomes.jsonl`) and the metrics
    (`metrics.json`)."""

    rows: list[dict]
    metrics: dict


def run(settings: EvalSettings, records, out: str | Path, *, model: str | Path | tuple,
        reference_rows=None, description: str | None = None) -> Evaluation:
    """The evaluation stage (`rait eval`, and `rait run` per model, test set and prompt), cached in `out`.

    `model` is a model folder, 'default', a `rait train` output, or a loaded (model, tokenizer,
    fingerprint) triple (`EvalModels.use`); `reference_rows` are Init-Basic's outcomes on the
    same items, for THS; `description` names the progress bar (none without it). Returns the per-item
    outcomes and the metrics. Under a launcher each rank answers its share of the items (`rait.distributed`).

    The answers are what is cached: a rerun with the same identity (model, settings, items) reads them
    back and only recomputes the metrics, which also depend on the reference and are cheap.
    """
    out = Path(out)
    fingerprint = model[2] if isinstance(model, tuple) else fingerprint_of(model)
    outcomes_path, metrics_path = out / "outcomes.jsonl", out / "metrics.json"
    identity = {"model": fingerprint, "settings": settings.as_dict(), "items": [r.id for r in records]}
    if outcomes_path.exists() and changed_field(read_manifest(outcomes_path).get("identity"), identity) is None:
        rows = read_jsonl(outcomes_path)
        previous = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.exists() else {}
        summary = summarize(rows, reference_rows, n_boot=settings.n_boot, seed=settings.seed)
        summary["seconds"] = previous.get("seconds")
        if processes().is_main_process:
            write_json(metrics_path, summary)
        return Evaluation(rows, summary)
    loaded, tokenizer, _ = model if isinstance(model, tuple) else load_for_eval(str(model))
    state = processes()
    mine = own_units(len(records), state)
    start = time.perf_counter()
    with progress(description or "eval", len(records), enabled=description is not None and state.is_main_process) as bar:
        answered = evaluate_records(loaded, tokenizer, [records[i] for i in mine], settings,
                                    on_batch=share_progress(bar.advance, len(mine), len(records)))
    rows = gather_units(dict(zip(mine, answered)), len(records), state)
    seconds = time.perf_counter() - start
    if state.is_main_process:  # the others wait, then read what it wrote
        summary = summarize(rows, reference_rows, n_boot=settings.n_boot, seed=settings.seed) | {
            "seconds": round(seconds, 2)}
        write_jsonl(outcomes_path, rows)
        write_json(metrics_path, summary)
        write_manifest(outcomes_path, stage="evaluate", model=fingerprint, settings=settings.as_dict(),
                       seed=settings.seed, extra={"identity": identity, "processes": state.num_processes})
    state.wait_for_everyone()
    if not state.is_main_process:
        rows, summary = read_jsonl(outcomes_path), json.loads(metrics_path.read_text(encoding="utf-8"))
    return Evaluation(rows, summary)

