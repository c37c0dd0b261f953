"""CRaFT's rehearsal and knowledge flow (CRaFT paper; docs/train.md): what fine-tuning alone does to each question.

1. `select_rehearsal`: questions the model already answers correctly and certainly (open QA:
   μ ≥ 0.995 and σ ≥ 0.995, i.e. all samples right and alike; MCQA: raw gold-letter
   probability > 0.99), at most n of them drawn with a seed. The target is the gold answer
   (what the released code trained on) or, for open QA, the model's own most frequent
   correct answer (what the paper describes).
2. `rehearse`: fine-tune on them, re-probe the *whole* pool with the probe that built the
   initial table (same prompts, samples and seeds), and merge Δμ = μ_rehearsal − μ by
   question id (the released code misaligned this merge).
3. `run`: the same from a knowledge-table file. It rebuilds the probe settings
   from the table's manifest and checks that the table was probed with the model being
   rehearsed, so "identical settings" is enforced, not assumed. This is what `rait
   rehearse` runs.

A rehearsal must change the model: the number of optimiser steps is logged, and a run with
no step at a learning rate above zero is an error (packing plus large accumulation gave the
released OEQA rehearsal about one update, possibly zero; and the first step of a linear
warm-up runs at learning rate 0).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from rait.artifacts import manifest_path, read_manifest, sha256_tree, write_json, write_jsonl, write_manifest
from rait.data.records import QARecord
from rait.errors import DataError, RaitError, SettingsError, check_choice, check_count, check_number
from rait.models import DEFAULT_SPEC, model_fingerprint
from rait.probe.table import check_table_pool, merge_flow, read_table, single_task, validate_table, write_table
from rait.prompts import answer_target, training_example
from rait.train.finetune import TrainSettings, load_trained
from rait.train.finetune import run as train

TARGETS = ("gold", "own")

# probe(model, tokenizer, records, out) -> the knowledge table of `records` (rait.probe.table), also written to `out`
Probe = Callable[[Any, Any, list[QARecord], Path], pd.DataFrame]


def rehearsal_recipe() -> TrainSettings:
    """CRaFT's MCQA rehearsal recipe on LoRA (r 64, alpha 16, dropout 0.1, all linear layers; lr 2e-4,
    3 epochs, global batch 16), without packing: `rait.train.TrainSettings`' defaults."""
    return TrainSettings()


@dataclass
class RehearseSettings:
    """The rehearsal stage's settings: which questions count as already known, how many, the target, the fine-tune.

    Known (CRaFT's `triviaqa_rehearsal_instructions.py`, `mmlu_rehearsal_instructions.py`): open QA
    μ ≥ `mu_min` and σ ≥ `sigma_min`; MCQA raw gold-letter probability strictly above `gold_prob_min`.
    `seed` draws the rehearsal questions; `train` is the fine-tune (a mapping overrides single fields of
    `rehearsal_recipe`).
    """

    n: int = 1000
    target: str = "gold"
    mu_min: float = 0.995
    sigma_min: float = 0.995
    gold_prob_min: float = 0.99
    seed: int = 0
    train: TrainSettings = field(default_factory=rehearsal_recipe)

    def __post_init__(self) -> None:
        check_count("n", self.n, 1)
        check_choice("target", self.target, TARGETS)
        for name in ("mu_min", "sigma_min", "gold_prob_min"):
            check_number(name, getattr(self, name), 0, 1)
        if isinstance(self.train, dict):
            self.train = TrainSettings(**self.train)

    def known(self, table: pd.DataFrame, task: str) -> pd.Series:
        if task == "mcqa":
            if "gold_prob" not in table.columns:
                raise DataError("<knowledge table>", "MCQA rehearsal selects by the raw gold probability", field="gold_prob")
            return table["gold_prob"] > self.gold_prob_min
        return (table["mu"] >= self.mu_min) & (table["sigma"] >= self.sigma_min)


def own_answer(row: pd.Series) -> str | None:
    """The model's most frequent correct sample (first seen wins a tie), or None if none was correct."""
    correct = [s.strip() for s, ok in zip(row["samples"], row["sample_correct"]) if ok and s.strip()]
    return Counter(correct).most_common(1)[0][0] if correct else None


def select_rehearsal(table: pd.DataFrame, records: Sequence[QARecord],
                     settings: RehearseSettings | None = None) -> list[dict[str, Any]]:
    """Training rows (``id``, ``prompt``, ``completion``) for the rehearsal fine-tune.

    Up to `settings.n` known questions drawn at random with `settings.seed` from the table sorted
    by id (so the table's row order never matters), under the plain prompt (open QA: the bare
    question; MCQA: BASIC hint and options). ``target="own"`` trains open-QA questions on the
    model's own most frequent correct answer (gold when no sample was correct); MCQA always uses
    the gold letter, which is the model's own top answer whenever its probability exceeds 0.99.
    """
    settings = settings or RehearseSettings()
    target = settings.target
    table = validate_table(table.reset_index(drop=True)).assign(id=lambda t: t["id"].astype(str))
    task = single_task(table)
    pool = table[settings.known(table, task)].sort_values("id", kind="mergesort")
    chosen = pool.sample(n=min(settings.n, len(pool)), random_state=settings.seed)
    by_id = {record.id: record for record in records}
    rows = []
    for _, row in chosen.iterrows():
        record = by_id.get(row["id"])
        if record is None:
            raise DataError("<pool records>", f"knowledge-table question {row['id']!r} is not among the pool records", field="id")
        answer = own_answer(row) if target == "own" and task == "oeqa" else None
        rows.append({"id": record.id, **training_example(record, "basic", answer or answer_target(record))})
    return rows


