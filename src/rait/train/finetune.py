"""Fine-tune a model on training rows (LoRA, QLoRA or full), save it, and load it back.

`run(settings, data, out_dir, model=...)` is what `rait train` runs. Training rows are TRL's
conversational prompt/completion rows with an optional ``weight`` (see `rait.train.weighted`),
usually written by a selector; `read_training_rows` reads them from JSONL.

The output folder holds:

- ``adapter/`` (LoRA, QLoRA) or ``model/`` (full fine-tuning), with the tokenizer;
- ``merged/`` when ``settings.merge`` is set (LoRA only): base + adapter as one plain model;
- ``train.json`` (+ manifest): the base model, settings, number of samples, the real number
  of optimiser steps (and how many ran at a learning rate above zero), and the loss log.

`load_trained(out_dir)` turns any of these back into ``(model, tokenizer)`` for probing and
evaluation (base + adapter, merged for speed); `adapter_merged(base, out_dir)` merges a LoRA
output into an already loaded base for a while, so one base load serves many trained models.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

import torch
from datasets import Dataset
from transformers import PrinterCallback, ProgressCallback, TrainerCallback

from rait.artifacts import canonical, identity_key, iter_jsonl_objects, manifest_path, write_json, write_manifest
from rait.errors import (MAX_SEED, DataError, ModelError, RaitError, SettingsError, check_choice, check_count,
                         check_number)
from rait.models import (DEFAULT_SPEC, load_model, load_tokenizer, model_fingerprint, portable_spec,
                         resolve_model_path)
from rait.terminal import progress, shows_progress
from rait.train.weighted import WeightedSFTConfig, WeightedSFTTrainer, row_problem

TRAINING_METHODS = ("lora", "qlora", "full")  # how the weights are trained (not the registry of RAIT methods)
# Where the trainer's logs go besides train.json; each but "none" needs its package (tensorboard is rait's extra).
REPORTERS = {"none": None, "tensorboard": "tensorboard", "wandb": "wandb"}
CHECKPOINT_IDENTITY = "checkpoint_identity.json"
SUMMARY_FILE = "train.json"
OUTPUT_FOLDERS = ("adapter", "model", "merged")
STAGING_PREFIX = ".saving-"
MAX_LORA_R = 4096


@dataclass
class LoraSettings:
    """LoRA adapter shape. Defaults are CRaFT's and GRAIT's MCQA recipe: r 64, alpha 16, dropout 0.1, all linear layers."""

    r: int = 64
    alpha: int = 16
    dropout: float = 0.1
    target_modules: str | list[str] = "all-linear"
    # Only these decoder layers get adapters (None: all). Backpropagation then stops at the
    # lowest adapted layer, which is what makes a CPU demo affordable (configs/demo.yaml).
    layers: list[int] | None = None

    def __post_init__(self):
        # a rank at the hidden size is already full rank; far beyond it, the adapter's matrices exhaust memory
        if isinstance(self.r, bool) or not isinstance(self.r, int) or not 1 <= self.r <= MAX_LORA_R:
            raise SettingsError("r", f"LoRA r must be a whole number between 1 and {MAX_LORA_R}, got {self.r!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0 < self.alpha < math.inf:
            raise SettingsError("alpha", f"LoRA alpha must be a finite number > 0, got {self.alpha!r}")
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise SettingsError("dropout", f"LoRA dropout must lie in [0, 1), got {self.dropout!r}")
        if self.layers is not None and isinstance(self.target_modules, str):
            raise RaitError("LoRA 'layers' needs target_modules as a list of module names (e.g. q_proj, v_proj), "
                            f"not {self.target_modules!r}")

    def peft_config(self):
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=self.target_modules,
                          layers_to_transform=self.layers, bias="none", task_type="CAUSAL_LM")


@dataclass
class TrainSettings:
    """Everything that shapes a fine-tuning run; recorded in the run's manifest.

    Defaults follow the papers' LoRA recipe (docs/train.md: lr 2e-4, 3 epochs, linear warm-up over
    3 % of the steps then cosine to 0, AdamW without weight decay, clipping at 1) with a global
    batch of 16 = ``batch_size`` x ``grad_accum``. Packing is never used: it hid how few
    optimiser steps the released rehearsal runs took (docs/train.md, rehearsal).
    """

    method: str = "lora"
    lora: LoraSettings = field(default_factory=LoraSettings)
    epochs: float = 3.0
    max_steps: int = -1
    learning_rate: float = 2e-4
    batch_size: int = 8
    grad_accum: int = 2
    lr_scheduler: str = "cosine"
    warmup: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_length: int = 1024
    seed: int = 0
    merge: bool = False
    logging_steps: int = 1
    # Recompute each decoder layer's activations in the backward pass instead of keeping them: the activations of a
    # long batch then cost one layer's worth plus each layer's input (docs/plan.md), for one more forward pass.
    gradient_checkpointing: bool = False
    report_to: str = "none"  # none | tensorboard (<out>/runs/) | wandb (offline unless WANDB_MODE says otherwise)
    # A checkpoint (adapter or model, optimiser, schedule) every so many optimiser steps; the same command run
    # again after an interruption resumes from the last one. None: no mid-run checkpoints.
    save_steps: int | None = None

    def __post_init__(self):
        if isinstance(self.lora, dict):
            self.lora = LoraSettings(**self.lora)
        if self.method not in TRAINING_METHODS:
            raise RaitError(f"unknown training method {self.method!r}; choose from {', '.join(TRAINING_METHODS)}")
        if self.max_steps != -1:  # -1: the epochs decide; 0 or -5 would train nothing, or silently every epoch
            check_count("max_steps", self.max_steps, 1)
        # epochs 0 trains nothing (unless max_steps decides), inf never ends
        check_number("epochs", self.epochs, 0, low_open=self.max_steps == -1)
        lr = self.learning_rate
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < math.inf:  # nan fails too
            raise SettingsError("learning_rate", f"the learning rate must be a finite number > 0, got {lr!r} "
                                "(nan or inf trains an adapter of NaNs)")
        check_count("seed", self.seed, 0, MAX_SEED)
        for name in ("batch_size", "grad_accum"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RaitError(f"{name} must be a whole number >= 1, got {value!r}")
        if self.merge and self.method != "lora":
            raise RaitError("merge applies to LoRA adapters only (load a QLoRA adapter with load_trained instead)")
        if not isinstance(self.gradient_checkpointing, bool):
            raise SettingsError("gradient_checkpointing", f"must be true or false, got {self.gradient_checkpointing!r}")
        check_choice("report_to", self.report_to, tuple(REPORTERS))
        package = REPORTERS[self.report_to]
        if package is not None and importlib.util.find_spec(package) is None:
            extra = " (rait's extra: pip install 'rait[tensorboard]')" if package == "tensorboard" else ""
            raise SettingsError("report_to", f"{self.report_to!r} needs the {package} package, which is not "
                                f"installed: pip install {package}{extra}")
        if self.save_steps is not None:
            check_count("save_steps", self.save_steps, 1)

    def sft_config(self, output_dir: str | Path, progress: bool = True) -> WeightedSFTConfig:
        return self.trainer_config(WeightedSFTConfig, output_dir, progress)

    def trainer_config(self, config_class, output_dir: str | Path, progress: bool = True, **extra: Any):
        """These settings as a TRL trainer config (`WeightedSFTConfig`, `DPOConfig`, `GRPOConfig`, …); `extra` fields
        are added or override (`max_length` only where the config has it: GRPO bounds its completions instead)."""
        args = dict(
            output_dir=str(output_dir),
            num_train_epochs=self.epochs,
            max_steps=self.max_steps,
            learning_rate=self.learning_rate,
            per_device_train_batch_size=self.batch_size,
            gradient_accumulation_steps=self.grad_accum,
            lr_scheduler_type=self.lr_scheduler,
            warmup_steps=self.warmup,
            weight_decay=self.weight_decay,
            max_grad_norm=self.max_grad_norm,
            max_length=self.max_length,
            seed=self.seed,
            data_seed=self.seed,
            logging_steps=self.logging_steps,
            save_strategy="steps" if self.save_steps else "no",
            save_steps=self.save_steps or 500,  # read only when saving by steps
            save_only_model=False,  # a resume needs the optimiser and the schedule too
            report_to=self.report_to,
            # transformers 5's name (gradient_checkpointing is its deprecated alias); set either way, since TRL's DPO
            # and GRPO configs would otherwise turn it on by default
            activation_checkpointing=self.gradient_checkpointing,
            disable_tqdm=not (progress and shows_progress()),
            dataloader_pin_memory=torch.cuda.is_available(),  # pinning is for copies to a GPU; without one it warns
            # without a GPU, transformers joins the processes of a launch (gloo) only when told it runs on CPU:
            # each rank would otherwise train alone on all the data
            use_cpu=not torch.cuda.is_available(),
        ) | extra
        if "max_length" not in {f.name for f in fields(config_class)}:
            del args["max_length"]
        if self.report_to == "wandb":
            os.environ.setdefault("WANDB_MODE", "offline")  # nothing leaves the machine unless the user says so
        return config_class(**args)


# How a training runs and logs, never what it learns: checkpointing recomputes the same activations, and a resumed
# run ends where an uninterrupted one does (tests/test_train.py). Stage keys leave them out, so changing them (or
# upgrading from a release without them) reuses a finished training.
RUN_ONLY_FIELDS = ("gradient_checkpointing", "report_to", "save_steps")
TRAIN_FIELDS = frozenset(f.name for f in fields(TrainSettings))


def learning_identity(value: Any) -> Any:
    """Settings as `asdict` gives them, without the `RUN_ONLY_FIELDS` of every TrainSettings inside (a mapping with
    only TrainSettings' fields counts as one): a stage key's part."""
    if isinstance(value, dict):
        train = TRAIN_FIELDS >= value.keys() or TRAIN_FIELDS <= value.keys()
        return {k: learning_identity(v) for k, v in value.items() if not (train and k in RUN_ONLY_FIELDS)}
    if isinstance(value, (list, tuple)):
        return [learning_identity(v) for v in value]
    return value


@dataclass
class TrainResult:
    out_dir: Path
    samples: int
    optimizer_steps: int
    updates: int  # optimiser steps taken at a learning rate above zero
    train_loss: float
    losses: list[tuple[int, float]]  # (optimiser step, logged training loss)


class UpdateCounter(TrainerCallback):
    """Counts optimiser steps taken at a learning rate above zero: a warm-up's first step (lr 0) changes nothing."""

    def __init__(self):
        self.updates = 0

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is not None and any(group["lr"] > 0 for group in optimizer.param_groups):
            self.updates += 1


class StepsBar(TrainerCallback):
    """The trainer's optimiser steps on rait's own bar (`rait.terminal.progress`): the running stage's bar in
    `rait run`'s live view, a bar of its own in `rait train`, nothing in plain output."""

    def __init__(self, bar):
        self.bar = bar

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar.restart(state.max_steps)

    def on_step_end(self, args, state, control, **kwargs):
        self.bar.advance(1)


def train_with_bar(trainer, description: str = "train", resume_from_checkpoint: str | None = None):
    """`trainer.train()` showing rait's bar (`StepsBar`) instead of transformers' tqdm bar and its printed dict per
    logged step (the losses are in `trainer.state.log_history` and `train.json`; printed, they were a fifth of
    `rait run`'s output). No bar where the config disabled it (`progress=False`, `rait --quiet`)."""
    trainer.remove_callback(PrinterCallback)
    shown = trainer.pop_callback(ProgressCallback) is not None and trainer.is_world_process_zero()
    with progress(description, None, enabled=shown) as bar:
        trainer.add_callback(StepsBar(bar))
        try:
            return trainer.train(resume_from_checkpoint=resume_from_checkpoint)
        finally:
            trainer.pop_callback(StepsBar)


def read_training_rows(path: str | Path, weight_column: str = "weight") -> list[dict[str, Any]]:
    """Read training rows from JSONL, checking each (line numbers stay physical); a missing weight is 1."""
    path = Path(path)
    rows = []
    for line_no, row in iter_jsonl_objects(path):
        if problem := row_problem(row, weight_column):
            raise DataError(path, problem[1], line=line_no, field=problem[0])
        row.setdefault(weight_column, 1.0)
        rows.append(row)
    if not rows:
        raise DataError(path, "no training rows (the file is empty)")
    return rows


def run(
    settings: TrainSettings,
    data: str | Path | list[dict[str, Any]] | Dataset,
    out: str | Path,
    *,
    model: str | Path | None = DEFAULT_SPEC,
    progress: bool = True,
) -> TrainResult:
    """The train stage (`rait train`, `rait run` per method; also the rehearsal's fine-tune): fine-tune `model`
    on `data` (a built set's JSONL path, rows, or a Dataset) and save the result in `out`."""
    out = Path(out)
    data_path = Path(data) if isinstance(data, (str, Path)) else None
    if data_path is not None:
        data = read_training_rows(data_path)
    dataset = data if isinstance(data, Dataset) else Dataset.from_list(list(data))
    if len(dataset) == 0:
        raise DataError(data_path or "<train dataset>", "no training rows")

    _remove_unfinished_saves(out)
    if settings.method != "full":
        check_target_modules(model, settings.lora)
    resume = resume_point(out, settings, {"rows": identity_key(dataset.to_list()), "model": portable_spec(model)})
    base, tokenizer = _load_base(model, settings.method)
    counter = UpdateCounter()
    trainer = WeightedSFTTrainer(
        base,
        args=settings.sft_config(out, progress),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=settings.lora.peft_config() if settings.method != "full" else None,
        callbacks=[counter],
    )
    weights = trainer.train_dataset[trainer.args.weight_column]
    result = train_and_save(trainer, settings, out, model=model, data_path=data_path, counter=counter,
                            extra={"weight_column": trainer.args.weight_column,
                                   "samples_with_weight_not_1": int(sum(w != 1.0 for w in weights)),
                                   "resumed_from": Path(resume).name if resume else None},
                            resume_from_checkpoint=resume)
    if trainer.accelerator.is_main_process:
        remove_checkpoints(out)
    return result


def resume_point(out_dir: Path, settings: TrainSettings, inputs: dict[str, Any]) -> str | None:
    """The last mid-run checkpoint in `out_dir` to resume from, if this run saves checkpoints and the ones there were
    saved by a run of the same settings on the same inputs; checkpoints of another run are removed (resuming them
    would finish someone else's training). Records this run's identity for the next attempt."""
    from transformers.trainer_utils import get_last_checkpoint

    if not settings.save_steps:
        return None
    identity = canonical({"settings": asdict(settings), "inputs": inputs})
    record = out_dir / CHECKPOINT_IDENTITY
    try:
        same = json.loads(record.read_text(encoding="utf-8")) == identity
    except (OSError, ValueError):
        same = False
    if not same:
        remove_checkpoints(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(record, identity)
        return None
    return get_last_checkpoint(str(out_dir))


def remove_checkpoints(out_dir: Path) -> None:
    """The mid-run checkpoints of a finished training (its output is saved: they are spent) and their identity."""
    for checkpoint in out_dir.glob("checkpoint-*"):
        shutil.rmtree(checkpoint, ignore_errors=True)
    (out_dir / CHECKPOINT_IDENTITY).unlink(missing_ok=True)


def train_and_save(trainer, settings: TrainSettings, out_dir: Path, *, model: str | Path | None,
                   data_path: Path | None, counter: UpdateCounter, extra: dict[str, Any],
                   resume_from_checkpoint: str | None = None) -> TrainResult:
    """Train with a ready TRL trainer and save the adapter (or model) with `train.json`, as `load_trained` reads it.

    Shared by the SFT stage (`run`) and preference tuning (`rait.train.preference`); `extra` joins the summary.
    """
    tokenizer = trainer.processing_class
    start = time.perf_counter()
    output = train_with_bar(trainer, resume_from_checkpoint=resume_from_checkpoint)
    runtime = time.perf_counter() - start

    # Everything is saved into a staging folder first and moved in by `_commit_output`, so a killed save
    # never mixes new weights with an earlier run's summary (issue 17).
    # Under several processes every rank takes part in the save (a collective under FSDP/DeepSpeed) and the main
    # process alone writes, then the others wait for the output.
    main = trainer.accelerator.is_main_process
    staging = out_dir / f"{STAGING_PREFIX}{os.getpid()}"
    base_model, base_revision = portable_spec(model)
    if base_revision is not None:  # a Hugging Face id: the adapter's own config names it too, not this cache's path
        for adapter in getattr(trainer.model, "peft_config", {}).values():
            adapter.base_model_name_or_path, adapter.revision = base_model, base_revision
    try:
        saved = staging / ("model" if settings.method == "full" else "adapter")
        trainer.save_model(str(saved))
        merged = staging / "merged" if settings.merge else None
        if merged is not None and main:
            trainer.model.merge_and_unload().save_pretrained(merged)
            tokenizer.save_pretrained(merged)

        losses = [(int(entry["step"]), float(entry["loss"])) for entry in trainer.state.log_history if "loss" in entry]
        summary = {
            "base_model": base_model,
            "base_revision": base_revision,  # a Hugging Face id's snapshot commit, so that the same base loads back
            "method": settings.method,
            "saved": saved.name,
            "merged": merged.name if merged else None,
            "samples": len(trainer.train_dataset),
            **extra,
            "optimizer_steps": int(trainer.state.global_step),
            "updates_at_nonzero_lr": counter.updates,
            "epochs": float(trainer.state.epoch or 0.0),
            "train_loss": float(output.training_loss),
            "runtime_s": round(runtime, 2),
            "log_history": trainer.state.log_history,
        }
        if main:
            write_json(staging / SUMMARY_FILE, summary)
            write_manifest(staging / SUMMARY_FILE, stage="train", inputs={"data": data_path} if data_path else None,
                           model=model_fingerprint(model), settings=asdict(settings), seed=settings.seed,
                           extra={"processes": trainer.accelerator.num_processes})
            _commit_output(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    return TrainResult(out_dir, summary["samples"], summary["optimizer_steps"], counter.updates, summary["train_loss"],
                       losses)


def _commit_output(staging: Path, out_dir: Path) -> None:
    """Move a finished save from `staging` into `out_dir`, the earlier `train.json` out first and the new one in
    last: a kill at any moment leaves the earlier complete output, the new complete one, or no `train.json`
    (which `load_trained` reports as no training output), never a summary of other weights."""
    for name in (manifest_path(SUMMARY_FILE).name, SUMMARY_FILE):
        (out_dir / name).unlink(missing_ok=True)
    for name in OUTPUT_FOLDERS:
        target = out_dir / name
        if target.exists():
            trash = out_dir / f"{STAGING_PREFIX}old-{name}-{os.getpid()}"
            os.replace(target, trash)
            shutil.rmtree(trash)
        if (staging / name).exists():
            os.replace(staging / name, target)
    os.replace(manifest_path(staging / SUMMARY_FILE), manifest_path(out_dir / SUMMARY_FILE))
    os.replace(staging / SUMMARY_FILE, out_dir / SUMMARY_FILE)


def _remove_unfinished_saves(out_dir: Path) -> None:
    """Staging folders that a killed run left behind."""
    for leftover in out_dir.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)


def check_target_modules(model: str | Path | None, lora: LoraSettings) -> None:
    """Refuse LoRA target names the model does not have before its weights load (peft would fail only after)."""
    if isinstance(lora.target_modules, str):  # "all-linear" or a pattern: peft resolves it
        return
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    with init_empty_weights():  # the module tree on the meta device: no weights read, no memory
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(resolve_model_path(model)))
    linear = sorted({name.rsplit(".", 1)[-1] for name, module in skeleton.named_modules()
                     if isinstance(module, torch.nn.Linear)})
    missing = [name for name in lora.target_modules if name not in linear]
    if missing:
        raise SettingsError("target_modules", f"{missing[0]!r} is no linear layer of this model; it has "
                            f"{', '.join(linear)}")


def _load_base(model: str | Path | None, method: str):
    """The model to train: 4-bit NF4 for QLoRA (GPU + bitsandbytes), fp32 weights for full fine-tuning."""
    if method == "qlora":
        return _load_4bit(model), load_tokenizer(model)
    dtype = torch.float32 if method == "full" else None  # full FT keeps fp32 master weights; bf16 runs as autocast
    return load_model(model, dtype=dtype)


def _load_4bit(model: str | Path | None):
    """QLoRA's base: 4-bit NF4, double quantisation, bf16 compute (CRaFT's MCQA QLoRA recipe; docs/train.md)."""
    if not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
        raise RaitError("QLoRA needs a CUDA GPU and the bitsandbytes package (pip install bitsandbytes); on CPU use method 'lora'")
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=torch.bfloat16)
    base = AutoModelForCausalLM.from_pretrained(resolve_model_path(model), quantization_config=quantization,
                                                dtype=torch.bfloat16, device_map={"": 0}, local_files_only=True)
    return prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)


