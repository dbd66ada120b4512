"""pyright --verifytypes: the public API is typed for users' type checkers (score >= 95%).

Runs the pinned pyright (tools/pyright, through scripts/node-tool) against the installed
avatario_wrapper, in this interpreter's environment, and reads its JSON report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .spec_helpers import ROOT

pytestmark = pytest.mark.slow

MINIMUM = 0.95


def test_the_public_api_is_at_least_95_percent_typed() -> None:
    # pyright asks the `python` on PATH for its search paths: this interpreter's.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        [
            str(ROOT / "scripts" / "node-tool"),
            "pyright",
            "pyright/index.js",
            "--verifytypes",
            "avatario_wrapper",
            "--ignoreexternal",
            "--outputjson",
        ],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=300,
    )
    report = json.loads(result.stdout)
    completeness = report["typeCompleteness"]
    assert completeness["packageRootDirectory"] == str(ROOT / "avatario_wrapper")
    assert completeness["exportedSymbolCounts"]["withKnownType"] > 100
    complaints = [
        f"{symbol['name']}: {diagnostic['message'].splitlines()[0]}"
        for symbol in completeness["symbols"]
        for diagnostic in symbol["diagnostics"]
        if diagnostic["severity"] == "error"
    ]
    score = completeness["completenessScore"]
    assert score >= MINIMUM, f"type completeness {score:.1%} < {MINIMUM:.0%}:\n" + "\n".join(
        complaints
    )
