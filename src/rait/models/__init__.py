"""Models: load any local causal-LM folder, or the default SmolLM2-135M-Instruct.

`load_model("default")` (or `load_model(None)`) installs the default model into the
cache on first use; any other string is a local Hugging Face folder.
"""

from __future__ import annotations

from rait.models.default import cache_dir, default_model_dir, install_default_model
from rait.models.loading import (
    DEFAULT_SPEC,
    default_device,
    default_dtype,
    load_model,
    load_tokenizer,
    model_fingerprint,
    resolve_model_path,
)

__all__ = [
    "DEFAULT_SPEC",
    "cache_dir",
    "default_device",
    "default_dtype",
    "default_model_dir",
    "install_default_model",
    "load_model",
    "load_tokenizer",
    "model_fingerprint",
    "resolve_model_path",
]
