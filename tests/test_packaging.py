"""Packaging: compatible ranges in pyproject.toml, the exact tested set in constraints.txt, a LICENSE."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    return [Requirement(r) for r in project["dependencies"] + extras.get("test", [])]


def _constraints() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = Version(version)
    return pins


def test_dependencies_are_ranges_and_the_tested_set_lies_inside_them():
    pins = _constraints()
    for requirement in _requirements():
        assert not any(spec.operator in ("==", "===") for spec in requirement.specifier), \
            f"{requirement} pins one version: users with another compatible release could not install rait"
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is declared but constraints.txt does not pin its tested version"
        assert requirement.specifier.contains(pins[name]), f"tested {name}=={pins[name]} is outside {requirement}"


def test_the_makefile_installs_the_constraints_and_a_license_ships():
    makefile = (ROOT / "Makefile").read_text()
    assert makefile.count("-c constraints.txt") == 3
    assert "Apache License" in (ROOT / "LICENSE").read_text()
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"] == "Apache-2.0"


def _metadata_only_wheel(folder: Path, name: str, version: str) -> Path:
    """A wheel that installs nothing but its metadata: stands in for a user's own build of a package."""
    dist = f"{name}-{version}.dist-info"
    files = {f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: rait-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = [f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()},"
              f"{len(text.encode())}" for path, text in files.items()]
    files[f"{dist}/RECORD"] = "\n".join(record + [f"{dist}/RECORD,,"]) + "\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


@pytest.mark.slow
def test_pip_install_keeps_a_users_own_compatible_torch(tmp_path):
    """A fresh venv that already holds another torch (2.14.1 here, not the tested 2.13.0): pip's resolver,
    asked to install rait, installs every other dependency and leaves that torch alone (a dry run against
    the package index, so nothing is downloaded but metadata)."""
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    python = env / "bin" / "python"
    users_torch = _metadata_only_wheel(tmp_path, "torch", "2.14.1")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", users_torch], check=True)
    report = tmp_path / "report.json"
    subprocess.run([python, "-m", "pip", "install", "-q", "--dry-run", "--report", report, str(ROOT)],
                   check=True, timeout=900)
    to_install = {canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
                  for item in json.loads(report.read_text())["install"]}
    assert "rait" in to_install and "transformers" in to_install
    assert "torch" not in to_install, f"pip would replace the user's torch 2.14.1 with {to_install.get('torch')}"