@dataclass
class RehearsalResult:
    flow: pd.DataFrame  # the initial table plus mu_rehearsal and delta_mu, by id
    rehearsal_samples: int
    optimizer_steps: int
    updates: int  # optimiser steps at a learning rate above zero
    out_dir: Path


def rehearse(
    table: pd.DataFrame,
    records: Sequence[QARecord],
    out_dir: str | Path,
    probe: Probe,
    *,
    model: str | Path | None = DEFAULT_SPEC,
    settings: RehearseSettings | None = None,
    progress: bool = True,
) -> RehearsalResult:
    """Rehearsal fine-tune of `model`, re-probe of the whole pool, and the knowledge flow by id.

    Writes into `out_dir`: ``rehearsal_data.jsonl`` (the training rows), ``model/`` (the
    rehearsal fine-tune, see `rait.train.train`), ``rehearsed_table.jsonl`` (the re-probe),
    ``flow_table.jsonl`` (+ manifest; the initial table with ``mu_rehearsal`` and
    ``delta_mu``), ``flow_summary.json`` and ``delta_mu.png``. `probe` writes the re-probe
    table ``rehearsed_table.jsonl`` itself (with its own manifest).
    """
    out_dir = Path(out_dir)
    settings = settings or RehearseSettings()
    by_id = {record.id: record for record in records}
    if missing := [i for i in table["id"].astype(str) if i not in by_id]:
        raise DataError("<pool records>", f"knowledge-table question {missing[0]!r} is not among the pool records", field="id")
    rows = select_rehearsal(table, records, settings)
    if not rows:
        raise RaitError(f"no question passes the rehearsal filter (mu_min {settings.mu_min}, sigma_min "
                        f"{settings.sigma_min}, gold_prob_min {settings.gold_prob_min}); the model knows nothing "
                        "certain in this pool")
    write_jsonl(out_dir / "rehearsal_data.jsonl", rows)

    result = train(settings.train, rows, out_dir / "model", model=model, progress=progress)
    if result.updates == 0:
        raise RaitError(f"the rehearsal fine-tune made zero optimiser updates ({result.optimizer_steps} steps, none at a "
                        "learning rate above zero), so it is no rehearsal; raise the epochs or lower batch_size x grad_accum")

    tuned, tokenizer = load_trained(out_dir / "model")
    pool = [by_id[i] for i in table["id"].astype(str)]
    after = probe(tuned, tokenizer, pool, out_dir / "rehearsed_table.jsonl")
    after = validate_table(after.reset_index(drop=True), "<rehearsal probe>")
    flow = merge_flow(table.assign(id=table["id"].astype(str)), after.assign(id=after["id"].astype(str)))

    flow_path = write_table(flow, out_dir / "flow_table.jsonl")
    summary = flow_summary(flow)
    counts = {"rehearsal_samples": len(rows), "optimizer_steps": result.optimizer_steps, "updates": result.updates}
    write_json(out_dir / "flow_summary.json", {**summary, **counts})
    write_manifest(flow_path, stage="rehearse", inputs={"rehearsal_data": out_dir / "rehearsal_data.jsonl"},
                   settings=asdict(settings), seed=settings.seed, extra=counts)
    plot_delta_mu(flow, out_dir / "delta_mu.png")
    return RehearsalResult(flow, len(rows), result.optimizer_steps, result.updates, out_dir)


