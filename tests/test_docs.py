"""The docs say what the repository holds (issue 31, item 7): the README's layout names every config and every
top-level unit that exists and nothing that does not, and numbers quoted from committed results are those results."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _layout_block() -> str:
    """The README's layout: the code block under "## Layout"."""
    section = README.split("## Layout", 1)[1]
    return section.split("```", 2)[1]


def test_the_readme_names_every_config_and_only_configs_that_exist():
    in_layout = re.findall(r"^\s+([\w-]+\.yaml)\s", _layout_block(), re.MULTILINE)
    named = set(re.findall(r"configs/([\w.-]+\.yaml)", README)) | set(in_layout)
    present = {path.name for path in (ROOT / "configs").glob("*.yaml")}
    assert named == present, {"named, not present": named - present, "present, not named": present - named}


def test_the_readme_layout_lists_every_top_level_unit_of_the_package():
    layout = _layout_block()
    listed = set(re.findall(r"^  ([a-z_]+)(?:\.py|/)\s", layout, re.MULTILINE))
    units = {path.stem for path in (ROOT / "src" / "rait").iterdir()
             if (path.suffix == ".py" or (path / "__init__.py").is_file()) and not path.stem.startswith("__")}
    assert listed == units, {"listed, not present": listed - units, "present, not listed": units - listed}


def test_the_cpu_eval_speedup_quoted_is_the_range_of_the_committed_benchmarks():
    speedups = [setting["speedup"] for path in sorted((ROOT / "benchmarks" / "results").glob("eval_cpu*.json"))
                for setting in json.loads(path.read_text())["settings"]]
    quoted = f"{min(speedups):.2f}–{max(speedups):.2f}x"
    assert quoted in README
    assert f"CPU ({quoted})" in (ROOT / "docs" / "eval.md").read_text(encoding="utf-8")


def test_the_probe_docs_state_the_batch_sizes_the_code_defaults_to():
    from rait.probe.mcqa import MCQASettings
    from rait.probe.oeqa import OpenSettings

    probe_doc = (ROOT / "docs" / "probe.md").read_text(encoding="utf-8")
    assert f"| `batch_size` | {OpenSettings().batch_size} questions per call" in probe_doc
    assert f"| `batch_size` | {MCQASettings().batch_size} rows per forward" in probe_doc


def test_the_demo_time_quoted_outside_docs_demo_is_the_one_it_marks_current():
    demo_doc = (ROOT / "docs" / "demo.md").read_text(encoding="utf-8")
    current = re.search(r"\*\*The current figure is (\d+ min \d+ s)\*\*", demo_doc).group(1)
    assert f"**`make demo`: {current}**" in demo_doc  # the measurement it points to
    for quoting in (README, (ROOT / "configs" / "demo.yaml").read_text(encoding="utf-8")):
        assert re.findall(r"\d+ min \d+ s", quoting) == [current]
