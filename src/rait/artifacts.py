"""Writing artifacts safely: atomic files, JSONL, and the manifest every artifact carries.

An artifact is either fully written or absent: everything goes to a temporary file in
the same folder and is renamed into place, so a crash or a bad input never leaves a
half-written file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

MANIFEST_SUFFIX = ".manifest.json"


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only on success.

    mkstemp creates the file 0600 whatever the umask; the finished file gets the mode any other new file
    would (0644 under the usual umask 022), so that others can read a shared run or model cache."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_file():
            tmp_path.chmod(0o666 & ~_current_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def jsonl_line(row: dict[str, Any]) -> str:
    """One row as `write_jsonl` writes it."""
    return json.dumps(row, ensure_ascii=False) + "\n"


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows as JSON lines atomically; return the number of rows written."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(jsonl_line(row))
            n += 1
    return n


def sha256_jsonl(rows: Iterable[dict[str, Any]]) -> str:
    """`sha256_file` of the file `write_jsonl` would write from `rows`, with nothing written (`rait run --dry-run`
    keys the stages after a pool it has not written)."""
    h = hashlib.sha256()
    for row in rows:
        h.update(jsonl_line(row).encode("utf-8"))
    return h.hexdigest()


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_tree(path: str | Path) -> str:
    """Hash a file, or every file of a folder (relative names and contents), in sorted order."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def manifest_path(artifact: str | Path) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + MANIFEST_SUFFIX)


def write_manifest(
    artifact: str | Path,
    *,
    stage: str,
    inputs: dict[str, str | Path] | None = None,
    model: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    seed: int | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write `<artifact>.manifest.json`: what produced the artifact, so a rerun can tell if it is stale."""
    from rait import __version__

    manifest = {
        "artifact": Path(artifact).name,
        "stage": stage,
        "rait_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "inputs": {name: {"path": str(p), "sha256": sha256_tree(p)} for name, p in (inputs or {}).items()},
        "model": model or {},
        "settings": settings or {},
        "seed": seed,
        **(extra or {}),
    }
    out = manifest_path(artifact)
    write_json(out, manifest)
    return out


def read_manifest(artifact: str | Path) -> dict[str, Any]:
    return json.loads(manifest_path(artifact).read_text(encoding="utf-8"))


def iter_jsonl_objects(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a missing file, bad JSON or a non-object is a `DataError`."""
    from rait.errors import DataError

    path = Path(path)
    if path.is_dir():
        raise DataError(path, "is a folder, not a file")
    if not path.is_file():
        raise DataError(path, "no such file")
    with open(path, "rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(path, f"not UTF-8 text (byte {raw[err.start]:#04x} at column {err.start + 1})",
                                line=line_no) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(path, f"not valid JSON ({err.msg} at column {err.colno})", line=line_no) from None
            if not isinstance(row, dict):
                raise DataError(path, "each line must be a JSON object", line=line_no)
            yield line_no, row


def read_json_object(path: str | Path) -> dict[str, Any]:
    """A JSON file holding one object (a model's `rait.json`, peft's `adapter_config.json`); bad text, bad JSON or
    another value is a `DataError` naming the file."""
    from rait.errors import DataError

    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(path, f"not JSON: {err}") from None
    if not isinstance(value, dict):
        raise DataError(path, f"must be a JSON object, got {type(value).__name__}")
    return value


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSONL artifact; a missing file, a malformed line or an empty file is a `DataError` naming it."""
    from rait.errors import DataError

    rows = [row for _, row in iter_jsonl_objects(path)]
    if not rows:
        raise DataError(path, "empty file")
    return rows


# ------------------------------------------------------------------ staleness: one key scheme for every reusable artifact


def canonical(identity: Any) -> Any:
    """`identity` as it reads back from a JSON file (tuples become lists, paths strings): the form compared."""
    return json.loads(json.dumps(identity, sort_keys=True, default=str))


def identity_key(identity: Any) -> str:
    """The staleness key of an artifact: a short hash of its identity (its settings and the hashes of its inputs)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def changed_field(stored: Any, identity: dict[str, Any]) -> str | None:
    """None when a stored identity (read back from JSON) is `identity`; else the first field, by name, that differs.

    Probe shards (`run.json`), the gradient store (`plan.json`), `rait run`'s stages (`stage.json`) and each
    evaluation (its manifest) keep their identity this way and are reused only while it is unchanged.
    """
    current = canonical(identity)
    if stored == current:
        return None
    if not isinstance(stored, dict):
        return next(iter(sorted(current)), "")
    return next(key for key in sorted(set(stored) | set(current)) if stored.get(key) != current.get(key))
