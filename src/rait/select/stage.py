"""The build stage (`rait build`, and `rait run` once per track and seed): every method's training set from one table.

`BuildSettings` is the one definition of the build's parameters: the CLI parses its options into
it, a `rait run` config's `build:` section is it (the pipeline sets `methods` and `seed`), and
`BuildSettings.selectors` hands each registered method (`rait.select.methods`) the parameters
its selector takes. The known/unknown split is the same for every method: known μ ≥ τ, unknown
μ < τ (`rait.select.base.split_by_correctness`; docs/build.md). `balance="subject"` gives every
subject of the records the set's IdK share (`rait.select.balance`; docs/build.md, "Balance by subject").
``mode="as_released"`` on an MCQA table gives the release-mode selectors the release's MMLU μ (and Δμ from the
rehearsal re-probe beside a flow table, `rait.select.released`); the others read the table as probed.

Writes ``<out>/<method>.jsonl`` (+ manifest), ``xtuner/<method>.json`` and ``dpo/<method>.jsonl``
(per `exports`), and ``summary.json`` / ``summary.md`` (pools, sizes, warnings, and CRSS per method
when `crss_model` names a model, "default" for SmolLM2).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Sequence

from rait.artifacts import atomic_path, write_json, write_manifest
from rait.errors import DataError, RaitError, SettingsError, check_choice, check_count, check_number
from rait.prompts.render import PROMPT_NAMES
from rait.select.balance import check_balance, with_subjects
from rait.select.base import RELEASED_IDK_SHARE, Selector
from rait.select.build import (
    ANSWERS,
    build_dataset,
    crss_of_builds,
    jsonable,
    preference_pairs,
    summary_markdown,
    write_dataset,
    xtuner_rows,
)
from rait.select.craft import MODES
from rait.select.released import (FLOW_COLUMNS, REHEARSED_TABLE, differing_mu, released_flow_table,
                                   released_mcqa_table)
from rait.select.static_conflicts import CRSS_THRESHOLDS, POOLINGS
from rait.select.methods import METHODS, TAU, make_selector, method_of

EXPORTS = ("xtuner", "dpo")
# GRAIT's own parameters (its `grait:` mapping), each with the name `rait build` gives its option; the rest of
# its parameters are shared build settings.
GRAIT_OWN = {"rule": "grait_rule", "weight_sign": "weight_sign", "temperature": "temperature", "d": "d"}


@dataclass
class BuildSettings:
    """Sizes, threshold, mode and rendering of a build; `grait` holds GRAIT's own parameters (GRAIT_OWN)."""

    methods: list[str] | None = None  # None: every registered method the inputs support
    n_total: int | None = None
    n_vanilla: int | None = None
    n_idk: int | None = None
    idk_share: float = 0.2
    tau: float = TAU
    mode: str = "paper"
    dead_band: float = 0.0
    # None: the methods' own selection; "subject": every subject (QARecord.subject) gets the set's IdK share
    balance: str | None = None
    seed: int = 0
    refusal: str | None = None
    prompt: str = "refuse"
    system: str | None = None
    answer: str = "gold"  # or "sampled": vanilla open-QA targets are the model's own correct probe answer
    grait: dict[str, Any] = field(default_factory=dict)
    exports: Sequence[str] = EXPORTS
    crss_model: str | None = None
    crss_pooling: str = "last_token"
    crss_thresholds: Sequence[float] = CRSS_THRESHOLDS
    batch_size: int = 16  # CRSS feature batches
    # Only the pool questions of these subjects are candidates (None: all): the same sample count drawn from fewer
    # kinds of question, e.g. the diversity curve of docs/transfer.md.
    subjects: Sequence[str] | None = None

    def __post_init__(self) -> None:
        if self.methods is not None:
            self.methods = [method_of(name).name for name in self.methods]
            if repeated := [name for n, name in enumerate(self.methods) if name in self.methods[:n]]:
                raise SettingsError("methods", f"{repeated[0]!r} is given twice (each method is built once)")
        if self.refusal is not None and (not isinstance(self.refusal, str) or not self.refusal.strip()):
            raise SettingsError("refusal", f"{self.refusal!r}: an empty refusal would teach the IdK questions to say "
                                "nothing; give a text, or leave it out for the papers' \"I don't know\"")
        for name in ("n_total", "n_vanilla", "n_idk"):
            if getattr(self, name) is not None:
                check_count(name, getattr(self, name), 1 if name == "n_total" else 0)
        if self.n_total is not None and (self.n_vanilla is not None or self.n_idk is not None):
            raise SettingsError("n_total", "give either n_total (with idk_share) or n_vanilla/n_idk, not both")
        for name in ("idk_share", "tau", "dead_band"):
            check_number(name, getattr(self, name), 0, 1)
        if self.mode == "as_released" and self.n_total is not None and self.idk_share != RELEASED_IDK_SHARE:
            raise SettingsError("idk_share", f"as_released splits n_total as the release does (n_total // 10 * 2 IdK, "
                                f"a share of {RELEASED_IDK_SHARE}); {self.idk_share} has no released rule")
        for name, allowed in (("mode", MODES), ("answer", ANSWERS), ("prompt", PROMPT_NAMES),
                              ("crss_pooling", POOLINGS)):
            check_choice(name, getattr(self, name), allowed)
        for export in self.exports:
            check_choice("exports", export, EXPORTS)
        check_count("batch_size", self.batch_size, 1)
        if self.subjects is not None:
            if isinstance(self.subjects, str) or not self.subjects or not all(isinstance(x, str) for x in self.subjects):
                raise SettingsError("subjects", f"{self.subjects!r}: give a non-empty list of subject names")
            self.subjects = list(self.subjects)
        check_balance(self.balance, released=self.mode == "as_released",
                      n_vanilla=1 if self.n_total is not None else self.n_vanilla,
                      n_idk=1 if self.n_total is not None else self.n_idk)
        unknown = [key for key in self.grait if key not in GRAIT_OWN]
        if unknown:
            raise SettingsError("grait", f"unknown GRAIT parameter {unknown[0]!r} (GRAIT's own: {', '.join(GRAIT_OWN)}; "
                                "sizes, tau, seed and refusal are shared build settings)")
        try:
            make_selector("grait", **self.grait).validate()
        except SettingsError as err:
            raise SettingsError(GRAIT_OWN[err.field], err.message) from None

    def selectors(self, gradients: str | Path | None = None) -> list[Selector]:
        """One selector per method, each given the settings its class takes (GRAIT also the gradient store)."""
        shared = {f.name: getattr(self, f.name) for f in fields(self)}
        out = []
        for name in self.methods or ():
            method = METHODS[name]
            params = {key: shared[key] for key in method.parameters if key in shared}
            if method.needs_gradients:
                if gradients is None:
                    raise RaitError(f"method {name!r} needs the gradient store of `rait grads` (--grads)")
                params |= {"features": str(gradients), "as_released": self.mode == "as_released", **self.grait}
            out.append(make_selector(name, **params))
        return out


