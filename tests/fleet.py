"""A fleet of job processes in an outage: how many requests each call costs Avatario.

Each job is a process of its own (multiprocessing's spawn, as livekit-agents starts job
processes) that makes one client and one call, on one of the three transports in turn, with
its retry budget where the fleet's is (`store`: "process", a host-wide SQLite file, or a
Redis URL). A real fake Avatario on 127.0.0.1 answers every start-session with a 503 and counts
what reaches it. Used by tests/test_fleet.py and by scripts/fleet-outage (the figures of
docs/retries.md).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Sequence
from typing import Any

KEY = "sk_fleet_outage_key_0001"
CALL = {
    "avatar_id": "face_fleet",
    "agent_identity": "agent-fleet",
    "livekit_url": "wss://rooms.example.com",
    "livekit_token": "eyJ.fleet.token",
}
KINDS = ("sync", "async-aiohttp", "async-httpx")


def one_job(
    url: str, kind: str, store: str, policy: dict[str, Any], start: Any, results: Any
) -> None:
    """A job process: one fresh client, one call, its outcome put on `results`."""
    import avatario_wrapper._clients as clients
    from avatario_wrapper import (
        APIError,
        AsyncAvatarioClient,
        AvatarioClient,
        RetryPolicy,
    )

    if kind == "async-httpx":
        clients._aiohttp_fits = lambda environment: False  # the client's own httpx pool
    retry = RetryPolicy(**policy)
    start.wait()
    began = time.monotonic()
    outcome: Any
    try:
        if kind == "sync":
            with AvatarioClient(KEY, base_url=url, retry=retry, retry_budget_store=store) as c:
                c.start_session(**CALL)
        else:

            async def call() -> None:
                async with AsyncAvatarioClient(
                    KEY, base_url=url, retry=retry, retry_budget_store=store
                ) as c:
                    await c.start_session(**CALL)

            asyncio.run(call())
        outcome = "ok"
    except APIError as error:
        outcome = (error.attempts, error.not_retried_because or "")
    results.put((kind, outcome, time.monotonic() - began))


def run_fleet(
    url: str, stores: Sequence[str], policy: dict[str, Any], *, timeout: float = 120.0
) -> list[tuple[str, Any, float]]:
    """One job per entry of `stores` (its budget's store), all released at once."""
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(len(stores) + 1)  # each job, once imported, and this process
    results = context.Queue()
    jobs = [
        context.Process(
            target=one_job,
            args=(url, KINDS[i % len(KINDS)], store, policy, start, results),
            daemon=True,
        )
        for i, store in enumerate(stores)
    ]
    for job in jobs:
        job.start()
    start.wait(timeout)
    outcomes = [results.get(timeout=timeout) for _ in jobs]
    for job in jobs:
        job.join(10)
    return outcomes
