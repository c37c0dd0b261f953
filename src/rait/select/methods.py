"""The one registry of methods: config and CLI names, report labels, selector classes, what each needs.

`rait build`, `rait run` (its config check, its stages and its report rows) and the CLI help all
read `METHODS`; a method is added here and nowhere else. Whether a method needs the knowledge flow
(rehearsal) or gradient features (`rait grads`) is a property of its selector class
(`Selector.uses_flow`, `Selector.uses_gradients`), so the pipeline runs those stages only for it.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rait.errors import RaitError

if TYPE_CHECKING:
    from rait.select.base import Selector


# The papers' correctness threshold: known where μ ≥ τ. The default of every selector, of the build and of the
# CLI's --tau, written here once (this module is light: the CLI imports it).
TAU = 0.5
TRAINING_KINDS = ("sft", "preference", "rl")


@dataclass(frozen=True)
class Method:
    """A registered method: `selector(**fixed, **parameters)` builds its selector; `label` names its report row.

    The class is named by its module path and imported on first use, so that reading the registry
    (`rait --help`, config checks) does not import the selectors' libraries.
    """

    name: str
    label: str
    path: str | None  # "<module>:<class>" of the selector; None for a method with no selector of its own
    fixed: dict[str, Any] = field(default_factory=dict)
    default: bool = True  # among the methods `rait run` trains when a config names none
    # "sft": a selector's training set, weighted SFT; "preference": DPO on another method's selection
    # (`rait.train.preference`); "rl": GRPO on the pool's questions with a three-way reward (`rait.train.grpo`);
    # "none": a rule on the untouched model's answers; "veto": a rule on a trained method's answers
    # (`rait.evaluate.abstain`). How `rait run` trains and compares each kind: `rait.pipeline.kinds`.
    kind: str = "sft"
    # A rule's confidence in an answer: "sigma", the agreement of the untouched model's samples (the probe's σ of
    # every validation and test item), or "p_ik" (`rait.evaluate.abstain.p_ik_scores`); None for a training.
    confidence: str | None = None

    @property
    def trains(self) -> bool:
        return self.kind in TRAINING_KINDS

    @property
    def selector(self) -> type[Selector]:
        if self.kind != "sft":
            raise RaitError(f"method {self.name!r} builds no training set of its own: "
                            + {"preference": "it trains with DPO on the pairs of another method's selection "
                                              "(`dpo.pairs_from`)",
                               "rl": "it trains with GRPO on the pool's questions, rewarded by rait's scorer "
                                     "(docs/grpo.md)",
                               "veto": "it gives back, where the untouched model's samples agree, answers that a "
                                       "trained method (`veto.base`) refuses"}.get(
                                self.kind, "it is a rule applied to the untouched model's answers at test time")
                            + " (`rait run`, docs/baselines.md)")
        module, cls = self.path.split(":")
        return getattr(importlib.import_module(module), cls)

    @property
    def needs_flow(self) -> bool:
        return self.kind == "sft" and self.selector.uses_flow

    @property
    def needs_gradients(self) -> bool:
        return self.kind == "sft" and self.selector.uses_gradients

    @property
    def needs_samples(self) -> bool:
        return self.kind == "sft" and self.selector.uses_samples

    @property
    def parameters(self) -> tuple[str, ...]:
        """The selector's parameters a user may set (those `fixed` by the registry excluded)."""
        names = inspect.signature(self.selector.__init__).parameters
        return tuple(name for name in names if name != "self" and name not in self.fixed)


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("van_tuning", "Van-Tuning", "rait.select.craft:VanTuning"),
    Method("cor_rait", "Cor-RAIT", "rait.select.craft:CorRAIT"),
    Method("corcer_rait", "CorCer-RAIT", "rait.select.craft:CorCerRAIT"),
    Method("craft_wo_cer", "CRaFT w/o Cer", "rait.select.craft:CRaFTWithoutCer"),
    Method("craft", "CRaFT", "rait.select.craft:CRaFT"),
    Method("rtuning_unknown", "R-Tuning", "rait.select.rtuning:RTuning", {"variant": "unknown"}),
    Method("rtuning_unsure", "R-Tuning (unsure)", "rait.select.rtuning:RTuning", {"variant": "unsure"}, default=False),
    Method("grait", "GRAIT", "rait.select.grait:GRAIT"),
    # docs/transfer.md: Cor-RAIT's IdK side limited to the questions the model's own samples disagree on
    Method("consistency_rait", "Consistency-RAIT", "rait.select.consistency:ConsistencyRAIT", default=False),
    # No training: the untouched model refuses below a confidence threshold chosen on validation.
    Method("self_consistency", "Self-consistency (σ)", None, default=False, kind="none", confidence="sigma"),
    Method("p_ik", "P(IK)", None, default=False, kind="none", confidence="p_ik"),
    # Preference tuning on a builder's answer-vs-refusal pairs.
    Method("dpo_rait", "DPO-RAIT", None, default=False, kind="preference"),
    # Reinforcement learning with a correct > refused > wrong reward (TruthRL's ternary reward).
    Method("grpo_rait", "GRPO-RAIT", None, default=False, kind="rl"),
    # docs/transfer.md, second round: a trained method's refusals given back where the untouched model's samples agree.
    Method("sigma_veto", "σ veto", None, default=False, kind="veto", confidence="sigma"),
)}
ALIASES = {"craft_wo_flow": "corcer_rait", "vanilla": "van_tuning"}
DEFAULT_METHODS = tuple(name for name, method in METHODS.items() if method.default)


def method_of(name: str) -> Method:
    """The registered method called `name` (or one of its aliases)."""
    key = ALIASES.get(name, name)
    if key not in METHODS:
        raise RaitError(f"unknown method {name!r} (known: {', '.join([*METHODS, *ALIASES])})")
    return METHODS[key]


def make_selector(name: str, **parameters: Any) -> Selector:
    """The selector of method `name` with `parameters`; a parameter the method does not take is an error."""
    method = method_of(name)
    unknown = [key for key in parameters if key not in method.parameters]
    if unknown:
        raise RaitError(f"method {method.name!r} has no parameter {unknown[0]!r} (its parameters: "
                        f"{', '.join(method.parameters)})")
    return method.selector(**method.fixed, **parameters)
