"""Whether a `rait run` config fits a device: each stage's peak memory and passes, from the model's config alone.

`plan(config)` maps a config's settings onto the estimates of `rait.models.footprint`: for every stage the config
runs (probe, rehearsal, GRAIT's gradients, each kind of training it uses, evaluation) the memory beyond the process
itself (weights at the stage's width, trainable parameters, optimiser state, gradients, activations, KV cache,
logits), the forward and backward passes, and the config setting that changes the stage's peak most.
`rait plan` prints it; `check_fits` is `rait run`'s refusal of a config that cannot fit the device it runs on.

Sequence lengths are not in a config: they are the questions'. `Lengths` holds the token counts assumed per task
(measured on the shipped data with the default model's tokenizer, docs/plan.md); `rait plan` takes others.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

from rait.errors import RaitError
from rait.models import footprint as fp

MCQA_SPECS = ("mmlu:", "arc-c:", "arc-e:")


@dataclass(frozen=True)
class Lengths:
    """Tokens per sequence assumed by the estimate: an open-QA prompt (chat template, instruction, question) and a
    multiple-choice one without shots, the tokens each shot adds, and a training answer (capped by max_length)."""

    oeqa_prompt: int = 64
    mcqa_prompt: int = 160
    shot: int = 120
    answer: int = 16


@dataclass
class StageEstimate:
    """One stage's peak memory (bytes, by part), its forward/backward passes, and what to change when it does not
    fit (`setting`, a config key)."""

    stage: str
    what: str
    setting: str
    parts: dict[str, float]
    forwards: int | None = None
    backwards: int | None = None
    token_passes: float | None = None  # token forwards, a backward counted as two (for a time at a measured rate)

    @property
    def total(self) -> float:
        return sum(self.parts.values())


@dataclass(frozen=True)
class Device:
    """What the estimate runs against: CUDA keeps weights and activations in bf16 with fused attention; a CPU in
    fp32 (rait's default dtypes, `rait.models.loading`)."""

    kind: str  # "cuda" or "cpu"

    @property
    def width(self) -> int:
        return 2 if self.kind == "cuda" else 4


def plan(config, *, device: Device, lengths: Lengths = Lengths(), questions: dict[str, int] | None = None,
         shape: fp.ModelShape | None = None) -> list[StageEstimate]:
    """Every stage of `config` (a `PipelineConfig`) on `device`. `questions` maps a data spec to its number of
    records where the config does not say (a pool without `sample`); passes are left out where neither knows."""
    from rait.models import resolve_model_path
    from rait.select.methods import METHODS

    shape = shape or fp.read_shape(resolve_model_path(config.model))
    questions = questions or {}
    estimates: list[StageEstimate] = []
    for i, track in enumerate(config.tracks):
        here = f"tracks.{i}"
        methods = config.methods_of(track)
        kinds = _method_kinds(methods)
        task = _task_of(track)
        pool = track.pool.sample or questions.get(track.pool.data)
        estimates.append(_probe(shape, device, lengths, track, task, pool, f"{here}.probe"))
        train = config.train_of(track)
        if {"craft", "craft_wo_cer"} & set(methods):
            estimates.append(_training("rehearsal", shape, device, track.rehearsal.train, lengths, task,
                                       min(track.rehearsal.n, pool or track.rehearsal.n), f"{here}.rehearsal.train"))
            _point_at_set_key(config, estimates[-1], (f"{here}.train", "train"))
        if "grait" in methods:
            estimates.append(_grads(shape, device, track.grads, lengths, task, pool, f"{here}.grads"))
        if "sft" in kinds:
            n = track.build.n_total or ((track.build.n_vanilla or 0) + (track.build.n_idk or 0)) or None
            estimates.append(_training("train", shape, device, train, lengths, task, n, f"{here}.train"))
            _point_at_set_key(config, estimates[-1], ("train",))
        if "preference" in kinds:
            n = config.dpo.max_pairs or track.build.n_total or None
            estimates.append(_training("dpo", shape, device, config.dpo.train, lengths, task, n, "dpo.train",
                                       pairs=True))
            _point_at_set_key(config, estimates[-1], ("train",))
        if "rl" in kinds:
            estimates.append(_grpo(shape, device, config.grpo, lengths, task))
        if track.diagnose or any(METHODS[m].confidence == "sigma" for m in methods):
            # the probe of every validation and test item (σ, μ), with the pool's probe settings
            items = [test.sample or questions.get(test.data) for test in track.test_sets]
            items = None if None in items else sum(items) + (track.pool.validation or 0)
            estimates.append(replace(_probe(shape, device, lengths, track, task, items, f"{here}.probe"),
                                     stage="probe items"))
        trained = sum(METHODS[name].trains for name in methods)  # the rules reuse the evaluated models' answers
        estimates.append(_eval(shape, device, config, track, lengths, task, trained, questions))
    return estimates


def _point_at_set_key(config, estimate: StageEstimate, inherited_from: tuple[str, ...]) -> None:
    """Name the setting where the config file sets it: a training setting the stage inherits (the rehearsal's
    method from the global `train`) is changed where it is written, unless the stage's own section sets it."""
    section, name = estimate.setting.rsplit(".", 1)
    for candidate in (section, *inherited_from):
        if config.sets(_keys(f"{candidate}.{name}")):
            estimate.setting = f"{candidate}.{name}"
            return


def _keys(setting: str) -> tuple:
    """A dotted config key as `PipelineConfig.error` takes it: ("tracks", 0, "train", "method")."""
    return tuple(int(key) if key.isdigit() else key for key in setting.split("."))


def _method_kinds(methods: list[str]) -> set[str]:
    from rait.select.methods import METHODS

    return {METHODS[name].kind for name in methods}


def _task_of(track) -> str:
    """A pool's task from its spec (MMLU and ARC are multiple choice), or from the probe's MCQA settings."""
    spec = str(track.pool.data)
    if spec.startswith(MCQA_SPECS) or track.probe.scoring is not None or track.probe.shots is not None:
        return "mcqa"
    return "oeqa"


def _prompt(lengths: Lengths, task: str, shots: int = 0) -> int:
    return (lengths.mcqa_prompt if task == "mcqa" else lengths.oeqa_prompt) + shots * lengths.shot


def _weights(shape: fp.ModelShape, device: Device) -> dict[str, float]:
    return {"weights": fp.weight_bytes(shape, device.width)}


def _probe(shape, device, lengths, track, task, pool, setting) -> StageEstimate:
    try:
        settings = track.probe.for_task(task)
    except RaitError:  # a setting of the other task: the probe stage reports it at its config line
        settings = type(track.probe)().for_task(task)
    if task == "mcqa":
        prompt = _prompt(lengths, task, settings.shots)
        rows = settings.batch_size
        parts = _weights(shape, device) | {
            "activations (one forward)": fp.generation_peak_bytes(shape, rows, prompt, 0, device.width, False)}
        forwards = math.ceil(pool / rows) if pool else None
        return StageEstimate("probe", f"MCQA {settings.scoring}, {rows} rows x {prompt} tokens", f"{setting}.batch_size",
                             parts, forwards, 0, pool * prompt if pool else None)
    prompt, sequences = _prompt(lengths, task), settings.batch_size * settings.k
    parts = _weights(shape, device) | {
        "KV cache + prefill + logits": fp.generation_peak_bytes(shape, sequences, prompt, settings.max_new_tokens,
                                                                device.width, False)}
    calls = math.ceil(pool / settings.batch_size) if pool else None
    return StageEstimate("probe", f"{settings.batch_size} questions x k {settings.k}, {prompt}+{settings.max_new_tokens}"
                         " tokens", f"{setting}.batch_size", parts,
                         calls * (1 + settings.max_new_tokens) if calls else None, 0,
                         pool * settings.k * (prompt + settings.max_new_tokens) if pool else None)


def training_parts(shape, device, train, batch: int, sequence: int) -> tuple[dict[str, float], str]:
    """Weights, trainable state and activations of one training micro-batch of `batch` sequences."""
    lora = train.lora
    if train.method == "full":
        parts = {"weights + AdamW (fp32 master, grads, 2 moments)": fp.optimizer_state_bytes(shape.parameters)}
        r, targets, lowest = 0, 0, 0
    else:
        trainable = fp.lora_parameters(shape, lora.r, lora.target_modules, lora.layers)
        base = fp.qlora_weight_bytes(shape) if train.method == "qlora" else fp.weight_bytes(shape, device.width)
        parts = {"weights" + (" (NF4)" if train.method == "qlora" else ""): base,
                 f"LoRA {trainable / 1e6:.1f} M + AdamW": fp.optimizer_state_bytes(trainable)}
        r = lora.r
        targets = len(shape.linears) if lora.target_modules == "all-linear" else len(lora.target_modules)
        lowest = min(lora.layers) if lora.layers else 0
    width = device.width if train.method != "full" or device.kind == "cuda" else 4
    parts["activations" + (" (checkpointed)" if train.gradient_checkpointing else "")] = fp.training_activation_bytes(
        shape, batch, sequence, width, checkpointing=train.gradient_checkpointing, attention_scores=False,
        lowest_trained_layer=lowest, lora_r=r, lora_targets=targets, head_tiles=fp.LM_HEAD_TILES[device.kind])
    return parts, f"{train.method}, batch {batch} x {sequence} tokens"


def _training(stage, shape, device, train, lengths, task, samples, setting, pairs: bool = False) -> StageEstimate:
    sequence = min(train.max_length, _prompt(lengths, task) + lengths.answer)
    batch = train.batch_size * (2 if pairs else 1)  # DPO runs chosen and rejected in one batch
    parts, what = training_parts(shape, device, train, batch, sequence)
    micro = math.ceil(samples / train.batch_size) * train.epochs if samples else None
    if micro and train.max_steps > 0:
        micro = train.max_steps * train.grad_accum
    forwards = None if micro is None else int(micro * ((2 if pairs else 1) + train.gradient_checkpointing))
    token_passes = None if micro is None else micro * batch * sequence * (3 + train.gradient_checkpointing)
    fix = (f"{setting}.method" if train.method == "full" else
           f"{setting}.gradient_checkpointing" if not train.gradient_checkpointing else f"{setting}.batch_size")
    return StageEstimate(stage, what + (" (pairs)" if pairs else ""), fix, parts, forwards,
                         None if micro is None else int(micro), token_passes)


def _grads(shape, device, grads, lengths, task, pool, setting) -> StageEstimate:
    """GRAIT's warm-up (a LoRA fine-tune) and its feature pass: a forward and backward at the stage's batch size,
    with the per-sample gradients (batch, out, in) of one adapted weight at a time in fp32."""
    warmup = _training("grads", shape, device, grads.warmup, lengths, task, grads.n_rehearsal, f"{setting}.warmup")
    lora = grads.warmup.lora
    sequence = min(grads.max_length, _prompt(lengths, task) + lengths.answer)
    features, _ = training_parts(shape, device, replace(grads.warmup, batch_size=grads.batch_size),
                                  grads.batch_size, sequence)
    # one adapted weight's per-sample gradients at a time, projected and dropped (rait.grads.persample)
    names = list(shape.linears) if lora.target_modules == "all-linear" else lora.target_modules
    largest = max(lora.r * max(shape.linears[name]) for name in names if name in shape.linears)
    features["per-sample gradients (fp32)"] = grads.batch_size * largest * 4
    if sum(features.values()) > warmup.total:
        warmup.parts, warmup.setting = features, f"{setting}.batch_size"
        warmup.what = f"per-sample gradients, batch {grads.batch_size} x {sequence} tokens"
    if pool:  # a forward and a backward of every pool question in both label forms
        features_passes = 2 * math.ceil(pool / grads.batch_size)
        warmup.forwards = (warmup.forwards or 0) + features_passes
        warmup.backwards = (warmup.backwards or 0) + features_passes
    return warmup


def _grpo(shape, device, grpo, lengths, task) -> StageEstimate:
    """GRPO: the completions' generation, then a LoRA step on them (prompt + completion tokens each)."""
    train = grpo.train
    prompt = _prompt(lengths, task)
    parts, what = training_parts(shape, device, train, train.batch_size, prompt + grpo.max_completion_length)
    parts["generation (KV cache)"] = fp.kv_cache_bytes(shape, train.batch_size, prompt + grpo.max_completion_length,
                                                       device.width)
    steps = train.max_steps if train.max_steps > 0 else None
    return StageEstimate("grpo", f"{what}, G {grpo.num_generations}", "grpo.train.batch_size", parts,
                         steps and steps * train.grad_accum * (2 + grpo.max_completion_length),
                         steps and steps * train.grad_accum)


def _eval(shape, device, config, track, lengths, task, methods, questions) -> StageEstimate:
    ev = config.eval
    new = ev.tokens_for(task)
    prompt = _prompt(lengths, task)
    parts = _weights(shape, device) | {
        "KV cache + prefill + logits": fp.generation_peak_bytes(shape, ev.batch_size, prompt, new, device.width,
                                                                False, prefill_cache_kept=True)}
    items = [test.sample or questions.get(test.data) for test in track.test_sets]
    runs = len(ev.prompts) + methods * len(ev.method_prompts) * len(config.seeds or [0])
    known = None if None in items else sum(items)
    forwards = known and runs * sum(math.ceil(n / ev.batch_size) for n in items) * (1 + new)
    return StageEstimate("eval", f"batch {ev.batch_size}, {prompt}+{new} tokens, {runs} model/prompt runs",
                         "eval.batch_size", parts, forwards, 0, known and runs * known * (prompt + new))


def pool_sizes(config) -> dict[str, int]:
    """The number of records of every pool and test set the config does not sample, where they can be read here
    (a shipped dataset or a file); the others stay unknown and their passes are shown as such."""
    from rait.data.loaders import load_source

    sizes = {}
    specs = [track.pool for track in config.tracks] + [t for track in config.tracks for t in track.test_sets]
    for spec in {s.data for s in specs if not s.sample}:
        try:
            sizes[spec] = len(load_source(spec if ":" in spec else f"jsonl:{spec}"))
        except RaitError:
            continue
    return sizes


def peak(estimates: list[StageEstimate]) -> StageEstimate:
    return max(estimates, key=lambda e: e.total)


def device_memory() -> tuple[Device, float, str]:
    """The device `rait run` will use and the bytes it may fill: a CUDA device's total memory, or on a CPU the
    memory the kernel reports available now (MemAvailable), of which the estimate may use 80 %: the estimate
    leaves out the process itself (Python, torch, the tokenizer, the data), about 1 GB (docs/plan.md)."""
    import torch

    if torch.cuda.is_available():
        return Device("cuda"), float(torch.cuda.get_device_properties(0).total_memory), torch.cuda.get_device_name(0)
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            available = next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        pass
    return Device("cpu"), 0.8 * available, "CPU (available RAM)"


def check_fits(config) -> None:
    """Refuse, before any work, a config whose largest stage cannot fit the device this process runs on: one line
    naming the stage, its estimate, the memory there is, and the setting to change."""
    device, limit, name = device_memory()
    estimates = plan(config, device=device)
    worst = peak(estimates)
    if worst.total > limit:
        raise config.error(_keys(worst.setting), f"stage {worst.stage} needs about {worst.total / fp.GIB:.1f} GiB ({worst.what}) but "
                           f"{name} has {limit / fp.GIB:.1f} GiB: change {worst.setting} (`rait plan` shows every "
                           "stage)")
