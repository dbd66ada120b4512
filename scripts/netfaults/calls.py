"""Calls with this project's clients, one JSON line of figures per call on stdout.

    python -m netfaults.calls SPEC_JSON

SPEC: ``transport`` (``sync``: `AvatarioClient`; ``async-aiohttp``: `AsyncAvatarioClient`
over its default aiohttp sender; ``async-httpx``: `AsyncAvatarioClient` over a given
`httpx.AsyncClient`; ``async-httpx-own``: `AsyncAvatarioClient` over its own httpx pool, as
where aiohttp is not installed), ``url``, ``key``, ``prefix`` (avatar ids are PREFIX-N, one
per call, so sessions can be matched to calls), ``calls``, ``concurrency``, ``max_elapsed`` (the
`RetryPolicy` deadline), ``spacing`` (call N starts no sooner than N * spacing seconds after
the first, so a run spans the faults' timing), ``fresh`` and ``connect_timeout``.

``fresh``: a new client for every call, so each call opens its own connection (otherwise one
client for all). Fresh clients are all made before the first call: making an httpx pool loads
the CA bundle, about 40 ms of CPU, which would otherwise hold up the other calls' timers.

``name`` (optional): the server is called by this host name, resolved to its address in
this process (the namespace has no DNS server), as a client reaches Avatario by name; aiohttp
consults a resolver only for a name. ``policy``: ``"default"`` leaves the `RetryPolicy` as
the client makes it (``max_elapsed`` is then not used).

``connect_timeout``: ``"none"`` passes ``connect_timeout=None`` where the client has the
parameter, ``"default"`` leaves it out. Records say whether the client has the parameter
(``has_connect_timeout``).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from avatario_wrapper import AsyncAvatarioClient, AvatarioClient, AvatarioError, RetryPolicy

HAS_CONNECT_TIMEOUT = "connect_timeout" in inspect.signature(AvatarioClient).parameters
# The client logs each retry at WARNING; the figures are the output here.
logging.getLogger("avatario_wrapper").addHandler(logging.NullHandler())
logging.getLogger("avatario_wrapper").propagate = False
_print_lock = threading.Lock()


def _named(spec: dict[str, Any]) -> str:
    """The base URL, the server called by ``spec["name"]`` where given (see the docstring)."""
    url = httpx.URL(spec["url"])
    name = spec.get("name")
    if not name:
        return str(url)
    address, resolve = url.host, socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        return resolve(address if host in (name, name.encode()) else host, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo
    return str(url.copy_with(host=name))


def _options(spec: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {
        "base_url": spec["base_url"],
        "allow_insecure_http": True,  # the lab's server is plain http on a private address
    }
    if spec.get("policy") != "default":
        options["retry"] = RetryPolicy(max_elapsed=float(spec["max_elapsed"]))
    if spec.get("connect_timeout") == "none" and HAS_CONNECT_TIMEOUT:
        options["connect_timeout"] = None
    return options


def _arguments(avatar_id: str) -> dict[str, Any]:
    return {
        "avatar_id": avatar_id,
        "agent_identity": "agent-7",
        "livekit_url": "wss://rooms.example.com",
        "livekit_token": "lab.token",
    }


def record(avatar_id: str, started: float, result: Any, error: BaseException | None) -> None:
    elapsed = time.monotonic() - started
    line: dict[str, Any] = {"id": avatar_id, "elapsed": elapsed, "ok": error is None}
    if error is None:
        line["attempts"] = result.attempts
    else:
        line.update(
            error=type(error).__name__,
            typed=isinstance(error, AvatarioError),
            outcome=str(getattr(getattr(error, "outcome", None), "value", "")) or None,
            may_have_started=getattr(error, "may_have_started", None),
            attempts=getattr(error, "attempts", None),
            cause=type(error.__cause__).__name__ if error.__cause__ is not None else None,
        )
    line["has_connect_timeout"] = HAS_CONNECT_TIMEOUT
    with _print_lock:
        print(json.dumps(line), flush=True)


def run_sync(spec: dict[str, Any]) -> None:
    calls = int(spec["calls"])
    shared = None if spec["fresh"] else AvatarioClient(spec["key"], **_options(spec))
    fresh = [
        AvatarioClient(spec["key"], **_options(spec)) for _ in range(calls if not shared else 0)
    ]

    def one(n: int) -> None:
        avatar_id = f"{spec['prefix']}-{n}"
        client = shared or fresh[n]
        time.sleep(max(0.0, begin + n * spacing - time.monotonic()))
        started = time.monotonic()
        try:
            result = client.start_session(**_arguments(avatar_id))
        except Exception as error:  # every failure is recorded, typed or not
            record(avatar_id, started, None, error)
        else:
            record(avatar_id, started, result, None)
        finally:
            if shared is None:
                client.close()

    spacing = float(spec.get("spacing", 0.0))
    begin = time.monotonic()
    with ThreadPoolExecutor(int(spec["concurrency"])) as pool:
        list(pool.map(one, range(calls)))
    if shared is not None:
        shared.close()


async def run_async(spec: dict[str, Any]) -> None:
    over_httpx = spec["transport"] == "async-httpx"
    if spec["transport"] == "async-httpx-own":
        sys.modules["aiohttp"] = None  # type: ignore[assignment] # as if not installed

    def make() -> tuple[AsyncAvatarioClient, httpx.AsyncClient | None]:
        http = httpx.AsyncClient() if over_httpx else None
        return AsyncAvatarioClient(spec["key"], http_client=http, **_options(spec)), http

    calls = int(spec["calls"])
    shared = None if spec["fresh"] else make()
    fresh = [make() for _ in range(calls if shared is None else 0)]
    gate = asyncio.Semaphore(int(spec["concurrency"]))
    spacing = float(spec.get("spacing", 0.0))
    begin = time.monotonic()

    async def one(n: int) -> None:
        avatar_id = f"{spec['prefix']}-{n}"
        await asyncio.sleep(max(0.0, begin + n * spacing - time.monotonic()))
        async with gate:
            client, http = shared or fresh[n]
            started = time.monotonic()
            try:
                result = await client.start_session(**_arguments(avatar_id))
            except Exception as error:  # every failure is recorded, typed or not
                record(avatar_id, started, None, error)
            else:
                record(avatar_id, started, result, None)
            finally:
                if shared is None:
                    await client.aclose()
                    if http is not None:
                        await http.aclose()

    await asyncio.gather(*(one(n) for n in range(calls)))
    if shared is not None:
        await shared[0].aclose()
        if shared[1] is not None:
            await shared[1].aclose()


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    spec["base_url"] = _named(spec)
    if spec["transport"] == "sync":
        run_sync(spec)
    elif spec["transport"] in ("async-aiohttp", "async-httpx", "async-httpx-own"):
        asyncio.run(run_async(spec))
    else:
        raise SystemExit(f"unknown transport {spec['transport']!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
