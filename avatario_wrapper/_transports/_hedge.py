"""Hedged connects for the client's own pools (issue 31, item 2).

A connection attempt sends no request, so it may be repeated freely: when a TCP connect has
not completed after `CONNECT_ATTEMPT_DELAY` (RFC 8305's Connection Attempt Delay), a second
starts beside it, a third after another delay (`MAX_CONNECTS`); one that fails at once starts
the next at once. The first to complete wins; the others are cancelled and closed. Everything
stays within the one connect's bound (``connect_timeout``, cut by the attempt's deadline).

`ConnectHealth` is the one place of the rule that turns hedging off: while the last
`UNHEALTHY_AFTER` connects to a (host, port) in this process all failed, connects to it are
not hedged (one attempt each, as without hedging), so a sustained blackhole gets the
connection attempts of a client that never hedges, but for the connects begun before three
had failed; the next connect that succeeds turns it on. A hedged connect counts once: it
failed when none of its attempts completed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import httpcore

#: RFC 8305, section 5: the recommended Connection Attempt Delay (its floor is 100 ms).
CONNECT_ATTEMPT_DELAY = 0.25
#: Connection attempts at most per connect, the first included.
MAX_CONNECTS = 3
#: Consecutive failed connects to a (host, port) after which its connects are not hedged.
UNHEALTHY_AFTER = 3
#: (host, port) pairs remembered; past it the record starts afresh (a process talks to few).
_MAX_PEERS = 256

_NEVER = float("inf")  # no bound on connecting (a pool used with no timeout)

S = TypeVar("S")
AddrInfo = tuple[Any, ...]


class ConnectHealth:
    """Per process: how many connects to each (host, port) failed in a row."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: dict[tuple[str, int], int] = {}

    def hedging(self, host: str, port: int) -> bool:
        """Whether a connect to (host, port) may be hedged now."""
        with self._lock:
            return self._failures.get((host, port), 0) < UNHEALTHY_AFTER

    def record(self, host: str, port: int, *, ok: bool) -> None:
        """One connect's end (a caller's cancellation is no end: not recorded)."""
        key = (host, port)
        with self._lock:
            if ok:
                self._failures.pop(key, None)
                return
            if key not in self._failures and len(self._failures) >= _MAX_PEERS:
                self._failures.clear()
            self._failures[key] = self._failures.get(key, 0) + 1


#: The process's record, shared by every transport and client.
HEALTH = ConnectHealth()


def spread(found: list[S]) -> list[S]:
    """`MAX_CONNECTS` addresses to race, taken in turn from those found (one: it, repeated)."""
    return [found[i % len(found)] for i in range(MAX_CONNECTS)] if found else []


# -- sync: non-blocking sockets and a selector --------------------------------------------------


def race_sync(
    addresses: list[AddrInfo],
    ends: float,
    *,
    local_address: str | None = None,
    delay: float = CONNECT_ATTEMPT_DELAY,
    make: Callable[[int, int, int], socket.socket] = socket.socket,
) -> socket.socket:
    """The first of up to ``len(addresses)`` staggered connects (one per address, in order)
    to complete before `ends` (``time.monotonic``); every other socket is closed, also when
    this raises (TimeoutError at `ends`, the first attempt's error when all failed,
    KeyboardInterrupt)."""
    selector = selectors.DefaultSelector()
    pending: list[socket.socket] = []
    errors: list[OSError] = []
    queue = iter(addresses)
    left = len(addresses)  # attempts not started yet
    next_at = time.monotonic()
    try:
        while True:
            now = time.monotonic()
            if now >= ends:
                raise TimeoutError("timed out")
            if left and (now >= next_at or not pending):
                left -= 1
                next_at = now + delay
                sock = _start(next(queue), local_address, make, selector, pending, errors)
                if sock is not None:
                    return sock
                continue
            if not pending:
                raise errors[0]
            wait = min(ends, next_at) if left else ends
            for key, _ in selector.select(None if wait == _NEVER else max(0.0, wait - now)):
                done = key.fileobj
                assert isinstance(done, socket.socket)
                selector.unregister(done)
                pending.remove(done)
                code = done.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code == 0:
                    return done
                done.close()
                errors.append(OSError(code, os.strerror(code)))
    finally:
        for sock in pending:
            sock.close()
        selector.close()


def _start(
    address: AddrInfo,
    local_address: str | None,
    make: Callable[[int, int, int], socket.socket],
    selector: selectors.BaseSelector,
    pending: list[socket.socket],
    errors: list[OSError],
) -> socket.socket | None:
    """One attempt started: its socket if it connected at once, else None (pending or failed)."""
    family, kind, proto, _, sockaddr = address
    sock = make(family, kind, proto)
    try:
        sock.setblocking(False)
        if local_address is not None:
            sock.bind((local_address, 0))
        code = sock.connect_ex(sockaddr)
    except BaseException:
        sock.close()
        raise
    if code == 0:
        return sock
    if code in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
        pending.append(sock)
        selector.register(sock, selectors.EVENT_WRITE)
        return None
    sock.close()
    errors.append(OSError(code, os.strerror(code)))
    return None


