"""What a retry budget store costs a call: each operation of each store, side by side.

    .venv/bin/python benchmarks/stores.py                     # the figures in docs/retries.md
    .venv/bin/python benchmarks/stores.py --ops 200           # a quick look
    .venv/bin/python benchmarks/stores.py --redis-url redis://127.0.0.1:6379/0

Stores: the in-process one (beside the client's `RetryBudget` of before, its deposit and
withdrawal), the host-wide one (SQLite in a fresh temp folder) and the Redis one (a
redis-server on loopback started from the dev group's binary, as the tests do, unless
`--redis-url` names one). Each operation is timed `--ops` times in a row per round, rounds
interleaved across stores; reported: the median over rounds of wall-clock microseconds per
operation (the async twins inside one running event loop). Then what failures cost one
operation: the host file locked by another process (the first operation waits out the busy
timeout; the next ones go straight to the fallback), Redis refusing connections and Redis
accepting but never answering (the first operation waits out the timeout), and the host
store's first operation in a process (making the file, or opening it). Last, host-file
contention: `--writers` processes depositing for 2 s, `--rate` a second each and then as fast
as they can: how many deposits a second the shared file took, the share of all that is, and
the slowest operation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import multiprocessing
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from avatario_wrapper._budget import RetryBudget  # noqa: E402
from avatario_wrapper._clock import SYSTEM_CLOCK  # noqa: E402
from avatario_wrapper._stores import BudgetStore, HostStore, ProcessStore  # noqa: E402
from avatario_wrapper._stores.redis import RedisStore  # noqa: E402
from tests.redis_server import RedisServer, find_binary  # noqa: E402

OPERATIONS = ["deposit", "failed", "succeeded", "status", "take_probe", "adeposit", "afailed"]


def _scope() -> str:
    return f"bench-{uuid.uuid4().hex[:16]}"


def _sync_op(store: BudgetStore, name: str, scope: str) -> Callable[[], object]:
    if name == "deposit":
        return lambda: store.deposit(scope)
    if name == "failed":
        return lambda: store.failed(scope, retry=True, share=0.2, cool_until=None)
    if name == "succeeded":
        return lambda: store.succeeded(scope)
    if name == "status":
        return lambda: store.status(scope)
    return lambda: store.take_probe(scope, lease=0.0, share=None)


def _time_sync(op: Callable[[], object], ops: int) -> float:
    started = time.perf_counter()
    for _ in range(ops):
        op()
    return (time.perf_counter() - started) / ops * 1e6


def _time_async(store: BudgetStore, name: str, scope: str, ops: int) -> float:
    async def run() -> float:
        started = time.perf_counter()
        if name == "adeposit":
            for _ in range(ops):
                await store.adeposit(scope)
        else:
            for _ in range(ops):
                await store.afailed(scope, retry=True, share=0.2, cool_until=None)
        elapsed = time.perf_counter() - started
        await store.aclose()
        return elapsed / ops * 1e6

    return asyncio.run(run())


def _legacy(name: str) -> Callable[[], object] | None:
    """The same operation on the clients' RetryBudget of before, where it has one."""
    budget = RetryBudget(SYSTEM_CLOCK)
    if name == "deposit":
        return budget.deposit
    if name == "failed":
        return lambda: budget.try_withdraw(0.2)
    return None


def measure(stores: dict[str, BudgetStore], ops: int, rounds: int) -> dict[str, dict[str, float]]:
    samples: dict[str, dict[str, list[float]]] = {}
    legacy = {name: _legacy(name) for name in OPERATIONS}
    for _ in range(rounds):
        for name in OPERATIONS:
            if (op := legacy[name]) is not None:
                samples.setdefault("before (RetryBudget)", {}).setdefault(name, []).append(
                    _time_sync(op, ops)
                )
            for label, store in stores.items():
                scope = _scope()
                if name.startswith("a"):
                    cost = _time_async(store, name, scope, ops)
                else:
                    cost = _time_sync(_sync_op(store, name, scope), ops)
                samples.setdefault(label, {}).setdefault(name, []).append(cost)
    return {
        label: {name: statistics.median(values) for name, values in row.items()}
        for label, row in samples.items()
    }


def _print_table(table: dict[str, dict[str, float]]) -> None:
    print("| store | " + " | ".join(f"`{n}`" for n in OPERATIONS) + " |")
    print("| --- |" + " ---: |" * len(OPERATIONS))
    for label, row in table.items():
        cells = [f"{row[n]:.1f}" if n in row else "" for n in OPERATIONS]
        print(f"| {label} | " + " | ".join(cells) + " |")


class _Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.seen += 1


def _once(op: Callable[[], object]) -> float:
    started = time.perf_counter()
    op()
    return (time.perf_counter() - started) * 1e3