def follows_release(selector: Selector) -> bool:
    """Whether a selector reproduces CRaFT's or GRAIT's released scripts (mode ``as_released``)."""
    return getattr(selector, "mode", None) == "as_released" or getattr(selector, "as_released", False) is True


def released_mcqa_inputs(table, records: Sequence, table_path: Path, needs_flow: bool):
    """The MCQA table the ``as_released`` selectors read: the release's μ, and with a flow table its Δμ, recomputed
    from the rehearsal re-probe beside it (`rait.select.released`). Without that re-probe a Δμ of the correct μ
    would be kept under the release's μ, so a flow method refuses to build and the others get no Δμ."""
    rehearsed = table_path.parent / REHEARSED_TABLE
    if "delta_mu" in table.columns and rehearsed.is_file():
        try:
            return released_flow_table(table, records, rehearsed, table_path)
        except DataError as err:  # merge_flow names its input "<rehearsal table>"
            raise DataError(rehearsed if err.path == "<rehearsal table>" else err.path, err.message, line=err.line,
                            field=err.field) from err
    if needs_flow and "delta_mu" in table.columns:
        raise DataError(rehearsed, f"missing: as_released recomputes Δμ with the release's MMLU μ from the rehearsal "
                        f"re-probe, which `rait rehearse` writes beside {table_path.name}")
    return released_mcqa_table(table.drop(columns=list(FLOW_COLUMNS), errors="ignore"), records, table_path)


def of_subjects(table, records: Sequence, subjects: Sequence[str]):
    """The table's rows whose question is of one of `subjects`; a subject no record has is refused."""
    present = {record.subject for record in records}
    if missing := [name for name in subjects if name not in present]:
        raise SettingsError("subjects", f"{missing[0]!r} is the subject of no pool question (the pool's: "
                            f"{', '.join(sorted(present))})")
    ids = {record.id for record in records if record.subject in set(subjects)}
    return table[table["id"].astype(str).isin(ids)].reset_index(drop=True)


@dataclass
class Build:
    """What the build stage wrote: each built method's SFT training set and its selector's report (`taken`, pools,
    warnings), the methods it skipped with the reason, and the summary as `summary.json` holds it."""

    sets: dict[str, Path]
    reports: dict[str, dict[str, Any]]
    skipped: dict[str, str]
    summary: dict[str, Any]


