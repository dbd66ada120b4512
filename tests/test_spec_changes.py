"""scripts/check-spec-changes (Optic, pinned in tools/spec-diff) fails on breaking spec changes.

Each case edits a copy of the released spec (contract/released-openapi.yaml) and runs the
script on the pair: a breaking edit must fail it, a compatible one must pass.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .spec_helpers import ROOT

pytestmark = pytest.mark.slow

RELEASED = ROOT / "contract" / "released-openapi.yaml"
SESSION_ID = """      properties:
        session_id:
          type: string
          description: The id of the started session.
"""
REQUIRED = """        - livekit
      properties:
"""


def _check(*specs: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "scripts" / "check-spec-changes"), *map(str, specs)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def _edited(tmp_path: Path, old: str, new: str) -> Path:
    text = RELEASED.read_text()
    assert text.count(old) == 1
    edited = tmp_path / "edited.yaml"
    edited.write_text(text.replace(old, new))
    return edited


def test_the_current_spec_keeps_the_released_contract() -> None:
    result = _check()
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_removed_response_field_is_breaking(tmp_path: Path) -> None:
    result = _check(RELEASED, _edited(tmp_path, SESSION_ID, "      properties: {}\n"))
    assert result.returncode != 0
    assert "cannot remove response property 'session_id'" in result.stdout
    assert "breaks clients of" in result.stderr


def test_a_new_required_request_field_is_breaking(tmp_path: Path) -> None:
    new = REQUIRED.replace("        - livekit\n", "        - livekit\n        - region\n")
    new += "        region:\n          type: string\n"
    result = _check(RELEASED, _edited(tmp_path, REQUIRED, new))
    assert result.returncode != 0
    assert "cannot add a required request property 'region'" in result.stdout


def test_a_new_optional_request_field_is_compatible(tmp_path: Path) -> None:
    new = REQUIRED + "        region:\n          type: string\n          description: Where.\n"
    result = _check(RELEASED, _edited(tmp_path, REQUIRED, new))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "property /schema/properties/region: added" in result.stdout
