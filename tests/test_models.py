from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, LlamaForCausalLM

import rait.models.default as default_install
from rait.errors import ModelError
from rait.generate import SamplingSettings, generate
from rait.models import (
    cache_dir,
    default_dtype,
    default_model_dir,
    install_default_model,
    load_model,
    load_tokenizer,
    model_fingerprint,
    resolve_model_path,
)


def test_tiny_model_loads_in_eval_mode_with_left_padding(tiny_model):
    model, tokenizer = tiny_model
    assert isinstance(model, LlamaForCausalLM)
    assert model.dtype == torch.float32
    assert not model.training
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token is not None


def test_batched_greedy_generation_equals_unbatched(tiny_model):
    model, tokenizer = tiny_model
    questions = ["Where is the river?", "Who is the president of the united states when the first film was released?", "A"]
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
               for q in questions]
    lengths = {len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts}
    assert len(lengths) == 3, "prompts of different lengths are needed to exercise left padding"
    settings = SamplingSettings(max_new_tokens=8)
    batched = generate(model, tokenizer, prompts, settings, batch_size=3)
    one_by_one = generate(model, tokenizer, prompts, settings, batch_size=1)
    assert len({tuple(texts) for texts in batched}) == 3, "the outputs must depend on the prompt to compare anything"
    assert batched == one_by_one


def test_explicit_dtype_and_defaults_per_device(tiny_model_dir):
    model, _ = load_model(tiny_model_dir, dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    assert default_dtype("cpu") == torch.float32
    assert default_dtype("cuda") == torch.bfloat16
    with pytest.raises(ModelError, match="unknown dtype"):
        load_model(tiny_model_dir, dtype="float33")


def test_dtype_env_overrides_the_device_default(monkeypatch):
    monkeypatch.setenv("RAIT_DTYPE", "float32")
    assert default_dtype("cuda") == torch.float32
    monkeypatch.setenv("RAIT_DTYPE", "half")
    assert default_dtype("cuda") == torch.float16
    with pytest.raises(ModelError, match=r"\$RAIT_DTYPE=half: half precision is not supported on a CPU"):
        default_dtype("cpu")
    monkeypatch.setenv("RAIT_DTYPE", "int8")
    with pytest.raises(ModelError, match="unknown dtype 'int8'"):
        default_dtype("cuda")
    monkeypatch.setenv("RAIT_DTYPE", "float33")
    with pytest.raises(ModelError, match=r"\$RAIT_DTYPE: unknown dtype 'float33'"):
        default_dtype("cpu")


def test_missing_folder_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "no-such-model")


def test_folder_without_config_is_a_model_error(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match="no config.json"):
        load_model(tmp_path)


def test_encoder_folder_is_not_a_causal_lm(tmp_path):
    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
               architectures=["BertModel"]).save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="BertModel, not a causal language model"):
        load_model(tmp_path)


def test_tokenizer_without_pad_gets_eos_as_pad(tiny_model_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(tmp_path)
    shutil.copy(tiny_model_dir / "config.json", tmp_path)
    reloaded = load_tokenizer(tmp_path)
    assert reloaded.pad_token == reloaded.eos_token


def test_cache_dir_honours_rait_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("RAIT_CACHE_DIR", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache"
    assert default_model_dir().parent == tmp_path / "cache"
    monkeypatch.delenv("RAIT_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "rait"


def test_complete_default_folder_is_reused_without_converting(monkeypatch, tmp_path, tiny_model_dir):
    monkeypatch.setenv("RAIT_CACHE_DIR", str(tmp_path))
    shutil.copytree(tiny_model_dir, default_model_dir())
    (default_model_dir() / default_install.SOURCE_FILE).write_text(json.dumps({"model": "stand-in"}))
    assert install_default_model() == default_model_dir()
    assert resolve_model_path("default") == default_model_dir()
    model, _ = load_model(None)
    assert model.config.hidden_size == 64


def test_fingerprint_is_stable_and_tracks_the_weights(tiny_model_dir, tmp_path):
    first = model_fingerprint(tiny_model_dir)
    assert first == model_fingerprint(tiny_model_dir)
    assert first["path"] == str(Path(tiny_model_dir).resolve())

    changed = tmp_path / "changed"
    shutil.copytree(tiny_model_dir, changed)
    model = LlamaForCausalLM.from_pretrained(changed)
    with torch.no_grad():
        model.model.norm.weight.add_(1.0)
    model.save_pretrained(changed)
    second = model_fingerprint(changed)
    assert second["config_sha256"] == first["config_sha256"]
    assert second["weights_sha256"] != first["weights_sha256"]


@pytest.fixture
def fake_conversion(monkeypatch, tmp_path, tiny_model_dir):
    """Stand-ins for the GGUF lookup and conversion, to test the install logic around them."""
    monkeypatch.setenv("RAIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(default_install, "_find_gguf", lambda workdir: (workdir / "fake.gguf", {"model": "stand-in"}))
    monkeypatch.setattr(default_install, "_convert_gguf", lambda gguf, out: shutil.copytree(tiny_model_dir, out))
    return default_install


def test_failed_conversion_leaves_no_half_written_cache(fake_conversion, monkeypatch):
    def crash(gguf, out):
        out.mkdir()
        (out / "config.json").write_text("{}")
        raise RuntimeError("killed halfway")

    monkeypatch.setattr(fake_conversion, "_convert_gguf", crash)
    with pytest.raises(ModelError, match="killed halfway"):
        install_default_model()
    assert list(cache_dir().iterdir()) == []


def test_install_then_force_reinstall_replaces_the_folder(fake_conversion):
    folder = install_default_model()
    assert json.loads((folder / default_install.SOURCE_FILE).read_text()) == {"model": "stand-in"}
    (folder / "stale.txt").write_text("from the previous install")
    assert install_default_model() == folder and (folder / "stale.txt").exists()
    assert install_default_model(force=True) == folder
    assert not (folder / "stale.txt").exists()
    assert sorted(p.name for p in cache_dir().iterdir()) == [folder.name]


_REFAULTS = r"""
import resource, sys
import torch
from rait.models.memory import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
faults = []
for _ in range(4):  # a step's 200 MB block, freed and allocated again, as training does with its logits
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.ones(50_000_000)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    del block
print(kept, min(faults[1:]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_memory_freed_by_one_step_is_reused_by_the_next_without_page_faults():
    """`keep_freed_memory` (called by every model load): a large block freed and allocated again comes back from the
    heap, already mapped; glibc's default unmaps it and the kernel faults in its 48,829 pages again each time."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("MALLOC_")}
    runs = {}
    for mode in ("keep", "default"):
        done = subprocess.run([sys.executable, "-c", _REFAULTS, mode], capture_output=True, text=True, env=env, check=True)
        kept, faults = done.stdout.split()
        runs[mode] = (kept == "True", int(faults))
    assert runs["keep"][0] and runs["keep"][1] < 1000
    assert runs["default"][1] > 40_000  # the control: without it every reuse faults the block in again
