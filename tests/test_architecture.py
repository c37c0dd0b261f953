"""The layout's contract (docs/architecture.md): every stage imports alone, and imports point downstream only.

The import graph is read from the source (every `import`, at the top of a module or inside a function),
so a late import cannot hide a loop.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "rait"

# From the bottom up: a unit may import only units before it. Libraries first (errors, artifacts, records and
# scoring, prompts, models, generation, the trainer), then the stages in pipeline order, then what runs them.
LAYERS = ("errors", "terminal", "artifacts", "distributed", "data", "prompts", "models", "generate", "train", "probe", "rehearse", "grads",
          "select", "evaluate", "report", "export", "pipeline", "cli", "__main__")
STAGES = ("data", "probe", "rehearse", "grads", "select", "train", "evaluate", "report")


def unit_of(path: Path) -> str | None:
    """The top-level unit a source file belongs to (`rait/__init__.py`, the version, is none)."""
    first = path.relative_to(SRC).with_suffix("").parts[0]
    return None if first == "__init__" else first


def import_edges() -> dict[tuple[str, str], str]:
    """(importer, imported) -> one file where it happens, between distinct units."""
    edges: dict[tuple[str, str], str] = {}
    for path in sorted(SRC.rglob("*.py")):
        source = unit_of(path)
        if source is None:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] == "rait" and len(parts) > 1 and parts[1] in LAYERS and parts[1] != source:
                    edges.setdefault((source, parts[1]), str(path.relative_to(SRC.parent)))
    return edges


def test_every_unit_is_placed_in_a_layer():
    units = {unit_of(p) for p in SRC.rglob("*.py")} - {None}
    assert units == set(LAYERS), f"place these in LAYERS (and docs/architecture.md): {units ^ set(LAYERS)}"


def test_imports_point_downstream_only():
    upstream = [f"{where}: {a} imports {b}" for (a, b), where in import_edges().items()
                if LAYERS.index(b) > LAYERS.index(a)]
    assert not upstream, "\n".join(upstream)


def test_the_edges_are_read_from_late_imports_too():
    """The reader sees imports inside functions: the pipeline imports every stage that way."""
    edges = import_edges()
    assert {("pipeline", stage) for stage in STAGES} <= set(edges)


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_imports_alone_in_a_fresh_interpreter(stage):
    result = subprocess.run([sys.executable, "-c", f"import rait.{stage}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