_HOLD = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(60)
"""


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(path)], stdout=subprocess.PIPE)
    assert holder.stdout is not None
    holder.stdout.readline()
    try:
        yield
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def failures(folder: Path) -> None:
    print("\nWhat a failure costs one operation (`failed`, ms): first, then the next ones")
    path = folder / "locked.sqlite3"
    store = HostStore(path)
    scope = _scope()
    store.deposit(scope)
    with _locked(path):
        first = _once(_sync_op(store, "failed", scope))
        after = statistics.median(_once(_sync_op(store, "failed", scope)) for _ in range(200))
    print(f"- host file locked by another process: {first:.2f} then {after:.3f}")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    refused = RedisStore(f"redis://127.0.0.1:{port}/0", fallback=ProcessStore())
    _once(_sync_op(refused, "failed", _scope()))  # redis-py's lazy imports, not the refusal
    refused = RedisStore(f"redis://127.0.0.1:{port}/0", fallback=ProcessStore())
    first = _once(_sync_op(refused, "failed", scope))
    after = statistics.median(_once(_sync_op(refused, "failed", scope)) for _ in range(200))
    print(f"- Redis refusing connections: {first:.2f} then {after:.3f} (the fallback's)")
    silent = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    hung = RedisStore(f"redis://127.0.0.1:{silent.getsockname()[1]}/0", fallback=ProcessStore())
    silent.settimeout(2)
    started = time.perf_counter()
    caller = threading.Thread(target=_sync_op(hung, "failed", scope))
    caller.start()
    held.append(silent.accept()[0])  # the connection it opened, held open and silent
    caller.join()
    first = (time.perf_counter() - started) * 1e3
    print(f"- Redis accepting, never answering: {first:.2f} (connect, then the 5 ms timeout)")
    for conn in held:
        conn.close()
    silent.close()
    made = _once(_sync_op(HostStore(folder / "new.sqlite3"), "deposit", scope))
    opened = _once(_sync_op(HostStore(folder / "new.sqlite3"), "deposit", scope))
    print(
        f"- the host store's first operation: {made:.2f} making the file, {opened:.2f} opening it"
    )


def _writer(path: str, rate: float, barrier: Any, results: Any) -> None:
    """Deposits for 2 s, `rate` a second (0: as fast as it can)."""
    logging.disable(logging.WARNING)
    store = HostStore(path)
    scope = "bench-contended"
    worst = 0.0
    done = 0
    barrier.wait()
    began = time.monotonic()
    while (now := time.monotonic()) < began + 2.0:
        if rate and now < began + done / rate:
            time.sleep(began + done / rate - now)
        started = time.perf_counter()
        store.deposit(scope)
        worst = max(worst, time.perf_counter() - started)
        done += 1
    results.put((done, worst))


def contention(folder: Path, writers: int, rate: float) -> None:
    path = folder / f"contended-{rate}.sqlite3"
    HostStore(path).status("bench-contended")  # the file made
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(writers)
    results = context.Queue()
    processes = [
        context.Process(target=_writer, args=(str(path), rate, barrier, results))
        for _ in range(writers)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join()
    done = sum(o[0] for o in outcomes)
    worst = max(o[1] for o in outcomes) * 1e3
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        [state] = conn.execute("SELECT state FROM budget_v1").fetchone()
    shared = sum(json.loads(state)[1])  # the deposits the file counted (all within 2 s)
    pace = f"{rate:,.0f} a second each" if rate else "as fast as they can"
    print(
        f"- {writers} processes depositing {pace} for 2 s: {shared / 2:,.0f} deposits/s reached "
        f"the file, {shared / done:.1%} of all (the rest: each process's own budget, after a "
        f"busy timeout); slowest operation {worst:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=2000, help="operations per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--rate", type=float, default=250, help="deposits/s per writer")
    parser.add_argument("--redis-url", help="a Redis to use (default: start one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp, contextlib.ExitStack() as stack:
        folder = Path(temp)
        url = args.redis_url
        if url is None:
            binary = find_binary()
            if binary is None:
                sys.exit("no redis-server binary (run scripts/setup) and no --redis-url")
            (folder / "redis").mkdir()
            url = stack.enter_context(RedisServer(binary, folder / "redis")).url
        stores: dict[str, BudgetStore] = {
            "in-process": ProcessStore(),
            "host-wide (SQLite)": HostStore(folder / "budget.sqlite3"),
            "Redis (loopback)": RedisStore(url, fallback=ProcessStore()),
        }
        print(f"Microseconds per operation, median of {args.rounds} rounds of {args.ops}:\n")
        warnings = _Count()
        logging.getLogger("avatario_wrapper").addHandler(warnings)
        _print_table(measure(stores, args.ops, args.rounds))
        logging.getLogger("avatario_wrapper").removeHandler(warnings)
        print(f"\n{warnings.seen} WARNING(s) while measuring (a store that fell back)")
        for store in stores.values():
            store.close()
        failures(folder)
        print("\nThe host file under contention:")
        contention(folder, args.writers, args.rate)
        contention(folder, args.writers, 0)


if __name__ == "__main__":
    main()
