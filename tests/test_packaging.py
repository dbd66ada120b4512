"""The wheel ships both packages, py.typed and the spec, and asks only for the core three."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest

from .spec_helpers import SPEC_PATH

pytestmark = pytest.mark.slow


def test_the_wheel_has_what_users_need(built_wheel: Path) -> None:
    with zipfile.ZipFile(built_wheel) as archive:
        names = set(archive.namelist())
        assert "avatario_wrapper/py.typed" in names
        assert "avatario_wrapper/_generated/__init__.py" in names
        assert "avatario_wrapper/testing/app.py" in names
        assert archive.read("avatario_wrapper/testing/openapi.yaml") == SPEC_PATH.read_bytes()
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        text = archive.read(metadata).decode()
    core = re.findall(r"^Requires-Dist: ([A-Za-z0-9_.-]+)[^;\n]*$", text, re.MULTILINE)
    assert sorted(core) == ["attrs", "backoff", "httpx"]
    assert "Requires-Python: >=3.10" in text
    assert not any(name.startswith(("tests/", "benchmarks/", "scripts/")) for name in names)
