"""The gradient stage (`rait grads`, and `rait run` for GRAIT): warm-up, then the feature store of a pool.

`run(GradsSettings(...), records, out, model=..., table=...)` is the entry point of both. Output:
- ``warmup/``: the LoRA adapter, its Adam moments and settings (skipped with `adapter=`);
- ``store/``: the gradient store (store.py), merged, with ``store.manifest.json`` beside it.

Run it under `accelerate launch -m rait grads ...` to shard the pool over the GPUs: every
rank computes its share of the same batch plan and the main process merges.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from rait.artifacts import write_manifest
from rait.distributed import processes
from rait.errors import RaitError
from rait.grads.adam import AdamMoments
from rait.grads.features import LABEL_FORMS, GradsSettings, build_store, gradient_examples
from rait.grads.store import FeatureStore
from rait.grads.warmup import load_warm_model, read_warmup_summary, rehearsal_ids, rehearsal_rows, warmup
from rait.terminal import progress


def run_warmup(settings: GradsSettings, records_path: str | Path, table_path: str | Path, out_dir: str | Path, *,
               model: str | Path | None, min_mu: float = 0.99, rehearsal_seed: int = 42) -> Path:
    """Train the warm-up adapter on the rehearsal questions of a knowledge table; returns its folder."""
    from rait.data import read_records
    from rait.models import load_model, model_fingerprint
    from rait.probe.table import read_table

    table = read_table(table_path)
    ids, note = rehearsal_ids(table, settings.n_rehearsal, min_mu, rehearsal_seed)
    rows = rehearsal_rows(read_records(records_path), ids, prompt=settings.prompt, system=settings.system)
    base, tokenizer = load_model(model)
    out_dir = warmup(base, tokenizer, rows, out_dir, settings.warmup)
    if processes().is_main_process:
        write_manifest(out_dir, stage="grads.warmup", inputs={"records": records_path, "knowledge_table": table_path},
                       model=model_fingerprint(model), settings={**asdict(settings.warmup), "rehearsal": note,
                       "rehearsal_ids": ids, "prompt": settings.prompt, "system": settings.system},
                       seed=settings.warmup.seed)
    return out_dir


def run(settings: GradsSettings, records_path: str | Path, out: str | Path, *, model: str | Path | None,
        table_path: str | Path | None = None, adapter: str | Path | None = None) -> Path:
    """Warm up (unless `adapter` is given), then compute and merge the store; returns the store folder.

    Features are computed for every pool question, in both label forms, rendered with the build's
    prompt, system turn and refusal (`settings`). Under `accelerate launch` each process takes its
    share of the batches.
    """
    from rait.data import read_records
    from rait.models import load_model, model_fingerprint

    state = processes()
    out = Path(out)
    records = read_records(records_path)
    if not records:
        raise RaitError("no pool questions to compute gradients for")

    if adapter is None:
        if table_path is None:
            raise RaitError("the warm-up needs the knowledge table (table_path) to pick its rehearsal questions; "
                            "or pass an existing adapter")
        adapter = out / "warmup"
        if not (adapter / "adapter_config.json").is_file():  # every rank trains (DDP); the main one saves
            run_warmup(settings, records_path, table_path, adapter, model=model)
        state.wait_for_everyone()

    base, tokenizer = load_model(model, device=state.device)
    warm = load_warm_model(base, adapter)
    moments = AdamMoments.load(adapter) if settings.gradient_type == "adam" else None
    examples = gradient_examples(records, prompt=settings.prompt, system=settings.system, forms=LABEL_FORMS,
                                 refusal=settings.refusal)
    fingerprint = model_fingerprint(model)
    record = {"model_weights_sha256": fingerprint["weights_sha256"], "adapter": str(adapter)}
    with progress("gradients", len(examples), enabled=state.is_main_process) as bar:
        store = build_store(warm, tokenizer, examples, out / "store", settings, moments,
                            rank=state.process_index, world_size=state.num_processes, record=record,
                            on_batch=bar.advance)
    state.wait_for_everyone()
    if state.is_main_process:
        rows = store.merge()
        write_manifest(store.folder, stage="grads", inputs={"records": records_path, "adapter": adapter,
                       **({"knowledge_table": table_path} if table_path else {})}, model=fingerprint,
                       settings={**settings.as_dict(), "forms": list(LABEL_FORMS), "processes": state.num_processes,
                                 "warmup": read_warmup_summary(adapter)},
                       seed=settings.seed, extra={"rows": rows})
    state.wait_for_everyone()
    return FeatureStore(out / "store").folder
