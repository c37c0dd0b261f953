"""Seeded random projections of per-sample gradients to d dimensions, identical on any shard and device.

A gradient is projected parameter by parameter and the parts are summed, so the full
gradient vector is never built. The random numbers for parameter `name` come from a CPU
`torch.Generator` seeded with a hash of (seed, name): they do not depend on the device,
on the batch, on how the pool is sharded, or on the order parameters are visited in.

Two projectors:
- ``countsketch`` (default): every gradient coordinate goes to one random output
  coordinate with a random sign (a sparse Rademacher JL map). Inner products are preserved
  in expectation with the same variance order as a dense map, at the cost of one pass over
  the gradient. A dense map to 8192 of a 109 M-number Llama-3-8B LoRA gradient costs as
  much as half the model's own forward + backward and its matrix cannot be stored
  (docs/grait.md, Projection), which is why the sketch is the default.
- ``dense``: a dense Rademacher (±1) or Gaussian matrix, as TRAK/LESS use; generated in
  fixed row blocks and cached on the device up to a memory budget. Fine for small models.

Several d at once: the dense map to d is the first d columns of the map to max(d) (scaled
by 1/sqrt(d)); the sketch to d folds the sketch to max(d) (bucket mod d), which is again a
CountSketch, so every d in `dims` must divide max(dims).
"""

from __future__ import annotations

import hashlib
import math

import torch

from rait.errors import RaitError

PROJECTORS = ("countsketch", "dense")
DISTRIBUTIONS = ("rademacher", "gaussian")


def parameter_seed(seed: int, name: str, block: int = 0) -> int:
    """A 63-bit seed for one parameter (and row block) that is the same on every machine."""
    digest = hashlib.sha256(f"{seed}:{name}:{block}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class Projector:
    """Projects per-parameter slices of per-sample gradients and sums them into (batch, max(dims))."""

    def __init__(self, dims: tuple[int, ...] | list[int], seed: int = 0):
        dims = tuple(sorted(set(int(d) for d in dims)))
        if not dims or dims[0] < 1:
            raise RaitError(f"projection dims must be positive integers, got {dims}")
        self.dims = dims
        self.d_max = dims[-1]
        self.seed = seed

    def project(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """(batch, n) slice of parameter `name` → (batch, max(dims)) contribution."""
        raise NotImplementedError

    def split(self, sketch: torch.Tensor) -> dict[int, torch.Tensor]:
        """The summed (batch, max(dims)) projection → {d: (batch, d)}."""
        raise NotImplementedError


class CountSketchProjector(Projector):
    def __init__(self, dims, seed: int = 0):
        super().__init__(dims, seed)
        bad = [d for d in self.dims if self.d_max % d]
        if bad:
            raise RaitError(f"countsketch needs every d to divide max(d)={self.d_max}; {bad} do not (use powers of two)")
        self._hashes: dict[tuple[str, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def _hash(self, name: str, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (name, device)
        if key not in self._hashes:
            generator = torch.Generator().manual_seed(parameter_seed(self.seed, name))
            buckets = torch.randint(0, self.d_max, (n,), generator=generator)
            signs = torch.randint(0, 2, (n,), generator=generator, dtype=torch.int8) * 2 - 1
            self._hashes[key] = (buckets.to(device), signs.to(device))
        buckets, signs = self._hashes[key]
        if buckets.numel() != n:
            raise RaitError(f"parameter {name!r} changed size ({buckets.numel()} → {n})")
        return buckets, signs

    def project(self, name: str, x: torch.Tensor) -> torch.Tensor:
        buckets, signs = self._hash(name, x.shape[1], x.device)
        out = torch.zeros(x.shape[0], self.d_max, dtype=x.dtype, device=x.device)
        return out.index_add_(1, buckets, x * signs.to(x.dtype))

    def split(self, sketch: torch.Tensor) -> dict[int, torch.Tensor]:
        return {d: sketch.reshape(sketch.shape[0], self.d_max // d, d).sum(dim=1) for d in self.dims}


class DenseProjector(Projector):
    def __init__(self, dims, seed: int = 0, distribution: str = "rademacher",
                 block_rows: int = 4096, cache_bytes: int = 2 << 30):
        super().__init__(dims, seed)
        if distribution not in DISTRIBUTIONS:
            raise RaitError(f"unknown distribution {distribution!r} (use {' or '.join(DISTRIBUTIONS)})")
        self.distribution = distribution
        self.block_rows = block_rows
        self.cache_bytes = cache_bytes
        self._cache: dict[tuple[str, int, torch.device], torch.Tensor] = {}
        self._cached = 0

    def _block(self, name: str, block: int, rows: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (name, block, device)
        if key in self._cache:
            return self._cache[key]
        generator = torch.Generator().manual_seed(parameter_seed(self.seed, name, block))
        if self.distribution == "rademacher":
            matrix = (torch.randint(0, 2, (rows, self.d_max), generator=generator, dtype=torch.int8) * 2 - 1).to(dtype)
        else:
            matrix = torch.randn(rows, self.d_max, generator=generator).to(dtype)
        matrix = matrix.to(device)
        size = matrix.numel() * matrix.element_size()
        if self._cached + size <= self.cache_bytes:
            self._cache[key] = matrix
            self._cached += size
        return matrix

    def project(self, name: str, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], self.d_max, dtype=x.dtype, device=x.device)
        for block, start in enumerate(range(0, x.shape[1], self.block_rows)):
            stop = min(start + self.block_rows, x.shape[1])
            out += x[:, start:stop] @ self._block(name, block, stop - start, x.device, x.dtype)
        return out

    def split(self, sketch: torch.Tensor) -> dict[int, torch.Tensor]:
        return {d: sketch[:, :d] / math.sqrt(d) for d in self.dims}


def make_projector(kind: str, dims, seed: int = 0, distribution: str = "rademacher") -> Projector:
    if kind == "countsketch":
        return CountSketchProjector(dims, seed)
    if kind == "dense":
        return DenseProjector(dims, seed, distribution)
    raise RaitError(f"unknown projector {kind!r} (use one of {', '.join(PROJECTORS)})")
