"""scripts/check-generated fails on a stale generated/ and passes after scripts/generate.

Runs on a temporary copy of the tree, never on the real one.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .spec_helpers import ROOT

# The generator is a development tool for Python 3.11+ (its own floor); on 3.10 the generated
# code is still imported and tested everywhere else.
pytest.importorskip("openapi_python_client")


def _codegen(tree: Path, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(tree / "scripts" / "codegen.py"), command],
        capture_output=True,
        text=True,
        check=False,
    )


def test_drift_check_fails_after_a_spec_change_until_regenerated(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    for name in ("openapi.yaml", "codegen", "generated", "scripts"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            tree.mkdir(exist_ok=True)
            shutil.copy(source, tree / name)

    fresh = _codegen(tree, "check")
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr

    spec = tree / "openapi.yaml"
    spec.write_text(
        spec.read_text().replace(
            "        session_id:\n          type: string\n",
            "        session_id:\n          type: string\n"
            "        avatar_state:\n          type: string\n",
            1,
        )
    )
    stale = _codegen(tree, "check")
    assert stale.returncode == 1
    assert "+++ regenerated/models/start_session_response.py" in stale.stdout
    assert "avatar_state" in stale.stdout
    assert "Run scripts/generate" in stale.stderr

    assert _codegen(tree, "generate").returncode == 0
    assert (
        "avatar_state"
        in (tree / "generated/avatario_client/models/start_session_response.py").read_text()
    )
    again = _codegen(tree, "check")
    assert again.returncode == 0, again.stdout + again.stderr
    # The real tree was not touched.
    assert "avatar_state" not in (ROOT / "openapi.yaml").read_text()
