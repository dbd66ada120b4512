"""Run the fake Avatario on a free 127.0.0.1 port in a background thread.

    from avatario_wrapper.testing import run_fake_server

    with run_fake_server(api_key="test-key", faults="503*2") as server:
        client = AvatarioClient("test-key", base_url=server.url)
        ...
        assert len(server.sessions) == 1

`async with run_fake_server(...)` works too (start and stop happen off the event loop).
``honour_idempotency_key=False`` plays a server that ignores ``Idempotency-Key``; a LiveKit
API key and secret turn on token verification; ``spec=`` serves another OpenAPI document;
``seed=`` seeds the random faults; ``control=True`` serves the ``/_fake/faults`` control
endpoint (see `avatario_wrapper.testing.app`).

The server answers at loopback speed: every accepted connection has ``TCP_NODELAY`` (see
`avatario_wrapper.testing._transport`), and it stops as soon as it is told. It answers only
requests whose ``Host`` names it (see `avatario_wrapper.testing._host`: a guard against DNS
rebinding); the host it binds is allowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

import uvicorn

from ._handlers import Handler
from ._start_session import SessionListener
from ._transport import FakeH11Protocol
from .app import FakeAvatario, RecordedRequest
from .faults import Fault

LOOPBACK = "127.0.0.1"
#: Hosts that bind every interface: no name a client would send in ``Host``.
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - names, not a binding
#: How often the server refreshes its Date header and checks for a stop (uvicorn's tick).
_TICK = 0.1
#: How often a stopping server looks whether its connections and tasks are done.
_SHUTDOWN_POLL = 0.002


class _Server(uvicorn.Server):
    """uvicorn's server, stopping as soon as it is told.

    uvicorn's main loop looks at ``should_exit`` every 0.1 s and its shutdown sleeps 0.1 s
    before waiting for connections, so each fake took 0.2 s to stop: seconds over a test
    suite. Here `request_exit` wakes the main loop at once, and the shutdown polls finely;
    otherwise both do what uvicorn's do (close the listeners, let each connection finish its
    response within ``timeout_graceful_shutdown``, then drop what is left).
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    def request_exit(self) -> None:
        """Ask the server to stop, from any thread."""
        self.should_exit = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already closed
                loop.call_soon_threadsafe(wake.set)

    async def main_loop(self) -> None:
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864_000
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _TICK)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        state = self.server_state
        for connection in list(state.connections):
            connection.shutdown()
        deadline = loop.time() + (self.config.timeout_graceful_shutdown or 0)
        # uvicorn signals nothing when its last connection or task ends: poll (finely).
        while (state.connections or state.tasks) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(_SHUTDOWN_POLL)
        for connection in list(state.connections):  # past the grace period
            connection.transport.abort()
        for task in list(state.tasks):
            task.cancel()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(server.wait_closed() for server in self.servers)), 1
            )


