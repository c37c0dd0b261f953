"""How `rait run` trains each kind of method: one small strategy per `Method.kind` of the registry.

The registry (`rait.select.methods.METHODS`) says what kind each method is; this module says, once per kind,
what a kind's training reads, which selections of the build it needs, which settings it trains with and what
it is compared with in the report. `TrackRun` asks the method's kind and has no branch of its own on kinds:

- "sft": weighted SFT (`rait.train.run`) on the training set its selector builds;
- "preference": DPO-RAIT (`rait.train.preference.run`) on the answer-vs-refusal pairs of another method's
  selection (`dpo.pairs_from`);
- "rl": GRPO-RAIT (`rait.train.grpo.run`) on the pool's questions, optionally continuing an SFT method's
  adapter (`grpo.start_from`);
- "none": no training (a rule on the untouched model's answers, `rait.evaluate.abstain`);
- "veto": no training of its own (a rule on a trained method's answers: the σ veto, `veto.base`).
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

from rait.report.results import REFERENCE as UNTOUCHED  # the untouched model's BASIC row, the THS reference
from rait.select.methods import METHODS

# Every link of the ordering the papers claim (CRaFT, GRAIT >= CorCer-RAIT >= Cor-RAIT > Van-Tuning), a minus b.
CLAIMED_ORDER = [("CRaFT", "CorCer-RAIT"), ("GRAIT", "CorCer-RAIT"), ("CorCer-RAIT", "Cor-RAIT"),
                 ("Cor-RAIT", "Van-Tuning"), ("CRaFT", "Cor-RAIT"), ("GRAIT", "Cor-RAIT"), ("CRaFT", "GRAIT")]


class Kind:
    """A kind of method: what its training needs and how it trains (the defaults: a method that trains nothing)."""

    trains = False
    builds = False  # its training set is its own selection in the build
    last = False  # trains after the others: it may continue one's adapter
    on_processes = True  # SFT and DPO train on the run's processes at the recipe's global batch (docs/distributed.md)
    compared_with: tuple[str, ...] = (UNTOUCHED, "Cor-RAIT", "CRaFT")  # besides SFT tuning's two main recipes

    def selections(self, method: str, config) -> list[str]:
        """The methods whose training sets the build must write for this one."""
        return []

    def start(self, config) -> str | None:
        """The method whose trained adapter this one continues, if any."""
        return None

    def data(self, method: str, config, runs: Path, datasets: dict[str, Path], pool: Path) -> Path | None:
        """What the training reads: a training set of the build (`datasets`, by method), or the pool."""
        raise NotImplementedError

    def setup(self, method: str, track_run, seed: int, start_key: str | None) -> tuple[Any, dict]:
        """(settings, recipe): the settings it trains with and what of them its stage key holds."""
        raise NotImplementedError

    def entry(self, start_adapter: Path | None) -> Callable:
        """The training entry point, `fit(settings, data, out, model=...)`."""
        raise NotImplementedError

    def per_process(self, settings, split: Callable):
        """`settings` with its batch split over the run's processes (`split`: `Stages.per_process`)."""
        return settings

    def batch(self, config, track_run) -> tuple[tuple, int, int] | None:
        """(config keys, batch size, gradient accumulation) of the recipe that must split over the processes."""
        return None

    def check(self, track_run) -> None:
        """Refuse, before any work, a track this kind cannot train on (its prepared pool: `track_run.records`)."""

    def rewards(self, folder: Path) -> list[dict]:
        """The reward curve a training logged in `folder` (the report's GRPO-RAIT plot), if the kind logs one."""
        return []

    def untouched_rows(self, track_run, method: str, confidence: dict, references: dict) -> list[dict]:
        """A rule's rows on the untouched model's answers (abstention without training)."""
        return track_run.no_training(method, confidence, references)

    def trained_rows(self, track_run, method: str, evaluated: list[dict], confidence: dict, references: dict
                     ) -> list[dict]:
        """A rule's rows on one seed's trained models (`evaluated`: their rows)."""
        return []


