"""A sharded, resumable store of projected gradient features.

Layout of a store folder:
- ``plan.json``: the settings, every item (question id, label form) in pool order, and the
  batch plan (which items form batch k). The plan depends only on the pool, the tokenizer
  and the batch size, never on the number of processes, so any sharding computes exactly
  the same batches.
- ``batches/batch-000123.safetensors``: one finished batch: item indices and, for every d,
  the L2-normalised features and the norms before normalisation. A batch is done when its
  file exists (written atomically), so an interrupted run resumes where it stopped and
  ranks never write the same file.
- after `merge`: ``{form}_d{d}.npy`` (float32, one row per id, memory-mappable),
  ``{form}_norms_d{d}.npy`` and ``{form}_ids.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rait.artifacts import atomic_path, changed_field, write_json
from rait.errors import DataError, RaitError

PLAN_FILE = "plan.json"
BATCH_DIR = "batches"


def plan_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Group item indices into batches of similar length (longest first, so memory errors show early)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def shard_batches(n_batches: int, rank: int, world_size: int) -> list[int]:
    """Batches of one rank: round-robin, so ranks get a similar mix of long and short batches."""
    return list(range(rank, n_batches, world_size))


class FeatureStore:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.plan = json.loads((self.folder / PLAN_FILE).read_text(encoding="utf-8"))

    @classmethod
    def create(cls, folder: str | Path, items: list[dict], batches: list[list[int]], settings: dict) -> FeatureStore:
        """Open the store at `folder`, writing its plan; an existing plan must be identical (resume)."""
        folder = Path(folder)
        plan = {"settings": settings, "items": items, "batches": batches}
        plan_path = folder / PLAN_FILE
        if plan_path.exists():
            changed = changed_field(json.loads(plan_path.read_text(encoding="utf-8")), plan)
            if changed is not None:
                raise RaitError(f"{folder} holds a store built with a different {changed}; "
                                "use a new folder or delete it")
        else:
            write_json(plan_path, plan)
        (folder / BATCH_DIR).mkdir(parents=True, exist_ok=True)
        return cls(folder)

    @property
    def dims(self) -> list[int]:
        return self.plan["settings"]["dims"]

    def batch_path(self, k: int) -> Path:
        return self.folder / BATCH_DIR / f"batch-{k:06d}.safetensors"

    def is_done(self, k: int) -> bool:
        return self.batch_path(k).is_file()

    def write_batch(self, k: int, features: dict[int, torch.Tensor]) -> None:
        """Store batch k's projected features {d: (b, d)}: normalised rows plus their norms."""
        tensors = {"index": torch.tensor(self.plan["batches"][k], dtype=torch.int64)}
        for d, x in features.items():
            x = x.detach().float().cpu()
            norms = x.norm(dim=1)
            tensors[f"d{d}"] = (x / norms.clamp_min(torch.finfo(torch.float32).tiny)[:, None]).contiguous()
            tensors[f"norm_d{d}"] = norms
        with atomic_path(self.batch_path(k)) as tmp:
            save_file(tensors, str(tmp))

    def missing_batches(self) -> list[int]:
        return [k for k in range(len(self.plan["batches"])) if not self.is_done(k)]

    def merge(self) -> dict[str, int]:
        """Assemble every finished batch into one memory-mappable array per (form, d); returns rows per form."""
        missing = self.missing_batches()
        if missing:
            raise RaitError(f"{self.folder}: {len(missing)} batches are not computed yet (first: {missing[0]}); "
                            "run the gradient stage again to finish them")
        items = self.plan["items"]
        forms = sorted({item["form"] for item in items})
        row_of, ids = {}, {form: [] for form in forms}
        for index, item in enumerate(items):
            row_of[index] = len(ids[item["form"]])
            ids[item["form"]].append(item["id"])
        arrays = {}
        for form in forms:
            for d in self.dims:
                arrays[form, d] = np.lib.format.open_memmap(self._tmp(f"{form}_d{d}.npy"), "w+", np.float32, (len(ids[form]), d))
                arrays[form, "norm", d] = np.lib.format.open_memmap(self._tmp(f"{form}_norms_d{d}.npy"), "w+", np.float32, (len(ids[form]),))
        for k in range(len(self.plan["batches"])):
            batch = load_file(str(self.batch_path(k)))
            indices = batch["index"].tolist()
            for form in forms:
                picked = [j for j, index in enumerate(indices) if items[index]["form"] == form]
                rows = [row_of[indices[j]] for j in picked]
                for d in self.dims:
                    arrays[form, d][rows] = batch[f"d{d}"][picked].numpy()
                    arrays[form, "norm", d][rows] = batch[f"norm_d{d}"][picked].numpy()
        for array in arrays.values():
            array.flush()
        for form in forms:
            for d in self.dims:
                for name in (f"{form}_d{d}.npy", f"{form}_norms_d{d}.npy"):
                    self._tmp(name).replace(self.folder / name)
            write_json(self.folder / f"{form}_ids.json", ids[form])
        return {form: len(ids[form]) for form in forms}

    def _tmp(self, name: str) -> Path:
        return self.folder / f".{name}.tmp.npy"


def load_features(folder: str | Path, form: str, d: int | None = None, mmap: bool = True) -> tuple[list[str], np.ndarray]:
    """(ids, features) of one label form from a merged store; `d` defaults to the largest stored."""
    folder = Path(folder)
    ids_path = folder / f"{form}_ids.json"
    if not ids_path.is_file():
        raise RaitError(f"{folder} has no merged '{form}' features (is it a finished gradient store?)")
    if d is None:
        d = max(json.loads((folder / PLAN_FILE).read_text(encoding="utf-8"))["settings"]["dims"])
    path = folder / f"{form}_d{d}.npy"
    if not path.is_file():
        raise RaitError(f"{folder} has no features with d={d}")
    ids = json.loads(ids_path.read_text(encoding="utf-8"))
    return ids, np.load(path, mmap_mode="r" if mmap else None)


class GradientFeatures:
    """The normalised features of a store, per label form, looked up by question id."""

    def __init__(self, forms: dict[str, tuple[list[str], np.ndarray]], source: str = "<gradient features>"):
        self.source = source
        self._forms = {form: ({qid: row for row, qid in enumerate(ids)}, array) for form, (ids, array) in forms.items()}

    @classmethod
    def load(cls, folder: str | Path, d: int | None = None) -> GradientFeatures:
        folder = Path(folder)
        forms = [p.name.removesuffix("_ids.json") for p in sorted(folder.glob("*_ids.json"))]
        if not forms:
            raise RaitError(f"{folder} is not a finished gradient store (no *_ids.json; run `rait grads` first)")
        return cls({form: load_features(folder, form, d) for form in forms}, str(folder))

    @property
    def forms(self) -> list[str]:
        return sorted(self._forms)

    def rows(self, form: str, ids: list[str]) -> np.ndarray:
        """Features of `ids` in that order, float64, shape (len(ids), d)."""
        if form not in self._forms:
            raise DataError(self.source, f"has no '{form}'-form features (forms: {', '.join(self.forms)})")
        row_of, array = self._forms[form]
        missing = [qid for qid in ids if qid not in row_of]
        if missing:
            raise DataError(self.source, f"no '{form}'-form gradient for question {missing[0]!r} "
                            f"({len(missing)} of {len(ids)} missing); compute gradients for the whole pool", field="id")
        return np.asarray(array[[row_of[qid] for qid in ids]], dtype=np.float64)