@contextlib.contextmanager
def _mapped(timeout: type[Exception], other: type[Exception]) -> Iterator[None]:
    """httpcore's exceptions for a socket's (as httpcore's own sync backend raises them)."""
    try:
        yield
    except TimeoutError as exc:
        raise timeout(str(exc)) from exc
    except OSError as exc:
        raise other(str(exc)) from exc


def connect_sync(
    host: str,
    port: int,
    timeout: float | None,
    local_address: str | None,
    socket_options: Any,
    single: Callable[[], httpcore.NetworkStream],
) -> httpcore.NetworkStream:
    """A connect to (host, port): hedged while `HEALTH` allows (set up as httpcore's sync
    backend sets up its sockets), else `single`; its end recorded in `HEALTH`."""
    with _recorded(host, port):
        if not HEALTH.hedging(host, port):
            return single()
        ends = _NEVER if timeout is None else time.monotonic() + timeout
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            sock = race_sync(spread(found), ends, local_address=local_address)
            try:
                for option in socket_options or ():
                    sock.setsockopt(*option)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except BaseException:
                sock.close()
                raise
        return SocketStream(sock)


async def connect_async(
    host: str,
    port: int,
    timeout: float | None,
    single: Callable[[float | None], Awaitable[httpcore.AsyncNetworkStream]],
) -> httpcore.AsyncNetworkStream:
    """`connect_sync` for the async pool: `single(timeout)` is one attempt of httpcore's own
    backend, run up to `MAX_CONNECTS` times side by side, all within `timeout`."""
    with _recorded(host, port):
        if not HEALTH.hedging(host, port):
            return await single(timeout)
        ends = None if timeout is None else time.monotonic() + timeout

        def attempt() -> Awaitable[httpcore.AsyncNetworkStream]:
            return single(None if ends is None else max(0.0, ends - time.monotonic()))

        return await race_async([attempt] * MAX_CONNECTS, _aclose)


async def _aclose(stream: httpcore.AsyncNetworkStream) -> None:
    await stream.aclose()


@contextlib.contextmanager
def _recorded(host: str, port: int) -> Iterator[None]:
    """A connect's end in `HEALTH`: failed when httpcore says it could not connect."""
    try:
        yield
    except (httpcore.ConnectTimeout, httpcore.ConnectError):
        HEALTH.record(host, port, ok=False)
        raise
    HEALTH.record(host, port, ok=True)


class SocketStream(httpcore.NetworkStream):
    """A connected socket as httpcore's sync network stream (the hedged connect's winner)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        with _mapped(httpcore.ReadTimeout, httpcore.ReadError):
            self._sock.settimeout(timeout)
            return self._sock.recv(max_bytes)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        with _mapped(httpcore.WriteTimeout, httpcore.WriteError):
            while buffer:
                self._sock.settimeout(timeout)
                buffer = buffer[self._sock.send(buffer) :]

    def close(self) -> None:
        self._sock.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        # Only direct connections are hedged (never a proxy's), so this is never TLS in TLS.
        try:
            with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
                self._sock.settimeout(timeout)
                return SocketStream(
                    ssl_context.wrap_socket(self._sock, server_hostname=server_hostname)
                )
        except BaseException:
            self.close()
            raise

    def get_extra_info(self, info: str) -> Any:
        sock = self._sock
        if info == "ssl_object":  # what httpcore asks of it (the ALPN choice) an SSLSocket has
            return sock if isinstance(sock, ssl.SSLSocket) else None
        if info == "client_addr":
            return sock.getsockname()
        if info == "server_addr":
            return sock.getpeername()
        if info == "socket":
            return sock
        if info == "is_readable":
            return sock.fileno() < 0 or bool(_readable(sock))
        return None


def _readable(sock: socket.socket) -> list[Any]:
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        return selector.select(0)


# -- async: one task per attempt ----------------------------------------------------------------


async def race_async(
    attempts: list[Callable[[], Awaitable[S]]],
    close: Callable[[S], Awaitable[None]],
    *,
    delay: float = CONNECT_ATTEMPT_DELAY,
) -> S:
    """The first of the staggered `attempts` to complete (each bounds itself); the others are
    cancelled, and any that completed too are closed, also when this is cancelled. When all
    fail, the first attempt's error is raised."""
    import anyio  # noqa: PLC0415 - httpx's own dependency; only the async pool connects here

    won: list[S] = []
    errors: list[tuple[int, Exception]] = []
    failed = anyio.Event()

    async def one(attempt: Callable[[], Awaitable[S]], index: int, group: Any) -> None:
        try:
            stream = await attempt()
        except Exception as exc:
            errors.append((index, exc))
            failed.set()
            return
        if won:
            with anyio.CancelScope(shield=True):
                await close(stream)
            return
        won.append(stream)
        group.cancel_scope.cancel()

    try:
        async with anyio.create_task_group() as group:
            for index, attempt in enumerate(attempts):
                group.start_soon(one, attempt, index, group)
                if index + 1 < len(attempts):
                    failed = anyio.Event()
                    with anyio.move_on_after(delay):
                        await failed.wait()
    except BaseException:
        for stream in won:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await close(stream)
        raise
    if won:
        return won[0]
    raise min(errors, key=lambda e: e[0])[1]
