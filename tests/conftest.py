"""Shared fixtures: the tiny test model, built once per session and loaded like a real one.

Tests marked `slow` (the real default model) run by default, as `make test` does; skip
them with `pytest -m "not slow"`. Tests that read the QA data shipped beside the repository take the
`shipped_data` fixture: a clone with none (not placed beside `shared/`, no `$RAIT_DATA_DIR`) skips them with
the reason, which `-ra` lists, instead of failing each on the same missing folder.
"""

from __future__ import annotations

import pytest
import torch

from rait.data.paths import shared_data_dir
from rait.errors import RaitError
from rait.models import load_model
from tiny_model import build_tiny_model

# One intra-op thread: the tiny model's 64-wide matmuls gain nothing from more, and on a
# shared 2-core box two spinning OpenMP threads made an 8-token generation 30x slower.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Folder of the tiny random Llama and its tokenizer (built once per session)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def tiny_model(tiny_model_dir):
    """A fresh (model, tokenizer) per test, loaded through `rait.models.load_model`.

    Function-scoped because LoRA wrapping and training modify a model in place; loading
    the tiny folder takes a few milliseconds.
    """
    return load_model(tiny_model_dir)


@pytest.fixture(scope="session")
def shipped_data():
    """The shipped data folder (`rait.data.paths.shared_data_dir`), or a skip naming where it was looked for."""
    try:
        return shared_data_dir()
    except RaitError as err:
        pytest.skip(f"shipped data not available: {err}")