def run(settings: BuildSettings, table_path: str | Path, records_path: str | Path, out: str | Path, *,
        gradients: str | Path | None = None) -> Build:
    """Every method's training set from one knowledge (or flow) table.

    With ``settings.methods`` None, every registered method the inputs support is built: the
    flow methods need the table's ``delta_mu`` (`rait rehearse`), GRAIT needs `gradients`; the
    others are reported as skipped.
    """
    from rait.data import read_records
    from rait.probe.table import check_table_pool, read_table

    table_path, records_path, out = Path(table_path), Path(records_path), Path(out)
    table = read_table(table_path)
    records = read_records(records_path)
    skipped = {}
    if settings.methods is None:
        why = {name: "the table has no delta_mu (run rehearsal)" if m.needs_flow and "delta_mu" not in table.columns
               else "no gradient store (run `rait grads`)" if m.needs_gradients and gradients is None
               else "the table has no samples (an open-QA probe's)" if m.needs_samples and "samples" not in table.columns
               else None
               for name, m in METHODS.items()}
        skipped = {name: reason for name, reason in why.items() if reason and METHODS[name].kind == "sft"}
        settings = replace(settings, methods=[name for name, reason in why.items()
                                              if not reason and METHODS[name].kind == "sft"])
    selectors = settings.selectors(gradients)
    check_table_pool(table, records, table_path)
    if settings.subjects is not None:
        table = of_subjects(table, records, settings.subjects)
    if settings.balance is not None:  # the selectors read each question's subject from the table
        table = with_subjects(table, records)
    released = [s for s in selectors if follows_release(s)]
    released_table = None
    if released and len(table) and set(table["task"]) == {"mcqa"}:
        released_table = released_mcqa_inputs(table, records, table_path, any(s.uses_flow for s in released))
    if settings.crss_model is not None:  # its features come after every set is written: check the model first
        from rait.models import model_fingerprint

        try:
            model_fingerprint(settings.crss_model)
        except RaitError as err:
            raise SettingsError("crss_model", str(err)) from None

    summary: dict[str, Any] = {"table": str(table_path), "records": str(records_path), "mode": settings.mode,
                               "skipped": skipped, "methods": {}}
    if released_table is not None:
        summary["released_mu"] = {
            "changed": differing_mu(released_table, records), "of": len(table), "delta_mu_from": str(table_path.parent / REHEARSED_TABLE)
            if "delta_mu" in released_table.columns else None}
    built: dict[str, Selector] = {}
    for selector in selectors:
        fit_table = released_table if released_table is not None and follows_release(selector) else table
        try:
            rows = build_dataset(selector, fit_table, records, prompt=settings.prompt, system=settings.system,
                                 answer=settings.answer)
        except DataError as err:  # name the real file instead of "<knowledge table>" / "<records>"
            path = {"<knowledge table>": table_path, "<records>": records_path}.get(err.path, err.path)
            raise DataError(path, err.message, line=err.line, field=err.field) from err
        name = selector.method
        files = {"sft": str(write_dataset(out / f"{name}.jsonl", rows, selector, table_path=table_path,
                                          records_path=records_path, prompt=settings.prompt))}
        if "xtuner" in settings.exports:
            xt = out / "xtuner" / f"{name}.json"
            write_json(xt, xtuner_rows(rows, records))
            files["xtuner"] = str(xt)
        if "dpo" in settings.exports and getattr(selector, "variant", None) != "unsure":
            pairs = preference_pairs(rows, selector, fit_table, records)
            files["dpo"] = str(write_dataset(out / "dpo" / f"{name}.jsonl", pairs, selector, table_path=table_path,
                                             records_path=records_path, prompt=settings.prompt, kind="dpo"))
        summary["methods"][name] = {"report": selector.report_, "files": files}
        built[name] = selector

    if settings.crss_model is not None:
        summary["crss"] = crss_of_builds(built, records, settings.crss_model, settings.crss_pooling,
                                          settings.crss_thresholds, settings.prompt, settings.system,
                                          settings.batch_size)
    write_json(out / "summary.json", summary)
    with atomic_path(out / "summary.md") as tmp:
        tmp.write_text(summary_markdown(summary), encoding="utf-8")
    write_manifest(out / "summary.json", stage="build", inputs={"knowledge_table": table_path,
                   "records": records_path}, settings=jsonable(asdict(settings)), seed=settings.seed)
    methods = summary["methods"]
    return Build({name: Path(m["files"]["sft"]) for name, m in methods.items()},
                 {name: m["report"] for name, m in methods.items()}, skipped, summary)

