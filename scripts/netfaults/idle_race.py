"""The idle race: a server that closes idle keep-alive connections, its FIN arriving late.

A keep-alive connection that sat idle is closed by the server (here after ``idle`` seconds);
the FIN reaches the client ``fin_delay`` seconds later (a network's one-way delay). A request
the client sends on that connection in between is never served: the server has stopped
reading requests on it, discards what arrives and then sends its FIN, so the client sees its
reused connection close cleanly before any response byte. That is the case Go's net/http
replays (``errServerClosedIdle``) and this project's client classifies (docs/retries.md).

`IdleServer` plays that server on 127.0.0.1 (a small HTTP/1.1 server of its own, so the
timing is exact), ignoring ``Idempotency-Key``: every request it serves starts a session,
counted by avatar id, and every request it discards in the window is counted as a race hit.

    python -m netfaults.idle_race SPEC_JSON     # the clients of one transport (see `clients`)
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import logging
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

KEY = "idle-race-key-0001"


class _Connection(asyncio.Protocol):
    def __init__(self, server: IdleServer) -> None:
        self.server = server
        self.buffer = b""
        self.closing = False
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.open.add(transport)
        self.server.stats["connections"] += 1
        self._idle_from_now()

    def _idle_from_now(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.server.idle, self._idle_expired)

    def _idle_expired(self) -> None:
        """Stop serving now; the FIN leaves `fin_delay` later (it is still on its way)."""
        self.closing = True
        self.server.stats["idle_closes"] += 1
        loop = asyncio.get_running_loop()
        loop.call_later(self.server.fin_delay, self._send_fin)

    def _send_fin(self) -> None:
        assert self.transport is not None
        if self.transport.is_closing():
            return
        # Everything that arrived was read (and discarded), so this is a FIN, not a reset.
        self.transport.write_eof()
        loop = asyncio.get_running_loop()
        loop.call_later(10.0, self.transport.close)

    def data_received(self, data: bytes) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            length = _content_length(self.buffer[:head_end])
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            body, self.buffer = self.buffer[head_end + 4 : end], self.buffer[end:]
            if self.closing:  # the race: a request on a connection the server has given up
                self.server.race_hits[_avatar_of(body)] += 1
                continue
            self._answer(body)
            if not self.buffer:
                self._idle_from_now()
                return

    def _answer(self, body: bytes) -> None:
        assert self.transport is not None
        avatar = _avatar_of(body)
        self.server.sessions[avatar] += 1
        payload = json.dumps(
            {
                "session_id": f"sess_{uuid.uuid4().hex[:12]}",
                "status": "starting",
                "avatario_face_id": avatar,
                "agent_id": "agent-7",
            }
        ).encode()
        head = [
            "HTTP/1.1 200 OK",
            "content-type: application/json",
            f"content-length: {len(payload)}",
            f"x-request-id: req_{uuid.uuid4().hex[:12]}",
        ]
        if self.server.keep_alive_header:
            head += ["connection: keep-alive", f"keep-alive: timeout={self.server.idle:g}"]
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)

    def eof_received(self) -> bool:
        return False  # the client closed: close too

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closing and self.buffer:  # part of a request, never served
            self.server.race_hits["?"] += 1
        if self.transport is not None:
            self.server.open.discard(self.transport)
        if self.timer is not None:
            self.timer.cancel()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


def _avatar_of(data: bytes) -> str:
    start = data.find(b"{")
    try:
        return str(json.loads(data[start:])["avatario_face_id"])
    except (ValueError, KeyError, TypeError):
        return "?"


class IdleServer:
    """The server, on 127.0.0.1 in a thread of its own; `port`, `sessions`, `race_hits`."""

    def __init__(self, *, idle: float, fin_delay: float, keep_alive_header: bool) -> None:
        self.idle = idle
        self.fin_delay = fin_delay
        self.keep_alive_header = keep_alive_header
        self.sessions: Counter[str] = Counter()
        self.race_hits: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()
        self.open: set[asyncio.Transport] = set()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None

    def __enter__(self) -> IdleServer:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        future.result(10)
        return self

    async def _start(self) -> None:
        self._server = await self._loop.create_server(
            lambda: _Connection(self), "127.0.0.1", 0, backlog=1024
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for transport in list(self.open):
                transport.abort()
            await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


# -- the clients ----------------------------------------------------------------------------


def clients(spec: dict[str, Any]) -> None:
    """SPEC: ``transport`` (sync, async-aiohttp, async-httpx), ``url``, ``prefix``,
    ``clients`` (each its own client, so its own connection), ``calls`` (per client),
    ``max_gap`` (a call starts uniform(0, max_gap) seconds after the client's last one ended,
    the first one as long after the start), ``seed``. One JSON line per call on stdout."""
    logging.getLogger("avatario_wrapper").addHandler(logging.NullHandler())
    logging.getLogger("avatario_wrapper").propagate = False
    if spec["transport"] == "sync":
        with ThreadPoolExecutor(int(spec["clients"])) as pool:
            list(pool.map(lambda n: _sync_client(spec, n), range(int(spec["clients"]))))
    else:
        asyncio.run(_async_clients(spec))


_print_lock = threading.Lock()


def _emit(spec: dict[str, Any], avatar: str, gap: float, started: float, outcome: Any) -> None:
    line: dict[str, Any] = {"id": avatar, "gap": gap, "elapsed": time.monotonic() - started}
    if isinstance(outcome, BaseException):
        from avatario_wrapper import AvatarioError  # noqa: PLC0415

        line.update(
            ok=False,
            error=type(outcome).__name__,
            typed=isinstance(outcome, AvatarioError),
            outcome=str(getattr(getattr(outcome, "outcome", None), "value", "")) or None,
            may_have_started=getattr(outcome, "may_have_started", None),
            attempts=getattr(outcome, "attempts", None),
            cause=type(outcome.__cause__).__name__ if outcome.__cause__ is not None else None,
            message=str(outcome)[:300],
        )
    else:
        line.update(ok=True, attempts=outcome.attempts)
    with _print_lock:
        print(json.dumps(line), flush=True)


def _call(avatar: str) -> dict[str, Any]:
    return {
        "avatar_id": avatar,
        "agent_identity": "agent-7",
        "livekit_url": "wss://rooms.example.com",
        "livekit_token": "idle.token",
    }


def _sync_client(spec: dict[str, Any], n: int) -> None:
    from avatario_wrapper import AvatarioClient  # noqa: PLC0415

    rng = random.Random(f"{spec['seed']}-{n}")  # noqa: S311 - gaps, not cryptography
    with AvatarioClient(KEY, base_url=spec["url"]) as client:
        for i in range(int(spec["calls"])):
            gap = rng.uniform(float(spec.get("min_gap", 0)), float(spec["max_gap"]))
            time.sleep(gap)
            avatar = f"{spec['prefix']}-{n}-{i}"
            started = time.monotonic()
            try:
                outcome: Any = client.start_session(**_call(avatar))
            except Exception as error:  # every failure is recorded, typed or not
                outcome = error
            _emit(spec, avatar, gap, started, outcome)


async def _async_clients(spec: dict[str, Any]) -> None:
    import httpx  # noqa: PLC0415

    from avatario_wrapper import AsyncAvatarioClient  # noqa: PLC0415

    # Made before any call: an httpx pool loads the CA bundle (~40 ms of CPU), which would
    # otherwise hold up the calls already under way.
    pools = [
        httpx.AsyncClient() if spec["transport"] == "async-httpx" else None
        for _ in range(int(spec["clients"]))
    ]

    async def one(n: int) -> None:
        rng = random.Random(f"{spec['seed']}-{n}")  # noqa: S311 - gaps, not cryptography
        http = pools[n]
        client = AsyncAvatarioClient(KEY, base_url=spec["url"], http_client=http)
        try:
            for i in range(int(spec["calls"])):
                gap = rng.uniform(float(spec.get("min_gap", 0)), float(spec["max_gap"]))
                await asyncio.sleep(gap)
                avatar = f"{spec['prefix']}-{n}-{i}"
                started = time.monotonic()
                try:
                    outcome: Any = await client.start_session(**_call(avatar))
                except Exception as error:  # every failure is recorded, typed or not
                    outcome = error
                _emit(spec, avatar, gap, started, outcome)
        finally:
            await client.aclose()
            if http is not None:
                await http.aclose()

    await asyncio.gather(*(one(n) for n in range(int(spec["clients"]))))


if __name__ == "__main__":
    clients(json.loads(sys.argv[1]))


# -- the measurement ----------------------------------------------------------------------

TRANSPORTS = ("sync", "async-aiohttp", "async-httpx")


@dataclasses.dataclass(frozen=True)
class Setting:
    """One run: the server's idle timeout and FIN delay, and the clients' schedule."""

    idle: float
    fin_delay: float
    max_gap: float
    clients: int
    calls: int  # per client

    @classmethod
    def full(cls) -> Setting:
        return cls(idle=5.0, fin_delay=0.05, max_gap=10.0, clients=100, calls=10)

    @classmethod
    def quick(cls) -> Setting:
        return cls(idle=1.0, fin_delay=0.05, max_gap=2.0, clients=10, calls=3)


def measure(
    setting: Setting, *, keep_alive_header: bool, seed: int, python: str = sys.executable
) -> dict[str, Any]:
    """Every transport's clients at once against one `IdleServer`; figures per transport."""
    from netfaults.lab import child_env  # noqa: PLC0415

    started = time.monotonic()
    records: dict[str, list[dict[str, Any]]] = {}
    with (
        IdleServer(
            idle=setting.idle, fin_delay=setting.fin_delay, keep_alive_header=keep_alive_header
        ) as server,
        tempfile.TemporaryDirectory() as folder,
    ):
        # Each transport's records go to a file, not a pipe: a full pipe would block a client
        # process's writes, and with them its event loop and its calls' timers.
        processes = {}
        for transport in TRANSPORTS:
            spec = {
                "transport": transport,
                "url": f"http://127.0.0.1:{server.port}",
                "prefix": f"face_{transport}",
                "clients": setting.clients,
                "calls": setting.calls,
                "max_gap": setting.max_gap,
                "seed": seed,
            }
            with open(Path(folder) / transport, "w") as out:
                processes[transport] = subprocess.Popen(
                    [python, "-m", "netfaults.idle_race", json.dumps(spec)],
                    stdout=out,
                    env=child_env(),
                )
        limit = setting.calls * (setting.max_gap + 35.0) + 60.0
        try:
            for transport, process in processes.items():
                if process.wait(timeout=limit) != 0:
                    raise RuntimeError(f"the {transport} clients exited {process.returncode}")
                lines = (Path(folder) / transport).read_text().splitlines()
                records[transport] = [json.loads(line) for line in lines]
        finally:
            for process in processes.values():
                if process.poll() is None:
                    process.kill()
                    process.wait()
        time.sleep(setting.fin_delay * 2)  # let the last discarded requests be counted
        sessions, hits = Counter(server.sessions), Counter(server.race_hits)
    wall = time.monotonic() - started
    return {
        "wall": wall,
        "keep_alive_header": keep_alive_header,
        "transports": {t: _figures(records[t], sessions, hits) for t in TRANSPORTS},
        "unattributed_hits": hits.get("?", 0),
        "records": records,
    }