class FakeServer:
    """A running fake: `url` to point a client at, and the app's records for assertions.

    Serves `app`, or, without one, a `FakeAvatario` made from the keyword options (which are
    the app's; give them to the app instead when passing one).
    """

    def __init__(
        self,
        app: FakeAvatario | None = None,
        *,
        host: str = LOOPBACK,
        port: int = 0,
        startup_timeout: float = 10.0,
        api_key: str = "test-key",
        faults: str | Iterable[Fault] | None = "",
        honour_idempotency_key: bool = True,
        livekit_api_key: str | None = None,
        livekit_api_secret: str | None = None,
        spec: Mapping[str, Any] | None = None,
        seed: int | None = None,
        control: bool = False,
    ) -> None:
        if app is None:
            app = FakeAvatario(
                api_key=api_key,
                faults=faults,
                honour_idempotency_key=honour_idempotency_key,
                livekit_api_key=livekit_api_key,
                livekit_api_secret=livekit_api_secret,
                spec=spec,
                seed=seed,
                control=control,
            )
        elif (
            api_key != "test-key"
            or faults not in ("", None)
            or not honour_idempotency_key
            or livekit_api_key is not None
            or livekit_api_secret is not None
            or spec is not None
            or seed is not None
            or control
        ):
            raise ValueError("pass the app's options to FakeAvatario, not to a FakeServer of it")
        self.app = app
        self.host = host
        self._requested_port = port
        self._startup_timeout = startup_timeout
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port: int = 0

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def api_key(self) -> str:
        return self.app.api_key

    @property
    def honour_idempotency_key(self) -> bool:
        return self.app.honour_idempotency_key

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.app.requests

    @property
    def sessions(self) -> list[dict[str, Any]]:
        return self.app.sessions

    # -- the app's hooks, at hand ----------------------------------------------------------------

    def set_faults(self, faults: str | Iterable[Fault] | None, *, seed: int | None = None) -> None:
        """Replace every fault (see `FakeAvatario.set_faults`)."""
        self.app.set_faults(faults, seed=seed)

    def add_faults(self, faults: str | Iterable[Fault] | None) -> None:
        """Queue more fault steps and add more chances (a script string or `Fault` objects)."""
        self.app.add_faults(faults)

    def clear_faults(self) -> None:
        """Drop every pending fault step and every chance."""
        self.app.clear_faults()

    @property
    def faults(self) -> str:
        """The faults left, as a script."""
        return self.app.faults

    def on_session_started(self, listener: SessionListener) -> Callable[[], None]:
        """Call `listener` with each new session, in the server's thread (see
        `FakeAvatario.on_session_started`); returns a function that removes it."""
        return self.app.on_session_started(listener)

    def register_handler(self, operation_id: str, handler: Handler) -> None:
        """Answer `operation_id` with `handler` (see `FakeAvatario.register_handler`)."""
        self.app.register_handler(operation_id, handler)

    # -- running ---------------------------------------------------------------------------------

    def start(self) -> FakeServer:
        """Bind 127.0.0.1 (unless told otherwise), serve in a thread, return when ready."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # IPPROTO_TCP, not 0: accepted sockets inherit it, and asyncio turns Nagle off only on
        # sockets that say they are TCP (see _transport).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self._requested_port))
        except OSError:
            sock.close()  # a busy port: the caller reports it; no socket is left behind
            raise
        self.port = sock.getsockname()[1]
        # The name it was told to bind answers, not "0.0.0.0" (another ASGI app: its business).
        if self.host not in _WILDCARDS and isinstance(self.app, FakeAvatario):
            self.app.allow_host(self.host)
        config = uvicorn.Config(
            self.app,
            http=FakeH11Protocol,
            ws="none",  # an Upgrade request is served as plain HTTP, by the app
            lifespan="off",
            log_level=logging.WARNING,
            access_log=False,
            timeout_graceful_shutdown=1,
            timeout_keep_alive=5,
        )
        server = _Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="fake-avatario", daemon=True
        )
        thread.start()
        self._server, self._thread = server, thread
        deadline = time.monotonic() + self._startup_timeout
        while thread.is_alive() and not server.started and time.monotonic() < deadline:
            time.sleep(0.001)
        if not server.started:
            self.stop()
            sock.close()
            raise RuntimeError("the fake Avatario server did not start")
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        if self._server is not None and self._thread is not None:
            self._server.request_exit()
            self._thread.join(10)
        self._server = self._thread = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> FakeServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)


def run_fake_server(
    *,
    api_key: str = "test-key",
    faults: str | Iterable[Fault] | None = "",
    host: str = LOOPBACK,
    port: int = 0,
    honour_idempotency_key: bool = True,
    livekit_api_key: str | None = None,
    livekit_api_secret: str | None = None,
    spec: Mapping[str, Any] | None = None,
    seed: int | None = None,
    control: bool = False,
) -> FakeServer:
    """A fake Avatario to use as a context manager (``with`` or ``async with``).

    It binds 127.0.0.1 on a free port unless told otherwise; `server.url` is its base URL.
    `faults` is a fault script (None: no faults) and `seed` seeds its random faults.
    `honour_idempotency_key=False` makes it ignore ``Idempotency-Key`` (every valid request
    starts a session); with `livekit_api_key` and `livekit_api_secret` it verifies the
    avatar's LiveKit token; `spec` serves another OpenAPI document (a dict); `control=True`
    serves ``/_fake/faults`` to change the faults over HTTP.
    """
    return FakeServer(
        host=host,
        port=port,
        api_key=api_key,
        faults=faults,
        honour_idempotency_key=honour_idempotency_key,
        livekit_api_key=livekit_api_key,
        livekit_api_secret=livekit_api_secret,
        spec=spec,
        seed=seed,
        control=control,
    )
