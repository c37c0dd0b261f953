"""The `rait run` config: one small YAML file from a model and a pool to the papers' table.

    model: default                      # a local HF folder, an id in the HF cache (org/name), or 'default' (SmolLM2)
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
fields as the Python API. An unknown key, a key given twice, or a value of the wrong type is reported
with the file, line and key before any work (issue 34: `seed: 2020-01-01` became a date, `title: [a, b]`
failed at the report, a repeated key silently kept the last).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, get_args

import yaml

from rait.errors import MAX_SEED, DataError, RaitError, SettingsError, check_count
from rait.data.stage import DataSettings
from rait.probe.stage import ProbeSettings
from rait.data.testsets import TestSet
from rait.evaluate.abstain import VetoSettings
from rait.evaluate.runner import EvalSettings
from rait.grads.features import GradsSettings
from rait.rehearse import RehearseSettings
from rait.train.finetune import TrainSettings
from rait.train.grpo import GRPO_TRAIN, GRPOSettings
from rait.train.preference import DPOSettings
from rait.select.methods import DEFAULT_METHODS, METHODS, method_of
from rait.select.stage import BuildSettings

ALL_METHODS = DEFAULT_METHODS  # what a config that names no method trains
MAX_N_BOOT = 100_000  # 100x the papers' 1000; each resample is a pass over every item of every row


@dataclass(frozen=True)
class EvalConfig(EvalSettings):
    """The `eval:` section: the `EvalSettings` every evaluation of the run shares (`max_new_tokens` one for every
    task or one per task, e.g. {"oeqa": 24}), and which prompts are evaluated: the untouched model under `prompts`
    (Init-Basic, Init-Refuse), trained ones under `method_prompts`. Each evaluation's `prompt` and bootstrap
    `seed` are the run's (`settings`), so the section does not take them."""

    prompts: list[str] = field(default_factory=lambda: ["basic", "refuse"])
    method_prompts: list[str] = field(default_factory=lambda: ["refuse"])

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_boot > MAX_N_BOOT:
            raise SettingsError("n_boot", f"must be at most {MAX_N_BOOT} (the papers take 1000), got {self.n_boot}")

    def settings(self, prompt: str, task: str | None, seed: int) -> EvalSettings:
        """One evaluation's settings: this section's under `prompt` and the bootstrap `seed`, with the number of new
        tokens for `task` (None for no task: the evaluation's own default per task)."""
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(EvalSettings)}
        tokens = self.budget(task) if task is not None else None
        return EvalSettings(**{**shared, "prompt": prompt, "seed": seed, "max_new_tokens": tokens})


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
    # The track's methods' recipe: the global `train`, then the track's own (`lora` merged key by key), resolved at
    # load (`_inherit`); None (a config built in Python without one) is the global recipe.
    train: TrainSettings | None = None
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
    train: TrainSettings = field(default_factory=TrainSettings)
    eval: EvalConfig = field(default_factory=EvalConfig)
    dpo: DPOSettings = field(default_factory=DPOSettings)  # the recipe of `dpo_rait` (rait.train.preference)
    grpo: GRPOSettings = field(default_factory=GRPOSettings)  # the recipe of `grpo_rait` (rait.train.grpo)
    veto: VetoSettings = field(default_factory=VetoSettings)  # the rule of `sigma_veto` (rait.evaluate.abstain)
    title: str = "rait results"
    source: tuple[Path, Any] | None = field(default=None, repr=False, compare=False,
                                                    metadata={"yaml": False})  # file and YAML tree, for errors

    def methods_of(self, track: TrackConfig) -> list[str]:
        return list(track.methods if track.methods is not None else self.methods)

    def train_of(self, track: TrackConfig) -> TrainSettings:
        """The training settings of the track's methods: the global ones, then the track's (`lora` merged key by key),
        seeded by `seed` until the run's loop sets each training's own."""
        return track.train if track.train is not None else self.train

    @classmethod
    def from_yaml(cls, path: str | Path) -> "PipelineConfig":
        path = Path(path)
        if not path.is_file():
            raise DataError(path, "config file not found")
        raw, root = _read_yaml(path)

        def fail(keys: tuple, message: str) -> DataError:
            return DataError(path, message, line=_line_of(root, keys), field=".".join(map(str, keys)))

        if isinstance(raw, dict) and "seed" in raw:  # every stage's seed defaults to it: checked at its own line
            _check_seed(raw["seed"], ("seed",), fail)
        _inherit(raw, fail)
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
            place = _place(keys, err.field, values)
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

