"""The gradient stage: projected per-sample LoRA gradient features of every pool question.

For each item (question id, label form) we take the gradient of that sample's token-mean
cross-entropy over its completion w.r.t. the warm-up LoRA weights, turn it into the chosen
gradient type (sgd / sign / adam), project it to every d in `dims` and store it
L2-normalised. The label forms are GRAIT's two: the answer form (the gold answer) and the
refusal form ("I don't know."), as in the release's `VAN.jsonl` and `IDK.jsonl`.

Multi-GPU (`accelerate launch -m rait grads ...`): every rank builds the same batch plan
and computes the batches k with k % world_size == rank; the projection is seeded per
parameter, not per process, so the merged store equals the single-process store.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.profiler import record_function

from rait.data.records import QARecord
from rait.errors import RaitError, SettingsError, check_choice, check_count
from rait.grads.adam import GRADIENT_TYPES, AdamMoments, GradientTransform
from rait.grads.persample import Batch, PerSampleGradients, backward_per_sample, collate, encode_example
from rait.grads.projection import PROJECTORS, Projector, make_projector
from rait.grads.store import FeatureStore, plan_batches, shard_batches
from rait.grads.warmup import warmup_settings
from rait.prompts import answer_target, refusal_text, training_example
from rait.train.finetune import TrainSettings

LABEL_FORMS = ("answer", "refusal")


@dataclass(frozen=True)
class GradExample:
    """One sample to take a gradient of: a TRL prompt/completion pair tagged with its question id and label form."""

    id: str
    form: str
    prompt: str | list[dict]
    completion: str | list[dict]


@dataclass(frozen=True)
class GradsSettings:
    """The gradient stage's settings: everything that changes the features, recorded in the store's plan.

    Defaults follow GRAIT/LESS (adam features, d = 8192, seed 0, no bias correction)
    except the projector: a CountSketch instead of TRAK's dense Rademacher matrix, which is
    infeasible at 8B scale without the unmaintained fast_jl kernel (projection.py).

    `prompt`, `system` and `refusal` are the build's (`rait.select.BuildSettings`): the features
    are those of the rows GRAIT's build will train on, so `rait run` hands the build's values
    to this stage, and `rait grads` takes them as options. The build's τ is not among them: the
    store holds every pool question, and GRAIT splits it at τ when it builds.
    `n_rehearsal` and `warmup` are the warm-up run whose adapter and Adam moments define the
    features (`rait.grads.warmup`; a mapping overrides single fields of GRAIT's recipe).
    """

    gradient_type: str = "adam"
    dims: tuple[int, ...] = (8192,)
    projector: str = "countsketch"
    distribution: str = "rademacher"
    seed: int = 0
    batch_size: int = 8
    max_length: int = 2048
    bias_correction: bool = False
    prompt: str = "refuse"
    system: str | None = None
    refusal: str | None = None
    n_rehearsal: int = 1000
    warmup: TrainSettings = field(default_factory=warmup_settings)

    def __post_init__(self):
        from rait.prompts.render import PROMPT_NAMES

        check_choice("gradient_type", self.gradient_type, GRADIENT_TYPES)
        check_choice("projector", self.projector, PROJECTORS)
        check_choice("prompt", self.prompt, PROMPT_NAMES)
        check_count("batch_size", self.batch_size, 1)
        check_count("n_rehearsal", self.n_rehearsal, 1)
        if isinstance(self.warmup, dict):  # override single fields of GRAIT's recipe (and of its LoRA), keep the rest
            recipe = dict(self.warmup)
            if isinstance(recipe.get("lora"), dict):
                recipe["lora"] = {**asdict(warmup_settings().lora), **recipe["lora"]}
            try:
                object.__setattr__(self, "warmup", warmup_settings(**recipe))
            except SettingsError as err:  # the warm-up's, not the trained model's: `rait grads --warmup-epochs`
                raise SettingsError(f"warmup_{err.field}", err.message) from None
        if isinstance(self.dims, int):
            object.__setattr__(self, "dims", (self.dims,))
        if not self.dims:
            raise SettingsError("dims", "needs at least one projection dimension")
        for dim in self.dims:
            check_count("dims", dim, 1)
        object.__setattr__(self, "dims", tuple(sorted(set(int(d) for d in self.dims))))

    def as_dict(self) -> dict:
        return {**asdict(self), "dims": list(self.dims)}


class FeatureExtractor:
    """Context manager: `extract(batch)` → {d: (batch, d)} projected (not yet normalised) features."""

    def __init__(self, model, transform: GradientTransform, projector: Projector):
        self.model = model
        self.transform = transform
        self.projector = projector
        self._sketch: torch.Tensor | None = None
        self._capture = PerSampleGradients(model, self._consume)
        transform.check_names(list(self._capture.linears))

    def __enter__(self) -> FeatureExtractor:
        self._capture.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._capture.__exit__(*exc)

    def _consume(self, name: str, grad: torch.Tensor) -> None:
        with record_function("rait.grads.transform"):
            feature = self.transform(name, grad).reshape(grad.shape[0], -1)
        with record_function("rait.grads.project"):
            part = self.projector.project(name, feature)
        self._sketch = part if self._sketch is None else self._sketch + part

    def __call__(self, batch: Batch) -> dict[int, torch.Tensor]:
        self._sketch = None
        backward_per_sample(self.model, self._capture, batch)
        sketch, self._sketch = self._sketch, None
        return self.projector.split(sketch)


def build_store(
    model,
    tokenizer,
    examples: Sequence[GradExample],
    folder: str | Path,
    settings: GradsSettings = GradsSettings(),
    moments: AdamMoments | None = None,
    rank: int = 0,
    world_size: int = 1,
    record: dict | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> FeatureStore:
    """Compute this rank's share of the store's batches (skipping finished ones) and return the store.

    `model` is the base model with the warm-up LoRA adapter loaded trainable. `record` is
    extra provenance (model, adapter) written into the plan, so a resume with another
    model is refused. Call `store.merge()` once every rank is done.
    """
    bad_forms = sorted({e.form for e in examples} - set(LABEL_FORMS))
    if bad_forms:
        raise RaitError(f"unknown label forms {bad_forms} (use {', '.join(LABEL_FORMS)})")
    keys = [(e.id, e.form) for e in examples]
    if len(set(keys)) != len(keys):
        raise RaitError("the same (id, form) appears twice among the gradient examples")
    encoded = [encode_example(tokenizer, e.prompt, e.completion, settings.max_length) for e in examples]
    batches = plan_batches([len(e.input_ids) for e in encoded], settings.batch_size)
    items = [{"id": e.id, "form": e.form} for e in examples]
    store = FeatureStore.create(folder, items, batches, {**settings.as_dict(), **(record or {})})

    transform = GradientTransform(settings.gradient_type, moments, settings.bias_correction)
    projector = make_projector(settings.projector, settings.dims, settings.seed, settings.distribution)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    with FeatureExtractor(model, transform, projector) as extract:
        for k in shard_batches(len(batches), rank, world_size):
            if store.is_done(k):
                continue
            batch = collate([encoded[i] for i in batches[k]], pad_id).to(device)
            store.write_batch(k, extract(batch))
            if on_batch is not None:
                on_batch(len(batches[k]))
    return store


def gradient_examples(records: list[QARecord], prompt: str = "refuse", system: str | None = None,
                      forms: tuple[str, ...] = ("answer", "refusal"), refusal: str | None = None) -> list[GradExample]:
    """Both label forms of every pool question, rendered exactly as `build_dataset` renders training rows.

    Answer form: the gold answer (letter for MCQA); refusal form: the task's "I don't know"
    (or `refusal`). Use the same `prompt`/`system` as the final training set so that the
    gradients are those of the samples that will be trained on.
    """
    examples = []
    for record in records:
        for form in forms:
            target = answer_target(record) if form == "answer" else (refusal or refusal_text(record.task))
            row = training_example(record, prompt, target, system=system)
            examples.append(GradExample(record.id, form, row["prompt"], row["completion"]))
    return examples
