"""Load any local Hugging Face causal-LM folder (or the default model) the same way.

Defaults, and why:
- dtype: float32 on CPU, bfloat16 on CUDA. CPUs without native bf16 run bf16 matmuls
  ~170x slower than fp32 (1 vs 173 GFLOPS measured), so bf16 is never the CPU default.
- device: CUDA when available, else CPU.
- tokenizer: `padding_side="left"`, because batched generation appends new tokens on the
  right and needs every prompt to end at the same position; `pad_token = eos_token` when
  the tokenizer has none. Pad may therefore equal eos (it does for SmolLM2): build loss
  masks from prompt lengths or the attention mask, never from `input_ids == pad_token_id`.
- everything is read with `local_files_only=True`: rait never downloads weights. A Hugging Face id ("org/name")
  names its snapshot in the local Hugging Face cache, which `hf download` fills; manifests then record the id and
  the snapshot's commit, not the cache's path on this machine.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
from huggingface_hub.utils import validate_repo_id
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from rait.artifacts import sha256_file
from rait.errors import ModelError
from rait.models.default import install_default_model
from rait.models.memory import keep_freed_memory

DEFAULT_SPEC = "default"
DTYPE_ENV = "RAIT_DTYPE"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
HUB_MODEL_PREFIX = "models--"  # a model's folder in the Hugging Face cache: models--<org>--<name>/snapshots/<commit>
CAUSAL_LM_CLASSES = {name for names in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()
                     for name in ((names,) if isinstance(names, str) else names)}


def resolve_model_path(spec: str | Path | None, revision: str | None = None) -> Path:
    """Turn a model spec into a folder: "default" or None is the default model (installed on first use), an
    existing folder is itself, and a Hugging Face id ("org/name") is its snapshot in the local Hugging Face cache
    (`$HF_HUB_CACHE`, else `$HF_HOME/hub`): at `revision` (a commit) if given, else where the cache's `main` points.
    A folder wins over an id of the same name, so what is on disk here is never shadowed.

    Every stage asks this first (`rait run` before any stage), so a `$RAIT_DTYPE` that no model could load in
    here is refused here, before any work, rather than when the first model loads."""
    default_dtype(default_device())
    if spec is None or str(spec) == DEFAULT_SPEC:
        return install_default_model()
    path = Path(spec).expanduser()
    if not path.exists() and _is_hub_id(str(spec)):
        path = _cached_snapshot(str(spec), revision)
    elif not path.exists():
        raise ModelError(f"model folder not found: {path}")
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ModelError(f"{path} is not a Hugging Face model folder (no config.json)")
    return path.resolve()


def hub_snapshot(folder: Path) -> tuple[str, str] | None:
    """(id, commit) of a folder that is a model snapshot in a Hugging Face cache, else None."""
    repo, snapshots = folder.parent.parent.name, folder.parent.name
    if snapshots != "snapshots" or not repo.startswith(HUB_MODEL_PREFIX):
        return None
    # ids cannot hold "--" (validate_repo_id), so the folder name maps back to exactly one id
    return repo.removeprefix(HUB_MODEL_PREFIX).replace("--", "/"), folder.name


def portable_spec(spec: str | Path | None) -> tuple[str, str | None]:
    """(spec, revision) by which an output names its base model so that another machine finds the same one:
    "default" (resolved there), a Hugging Face id with its snapshot's commit, or a folder's full path."""
    if spec is None or str(spec) == DEFAULT_SPEC:
        return DEFAULT_SPEC, None
    folder = resolve_model_path(spec)
    return hub_snapshot(folder) or (str(folder), None)


def describe_model(folder: Path) -> str:
    """A model folder as a report names it: "org/name (commit …)" for a Hugging Face snapshot, else its path."""
    snapshot = hub_snapshot(Path(folder))
    return f"{snapshot[0]} (commit {snapshot[1]})" if snapshot else str(folder)


def _is_hub_id(spec: str) -> bool:
    """"org/name" as the Hub spells ids; a path that starts like one (./x, /x, ~/x) or has more parts is not."""
    if spec.count("/") != 1 or spec.startswith((".", "/", "~")):
        return False
    try:
        validate_repo_id(spec)
    except HFValidationError:
        return False
    return True


def _cached_snapshot(repo_id: str, revision: str | None) -> Path:
    """The cached snapshot of `repo_id`, without network: rait never downloads (the module doc)."""
    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except LocalEntryNotFoundError:
        at = f" --revision {revision}" if revision else ""
        raise ModelError(f"model {repo_id!r}: no such folder, and not in the Hugging Face cache "
                         f"{hub_constants.HF_HUB_CACHE}{' at commit ' + revision if revision else ''}; "
                         f"download it first with `hf download {repo_id}{at}` (rait never downloads)") from None


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def own_device(device: str | torch.device | None) -> torch.device:
    """`device` (default: the GPU if there is one), "cuda" meaning this process's GPU: under `torchrun`/`accelerate
    launch` rank r of a machine takes GPU `LOCAL_RANK`, not every rank GPU 0."""
    device = torch.device(device or default_device())
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def default_dtype(device: str | torch.device) -> torch.dtype:
    """`$RAIT_DTYPE` when set, else bfloat16 on CUDA and float32 elsewhere (bf16 on a CPU is ~170x slower).

    One switch for every stage: greedy answers are token-identical between machines only in fp32
    (docs/eval.md, On a GPU), so `RAIT_DTYPE=float32` makes a GPU run answer as the CPU does.
    """
    if env := os.environ.get(DTYPE_ENV):
        dtype = _as_dtype(env, source=f"${DTYPE_ENV}")
        if dtype == torch.float16 and torch.device(device).type == "cpu":
            raise ModelError(f"${DTYPE_ENV}={env}: half precision is not supported on a CPU (where it runs at all, "
                             "it is slow and inexact); use float32 (or bfloat16) here, or unset it")
        return dtype
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def load_tokenizer(path: str | Path | None = DEFAULT_SPEC):
    """The folder's tokenizer, left-padding, with a pad token (eos when it has none)."""
    folder = resolve_model_path(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load a tokenizer from {folder}: {_first_line(err)}") from err
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError(f"the tokenizer in {folder} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    path: str | Path | None = DEFAULT_SPEC,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
):
    """Return `(model, tokenizer)` for a local causal-LM folder, in eval mode on `device`.

    Every stage that computes loads its model here, so this is where the process's allocator is told to keep
    what torch frees (`rait.models.memory`)."""
    keep_freed_memory()
    folder = resolve_model_path(path)
    _check_causal_lm(folder)
    device = own_device(device)
    dtype = _as_dtype(dtype) if dtype is not None else default_dtype(device)
    tokenizer = load_tokenizer(folder)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True)
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load the model in {folder}: {_first_line(err)}") from err
    model.to(device).eval()
    return model, tokenizer


def model_fingerprint(path: str | Path | None = DEFAULT_SPEC) -> dict:
    """What a manifest records to identify a model: its folder (a Hugging Face snapshot: its id and commit, the same
    on every machine), config hash and weights hash.

    The weights hash is a full sha256 over every weight file (names and contents, sorted):
    it takes about 0.4 s for the 538 MB SmolLM2 file (page-cached), cheap next to loading it.
    """
    folder = resolve_model_path(path)
    weights = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if not weights:
        raise ModelError(f"no weight files (*.safetensors, *.bin) in {folder}")
    digest = hashlib.sha256()
    for file in weights:
        digest.update(file.name.encode())
        digest.update(sha256_file(file).encode())
    snapshot = hub_snapshot(folder)
    origin = {"hub_id": snapshot[0], "revision": snapshot[1]} if snapshot else {"path": str(folder)}
    return {
        **origin,
        "config_sha256": sha256_file(folder / "config.json"),
        "weights_sha256": digest.hexdigest(),
        "weight_files": [p.name for p in weights],
    }


def _check_causal_lm(folder: Path) -> None:
    """Fail early, with the architecture named, on encoders and seq2seq models."""
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, json.JSONDecodeError) as err:
        raise ModelError(f"cannot read {folder / 'config.json'}: {_first_line(err)}") from err
    architectures = getattr(config, "architectures", None) or []
    known_type = config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    if not known_type or (architectures and not CAUSAL_LM_CLASSES.intersection(architectures)):
        kind = ", ".join(architectures) or config.model_type
        raise ModelError(f"{folder} holds a {kind}, not a causal language model")


def _as_dtype(dtype: torch.dtype | str, source: str = "dtype") -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point or value.itemsize < 2:  # int8, float8_*
        raise ModelError(f"{source}: unknown dtype {dtype!r} for a model's weights (use e.g. float32, bfloat16, "
                         "float16)")
    return value


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