def load_trained(path: str | Path, dtype: torch.dtype | str | None = None, device: str | torch.device | None = None):
    """`(model, tokenizer)` from a `train` output folder (or any model folder), in eval mode.

    An adapter is applied to its base model and merged into it, so probing and evaluation
    run at the base model's speed.
    """
    path = Path(path)
    summary_path = path / SUMMARY_FILE
    if not summary_path.is_file():
        if (path / "config.json").is_file():
            return load_model(path, dtype=dtype, device=device)
        raise ModelError(f"{path} is neither a rait training output (no {SUMMARY_FILE}; an interrupted "
                         f"`rait train` leaves none: run it again) nor a model folder")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    if summary["merged"]:
        return load_model(path / summary["merged"], dtype=dtype, device=device)
    if summary["method"] == "full":
        return load_model(path / summary["saved"], dtype=dtype, device=device)
    return load_with_adapter(path / summary["saved"], summary["base_model"], summary.get("base_revision"), dtype, device)


def load_with_adapter(adapter: str | Path, base: str | Path, revision: str | None = None,
                      dtype: torch.dtype | str | None = None, device: str | torch.device | None = None):
    """`(model, tokenizer)`: the base model (a spec, at `revision`) with the LoRA adapter in `adapter` merged into
    it (peft's `merge_and_unload`), in eval mode."""
    from peft import PeftModel

    model, tokenizer = load_model(resolve_model_path(base, revision), dtype=dtype, device=device)
    return PeftModel.from_pretrained(model, adapter).merge_and_unload().eval(), tokenizer