class SFT(Kind):
    trains, builds = True, True
    compared_with = (UNTOUCHED,)

    def selections(self, method, config):
        return []  # its own selection, in `builds`

    def data(self, method, config, runs, datasets, pool):
        return datasets.get(method)

    def setup(self, method, track_run, seed, start_key):
        settings = replace(track_run.config.train_of(track_run.track), seed=seed)  # the loop's (owned_by_the_run)
        return settings, asdict(settings)

    def entry(self, start_adapter):
        from rait.train import run

        return run

    def per_process(self, settings, split):
        return split(settings)

    def batch(self, config, track_run):
        train = config.train_of(track_run.track)
        where = (*track_run.keys, "train") if config.sets((*track_run.keys, "train")) else ("train",)
        return where, train.batch_size, train.grad_accum


class Preference(Kind):
    trains = True

    def selections(self, method, config):
        return [config.dpo.pairs_from]

    def data(self, method, config, runs, datasets, pool):
        return runs / "build" / "dpo" / f"{config.dpo.pairs_from}.jsonl"

    def setup(self, method, track_run, seed, start_key):
        dpo = track_run.config.dpo
        settings = replace(dpo, train=replace(dpo.train, seed=seed))
        return settings, asdict(settings)

    def entry(self, start_adapter):
        from rait.train.preference import run

        return run

    def per_process(self, settings, split):
        return replace(settings, train=split(settings.train))

    def batch(self, config, track_run):
        where = ("dpo", "train") if config.sets(("dpo", "train")) else ("train",)
        return where, config.dpo.train.batch_size, config.dpo.train.grad_accum


class RL(Kind):
    trains, last = True, True
    on_processes = False  # sampled per rank: N processes could not be checked against one

    def start(self, config):
        return config.grpo.start_from

    def data(self, method, config, runs, datasets, pool):
        return pool

    def setup(self, method, track_run, seed, start_key):
        build, grpo = track_run.track.build, track_run.config.grpo
        settings = replace(grpo, train=replace(grpo.train, seed=seed), prompt=build.prompt, system=build.system,
                           refusal_mode=track_run.config.eval.refusal_mode)
        return settings, {**asdict(settings), "start": start_key}

    def entry(self, start_adapter):
        from rait.train.grpo import run

        def fit(settings, data, out, model):
            return run(settings, data, out, model=model, start_adapter=start_adapter)
        return fit

    def check(self, track_run):
        from rait.errors import RaitError
        from rait.train.grpo import training_questions

        try:
            training_questions(track_run.records, track_run.config.grpo, track_run.track.pool.data)
        except RaitError as err:
            raise track_run.config.error((*track_run.keys, "pool"), str(err)) from err

    def rewards(self, folder):
        from rait.artifacts import read_jsonl

        return read_jsonl(folder / "rewards.jsonl")


class Veto(Kind):
    """The σ veto: a rule on the answers of a trained method (`veto.base`), given per seed."""

    def check(self, track_run):
        base, methods = track_run.config.veto.base, track_run.config.methods_of(track_run.track)
        if base not in methods:
            raise track_run.config.error(("veto", "base"), f"the σ veto gives back {base!r}'s refusals, which track "
                                         f"{track_run.track.name!r} does not train: add it to the methods")

    def untouched_rows(self, track_run, method, confidence, references):
        return []

    def trained_rows(self, track_run, method, evaluated, confidence, references):
        return track_run.veto(method, evaluated, confidence, references)


KINDS: dict[str, Kind] = {"sft": SFT(), "preference": Preference(), "rl": RL(), "none": Kind(), "veto": Veto()}


def kind_of(method: str) -> Kind:
    return KINDS[METHODS[method].kind]


def comparisons() -> list[tuple[str, str]]:
    """Paired comparisons reported for every test set (a minus b), from the registry: each SFT method against the
    untouched model, every link of the papers' claimed ordering, then each other method against the untouched
    model and SFT tuning's two main recipes."""
    sft = [(m.label, b) for m in METHODS.values() if KINDS[m.kind].builds for b in KINDS[m.kind].compared_with]
    other = [(m.label, b) for m in METHODS.values() if not KINDS[m.kind].builds for b in KINDS[m.kind].compared_with]
    return sft + CLAIMED_ORDER + other