def probe_manifest(table_path: Path, task: str) -> dict[str, Any]:
    """The manifest `rait probe` wrote next to a knowledge table: rehearsal re-probes with the settings and model
    recorded there, so a table without it (or with another stage's) is refused before any work."""
    path = manifest_path(table_path)
    if not path.is_file():
        raise DataError(table_path, f"its manifest {path.name} is missing: rehearsal re-probes with the settings "
                        "`rait probe` recorded there, so give the table next to the manifest the probe wrote")
    try:
        manifest = read_manifest(table_path)
    except ValueError as err:  # bad JSON or UTF-8
        raise DataError(path, f"not a readable manifest ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("stage") != "probe":
        stage = manifest.get("stage") if isinstance(manifest, dict) else None
        raise DataError(path, f"the manifest of stage {stage!r}, not of a probe", field="stage")
    for field_, kind in (("task", str), ("model", dict), ("settings", dict)):
        if not isinstance(manifest.get(field_), kind):
            raise DataError(path, f"missing or not a {kind.__name__}", field=field_)
    if manifest["task"] != task:
        raise DataError(path, f"a probe of task {manifest['task']!r}, but the table holds {task} rows", field="task")
    return manifest


def probe_settings(manifest: dict[str, Any]):
    """The `MCQASettings` / `OpenSettings` a knowledge table was probed with, from its manifest."""
    from rait.probe import MCQASettings, OpenSettings

    if manifest.get("stage") != "probe":
        raise RaitError(f"the table's manifest is from stage {manifest.get('stage')!r}, not a probe")
    kind = MCQASettings if manifest["task"] == "mcqa" else OpenSettings
    names = {f.name for f in fields(kind)}
    return kind(**{k: v for k, v in manifest["settings"].items() if k in names})


def knowledge_probe(settings, exemplars: Sequence[QARecord] = (), model_info: dict | None = None, progress: bool = True) -> Probe:
    """A `Probe` that runs rait's knowledge probe (`probe_mcqa` / `probe_open`) with fixed settings."""
    from rait.probe import HFBackend, MCQASettings, probe_mcqa, probe_open

    def probe(model, tokenizer, records: list[QARecord], out: Path) -> pd.DataFrame:
        backend = HFBackend(model, tokenizer)
        if isinstance(settings, MCQASettings):
            return probe_mcqa(backend, records, out, exemplars=exemplars, settings=settings, model_info=model_info, progress=progress)
        return probe_open(backend, records, out, settings=settings, model_info=model_info, progress=progress)

    return probe


def run(
    settings: RehearseSettings,
    table_path: str | Path,
    records: Sequence[QARecord],
    out: str | Path,
    *,
    model: str | Path | None = DEFAULT_SPEC,
    exemplars: Sequence[QARecord] = (),
    progress: bool = True,
) -> RehearsalResult:
    """The rehearsal stage: `rehearse` on a knowledge-table file, re-probing with the settings in its manifest.

    `records` is the probed pool and `exemplars` the MCQA shot questions the initial probe
    was given (e.g. MMLU val); `model` must be the model the table was probed with.
    """
    table_path, out = Path(table_path), Path(out)
    table = read_table(table_path)
    check_table_pool(table, records, table_path)
    manifest = probe_manifest(table_path, single_task(table))
    probed_with = manifest["model"].get("weights_sha256")
    base = model_fingerprint(model)
    if probed_with != base["weights_sha256"]:
        raise RaitError(f"{table_path} was probed with another model than {base['path']}; the flow must start from the probed model")
    try:
        trained, probe_with = out / "model", probe_settings(manifest)
    except (SettingsError, TypeError) as err:
        raise DataError(manifest_path(table_path), f"not settings of the probe: {err}", field="settings") from None

    def probe(tuned, tokenizer, pool: list[QARecord], out: Path) -> pd.DataFrame:
        # the manifest names the model really probed: the base plus this run's fine-tune
        info = {"base": base, "trained": str(trained), "trained_sha256": sha256_tree(trained)}
        return knowledge_probe(probe_with, exemplars, info, progress)(tuned, tokenizer, pool, out)

    return rehearse(table, records, out, probe, model=model, settings=settings, progress=progress)


def flow_summary(flow: pd.DataFrame, threshold: float = 0.5) -> dict[str, Any]:
    """How correctness moved: mean Δμ and the shares that rose, fell or stayed, overall and by initial μ.

    The paper's statistic is the share of questions with μ < 0.5 whose correctness rose (69 % for
    LLaMA3-8B on MMLU, CRaFT paper, AAAI'25).
    """

    def shares(part: pd.DataFrame) -> dict[str, Any]:
        d = part["delta_mu"]
        return {"n": int(len(d)), "mean_delta_mu": float(d.mean()) if len(d) else None,
                "rose": float((d > 0).mean()) if len(d) else None, "fell": float((d < 0).mean()) if len(d) else None,
                "same": float((d == 0).mean()) if len(d) else None}

    return {"all": shares(flow), f"mu_below_{threshold}": shares(flow[flow["mu"] < threshold]),
            f"mu_at_least_{threshold}": shares(flow[flow["mu"] >= threshold])}


def plot_delta_mu(flow: pd.DataFrame, path: str | Path, title: str = "Knowledge flow after rehearsal", threshold: float = 0.5) -> Path:
    """Histogram of Δμ, stacked by initial correctness (below / at least `threshold`)."""
    from matplotlib.figure import Figure

    bins = np.linspace(-1.05, 1.05, 22)  # width 0.1, centred on the open-QA steps of 1/10
    low, high = flow[flow["mu"] < threshold]["delta_mu"], flow[flow["mu"] >= threshold]["delta_mu"]
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.subplots()
    ax.hist([low, high], bins=bins, stacked=True, label=[f"initial μ < {threshold}", f"initial μ ≥ {threshold}"])
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("Δμ = μ after rehearsal − μ before")
    ax.set_ylabel("questions")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
