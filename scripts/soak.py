"""Soak the clients against the fake Avatario under random faults and check every call.

    scripts/soak                       # 10,000 calls, stops early after --seconds (default 110)
    scripts/soak --calls 300 --seconds 20

Async calls (many in flight, over the aiohttp sender and over httpx) and threaded sync calls
run at once against the fake server, which plays a random mix of 5xx bursts, resets, lost
responses, stalls, 429s with Retry-After and malformed 2xx bodies. For every call it checks:
the outcome is a StartSessionResult or a typed APIError; attempts ≤ max_attempts; the elapsed
time ≤ max_elapsed plus a small tolerance; the fake started at most one session for the call
(each call has its own agent identity). After the run, open file descriptors must be back to
the baseline and no captured log line may hold the key or the token. The last line is

    calls=N ok=N errors=N violations=0 leaked_sockets=0 secrets_leaked=0

and the exit status is non-zero on any violation.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import os
import random
import secrets
import statistics
import sys
import threading
import time
from typing import Any

import httpx

from avatario_wrapper import (
    APIError,
    AsyncAvatarioClient,
    AvatarioClient,
    RetryPolicy,
    StartSessionResult,
)
from avatario_wrapper.testing import Fault, run_fake_server

KEY = "soak-key-" + secrets.token_hex(12)
TOKEN = "soak.token." + secrets.token_hex(16)
POLICY = RetryPolicy(
    max_attempts=4, initial_delay=0.01, max_delay=0.1, max_elapsed=3.0, max_retry_after=0.5
)
TIMEOUT = 0.6
TOLERANCE = 0.5  # seconds of scheduling slack on a loaded 2-core machine
FAULTS = [  # (weight, fault)
    (62, Fault("ok")),
    (8, Fault("503")),
    (4, Fault("500")),
    (3, Fault("502")),
    (4, Fault("reset")),
    (4, Fault("lost")),
    (2, Fault("stall")),
    (5, Fault("429", retry_after="0.05")),
    (2, Fault("429", retry_after="30")),  # longer than max_retry_after: fail at once
    (3, Fault("malformed")),
    (3, Fault("ok", delay=0.05)),
]


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Soak:
    def __init__(self, calls: int, seconds: float, seed: int) -> None:
        self.calls = calls
        self.deadline = time.monotonic() + seconds
        self.random = random.Random(seed)  # noqa: S311 - fault mix, not cryptography
        self.lock = threading.Lock()
        self.next_call = 0
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.violations: list[str] = []
        self.texts: list[str] = []  # every error text and repr, scanned for secrets
        self.elapsed: list[float] = []
        self.attempts: collections.Counter[int] = collections.Counter()

    def take(self) -> int | None:
        with self.lock:
            if self.next_call >= self.calls or time.monotonic() > self.deadline:
                return None
            self.next_call += 1
            return self.next_call

    def faults(self, count: int) -> list[Fault]:
        weights = [w for w, _ in FAULTS]
        return self.random.choices([f for _, f in FAULTS], weights, k=count)

    def args(self, n: int) -> dict[str, Any]:
        return {
            "avatar_id": "face_soak",
            "agent_identity": f"agent-{n}",
            "livekit_url": "wss://rooms.example.com",
            "livekit_token": TOKEN,
        }

    def record(self, n: int, outcome: object, elapsed: float) -> None:
        problems = []
        if isinstance(outcome, StartSessionResult):
            kind, attempts = "ok", outcome.attempts
            self.texts.append(repr(outcome))
        elif isinstance(outcome, APIError):
            kind, attempts = type(outcome).__name__, outcome.attempts
            self.texts += [str(outcome), repr(outcome), str(getattr(outcome, "body", ""))]
        else:
            kind, attempts = f"UNTYPED {type(outcome).__name__}", 0
            problems.append(f"call {n}: untyped outcome {outcome!r}")
        if not 1 <= attempts <= POLICY.max_attempts:
            problems.append(f"call {n}: {attempts} attempts")
        if elapsed > POLICY.max_elapsed + TOLERANCE:
            problems.append(f"call {n}: took {elapsed:.2f} s")
        with self.lock:
            self.outcomes[kind] += 1
            self.attempts[attempts] += 1
            self.elapsed.append(elapsed)
            self.violations += problems

    def sync_worker(self, url: str) -> None:
        with AvatarioClient(KEY, base_url=url, retry=POLICY, timeout=TIMEOUT) as client:
            while (n := self.take()) is not None:
                started = time.monotonic()
                outcome: object
                try:
                    outcome = client.start_session(**self.args(n))
                except APIError as error:
                    outcome = error
                except Exception as error:
                    outcome = error
                self.record(n, outcome, time.monotonic() - started)

    async def async_workers(self, url: str, count: int) -> None:
        async with httpx.AsyncClient() as http:
            clients = [
                AsyncAvatarioClient(KEY, base_url=url, retry=POLICY, timeout=TIMEOUT),
                AsyncAvatarioClient(
                    KEY, base_url=url, retry=POLICY, timeout=TIMEOUT, http_client=http
                ),
            ]

            async def worker(client: AsyncAvatarioClient) -> None:
                while (n := self.take()) is not None:
                    started = time.monotonic()
                    outcome: object
                    try:
                        outcome = await client.start_session(**self.args(n))
                    except APIError as error:
                        outcome = error
                    except Exception as error:
                        outcome = error
                    self.record(n, outcome, time.monotonic() - started)

            await asyncio.gather(*(worker(clients[i % 2]) for i in range(count)))
            for client in clients:
                await client.aclose()


def settle_fds(baseline: int, seconds: float = 5.0) -> int:
    """Open descriptors above the baseline, after giving closing sockets a moment."""
    deadline = time.monotonic() + seconds
    while open_fds() > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    return max(0, open_fds() - baseline)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=110.0)
    parser.add_argument("--async-tasks", type=int, default=48)
    parser.add_argument("--threads", type=int, default=6)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)

    captured = Captured()
    root = logging.getLogger()
    root.addHandler(captured)
    root.setLevel(logging.DEBUG)
    soak = Soak(args.calls, args.seconds, seed)
    started = time.monotonic()
    with run_fake_server(api_key=KEY) as server:
        server.add_faults(soak.faults(int(args.calls * 1.6)))
        baseline = open_fds()
        threads = [
            threading.Thread(target=soak.sync_worker, args=(server.url,))
            for _ in range(args.threads)
        ]
        for thread in threads:
            thread.start()
        asyncio.run(soak.async_workers(server.url, args.async_tasks))
        for thread in threads:
            thread.join()
        leaked = settle_fds(baseline)
        sessions = collections.Counter(s["payload"]["agent_id"] for s in server.sessions)
        requests = len(server.requests)
    took = time.monotonic() - started
    root.removeHandler(captured)

    for agent, count in sessions.items():
        if count > 1:
            soak.violations.append(f"{agent}: {count} sessions started for one call")
    texts = captured.lines + soak.texts
    leaked_secrets = sum(1 for t in texts if KEY in t or TOKEN in t)

    calls = sum(soak.outcomes.values())
    ok = soak.outcomes["ok"]
    elapsed = sorted(soak.elapsed) or [0.0]
    print(f"seed={seed} took={took:.1f}s requests={requests} sessions={sum(sessions.values())}")
    print("outcomes: " + ", ".join(f"{k}={v}" for k, v in soak.outcomes.most_common()))
    print("attempts: " + ", ".join(f"{k}={v}" for k, v in sorted(soak.attempts.items())))
    print(
        f"elapsed per call: median {statistics.median(elapsed) * 1000:.0f} ms, "
        f"p99 {elapsed[int(len(elapsed) * 0.99) - 1] * 1000:.0f} ms, "
        f"max {elapsed[-1] * 1000:.0f} ms (limit {(POLICY.max_elapsed + TOLERANCE) * 1000:.0f})"
    )
    print(f"log lines captured: {len(captured.lines)}")
    for violation in soak.violations[:20]:
        print(f"VIOLATION {violation}")
    print(
        f"calls={calls} ok={ok} errors={calls - ok} violations={len(soak.violations)} "
        f"leaked_sockets={leaked} secrets_leaked={leaked_secrets}"
    )
    return 1 if soak.violations or leaked or leaked_secrets else 0


if __name__ == "__main__":
    sys.exit(main())
