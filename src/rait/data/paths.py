"""Where the shipped QA data lives, without hard-coding a machine path.

The data sits next to the repository (`../shared/data`), so a checkout and its data can
move together; `$RAIT_DATA_DIR` points anywhere else.
"""

from __future__ import annotations

import os
from pathlib import Path

from rait.errors import RaitError

DATA_DIR_ENV = "RAIT_DATA_DIR"
RELATIVE_DATA_DIR = Path("..") / "shared" / "data"
REPO_ROOT = Path(__file__).resolve().parents[3]  # src/rait/data/paths.py -> repository root


def shared_data_dir() -> Path:
    """The data folder: `$RAIT_DATA_DIR`, else `../shared/data` from the repo root, else from the cwd."""
    if env := os.environ.get(DATA_DIR_ENV):
        path = Path(env).expanduser()
        if not path.is_dir():
            raise RaitError(f"${DATA_DIR_ENV} is set to {env!r}, which is not a folder")
        return path
    candidates = list(dict.fromkeys([REPO_ROOT / RELATIVE_DATA_DIR, Path.cwd() / RELATIVE_DATA_DIR]))
    for path in candidates:
        if path.is_dir():
            return path.resolve()
    tried = ", ".join(str(p) for p in candidates)
    raise RaitError(f"no data folder found (tried {tried}); set ${DATA_DIR_ENV} to the folder holding mmlu/, ARC/, nq/")
