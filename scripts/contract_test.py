"""Run schemathesis against openapi.yaml: the embedded fake by default, or a deployment.

    scripts/contract-test                      # the fake Avatario on 127.0.0.1, must pass
    AVATARIO_API_KEY=... scripts/contract-test --url https://staging.example/api/sdk

Every check, positive and negative data, the examples, coverage and fuzzing phases. Extra
arguments after ``--`` go to ``schemathesis run`` (for example ``-- -n 500``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from avatario_wrapper.testing import run_fake_server

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "contract" / "schemathesis.toml"


@contextlib.contextmanager
def _target(url: str | None) -> Iterator[tuple[str, str]]:
    if url is not None:
        key = os.environ.get("AVATARIO_API_KEY")
        if not key:
            sys.exit("contract-test: --url needs the deployment's key in AVATARIO_API_KEY")
        yield url, key
        return
    key = "contract-" + secrets.token_hex(12)
    with run_fake_server(api_key=key) as server:
        print(f"contract-test: fake Avatario on {server.url}", file=sys.stderr)
        yield server.url, key


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="base URL of a deployment (default: the fake server)")
    parser.add_argument("--max-examples", type=int, default=100)
    parser.add_argument("rest", nargs="*", help="extra schemathesis arguments (after --)")
    args = parser.parse_args()
    with _target(args.url) as (url, key):
        command = [
            str(Path(sys.executable).parent / "schemathesis"),
            "--config-file",
            str(CONFIG),
            "run",
            str(ROOT / "openapi.yaml"),
            "--url",
            url,
            "--checks",
            "all",
            "--mode",
            "all",
            "--max-examples",
            str(args.max_examples),
            *args.rest,
        ]
        env = {**os.environ, "AVATARIO_API_KEY": key, "SCHEMATHESIS_COLOR": "false"}
        return subprocess.run(command, env=env, check=False, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