# A config is tens of entries (the largest shipped one a few hundred); an alias bomb (`b: [*a, *a, ...]` nested)
# expands to billions, so the tree is walked with its aliases expanded and refused past this many.
MAX_NODES = 100_000


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader without the implicit date: `seed: 2020-01-01` stays the text it is, for the
    setting's own check to refuse at its line (a date object once reached json.dumps after the work)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def _read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """(the config as Python values, its YAML tree for lines): UTF-8 text, each key once per mapping, aliases
    expanding to at most `MAX_NODES` entries; anything else is a `DataError` at its line."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(path, f"cannot be read ({err.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(path, f"not UTF-8 text (byte {data[err.start]:#04x}); save the config as UTF-8",
                        line=data[: err.start].count(b"\n") + 1) from None
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is not None:
            _check_tree(path, root)
        raw = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise DataError(path, f"not valid YAML: {getattr(err, 'problem', err)}",
                        line=mark.line + 1 if mark else None) from None
    except RecursionError:
        raise DataError(path, "not valid YAML: nested too deeply for a config") from None
    finally:
        loader.dispose()
    return raw or {}, root


def _check_tree(path: Path, root: yaml.Node) -> None:
    """Refuse a key given twice in one mapping (YAML keeps the last one silently) and a tree that its aliases
    expand past `MAX_NODES` (walked as the program would walk it: an alias counts every time it is used)."""
    stack, seen = [(root, ())], 0
    while stack:
        node, keys = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise DataError(path, f"the YAML expands to more than {MAX_NODES} entries through its aliases (*name); "
                            "write the config out without them", line=node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            first: dict[tuple, int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    line = key.start_mark.line + 1
                    if (key.tag, key.value) in first:
                        raise DataError(path, f"{key.value!r} is given twice in one mapping (first on line "
                                        f"{first[key.tag, key.value]}); YAML would silently keep the last",
                                        line=line, field=".".join(map(str, (*keys, key.value))))
                    first[key.tag, key.value] = line
                stack += [(key, keys), (value, (*keys, key.value))]
        elif isinstance(node, yaml.SequenceNode):
            stack += [(item, (*keys, i)) for i, item in enumerate(node.value)]


def _check_seed(value: Any, keys: tuple, fail: Callable[[tuple, str], DataError]) -> None:
    """A seed every seeded library takes (numpy and scikit-learn stop at 2**32 - 1; a date or text is none)."""
    try:
        check_count("seed", value, 0, MAX_SEED)
    except SettingsError as err:
        raise fail(keys, err.message) from None


def _mismatch(value: Any, hint: Any) -> tuple[tuple, str, Any] | None:
    """(where inside `value`, what it should be, what it is) when `value` does not fit the annotation `hint`,
    else None. YAML gives str, int, float, bool, None, lists and mappings: a list stands for a tuple or sequence,
    an int for a float, a mapping for a settings class (whose own fields `_check_types` checks)."""
    origin, args = typing.get_origin(hint), get_args(hint)
    if hint is Any or origin is typing.Literal:
        return None
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        found = [_mismatch(value, arg) for arg in args if arg is not type(None)]
        if any(problem is None for problem in found):
            return None
        deepest = max(found, key=lambda problem: len(problem[0]))
        if deepest[0]:  # a list or mapping of the right kind with one wrong entry: name that entry
            return deepest
        wanted = " or ".join(problem[1] for problem in found)
        return (), wanted + (" (or left out)" if type(None) in args else ""), value
    if dataclasses.is_dataclass(hint):
        return None if isinstance(value, dict) else ((), "a mapping of settings", value)
    scalars = {bool: ("true or false", lambda v: isinstance(v, bool)),
               int: ("a whole number", lambda v: isinstance(v, int) and not isinstance(v, bool)),
               float: ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
               str: ("a string", lambda v: isinstance(v, str))}
    if hint in scalars:
        wanted, fits = scalars[hint]
        if hint is int and fits(value) and abs(value) >= 2**63:  # past what numpy and torch hold
            return (), "a whole number of at most 19 digits", value
        return None if fits(value) else ((), wanted, value)
    if origin in (list, tuple, collections.abc.Sequence):
        item = args[0] if args else Any
        if origin is tuple and not isinstance(value, list) and _mismatch(value, item) is None:
            return None  # a tuple setting takes one value for a list of one (`dims: 8192`)
        if not isinstance(value, list):
            return (), f"a list ({_describe(item)} each)", value
        for i, entry in enumerate(value):
            if (problem := _mismatch(entry, item)) is not None:
                return (i, *problem[0]), problem[1], problem[2]
        return None
    if origin is dict:
        if not isinstance(value, dict):
            return (), "a mapping", value
        for key, entry in value.items():
            if (problem := _mismatch(key, args[0])) is not None:
                return (key,), f"a mapping with {_describe(args[0])} keys", key
            if (problem := _mismatch(entry, args[1])) is not None:
                return (key, *problem[0]), problem[1], problem[2]
    return None


def _describe(hint: Any) -> str:
    """What `_mismatch` asks of a value of type `hint`, e.g. "a string"."""
    probe = _mismatch(object(), hint)
    return probe[1] if probe else "anything"


def _check_types(cls, raw: dict, keys: tuple, fail: Callable[[tuple, str], DataError]) -> None:
    """Every entry of `raw` against the field of `cls` it sets, a nested settings mapping (a `train`'s `lora`)
    field by field: a value of the wrong YAML type is refused at its own line, not passed on to fail later inside a
    stage (`model: 42`, `diagnose: "yes"`). Every `seed` fits the seeded libraries."""
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls) if f.metadata.get("yaml", True)]
    where = ".".join(map(str, keys))
    for name, value in raw.items():
        if name not in fields:
            raise fail((*keys, name), f"unknown setting {name!r} in {where} (known: {', '.join(fields)})")
        hint = hints[name]
        nested = next((arg for arg in (hint, *get_args(hint)) if dataclasses.is_dataclass(arg)), None)
        if nested is not None and isinstance(value, dict):
            _check_types(nested, value, (*keys, name), fail)
        elif name == "seed" and value is not None:
            _check_seed(value, (*keys, name), fail)
        elif name == "seeds" and isinstance(value, list):
            for i, seed in enumerate(value):
                _check_seed(seed, (*keys, name, i), fail)
        elif (problem := _mismatch(value, hint)) is not None:
            place, wanted, got = problem
            shown = repr(got) if len(repr(got)) <= 60 else repr(got)[:57] + "..."
            raise fail((*keys, name, *place), f"must be {wanted}, got {shown}")


def _inherit(raw: Any, error: Callable[[tuple, str], DataError]) -> None:
    """What a track's stages take from the top level, written into the raw mapping before it is read: a track's
    methods train by the global `train`, then the track's (`lora` merged key by key), the rehearsal's fine-tune by
    that, then `rehearsal.train`, DPO-RAIT by the global `train`, then `dpo.train`, and GRPO-RAIT by its own
    (`GRPO_TRAIN`, then `grpo.train`: an RL recipe shares little with SFT's); the rehearsal draw and fine-tune and
    the gradient projection are seeded by `seed` unless the config sets their own, the methods' trainings always
    by the run's loop (`owned_by_the_run`). Every `train` is then complete, checked here at its own lines, and read
    as `TrainSettings`."""
    if not isinstance(raw, dict) or not isinstance(raw.get("tracks"), list):
        return
    seed, train = raw.get("seed", 0), raw.get("train") or {}

    def checked(keys: tuple, values: dict) -> dict:
        _check_types(TrainSettings, values, keys, error)
        try:
            TrainSettings(**values)
        except (TypeError, RaitError) as err:
            if isinstance(err, SettingsError):  # at the setting's own line where this section sets it
                place = _place(keys, err.field, values)
                raise error(place, err.message) from err
            raise error(keys, f"bad setting: {err}") from err
        return values

    if not isinstance(train, dict):
        return
    owned_by_the_run(train, ("train",), error)
    raw["train"] = checked(("train",), {"seed": seed, **train})
    dpo = raw.get("dpo") or {}
    if isinstance(dpo, dict) and isinstance(dpo.get("train") or {}, dict):  # DPO-RAIT: the global recipe, then its own
        owned_by_the_run(dpo.get("train") or {}, ("dpo", "train"), error)
        merged = {"seed": seed, **merge_settings(train, dpo.get("train") or {})}
        raw["dpo"] = {**dpo, "train": checked(("dpo", "train") if "train" in dpo else ("train",), merged)}
    grpo = raw.get("grpo") or {}
    if isinstance(grpo, dict) and isinstance(grpo.get("train") or {}, dict):  # GRPO-RAIT: its own recipe, seeded
        owned_by_the_run(grpo.get("train") or {}, ("grpo", "train"), error)
        own = {"seed": seed, **merge_settings(GRPO_TRAIN, grpo.get("train") or {})}
        raw["grpo"] = {**grpo, "train": checked(("grpo", "train") if "train" in grpo else ("grpo",), own)}
    for i, track in enumerate(raw["tracks"]):
        if not isinstance(track, dict) or not isinstance(track.get("train") or {}, dict):
            continue
        owned_by_the_run(track.get("train") or {}, ("tracks", i, "train"), error)
        own = merge_settings(train, track.get("train") or {})
        track["train"] = checked(("tracks", i, "train") if "train" in track else ("train",), {"seed": seed, **own})
        rehearsal, grads = track.get("rehearsal") or {}, track.get("grads") or {}
        if isinstance(rehearsal, dict) and isinstance(rehearsal.get("train") or {}, dict):
            merged = {"seed": seed, **merge_settings(own, rehearsal.get("train") or {})}
            keys = ("tracks", i, "rehearsal", "train") if "train" in rehearsal else ("tracks", i, "train")
            track["rehearsal"] = {"seed": seed, **rehearsal, "train": checked(keys, merged)}
        if isinstance(grads, dict):
            track["grads"] = {"seed": seed, **grads}


def owned_by_the_run(train: dict, keys: tuple, error: Callable[[tuple, str], DataError]) -> None:
    """The methods' trainings take their seed from the run's loop (`seed`, or each of `seeds`), SFT, DPO and
    GRPO alike: a `seed` in a section they train by is refused, since the loop would have to either override it
    or be overridden by it (SFT once let it win, so every seed of `seeds` trained the same model). The
    rehearsal's fine-tune runs once per track, outside the loop: `rehearsal.train.seed` stays its own."""
    if "seed" in train:
        raise error((*keys, "seed"), "the methods' trainings are seeded by the run's `seed` (each of `seeds` when it "
                    "is set), the same for SFT, DPO and GRPO; set it there (rehearsal.train.seed seeds the rehearsal)")


_NESTED = {
    "tracks": TrackConfig, "pool": DataSettings, "probe": ProbeSettings, "rehearsal": RehearseSettings, "grads": GradsSettings,
    "build": BuildSettings, "eval": EvalConfig, "test_sets": TestSet, "dpo": DPOSettings, "grpo": GRPOSettings,
    "veto": VetoSettings, "train": TrainSettings,
}
# Settings the pipeline sets itself: the methods (top level or per track) and the seed (`seed`, `seeds`).
_SET_BY_PIPELINE = {DataSettings: ("seed",), BuildSettings: ("methods", "seed"), GradsSettings: ("prompt", "system", "refusal"),
                    GRPOSettings: ("prompt", "system", "refusal_mode"), EvalConfig: ("prompt", "seed")}


def _place(keys: tuple, field: str, values: dict) -> tuple:
    """Where a settings class's error on `field` points: at the entry (`max_new_tokens.oeqa` is an entry inside
    `max_new_tokens`) where the section sets it, else at the section."""
    parts = tuple(field.split("."))
    return (*keys, *parts) if parts[0] in values else keys


def _line_of(root, keys: tuple) -> int | None:
    """1-based line of the YAML node at `keys` (mapping keys and list indices), or of its closest parent."""
    return _find(root, keys)[0]


def _find(root, keys: tuple) -> tuple[int | None, bool]:
    """(the line of the deepest node on the path `keys`, whether the whole path is in the YAML tree)."""
    node, line = root, None
    for key in keys:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == str(key)), None)
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
    _check_types(cls, {name: value for name, value in raw.items() if name not in _NESTED}, keys,
                 lambda place, message: DataError(path, message, line=_line_of(root, place),
                                                  field=".".join(map(str, place))))
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
        place = _place(keys, err.field, values)
        raise DataError(path, f"{err.field}: {err.message}", line=_line_of(root, place),
                        field=".".join(map(str, place))) from err
    except (TypeError, RaitError) as err:
        raise DataError(path, f"bad setting: {err}", line=_line_of(root, keys), field=where) from err


