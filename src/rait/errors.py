"""Errors that the CLI turns into one clear line and a non-zero exit."""

from __future__ import annotations

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
