"""Errors that the CLI turns into one clear line and a non-zero exit."""

from __future__ import annotations

import math
from pathlib import Path


class RaitError(Exception):
    """Base class for user-facing errors: bad input, missing models, bad settings."""


class DataError(RaitError):
    """A problem with one record of an input file, located by file, line and field.

    `line` is 1-based (a JSONL line or a CSV row counting the header as line 1);
    None when the problem concerns the whole file (e.g. it is empty).
    """

    def __init__(self, path: str | Path, message: str, line: int | None = None, field: str | None = None):
        self.path = str(path)
        self.line = line
        self.field = field
        self.message = message
        where = self.path if line is None else f"{self.path}:{line}"
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}: {what}{message}")


class ModelError(RaitError):
    """A model folder that cannot be loaded, or the default model cannot be installed."""


class SettingsError(RaitError):
    """A stage setting out of its vocabulary or range, named by its field. The CLI reports it as the option
    (`--match-mode`), `rait run` at the config line that set it."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"field '{field}': {message}")


def check_choice(field: str, value, allowed) -> None:
    """Raise a `SettingsError` unless `value` is one of `allowed` (None passes: the setting's default applies)."""
    if value is not None and value not in allowed:
        raise SettingsError(field, f"{value!r} is not one of {', '.join(map(str, allowed))}")


# The largest seed every seeded library takes (numpy's legacy seeding and scikit-learn's random_state stop here).
MAX_SEED = 2**32 - 1


def check_count(field: str, value, minimum: int, maximum: int | None = None) -> None:
    """Raise a `SettingsError` unless `value` is a whole number >= `minimum` (True and 2.5 are not counts) and, given
    a `maximum`, <= it: a count far beyond any use runs out of memory (or time) instead of failing here."""
    if (isinstance(value, bool) or not isinstance(value, int) or value < minimum
            or maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise SettingsError(field, f"must be a whole number {bounds}, got {value!r}")


def check_number(field: str, value, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False) -> None:
    """Raise a `SettingsError` unless `value` is a finite number within [low, high] (`low_open`: strictly above low);
    nan passes no comparison and inf no setting, so neither is ever a value."""
    ok = not isinstance(value, bool) and (isinstance(value, int) or isinstance(value, float) and math.isfinite(value))
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        bounds = "" if low is None else f" > {low}" if low_open else f" >= {low}"
        if high is not None:
            bounds = f" > {low} and <= {high}" if low_open else f" between {low} and {high}"
        raise SettingsError(field, f"must be a finite number{bounds}, got {value!r}")
