"""Requests per call in a sustained outage (every start-session answered 503), default
settings, through a real fake Avatario on 127.0.0.1 and real processes (tests/fleet.py).

    scripts/fleet-outage [--jobs 40] [--redis redis://127.0.0.1:6379/0]

Without --redis, a Redis is started for the run when one can be (tests/redis_server.py);
else that row says why it is missing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import contextlib

from avatario_wrapper import APIError, AvatarioClient
from avatario_wrapper.testing import run_fake_server
from tests.fleet import CALL, KEY, run_fleet
from tests.redis_server import RedisServer, find_binary


def fleet_row(name: str, stores: list[str]) -> str:
    with run_fake_server(api_key=KEY, faults="503@100%") as server:
        began = time.monotonic()
        outcomes = run_fleet(server.url, stores, {}, timeout=300)
        took = time.monotonic() - began
        sent = sum(1 for r in server.requests if r.operation_id == "startSession")
    longest = max(seconds for _, _, seconds in outcomes)
    return f"| {name} | {len(stores)} | {sent / len(stores):.2f} | {longest:.1f} s | {took:.1f} s |"


def client_row(calls: int) -> str:
    with run_fake_server(api_key=KEY, faults="503@100%") as server:
        began = time.monotonic()
        longest = 0.0
        with AvatarioClient(KEY, base_url=server.url) as client:
            for _ in range(calls):
                started = time.monotonic()
                with contextlib.suppress(APIError):
                    client.start_session(**CALL)
                longest = max(longest, time.monotonic() - started)
        took = time.monotonic() - began
        sent = sum(1 for r in server.requests if r.operation_id == "startSession")
    return (
        f"| one long-lived client, calls one after another | {calls} | {sent / calls:.2f} "
        f"| {longest:.1f} s | {took:.1f} s |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--redis", help="a Redis URL (default: start one for the run)")
    args = parser.parse_args()
    print("| how the calls are made | calls | requests per call | longest call | run |")
    print("| --- | --- | --- | --- | --- |")
    print(fleet_row("job processes, a budget each (`process`)", ["process"] * args.jobs))
    with tempfile.TemporaryDirectory() as folder:
        host = f"sqlite://{folder}/budget.sqlite3"
        print(fleet_row("job processes, the host-wide store (`host`)", [host] * args.jobs))
        if args.redis:
            print(fleet_row("job processes, one Redis", [args.redis] * args.jobs))
        elif (binary := find_binary()) is not None:
            (Path(folder) / "redis").mkdir()
            with RedisServer(binary, Path(folder) / "redis") as redis:
                print(fleet_row("job processes, one Redis", [redis.url] * args.jobs))
        else:
            print("| job processes, one Redis | - | (no redis-server here) | - | - |")
    print(client_row(60))
    return 0


if __name__ == "__main__":
    sys.exit(main())
