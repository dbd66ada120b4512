"""How fast the fake Avatario answers on loopback: the figures in docs/testing.md.

    .venv/bin/python benchmarks/fake_speed.py               # the figures in docs/testing.md
    .venv/bin/python benchmarks/fake_speed.py --calls 50    # a quick look

For each client (the sync `AvatarioClient` over httpx, the `AsyncAvatarioClient` over its
default aiohttp sender and over an `httpx.AsyncClient`) it times ``start_session`` calls made
back to back on one kept-alive connection (median and p90 per call, calls per second), then
the throughput with `--concurrency` calls in flight (async clients only; the sync client runs
that many threads on one client). The fake runs in this process, in its own thread, as tests
run it (`run_fake_server`); every call starts a session (the fake ignores Idempotency-Key).
The fake's own CPU time per call (its thread's CPU clock, where the platform has one) is
shown too: unlike the wall-clock figures it barely moves when other work shares the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from avatario_wrapper import AsyncAvatarioClient, AvatarioClient  # noqa: E402
from avatario_wrapper.testing import run_fake_server  # noqa: E402

KEY = "bench-key"
CALL: dict[str, Any] = {
    "avatar_id": "face_1",
    "agent_identity": "agent-7",
    "livekit_url": "wss://rooms.example.com",
    "livekit_token": "header.payload.signature",
}


class FakeCpu:
    """The CPU time the fake's server thread has used, in seconds (nan where unknown)."""

    def __init__(self) -> None:
        [thread] = [t for t in threading.enumerate() if t.name == "fake-avatario"]
        self._clock = (
            time.pthread_getcpuclockid(thread.ident)
            if hasattr(time, "pthread_getcpuclockid") and thread.ident is not None
            else None
        )

    def __call__(self) -> float:
        return math.nan if self._clock is None else time.clock_gettime(self._clock)


CPU: list[FakeCpu] = []


def summary(name: str, mode: str, per_call: list[float], wall: float) -> dict[str, Any]:
    ordered = sorted(per_call)
    return {
        "client": name,
        "mode": mode,
        "calls": len(per_call),
        "median_ms": statistics.median(ordered) * 1000,
        "p90_ms": ordered[int(0.9 * (len(ordered) - 1))] * 1000,
        "calls_per_s": len(per_call) / wall,
    }


def measured(
    name: str, mode: str, cpu_before: float, times: list[float], wall: float
) -> dict[str, Any]:
    """The summary of a run, with the fake's CPU milliseconds per call since `cpu_before`."""
    cpu_ms = (CPU[0]() - cpu_before) / len(times) * 1000
    return {**summary(name, mode, times, wall), "fake_cpu_ms": cpu_ms}


def timed_sync(client: AvatarioClient, calls: int) -> tuple[list[float], float]:
    times: list[float] = []
    started = time.perf_counter()
    for _ in range(calls):
        before = time.perf_counter()
        client.start_session(**CALL)
        times.append(time.perf_counter() - before)
    return times, time.perf_counter() - started


def sync_sequential(url: str, calls: int, warm_up: int) -> dict[str, Any]:
    with AvatarioClient(KEY, base_url=url) as client:
        timed_sync(client, warm_up)
        before = CPU[0]()
        times, wall = timed_sync(client, calls)
    return measured("sync (httpx)", "sequential", before, times, wall)


def sync_concurrent(url: str, calls: int, concurrency: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with (
        httpx.Client(limits=limits) as http,
        AvatarioClient(KEY, base_url=url, http_client=http) as client,
        ThreadPoolExecutor(concurrency) as pool,
    ):
        list(pool.map(lambda _: client.start_session(**CALL), range(concurrency)))  # warm up

        def one(_: int) -> float:
            before = time.perf_counter()
            client.start_session(**CALL)
            return time.perf_counter() - before

        before = CPU[0]()
        started = time.perf_counter()
        times = list(pool.map(one, range(calls)))
        wall = time.perf_counter() - started
    return measured("sync (httpx)", f"{concurrency} threads", before, times, wall)


async def timed_async(
    call: Callable[[], Awaitable[Any]], calls: int, concurrency: int
) -> tuple[list[float], float]:
    times: list[float] = []
    queue = iter(range(calls))

    async def worker() -> None:
        for _ in queue:
            before = time.perf_counter()
            await call()
            times.append(time.perf_counter() - before)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return times, time.perf_counter() - started


async def async_runs(
    url: str, sender: str, calls: int, warm_up: int, concurrency: int
) -> list[dict[str, Any]]:
    name = f"async ({sender})"
    results = []
    http: httpx.AsyncClient | None = None
    if sender == "httpx":
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        http = httpx.AsyncClient(limits=limits)
    try:
        async with AsyncAvatarioClient(KEY, base_url=url, http_client=http) as client:

            async def call() -> Any:
                return await client.start_session(**CALL)

            await timed_async(call, warm_up, 1)
            before = CPU[0]()
            times, wall = await timed_async(call, calls, 1)
            results.append(measured(name, "sequential", before, times, wall))
            await timed_async(call, concurrency, concurrency)  # open the connections
            before = CPU[0]()
            times, wall = await timed_async(call, calls, concurrency)
            results.append(measured(name, f"{concurrency} in flight", before, times, wall))
    finally:
        if http is not None:
            await http.aclose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=400, help="measured calls per run")
    parser.add_argument("--warm-up", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with run_fake_server(api_key=KEY, honour_idempotency_key=False) as server:
        CPU.append(FakeCpu())
        rows.append(sync_sequential(server.url, args.calls, args.warm_up))
        rows.append(sync_concurrent(server.url, args.calls, args.concurrency))
        for sender in ("aiohttp", "httpx"):
            rows.extend(
                asyncio.run(
                    async_runs(server.url, sender, args.calls, args.warm_up, args.concurrency)
                )
            )
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"# fake Avatario on loopback: Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}, {platform.machine()}, {cpus} CPUs"
    )
    print("| client | mode | calls | median ms/call | p90 ms/call | calls/s | fake CPU ms/call |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(
            f"| {row['client']} | {row['mode']} | {row['calls']} | {row['median_ms']:.2f} "
            f"| {row['p90_ms']:.2f} | {row['calls_per_s']:.0f} | {row['fake_cpu_ms']:.2f} |"
        )


if __name__ == "__main__":
    main()
