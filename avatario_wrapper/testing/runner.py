"""Run the fake Avatario on a free 127.0.0.1 port in a background thread.

    from avatario_wrapper.testing import run_fake_server

    with run_fake_server(api_key="test-key", faults="503*2") as server:
        client = AvatarioClient("test-key", base_url=server.url)
        ...
        assert len(server.sessions) == 1

`async with run_fake_server(...)` works too (start and stop happen off the event loop).
``honour_idempotency_key=False`` plays a server that ignores ``Idempotency-Key``; a LiveKit
API key and secret turn on token verification (see `avatario_wrapper.testing.app`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import uvicorn

from ._transport import ResettableH11Protocol
from .app import FakeAvatario, RecordedRequest
from .faults import Fault

LOOPBACK = "127.0.0.1"


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
        faults: str | Iterable[Fault] = "",
        honour_idempotency_key: bool = True,
        livekit_api_key: str | None = None,
        livekit_api_secret: str | None = None,
    ) -> None:
        if app is None:
            app = FakeAvatario(
                api_key=api_key,
                faults=faults,
                honour_idempotency_key=honour_idempotency_key,
                livekit_api_key=livekit_api_key,
                livekit_api_secret=livekit_api_secret,
            )
        elif (
            api_key != "test-key"
            or faults != ""
            or not honour_idempotency_key
            or livekit_api_key is not None
            or livekit_api_secret is not None
        ):
            raise ValueError("pass the app's options to FakeAvatario, not to a FakeServer of it")
        self.app = app
        self.host = host
        self._requested_port = port
        self._startup_timeout = startup_timeout
        self._server: uvicorn.Server | None = None
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

    def add_faults(self, faults: str | Iterable[Fault]) -> None:
        """Queue more fault steps (a script string or `Fault` objects)."""
        self.app.add_faults(faults)

    def start(self) -> FakeServer:
        """Bind 127.0.0.1 (unless told otherwise), serve in a thread, return when ready."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self._requested_port))
        except OSError:
            sock.close()  # a busy port: the caller reports it; no socket is left behind
            raise
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            http=ResettableH11Protocol,
            lifespan="off",
            log_level=logging.WARNING,
            access_log=False,
            timeout_graceful_shutdown=1,
            timeout_keep_alive=5,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="fake-avatario", daemon=True
        )
        thread.start()
        self._server, self._thread = server, thread
        deadline = time.monotonic() + self._startup_timeout
        while thread.is_alive() and not server.started and time.monotonic() < deadline:
            time.sleep(0.005)
        if not server.started:
            self.stop()
            raise RuntimeError("the fake Avatario server did not start")
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
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
    faults: str | Iterable[Fault] = "",
    host: str = LOOPBACK,
    port: int = 0,
    honour_idempotency_key: bool = True,
    livekit_api_key: str | None = None,
    livekit_api_secret: str | None = None,
) -> FakeServer:
    """A fake Avatario to use as a context manager (``with`` or ``async with``).

    It binds 127.0.0.1 on a free port unless told otherwise; `server.url` is its base URL.
    `honour_idempotency_key=False` makes it ignore ``Idempotency-Key`` (every valid request
    starts a session); with `livekit_api_key` and `livekit_api_secret` it verifies the avatar's
    LiveKit token.
    """
    return FakeServer(
        host=host,
        port=port,
        api_key=api_key,
        faults=faults,
        honour_idempotency_key=honour_idempotency_key,
        livekit_api_key=livekit_api_key,
        livekit_api_secret=livekit_api_secret,
    )
