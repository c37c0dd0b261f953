"""The one record type for QA items, shared by every loader and every stage.

A record is multiple-choice (``choices`` + ``gold`` letter) or open (``answer`` +
``aliases``), never both. JSONL of ``QARecord.to_dict()`` rows is the on-disk form;
``datasets.load_dataset("json", ...)`` reads it.
"""

from __future__ import annotations

import string
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

from rait.data.scoring import MatchMode

LETTERS = string.ascii_uppercase
Task = Literal["mcqa", "oeqa"]


@dataclass
class QARecord:
    id: str
    question: str
    source: str
    split: str
    subject: str = ""
    choices: list[str] | None = None
    gold: str | None = None
    answer: str | None = None
    aliases: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def task(self) -> Task:
        return "mcqa" if self.choices is not None else "oeqa"

    @property
    def letters(self) -> str:
        """Option letters of an MCQA record, e.g. "ABCD"."""
        return LETTERS[: len(self.choices or [])]

    @property
    def unscorable(self) -> bool:
        """True for an MCQA record kept exactly as a release shipped it, with a gold key that
        is not one of the shown letters (e.g. ARC's numeric keys, see `load_arc`): no answer
        can ever match it, which is what the release scored."""
        return isinstance(self.metadata, dict) and self.metadata.get("unscorable") is True

    @property
    def gold_text(self) -> str:
        """The gold answer as text: the gold option's text (MCQA) or the answer (open QA)."""
        if self.task == "mcqa":
            return self.choices[self.letters.index(self.gold)]
        return self.answer

    @property
    def all_answers(self) -> list[str]:
        """Answer and aliases, de-duplicated in order: what open-QA scoring matches against."""
        seen: dict[str, None] = {}
        for a in [self.answer, *self.aliases]:
            if a is not None and a.strip():
                seen.setdefault(a, None)
        return list(seen)

    def problems(self) -> list[tuple[str, str]]:
        """(field, message) for everything wrong with this record; empty when valid."""
        out: list[tuple[str, str]] = []
        for name in ("id", "question", "source", "split"):
            value = getattr(self, name)
            if not isinstance(value, str):
                out.append((name, f"must be a string, got {type(value).__name__} {value!r}"))
            elif not value.strip():
                out.append((name, "empty"))
        if self.choices is not None:
            if self.answer is not None:
                out.append(("answer", "a multiple-choice record has choices and a gold letter, not an answer"))
            if not isinstance(self.choices, list) or len(self.choices) < 2:
                out.append(("choices", "needs at least two options"))
            elif len(self.choices) > len(LETTERS):
                out.append(("choices", f"at most {len(LETTERS)} options are supported"))
            elif not all(isinstance(c, str) for c in self.choices):
                out.append(("choices", "every option must be text"))
            elif self.gold not in tuple(self.letters):
                if not (self.unscorable and isinstance(self.gold, str) and self.gold.strip()):
                    out.append(("gold", f"{self.gold!r} is not among the choices {', '.join(self.letters)}"))
        else:
            if self.answer is not None and not isinstance(self.answer, str):
                out.append(("answer", f"must be a string, got {type(self.answer).__name__} {self.answer!r}"))
            elif not isinstance(self.answer, str) or not self.answer.strip():
                out.append(("answer", "missing or empty (an open-QA record needs an answer; MCQA needs choices)"))
            if not isinstance(self.aliases, list) or not all(isinstance(a, str) for a in self.aliases):
                out.append(("aliases", "must be a list of strings"))
            elif not all(a.strip() for a in self.aliases):
                out.append(("aliases", "an empty alias would match every answer under 'contains' scoring"))
        if not isinstance(self.metadata, dict):
            out.append(("metadata", "must be an object"))
        elif "match_mode" in self.metadata and self.metadata["match_mode"] not in get_args(MatchMode):
            # scoring reads it per record, so an unknown rule would fail mid-run, after the model's answers
            out.append(("metadata.match_mode", f"{self.metadata['match_mode']!r} is not one of "
                                               f"{', '.join(get_args(MatchMode))}"))
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> "QARecord":
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in row.items() if k in known}
        kwargs.setdefault("aliases", [])
        kwargs.setdefault("metadata", {})
        if kwargs["aliases"] is None:
            kwargs["aliases"] = []
        if kwargs["metadata"] is None:
            kwargs["metadata"] = {}
        return cls(**kwargs)