def lora_base(path: str | Path) -> Path | None:
    """The base model folder of a LoRA `train` output that was not saved merged, else None."""
    summary_path = Path(path) / SUMMARY_FILE
    if not summary_path.is_file():
        return None
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    if summary["merged"] or summary["method"] != "lora":
        return None
    return resolve_model_path(summary["base_model"], summary.get("base_revision"))


@contextmanager
def adapter_merged(base, path: str | Path) -> Iterator:
    """`base` with the LoRA adapter of the `train` output `path` merged in; the base's own weights back on exit.

    One base model then serves every trained model of an evaluation stage: peft attaches the
    adapter and merges it (the weights `load_trained` would load, at the base model's speed),
    and on exit unmerges and removes it. Unmerging subtracts the update again, exact only up to
    rounding, so the weights it touched are copied back from a snapshot: the untouched model
    and each trained one see exactly the weights they would see loaded alone.
    """
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    summary = json.loads((Path(path) / SUMMARY_FILE).read_text(encoding="utf-8"))
    model = PeftModel.from_pretrained(base, Path(path) / summary["saved"])
    layers = [module.get_base_layer() for module in model.modules() if isinstance(module, LoraLayer)]
    originals = [layer.weight.detach().clone() for layer in layers]
    model.merge_adapter()
    try:
        yield model.eval()
    finally:
        model.unmerge_adapter()
        with torch.no_grad():
            for layer, weight in zip(layers, originals):
                layer.weight.copy_(weight)
        model.unload()
