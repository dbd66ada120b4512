"""benchmarks/time_to_avatar.py runs end to end with tiny counts (no speed is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .spec_helpers import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PLUGIN_PYTHON = ROOT / ".bench" / "plugin" / "bin" / "python"


def test_time_to_avatar_runs_both_sides_and_reports_ratios() -> None:
    pytest.importorskip("livekit.agents")
    pytest.importorskip("trustme")
    if not PLUGIN_PYTHON.exists():
        pytest.skip("no .bench/plugin (scripts/bench creates it)")
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "time_to_avatar.py"),
            "--processes",
            "1",
            "--repeats",
            "2",
            "--no-prime",
            "--ours-python",
            sys.executable,
            "--plugin-python",
            str(PLUGIN_PYTHON),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result["modes"]) == {"ours", "plugin", "ours-warm"}
    for mode in result["modes"].values():
        assert mode["first_ms"]["median"] > 0
        assert mode["repeat_ms"]["median"] > 0
    assert set(result["ratios"]) == {
        "first_ours_vs_plugin",
        "first_warm_vs_plugin",
        "repeat_ours_vs_plugin",
        "repeat_warm_vs_plugin",
    }
    assert result["versions"]["ours"] == result["versions"]["plugin"]
