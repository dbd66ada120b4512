"""Helpers for the retry budget store tests: unique scopes, stores on a fake clock, and the
work each spawned process does (module-level, so multiprocessing's spawn can import it)."""

from __future__ import annotations

import logging
import multiprocessing
import uuid
from pathlib import Path
from typing import Any

from avatario_wrapper._stores import BudgetStore, HostStore, ProcessStore


def new_scope(tag: str = "t") -> str:
    """A scope no other test (nor a concurrent run on the shared Redis) uses."""
    return f"test-{tag}-{uuid.uuid4().hex[:16]}"


def allowed(store: BudgetStore, scope: str, tries: int, share: float | None = 0.2) -> int:
    """How many of `tries` failures asking for a retry got one."""
    return sum(
        store.failed(scope, retry=True, share=share, cool_until=None).allowed for _ in range(tries)
    )


def make_store(kind: str, target: str, **options: Any) -> BudgetStore:
    """A store of `kind`: "process", "host" (`target` the file) or "redis" (`target` the URL)."""
    if kind == "process":
        return ProcessStore(**options)
    if kind == "host":
        return HostStore(target, **options)
    from avatario_wrapper._stores.redis import RedisStore

    return RedisStore(target, **options)


def deposit_then_retry(
    kind: str, target: str, fallback_file: str, scope: str, barrier: Any, results: Any
) -> None:
    """One job process: a first attempt, then a failure that asks for a retry. Reports
    whether the retry was allowed and how many WARNINGs the store logged."""
    warnings: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: warnings.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("avatario_wrapper").addHandler(handler)
    # A generous busy timeout: this test is about atomicity, not latency, on a loaded machine.
    options: dict[str, Any] = {"busy_timeout": 5.0} if kind == "host" else {}
    if kind == "redis":  # a slow spawn on 2 cores must not look like a Redis outage
        options = {
            "timeout": 5.0,
            "connect_timeout": 5.0,
            "fallback": HostStore(Path(fallback_file), busy_timeout=5.0),
        }
    store = make_store(kind, target, **options)
    barrier.wait()
    store.deposit(scope)
    verdict = store.failed(scope, retry=True, share=0.2, cool_until=None)
    store.close()
    results.put((verdict.allowed, warnings))


def run_jobs(kind: str, target: str, fallback_files: list[str], scope: str) -> list[Any]:
    """`deposit_then_retry` in one spawned process per fallback file, all released at once
    (as LiveKit starts its job processes); each one's (allowed, warnings)."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(fallback_files))
    results = context.Queue()
    processes = [
        context.Process(
            target=deposit_then_retry, args=(kind, target, file, scope, barrier, results)
        )
        for file in fallback_files
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(30)
        assert process.exitcode == 0
    return outcomes
