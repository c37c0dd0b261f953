"""The `rait run` config: one small YAML file from a model and a pool to the papers' table.

    model: default                      # any local HF folder, or 'default' (SmolLM2-135M-Instruct)
    seed: 0
    seeds: [0, 1, 2]                    # optional training seeds: rows become means, intervals cover seeds
    methods: [van_tuning, cor_rait, corcer_rait, craft_wo_cer, craft, rtuning_unknown, grait]
    train: {epochs: 3, learning_rate: 2.0e-4, lora: {r: 64, alpha: 16}}   # rait.train.TrainSettings
    eval: {prompts: [basic, refuse], method_prompts: [refuse], n_boot: 1000}
    tracks:
      - name: facts
        pool: {data: "facts:train", sample: 80, validation: 40}   # rait.data.DataSettings; validation: held out
        probe: {k: 10}                  # rait.probe.ProbeSettings
        rehearsal: {n: 40, mu_min: 0.7, sigma_min: 0.7}
        grads: {n_rehearsal: 40, warmup: {epochs: 4}, dims: [8192]}   # rait.grads.GradsSettings
        build: {n_total: 40}
        test_sets:
          - {name: facts-id, data: "facts:test_id", sample: 40, domain: ID}
          - {name: nq, data: "nq:dev", sample: 40, domain: OOD}

Every section is a plain mapping of the stage's own settings, so the YAML names the same
fields as the Python API. An unknown key is reported with the file, line and key.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from rait.errors import DataError, RaitError, SettingsError, check_count
from rait.data.stage import DataSettings
from rait.probe.stage import ProbeSettings
from rait.data.testsets import TestSet
from rait.grads.features import GradsSettings
from rait.rehearse import RehearseSettings
from rait.train.grpo import GRPO_TRAIN, GRPOSettings
from rait.train.preference import DPOSettings
from rait.select.methods import DEFAULT_METHODS, METHODS, method_of
from rait.select.stage import BuildSettings

ALL_METHODS = DEFAULT_METHODS  # what a config that names no method trains


@dataclass
class EvalConfig:
    """Greedy evaluation: the untouched model under `prompts` (Init-Basic, Init-Refuse), trained ones under `method_prompts`."""

    prompts: list[str] = field(default_factory=lambda: ["basic", "refuse"])
    method_prompts: list[str] = field(default_factory=lambda: ["refuse"])
    batch_size: int = 16
    n_boot: int = 1000
    max_new_tokens: dict[str, int] = field(default_factory=dict)  # per task: {"oeqa": 50, "mcqa": 32}
    refusal_mode: str = "paper"  # or "keywords": also "I'm not sure" and the like (R-Tuning's refusals)

    def __post_init__(self) -> None:
        check_count("batch_size", self.batch_size, 1)
        check_count("n_boot", self.n_boot, 1)


@dataclass
class TrackConfig:
    """One pool with its in- and out-of-domain test sets, e.g. MMLU -> ARC-Challenge."""

    name: str
    pool: DataSettings
    test_sets: list[TestSet]
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    exemplars: str = "mmlu:val"
    rehearsal: RehearseSettings = field(default_factory=RehearseSettings)
    grads: GradsSettings = field(default_factory=GradsSettings)
    build: BuildSettings = field(default_factory=BuildSettings)
    train: dict[str, Any] = field(default_factory=dict)
    methods: list[str] | None = None
    diagnose: bool = False  # probe the test items too: AUROC of μ for Init-Basic's correctness (diagnosis.md)


@dataclass
class PipelineConfig:
    tracks: list[TrackConfig]
    model: str = "default"
    seed: int = 0
    # Training seeds: each gets its own build sampling, training order and evaluation (<track>/seed-<s>/);
    # pool, probe, rehearsal, gradients and test sets stay on `seed`. Rows are means over the seeds.
    seeds: list[int] | None = None
    methods: list[str] = field(default_factory=lambda: list(ALL_METHODS))
    train: dict[str, Any] = field(default_factory=dict)
    eval: EvalConfig = field(default_factory=EvalConfig)
    dpo: DPOSettings = field(default_factory=DPOSettings)  # the recipe of `dpo_rait` (rait.train.preference)
    grpo: GRPOSettings = field(default_factory=GRPOSettings)  # the recipe of `grpo_rait` (rait.train.grpo)
    title: str = "rait results"
    source: tuple[Path, Any] | None = field(default=None, repr=False, compare=False,
                                                    metadata={"yaml": False})  # file and YAML tree, for errors

    def methods_of(self, track: TrackConfig) -> list[str]:
        return list(track.methods if track.methods is not None else self.methods)

    def merged_train(self, track: TrackConfig) -> dict[str, Any]:
        """The training settings of the track's methods: the global ones, then the track's (`lora` merged key by key)."""
        return merge_settings(self.train, track.train)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "PipelineConfig":
        path = Path(path)
        if not path.is_file():
            raise DataError(path, "config file not found")
        text = path.read_text(encoding="utf-8")
        try:
            raw = yaml.safe_load(text) or {}
            root = yaml.compose(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            raise DataError(path, f"not valid YAML: {getattr(err, 'problem', err)}",
                            line=mark.line + 1 if mark else None) from err
        _inherit(raw, lambda keys, message: DataError(path, message, line=_line_of(root, keys),
                                                      field=".".join(map(str, keys))))
        config = _build(cls, raw, path, root, ())
        config.source = (path, root)
        _check(config)
        return config

    def settings(self, keys: tuple, factory: Callable[..., Any], values: dict[str, Any]):
        """factory(**values), with a bad or unknown setting reported at its place in the config file."""
        try:
            return factory(**values)
        except TypeError as err:
            raise self.error(keys, f"bad setting: {err}") from err
        except SettingsError as err:
            place = (*keys, err.field) if err.field in values else keys
            raise self.error(place, err.message) from err
        except RaitError as err:
            raise self.error(keys, str(err)) from err

    def sets(self, keys: tuple) -> bool:
        """Whether the config file itself has the entry `keys` (not only a default or an inherited value)."""
        return self.source is not None and _find(self.source[1], keys)[1]

    def error(self, keys: tuple, message: str) -> DataError:
        """A DataError pointing at the config entry `keys` (e.g. ("tracks", 0, "probe", "k"))."""
        path, root = self.source or ("<config>", None)
        return DataError(path, message, line=_line_of(root, keys) if root is not None else None,
                         field=".".join(map(str, keys)))


def merge_settings(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = {**base, **override}
    if isinstance(base.get("lora"), dict) and isinstance(override.get("lora"), dict):
        merged["lora"] = {**base["lora"], **override["lora"]}
    return merged


# ------------------------------------------------------------------ YAML -> dataclasses, with lines


def _inherit(raw: Any, error: Callable[[tuple, str], DataError]) -> None:
    """What a track's stages take from the top level, written into the raw mapping before it is read: the
    rehearsal's fine-tune is the global `train`, then the track's, then `rehearsal.train` (`lora` merged key by
    key), DPO-RAIT's is the global `train`, then `dpo.train`, and GRPO-RAIT's its own (`GRPO_TRAIN`, then
    `grpo.train`: an RL recipe shares little with SFT's); the rehearsal draw, the fine-tunes and the
    gradient projection are seeded by `seed` unless the config sets their own. The training settings are
    checked here, each at its own line."""
    from rait.train import TrainSettings

    if not isinstance(raw, dict) or not isinstance(raw.get("tracks"), list):
        return
    seed, train = raw.get("seed", 0), raw.get("train") or {}

    def checked(keys: tuple, values: dict) -> dict:
        try:
            TrainSettings(**values)
        except (TypeError, RaitError) as err:
            message = err.message if isinstance(err, SettingsError) else str(err)
            raise error(keys, f"bad setting: {message}") from err
        return values

    if not isinstance(train, dict):
        return
    checked(("train",), {"seed": seed, **train})
    dpo = raw.get("dpo") or {}
    if isinstance(dpo, dict) and isinstance(dpo.get("train") or {}, dict):  # DPO-RAIT: the global recipe, then its own
        merged = {"seed": seed, **merge_settings(train, dpo.get("train") or {})}
        raw["dpo"] = {**dpo, "train": checked(("dpo", "train") if "train" in dpo else ("train",), merged)}
    grpo = raw.get("grpo") or {}
    if isinstance(grpo, dict) and isinstance(grpo.get("train") or {}, dict):  # GRPO-RAIT: its own recipe, seeded
        own = {"seed": seed, **merge_settings(GRPO_TRAIN, grpo.get("train") or {})}
        raw["grpo"] = {**grpo, "train": checked(("grpo", "train") if "train" in grpo else ("grpo",), own)}
    for i, track in enumerate(raw["tracks"]):
        if not isinstance(track, dict) or not isinstance(track.get("train") or {}, dict):
            continue
        own = merge_settings(train, track.get("train") or {})
        checked(("tracks", i, "train"), {"seed": seed, **own})
        rehearsal, grads = track.get("rehearsal") or {}, track.get("grads") or {}
        if isinstance(rehearsal, dict) and isinstance(rehearsal.get("train") or {}, dict):
            merged = {"seed": seed, **merge_settings(own, rehearsal.get("train") or {})}
            keys = ("tracks", i, "rehearsal", "train") if "train" in rehearsal else ("tracks", i, "train")
            track["rehearsal"] = {"seed": seed, **rehearsal, "train": checked(keys, merged)}
        if isinstance(grads, dict):
            track["grads"] = {"seed": seed, **grads}

_NESTED = {
    "tracks": TrackConfig, "pool": DataSettings, "probe": ProbeSettings, "rehearsal": RehearseSettings, "grads": GradsSettings,
    "build": BuildSettings, "eval": EvalConfig, "test_sets": TestSet, "dpo": DPOSettings, "grpo": GRPOSettings,
}
# Settings the pipeline sets itself: the methods (top level or per track) and the seed (`seed`, `seeds`).
_SET_BY_PIPELINE = {DataSettings: ("seed",), BuildSettings: ("methods", "seed"), GradsSettings: ("prompt", "system", "refusal"),
                    GRPOSettings: ("prompt", "system", "refusal_mode")}


def _line_of(root, keys: tuple) -> int | None:
    """1-based line of the YAML node at `keys` (mapping keys and list indices), or of its closest parent."""
    return _find(root, keys)[0]


def _find(root, keys: tuple) -> tuple[int | None, bool]:
    """(the line of the deepest node on the path `keys`, whether the whole path is in the YAML tree)."""
    node, line = root, None
    for key in keys:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == key), None)
            if match is None:
                return line, False
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            return line, False
    return line, True


def _build(cls, raw: Any, path: Path, root, keys: tuple):
    where = ".".join(str(k) for k in keys) or "top level"
    if not isinstance(raw, dict):
        raise DataError(path, f"{where} must be a mapping", line=_line_of(root, keys), field=where)
    fields = {f.name: f for f in dataclasses.fields(cls)
              if f.metadata.get("yaml", True) and f.name not in _SET_BY_PIPELINE.get(cls, ())}
    unknown = [k for k in raw if k not in fields]
    if unknown:
        raise DataError(path, f"unknown setting {unknown[0]!r} in {where} (known: {', '.join(fields)})",
                        line=_line_of(root, (*keys, unknown[0])), field=".".join(map(str, (*keys, unknown[0]))))
    missing = [n for n, f in fields.items() if n not in raw and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise DataError(path, f"{where} needs {missing[0]!r}", line=_line_of(root, keys),
                        field=".".join(map(str, (*keys, missing[0]))))
    values = {}
    for name, value in raw.items():
        nested = _NESTED.get(name)
        if nested is not None and name in ("tracks", "test_sets"):
            # test_sets may be empty when the pool holds out a validation set (a recipe search)
            empty_ok = name == "test_sets" and bool((raw.get("pool") or {}).get("validation"))
            if not isinstance(value, list) or not (value or empty_ok):
                raise DataError(path, f"{name} must be a non-empty list", line=_line_of(root, (*keys, name)),
                                field=".".join(map(str, (*keys, name))))
            value = [_build(nested, item, path, root, (*keys, name, i)) for i, item in enumerate(value)]
        elif nested is not None:
            value = _build(nested, value or {}, path, root, (*keys, name))
        values[name] = value
    try:
        return cls(**values)
    except SettingsError as err:  # a settings class's own check, reported at the setting's line
        place = (*keys, err.field) if err.field in values else keys
        raise DataError(path, f"{err.field}: {err.message}", line=_line_of(root, place),
                        field=".".join(map(str, place))) from err
    except (TypeError, RaitError) as err:
        raise DataError(path, f"bad setting: {err}", line=_line_of(root, keys), field=where) from err


# ------------------------------------------------------------------ what a stage would refuse, checked up front

# Track and test-set names become folder names; test sets are in-domain or out-of-domain ("VAL" is the
# pool's own validation split, which the pipeline names).
FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
DOMAINS = ("ID", "OOD")


def _check(config: PipelineConfig) -> None:
    """Everything a stage would refuse, refused at its config line before any model is loaded (issue 17:
    duplicate track names once failed at the report, after all training; `k: 2.5` inside torch)."""
    from rait.evaluate.runner import EvalSettings
    err = config.error
    if not config.methods:
        raise err(("methods",), "names no method; list at least one (e.g. [cor_rait])")
    config.methods = _known_methods(config, ("methods",), config.methods)
    pairs_from = _known_methods(config, ("dpo", "pairs_from"), [config.dpo.pairs_from])[0]
    if METHODS[pairs_from].kind != "sft":
        raise err(("dpo", "pairs_from"), f"{pairs_from!r} builds no training set; name a method that selects one "
                  "(e.g. craft, cor_rait)")
    config.dpo.pairs_from = pairs_from
    if config.grpo.start_from is not None:
        start = _known_methods(config, ("grpo", "start_from"), [config.grpo.start_from])[0]
        if METHODS[start].kind != "sft":
            raise err(("grpo", "start_from"), f"{start!r} trains no SFT adapter to start from; name an SFT method "
                      "(e.g. cor_rait)")
        config.grpo.start_from = start
    if config.seeds is not None:
        if (not config.seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in config.seeds)
                or len(set(config.seeds)) != len(config.seeds)):
            raise err(("seeds",), f"must be a non-empty list of distinct whole numbers, got {config.seeds!r}")
    ev = config.eval
    for name in ("prompts", "method_prompts"):
        for prompt in getattr(ev, name):
            config.settings(("eval", name), EvalSettings, {"prompt": prompt, "refusal_mode": ev.refusal_mode})
    tracks: dict[str, int] = {}
    for i, track in enumerate(config.tracks):
        keys = ("tracks", i)
        if not isinstance(track.name, str) or not FOLDER_NAME.fullmatch(track.name):
            raise err((*keys, "name"), f"track name {track.name!r} must be a plain folder name (letters, digits, "
                      "'.', '_', '-')")
        if track.name in tracks:
            raise err((*keys, "name"), f"track name {track.name!r} is already used by track {tracks[track.name] + 1}; "
                      "each track writes its own folder")
        tracks[track.name] = i
        if track.methods is not None and not track.methods:
            raise err((*keys, "methods"), "names no method; list at least one or leave the key out")
        tests: set[str] = {"validation"} if track.pool.validation else set()
        for j, test in enumerate(track.test_sets):
            if not isinstance(test.name, str) or not FOLDER_NAME.fullmatch(test.name):
                raise err((*keys, "test_sets", j, "name"), f"test set name {test.name!r} must be a plain folder name")
            if test.name in tests:
                raise err((*keys, "test_sets", j, "name"), f"test set name {test.name!r} is used twice in this track"
                          + (" ('validation' is the pool's held-out split)" if test.name == "validation" else ""))
            tests.add(test.name)
            if test.domain not in DOMAINS:
                raise err((*keys, "test_sets", j, "domain"), f"domain {test.domain!r} is not one of {', '.join(DOMAINS)}")
        if track.methods is not None:
            track.methods = _known_methods(config, (*keys, "methods"), track.methods)


def _known_methods(config: PipelineConfig, keys: tuple, methods: list[str]) -> list[str]:
    """The registered names of `methods` (aliases resolved); an unknown one is reported at its line."""
    names = []
    for i, name in enumerate(methods):
        try:
            names.append(method_of(name).name)
        except RaitError as err:
            raise config.error((*keys, i) if keys[-1] == "methods" else keys, str(err)) from err
    return names
