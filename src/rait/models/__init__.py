"""Models: load any local causal-LM folder, or the default SmolLM2-135M-Instruct.

`load_model("default")` (or `load_model(None)`) installs the default model into the
cache on first use; any other string is a local Hugging Face folder or, where no such folder
exists, a Hugging Face id ("org/name") read from the local Hugging Face cache.
"""

from __future__ import annotations

from rait.models.default import cache_dir, default_model_dir, install_default_model
from rait.models.loading import (
    DEFAULT_SPEC,
    default_device,
    default_dtype,
    describe_model,
    hub_snapshot,
    load_model,
    load_tokenizer,
    model_fingerprint,
    portable_spec,
    resolve_model_path,
)

__all__ = [
    "DEFAULT_SPEC",
    "cache_dir",
    "default_device",
    "default_dtype",
    "default_model_dir",
    "describe_model",
    "hub_snapshot",
    "install_default_model",
    "load_model",
    "load_tokenizer",
    "model_fingerprint",
    "portable_spec",
    "resolve_model_path",
]