def _figures(
    records: list[dict[str, Any]], sessions: Counter[str], hits: Counter[str]
) -> dict[str, Any]:
    errors: Counter[str] = Counter()
    false_alarms = resends = doubles = 0
    violations: list[str] = []
    for r in records:
        started = sessions.get(r["id"], 0)
        if started > 1:
            doubles += 1
            violations.append(f"{r['id']}: {started} sessions")
        if (r.get("attempts") or 1) > 1:
            resends += 1
        if r["ok"]:
            if started == 0:
                violations.append(f"{r['id']}: a result, but no session")
            continue
        errors[f"{r['error']} ({r['outcome']})"] += 1
        if not r.get("typed"):
            violations.append(f"{r['id']}: untyped {r['error']}")
        if r.get("may_have_started") and started == 0:
            false_alarms += 1
        if not r.get("may_have_started") and started:
            violations.append(f"{r['id']}: may_have_started=False, but a session started")
    return {
        "calls": len(records),
        "ok": sum(1 for r in records if r["ok"]),
        "errors": dict(errors),
        "race_hits": sum(hits.get(r["id"], 0) for r in records),
        "resends": resends,
        "sessions": sum(sessions.get(r["id"], 0) for r in records),
        "doubles": doubles,
        "false_alarms": false_alarms,
        "violations": violations,
    }


