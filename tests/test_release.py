"""Release metadata: one version, a changelog that names it, the license, the tested Pythons.

The version lives in avatario_wrapper/_version.py; pyproject.toml reads it (hatch's dynamic
version), CHANGELOG.md's newest release must carry it, and the Pythons pyproject.toml declares
are exactly the ones scripts/test runs the suite on.
"""

from __future__ import annotations

import re
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from .spec_helpers import ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def _pyproject() -> dict[str, Any]:
    data: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return data


def _version_file() -> str:
    text = (ROOT / "avatario_wrapper" / "_version.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    assert match, "avatario_wrapper/_version.py sets __version__"
    return match[1]


def _tested_pythons() -> list[str]:
    text = (ROOT / "scripts" / "test").read_text()
    match = re.search(r"^supported=\(([^)]*)\)$", text, re.MULTILINE)
    assert match, "scripts/test lists the supported Pythons"
    return match[1].split()


def test_the_version_has_one_source() -> None:
    project = _pyproject()["project"]
    assert "version" not in project
    assert project["dynamic"] == ["version"]
    assert _pyproject()["tool"]["hatch"]["version"]["path"] == "avatario_wrapper/_version.py"
    import avatario_wrapper._version

    assert avatario_wrapper._version.__version__ == _version_file()


def test_the_newest_changelog_release_is_the_version() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    headings = re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?$", text, re.MULTILINE)
    assert headings[0] == ("Unreleased", "")
    newest, date = headings[1]
    assert newest == _version_file()
    assert date, "a release heading carries its date"
    # The Unreleased section keeps Keep a Changelog's headings for the next entries.
    unreleased = text.split("## [Unreleased]", 1)[1].split("\n## [", 1)[0]
    for kind in ("Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"):
        assert f"### {kind}" in unreleased


def test_the_license_is_apache_2() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert _pyproject()["project"]["license"] == "Apache-2.0"


def test_declared_pythons_are_the_tested_ones() -> None:
    tested = _tested_pythons()
    project = _pyproject()["project"]
    declared = [
        c.rsplit(" :: ", 1)[1]
        for c in project["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    ]
    assert declared == tested
    assert project["requires-python"] == f">={tested[0]}"
    assert f"{sys.version_info[0]}.{sys.version_info[1]}" in tested
    assert _pyproject()["tool"]["ruff"]["target-version"] == "py" + tested[0].replace(".", "")
    assert _pyproject()["tool"]["mypy"]["python_version"] == tested[0]


@pytest.mark.slow
def test_the_wheel_ships_the_license_and_both_typed_markers(built_wheel: Path) -> None:
    wheel = built_wheel
    assert wheel.name.startswith(f"avatario_wrapper-{_version_file()}-py3-none-any")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert {"avatario_wrapper/py.typed", "avatario_client/py.typed"} <= names
        [license_file] = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        assert archive.read(license_file) == (ROOT / "LICENSE").read_bytes()
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        text = archive.read(metadata).decode()
    assert f"Version: {_version_file()}\n" in text
    assert "License-Expression: Apache-2.0" in text
    for version in _tested_pythons():
        assert f"Classifier: Programming Language :: Python :: {version}\n" in text
