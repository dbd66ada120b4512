"""The benchmark and reliability generators run end to end in their smoke modes, so they cannot
rot. No figure is asserted: speed is never tested here (see docs/benchmarks.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .spec_helpers import ROOT

pytestmark = pytest.mark.slow


def test_benchmark_smoke_run_writes_the_report(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke", "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    report = (tmp_path / "benchmarks.md").read_text()
    for section in (
        "(a) Cold start",
        "(b)",
        "(c) Warm latency",
        "(d) Async throughput",
        "(e) Recovery",
        "(f) Memory",
    ):
        assert section in report
    assert (tmp_path / "benchmarks.png").read_bytes().startswith(b"\x89PNG")
    results = json.loads((tmp_path / "benchmarks.json").read_text())
    assert set(results["throughput"]["ours-async"]) == {"1", "32", "128"}
    assert results["memory"]["calls"] > 0


@pytest.mark.timeout(300)
def test_reliability_quick_run_writes_the_report(tmp_path: Path) -> None:
    # A section written by scripts/network-faults is kept as it is.
    kept = "<!-- reliability:network-faults -->\n## Real network faults\n\nkept\n"
    (tmp_path / "reliability.md").write_text(
        f"# Reliability\n\n{kept}<!-- /reliability:network-faults -->\n"
    )
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "reliability.py"),
            "--quick",
            "--out",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    report = (tmp_path / "reliability.md").read_text()
    assert "| persistent 503 | InternalServerError | 3 |" in report
    assert "violations=0 leaked_sockets=0 secrets_leaked=0" in report
    # The idle race ran on every transport, with and without Keep-Alive: timeout=N, and every
    # call kept its invariants (the script exits non-zero otherwise).
    assert "## The idle race" in report
    for header in ("no", "yes"):
        for transport in ("sync", "async-aiohttp", "async-httpx"):
            assert f"| {header} | {transport} | 30 |" in report
    assert "Violations: 0." in report
    assert kept in report
    assert report.index("## Soak") < report.index("## The idle race") < report.index(kept)