def render(setting: Setting, runs: list[dict[str, Any]], *, command: str) -> str:
    """The markdown section for docs/reliability.md."""
    total = setting.clients * setting.calls
    rows = [
        "| server sends `Keep-Alive: timeout=N` | transport | calls | race hits | resends "
        '| false "may have started" (per 1,000 calls) | errors | sessions | calls with 2+ '
        "sessions | wall time |",
        "|" + " --- |" * 10,
    ]
    for run in runs:
        for transport, f in run["transports"].items():
            per_1000 = 1000 * f["false_alarms"] / f["calls"] if f["calls"] else 0.0
            errors = ", ".join(f"{k} ×{v}" for k, v in sorted(f["errors"].items())) or "none"
            rows.append(
                f"| {'yes' if run['keep_alive_header'] else 'no'} | {transport} | {f['calls']} "
                f"| {f['race_hits']} | {f['resends']} | {f['false_alarms']} ({per_1000:.1f}) "
                f"| {errors} | {f['sessions']} | {f['doubles']} | {run['wall']:.0f} s |"
            )
    violations = [v for run in runs for f in run["transports"].values() for v in f["violations"]]
    unmatched = sum(run["unattributed_hits"] for run in runs)
    return "\n".join(
        [
            '## The idle race: false "may have started"',
            "",
            f"Measured {datetime.date.today().isoformat()} on {os.cpu_count()} cores, Python "
            f"{platform.python_version()}, by `{command}` (this section alone: "
            f"`{command} --sections idle-race`).",
            "",
            f"A server on 127.0.0.1 closes a keep-alive connection after {setting.idle:g} s "
            f"idle and its FIN reaches the client {setting.fin_delay * 1000:.0f} ms later; a "
            "request arriving on the connection in between is discarded unanswered (a *race "
            "hit*; no session starts), then the FIN follows, so the client sees its reused "
            "connection close cleanly before any response byte. The server ignores "
            "`Idempotency-Key`: every request it serves starts a session. Each transport runs "
            f"{setting.clients} independent clients at once (each its own client object, so "
            f"its own pool and connection), each making {setting.calls} calls with the default "
            f"`RetryPolicy`, a call starting uniform(0, {setting.max_gap:g}) s after the "
            f"client's previous one ended: {total:,} calls per transport, the three transports "
            "at once (a client each: `AvatarioClient`, `AsyncAvatarioClient` over aiohttp, "
            "`AsyncAvatarioClient(http_client=httpx.AsyncClient())`). Run serially, "
            f"{total:,} calls at a {setting.max_gap / 2:g} s mean gap would take "
            f"{total * setting.max_gap / 2 / 60:.1f} minutes per transport.",
            "",
            'A *false "may have started"* is an error with `may_have_started=True` for a '
            "call the server started no session for; a *resend* is a call that took more "
            "than one attempt. Every call is also checked: at most one session, a result only "
            "with a session, `may_have_started=False` only without one, typed errors only. "
            f"Violations: {len(violations)}"
            + (f" ({'; '.join(violations[:5])})" if violations else "")
            + "."
            + (
                f" {unmatched} race hit(s) were parts of requests, not matched to a call."
                if unmatched
                else ""
            ),
            "",
            *rows,
            "",
            "How to read it. A call meets the race only when its client reuses a connection "
            f"that has sat idle between {setting.idle:g} s and "
            f"{setting.idle + setting.fin_delay:g} s; with gaps uniform over "
            f"0–{setting.max_gap:g} s that is about {setting.fin_delay / setting.max_gap:.1%} "
            "of calls for a pool that keeps idle connections longer than the server does. "
            "aiohttp's connector keeps them 15 s by default (`keepalive_timeout`); an httpx "
            "pool 5 s (`keepalive_expiry`), the server's own timeout here, so its window is "
            "only the time between the server writing a response and the client reading it. "
            "A client that takes the idle race as *not sent* resends it: race hits show up as "
            "resends, never as false alarms. A client that takes it as *unknown* (the request "
            'did reach a server that may have acted) turns each race hit into a false "may '
            "have started\", unless it stops reusing connections before the server's idle "
            "timeout.",
        ]
    )
