"""A short soak (scripts/soak.py) keeps every invariant: the same code as the 10,000-call run."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from .spec_helpers import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_short_soak_has_no_violation() -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "soak.py"),
            "--calls",
            "400",
            "--seconds",
            "60",
            "--async-tasks",
            "16",
            "--threads",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    last = out.stdout.strip().splitlines()[-1]
    assert out.returncode == 0, out.stdout + out.stderr
    match = re.fullmatch(
        r"calls=(\d+) ok=(\d+) errors=(\d+) violations=0 leaked_sockets=0 secrets_leaked=0", last
    )
    assert match, last
    calls, ok, errors = map(int, match.groups())
    assert calls == 400 == ok + errors
    assert errors > 0  # faults really were played
    assert "outcomes:" in out.stdout