# ------------------------------------------------------------------ what a stage would refuse, checked up front

# Track and test-set names become folder names (and parts of the stage folders' paths below them, hence the
# length); test sets are in-domain or out-of-domain, or "VAL": a further validation set that recipes are chosen
# on like the pool's own validation split (which the pipeline names "validation"), e.g. relations held out of
# training and tests (docs/transfer.md). A VAL set may share no question with an ID or OOD set.
FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
DOMAINS = ("ID", "OOD", "VAL")
VALIDATION = "validation"


def _check(config: PipelineConfig) -> None:
    """Everything a stage would refuse, refused at its config line before any model is loaded (issue 17:
    duplicate track names once failed at the report, after all training; `k: 2.5` inside torch)."""
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
    base = _known_methods(config, ("veto", "base"), [config.veto.base])[0]
    if METHODS[base].kind != "sft":
        raise err(("veto", "base"), f"{base!r} trains no SFT model whose refusals the veto could give back; name an "
                  "SFT method (e.g. cor_rait)")
    config.veto = replace(config.veto, base=base)
    if config.seeds is not None:
        if not config.seeds or len(set(config.seeds)) != len(config.seeds):
            raise err(("seeds",), f"must be a non-empty list of distinct whole numbers, got {config.seeds!r}")
    ev = config.eval
    for name in ("prompts", "method_prompts"):
        for i, prompt in enumerate(getattr(ev, name)):
            config.settings(("eval", name, i), lambda **_: ev.settings(prompt, None, config.seed), {"prompt": prompt})
            if prompt in getattr(ev, name)[:i]:
                raise err(("eval", name, i), f"prompt {prompt!r} is given twice (each is evaluated once)")
    tracks: dict[str, int] = {}
    for i, track in enumerate(config.tracks):
        keys = ("tracks", i)
        if not FOLDER_NAME.fullmatch(track.name):
            raise err((*keys, "name"), f"track name {_shown(track.name)} must be a plain folder name of at most 64 "
                      "characters (letters, digits, '.', '_', '-')")
        if track.name in tracks:
            raise err((*keys, "name"), f"track name {track.name!r} is already used by track {tracks[track.name] + 1}; "
                      "each track writes its own folder")
        tracks[track.name] = i
        if track.methods is not None and not track.methods:
            raise err((*keys, "methods"), "names no method; list at least one or leave the key out")
        tests: set[str] = set()
        for j, test in enumerate(track.test_sets):
            if not FOLDER_NAME.fullmatch(test.name):
                raise err((*keys, "test_sets", j, "name"), f"test set name {_shown(test.name)} must be a plain "
                          "folder name of at most 64 characters")
            if test.name == VALIDATION:  # its rows and the abstention rules' thresholds would mix with the split's
                raise err((*keys, "test_sets", j, "name"), f"test set name {VALIDATION!r} is the name of the pool's "
                          "held-out split (pool.validation); name the test set otherwise")
            if test.name in tests:
                raise err((*keys, "test_sets", j, "name"), f"test set name {test.name!r} is used twice in this track")
            tests.add(test.name)
            if test.domain not in DOMAINS:
                raise err((*keys, "test_sets", j, "domain"), f"domain {test.domain!r} is not one of {', '.join(DOMAINS)}")
        if track.methods is not None:
            track.methods = _known_methods(config, (*keys, "methods"), track.methods)


def _known_methods(config: PipelineConfig, keys: tuple, methods: list[str]) -> list[str]:
    """The registered names of `methods` (aliases resolved); an unknown or repeated one is reported at its line
    (a repeat once trained twice and failed at the report, after all the work)."""
    names = []
    for i, name in enumerate(methods):
        place = (*keys, i) if keys[-1] == "methods" else keys
        try:
            names.append(method_of(name).name)
        except RaitError as err:
            raise config.error(place, str(err)) from err
        if names[-1] in names[:-1]:
            alias = f" (as {names[-1]!r})" if name != names[-1] else ""
            raise config.error(place, f"method {name!r} is given twice{alias}; each method is trained once")
    return names


def _shown(text: str) -> str:
    """`text` quoted, cut to a length one error line can show."""
    return repr(text) if len(text) <= 40 else repr(text[:37] + "...")
