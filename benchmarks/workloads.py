"""What each measured process runs. Invoked by benchmarks/run.py, one workload per process:

    python benchmarks/workloads.py cold KIND URL           # import + one call, then exit
    python benchmarks/workloads.py phases KIND URL         # a cold start, phase by phase
    python benchmarks/workloads.py import                   # time `import avatario_wrapper`
    python benchmarks/workloads.py latency URL N ROUNDS     # sequential calls, per-call times
    python benchmarks/workloads.py throughput KIND URL CONC CALLS
    python benchmarks/workloads.py cpu KIND URL CALLS        # client CPU per call, 1 in flight
    python benchmarks/workloads.py recovery KIND URL SCRIPT RUNS
    python benchmarks/workloads.py memory URL CALLS

Results are one JSON line on stdout. KIND is one of CLIENTS below; "plugin" needs the old
livekit-plugins-avatario installed (its own environment), the others this project.
Only the loopback benchmark server is ever contacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

KEY = "bench-key-0123456789"
TOKEN = "bench.token.value"
CALL = {
    "avatar_id": "face_bench",
    "agent_identity": "agent-bench",
    "livekit_url": "wss://rooms.example.com",
    "livekit_token": TOKEN,
}
PAYLOAD = json.dumps(
    {
        "avatario_face_id": "face_bench",
        "agent_id": "agent-bench",
        "livekit": {"url": "wss://rooms.example.com", "token": TOKEN},
        "video_height": 720,
        "video_width": 1280,
    }
).encode()
# The raw transports send the same request the wrapper sends (its headers included, a fresh
# idempotency key per call), so a ratio measures the wrapper's own cost.
BASE_HEADERS = {
    "content-type": "application/json",
    "accept": "application/json",
    "user-agent": "avatario-wrapper/bench",
    "x-api-key": KEY,
}


def headers() -> dict[str, str]:
    return {**BASE_HEADERS, "idempotency-key": str(uuid.uuid4())}


SYNC_CLIENTS = ("ours-sync", "httpx-sync")
ASYNC_CLIENTS = (
    "ours-async",
    "ours-async-httpx",
    "httpx-async",
    "aiohttp",
    "plugin",
    "plugin-session",
)
CLIENTS = SYNC_CLIENTS + ASYNC_CLIENTS + ("generated",)


# The wrapper logs each retry at WARNING; keep that off the benchmark's output.
logging.getLogger("avatario_wrapper").addHandler(logging.NullHandler())
logging.getLogger("avatario_wrapper").propagate = False


def _print(result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)


# -- one call with each client --------------------------------------------------------------


def make_sync(kind: str, url: str) -> tuple[Callable[[], Any], Callable[[], None]]:
    """A function making one call, and one closing the client."""
    if kind == "ours-sync":
        from avatario_wrapper import AvatarioClient

        client = AvatarioClient(KEY, base_url=url)
        return (lambda: client.start_session(**CALL)), client.close
    if kind == "httpx-sync":
        import httpx

        http = httpx.Client()

        def call() -> Any:
            response = http.post(f"{url}/start-session", content=PAYLOAD, headers=headers())
            return response.json()

        return call, http.close
    if kind == "generated":
        from avatario_wrapper._generated import AuthenticatedClient
        from avatario_wrapper._generated.api.sessions import start_session
        from avatario_wrapper._generated.models import StartSessionRequest

        gen = AuthenticatedClient(base_url=url, token=KEY, auth_header_name="x-api-key", prefix="")
        body = StartSessionRequest.from_dict(json.loads(PAYLOAD))
        return (lambda: start_session.sync(client=gen, body=body)), gen.get_httpx_client().close
    raise SystemExit(f"unknown sync client {kind}")


async def make_async(
    kind: str, url: str
) -> tuple[Callable[[], Awaitable[Any]], Callable[[], Awaitable[None]]]:
    if kind in ("ours-async", "ours-async-httpx"):
        import httpx

        from avatario_wrapper import AsyncAvatarioClient

        http = httpx.AsyncClient() if kind == "ours-async-httpx" else None
        client = AsyncAvatarioClient(KEY, base_url=url, http_client=http)

        async def close() -> None:
            await client.aclose()
            if http is not None:
                await http.aclose()

        return (lambda: client.start_session(**CALL)), close
    if kind == "httpx-async":
        import httpx

        ahttp = httpx.AsyncClient()

        async def call() -> Any:
            response = await ahttp.post(f"{url}/start-session", content=PAYLOAD, headers=headers())
            return response.json()

        return call, ahttp.aclose
    if kind == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession()

        async def call_aiohttp() -> Any:
            async with session.post(
                f"{url}/start-session", data=PAYLOAD, headers=headers()
            ) as response:
                return await response.json()

        return call_aiohttp, session.close
    if kind == "plugin":
        import livekit.plugins.avatario.api as plugin_api

        plugin_api.DEFAULT_API_URL = url  # the old plugin hard-codes production
        api = plugin_api.AvatarioAPI(KEY, "face_bench", {"video_height": 720, "video_width": 1280})
        await api.__aenter__()
        properties = {"url": "wss://rooms.example.com", "token": TOKEN}

        async def call_plugin() -> Any:
            return await api.start_session(
                livekit_agent_identity="agent-bench", properties=properties
            )

        async def close_plugin() -> None:
            await api.__aexit__(None, None, None)

        return call_plugin, close_plugin
    if kind == "plugin-session":
        # As the old plugin's AvatarSession.start uses it: a new AvatarioAPI, so a new
        # aiohttp session and a new connection, for every start.
        import livekit.plugins.avatario.api as plugin_api

        plugin_api.DEFAULT_API_URL = url
        properties = {"url": "wss://rooms.example.com", "token": TOKEN}
        video = {"video_height": 720, "video_width": 1280}

        async def call_plugin_session() -> Any:
            async with plugin_api.AvatarioAPI(KEY, "face_bench", video) as api:
                return await api.start_session(
                    livekit_agent_identity="agent-bench", properties=properties
                )

        async def nothing() -> None:
            return None

        return call_plugin_session, nothing
    raise SystemExit(f"unknown async client {kind}")


# -- workloads -----------------------------------------------------------------------------


def cold(kind: str, url: str) -> None:
    if kind in ASYNC_CLIENTS:

        async def main() -> None:
            call, close = await make_async(kind, url)
            await call()
            await close()

        asyncio.run(main())
    else:
        call, close = make_sync(kind, url)
        call()
        close()


def phases(kind: str, url: str) -> None:
    """Where a cold start's time goes: seconds per phase, in one new process.

    ours-sync: httpx, then attrs, then the generated package, then this package's modules and
    the client, then the first call; httpx-sync: httpx, the client, the first call.
    """
    marks = [("start", time.perf_counter())]
    import httpx

    marks.append(("import httpx", time.perf_counter()))
    if kind == "ours-sync":
        import attrs  # noqa: F401

        marks.append(("import attrs", time.perf_counter()))
        import avatario_wrapper._generated.models  # noqa: F401

        marks.append(("generated package", time.perf_counter()))
        from avatario_wrapper import AvatarioClient  # the clients load on first use

        marks.append(("our modules", time.perf_counter()))
        client = AvatarioClient(KEY, base_url=url)
        marks.append(("client", time.perf_counter()))
        client.start_session(**CALL)
        marks.append(("first call", time.perf_counter()))
        client.close()
    else:
        http = httpx.Client()
        marks.append(("client", time.perf_counter()))
        http.post(f"{url}/start-session", content=PAYLOAD, headers=headers()).json()
        marks.append(("first call", time.perf_counter()))
        http.close()
    _print({name: marks[i + 1][1] - marks[i][1] for i, (name, _) in enumerate(marks[1:])})


def import_time() -> None:
    started = time.perf_counter()
    import avatario_wrapper  # noqa: F401

    seconds = time.perf_counter() - started
    heavy = ("aiohttp", "starlette", "uvicorn", "rich", "click", "livekit", "jsonschema", "yaml")
    _print({"seconds": seconds, "loaded": [m for m in heavy if m in sys.modules]})


def latency(url: str, n: int, rounds: int) -> None:
    """Sequential calls, the clients taking turns round by round; per-call seconds."""
    times: dict[str, list[float]] = {k: [] for k in CLIENTS if not k.startswith("plugin")}
    times.pop("generated")
    sync = {kind: make_sync(kind, url) for kind in SYNC_CLIENTS}

    async def run_async_round(kind: str, call: Callable[[], Awaitable[Any]]) -> None:
        for _ in range(n):
            started = time.perf_counter()
            await call()
            times[kind].append(time.perf_counter() - started)

    async def main() -> None:
        clients = {
            kind: await make_async(kind, url)
            for kind in ASYNC_CLIENTS
            if not kind.startswith("plugin")
        }
        for call, _ in clients.values():  # warm the pools
            await call()
        for call, _ in sync.values():
            call()
        for r in range(rounds):
            order = list(times)
            order = order[r % len(order) :] + order[: r % len(order)]
            for kind in order:
                if kind in clients:
                    await run_async_round(kind, clients[kind][0])
                else:
                    call = sync[kind][0]
                    for _ in range(n):
                        started = time.perf_counter()
                        call()
                        times[kind].append(time.perf_counter() - started)
        for _, close in clients.values():
            await close()

    asyncio.run(main())
    for _, close in sync.values():
        close()
    _print(times)


def throughput(kind: str, url: str, concurrency: int, calls: int) -> None:
    """`calls` calls with `concurrency` in flight: calls per second and client CPU per call.

    Count-bounded (every client makes the same calls, none cut off by a clock), after a
    warm-up that opens all `concurrency` pooled connections, so the measured window holds
    no connection setup. CPU is this process's (user + system) time, which a busy machine
    disturbs far less than wall time.
    """

    async def main() -> dict[str, Any]:
        call, close = await make_async(kind, url)
        for _ in range(3):  # warm-up: `concurrency` connections opened and pooled
            await asyncio.gather(*(call() for _ in range(concurrency)))
        left = calls

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await call()

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        await close()
        return {"rps": calls / elapsed, "cpu_us": cpu / calls * 1e6, "calls": calls}

    _print(asyncio.run(main()))


def cpu(kind: str, url: str, calls: int) -> None:
    """Client CPU (user + system) per call, one call in flight on a pooled connection."""
    if kind in SYNC_CLIENTS:
        call, close = make_sync(kind, url)
        for _ in range(50):
            call()
        started = time.process_time()
        for _ in range(calls):
            call()
        used = time.process_time() - started
        close()
    else:

        async def main() -> float:
            acall, aclose = await make_async(kind, url)
            for _ in range(50):
                await acall()
            started = time.process_time()
            for _ in range(calls):
                await acall()
            used = time.process_time() - started
            await aclose()
            return used

        used = asyncio.run(main())
    _print({"cpu_us": used / calls * 1e6})


def recovery(kind: str, url: str, script: str, runs: int) -> None:
    """Seconds for one call that meets `script` (e.g. "503,503,200"), `runs` times."""
    import urllib.request

    def set_script(name: str) -> None:
        request = urllib.request.Request(
            f"{url}/script/{name}", data=script.encode(), method="POST"
        )
        urllib.request.urlopen(request, timeout=5).read()

    async def main() -> list[float]:
        results = []
        for run in range(runs):
            name = f"{kind}-{os.getpid()}-{run}"
            set_script(name)
            call, close = await make_async(kind, f"{url}/s/{name}")
            started = time.perf_counter()
            await call()
            results.append(time.perf_counter() - started)
            await close()
        return results

    _print({"seconds": asyncio.run(main())})


def memory(url: str, calls: int) -> None:
    """RSS and open file descriptors while making `calls` calls, every 7th meeting a 503."""
    from avatario_wrapper import AsyncAvatarioClient, AvatarioError, RetryPolicy

    def rss_kib() -> int:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    policy = RetryPolicy(initial_delay=0.001, max_delay=0.002)
    samples: dict[str, Any] = {}

    async def main() -> None:
        async with AsyncAvatarioClient(KEY, base_url=url, retry=policy) as client:
            await client.start_session(**CALL)
            samples["fds_start"] = fds()
            for i in range(1, calls + 1):
                # Every 7th call meets a 503 first (scripted by its idempotency key).
                key = f"s-503.200-{i}" if i % 7 == 0 else None
                try:
                    await client.start_session(**CALL, idempotency_key=key)
                except AvatarioError:
                    samples["errors"] = samples.get("errors", 0) + 1
                if i == min(2000, calls // 5):
                    samples["rss_2000_kib"] = rss_kib()
                    samples["fds_2000"] = fds()
            samples["rss_end_kib"] = rss_kib()
            samples["fds_end"] = fds()
        samples["fds_closed"] = fds()

    asyncio.run(main())
    _print(samples)


DEADLINE = 1.0


def overshoot(kind: str, url: str, phase: str, runs: int) -> None:
    """Seconds past a 1 s deadline (`max_elapsed`) at which a call ends against a server that
    sends `phase` (status line, headers or body) a byte every 10 ms; `runs` fresh calls."""
    from avatario_wrapper import AvatarioError, RetryPolicy

    policy = RetryPolicy(max_attempts=1, max_elapsed=DEADLINE)
    base = f"{url}/trickle/{phase}"
    results: list[float] = []
    if kind == "ours-sync":
        from avatario_wrapper import AvatarioClient

        for _ in range(runs):
            with AvatarioClient(KEY, base_url=base, retry=policy, timeout=30.0) as client:
                started = time.perf_counter()
                with contextlib.suppress(AvatarioError):
                    client.start_session(**CALL)
                results.append(time.perf_counter() - started - DEADLINE)
        _print({"overshoot_s": results})
        return

    async def main() -> None:
        import httpx

        from avatario_wrapper import AsyncAvatarioClient

        for _ in range(runs):
            http = httpx.AsyncClient() if kind == "ours-async-httpx" else None
            async with AsyncAvatarioClient(
                KEY, base_url=base, retry=policy, timeout=30.0, http_client=http
            ) as client:
                started = time.perf_counter()
                with contextlib.suppress(AvatarioError):
                    await client.start_session(**CALL)
                results.append(time.perf_counter() - started - DEADLINE)
            if http is not None:
                await http.aclose()

    asyncio.run(main())
    _print({"overshoot_s": results})


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "cold":
        cold(args[0], args[1])
    elif command == "phases":
        phases(args[0], args[1])
    elif command == "import":
        import_time()
    elif command == "latency":
        latency(args[0], int(args[1]), int(args[2]))
    elif command == "throughput":
        throughput(args[0], args[1], int(args[2]), int(args[3]))
    elif command == "cpu":
        cpu(args[0], args[1], int(args[2]))
    elif command == "recovery":
        recovery(args[0], args[1], args[2], int(args[3]))
    elif command == "memory":
        memory(args[0], int(args[1]))
    elif command == "overshoot":
        overshoot(args[0], args[1], args[2], int(args[3]))
    else:
        raise SystemExit(__doc__)
