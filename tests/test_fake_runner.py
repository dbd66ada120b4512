"""The fake's runner: Nagle off on every connection, and a clean, quick stop.

Speed itself is measured by benchmarks/fake_speed.py, never asserted here: these tests check
the socket option that makes it fast, on the server side of real accepted connections.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import threading
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import pytest
import uvicorn
from uvicorn.server import ServerState

from avatario_wrapper.testing import FakeAvatario, FakeServer, run_fake_server
from avatario_wrapper.testing._transport import FakeH11Protocol, set_nodelay

pytestmark = pytest.mark.integration

KEY = "sk_fake_runner_key_0001"
BODY = {
    "avatario_face_id": "f",
    "agent_id": "a",
    "livekit": {"url": "wss://h.example", "token": "t"},
}


def server_side_sockets(server: FakeServer) -> list[socket.socket]:
    """The fake's accepted sockets, from uvicorn's live connections (test-only access)."""
    assert server._server is not None
    return [c.transport.get_extra_info("socket") for c in server._server.server_state.connections]


def nodelay(sock: Any) -> int:
    return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def test_every_accepted_connection_has_tcp_nodelay() -> None:
    async def aiohttp_call(url: str) -> int:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return response.status

    with run_fake_server(api_key=KEY) as server:
        with httpx.Client(headers={"x-api-key": KEY}) as http:
            assert http.post(f"{server.url}/start-session", json=BODY).status_code == 200
            raw = socket.create_connection((server.host, server.port))
            raw.sendall(f"GET /nowhere HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
            assert raw.recv(65536).startswith(b"HTTP/1.1 404")
            try:
                sockets = server_side_sockets(server)
                assert len(sockets) == 2  # the httpx connection, kept alive, and the raw one
                assert [nodelay(s) for s in sockets] == [1, 1]
            finally:
                raw.close()
        assert asyncio.run(aiohttp_call(f"{server.url}/nowhere")) == 404


def test_the_listening_socket_says_it_is_tcp() -> None:
    # asyncio sets TCP_NODELAY itself only on sockets whose proto is IPPROTO_TCP, and an
    # accepted socket inherits proto from the listening one.
    with run_fake_server(api_key=KEY) as server:
        assert server._server is not None
        [listener] = [s for srv in server._server.servers for s in srv.sockets]
        assert listener.proto == socket.IPPROTO_TCP


class Transport:
    """Just enough of an asyncio transport around a real socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.sock if name == "socket" else default


def test_the_protocol_turns_nagle_off_where_asyncio_did_not() -> None:
    # A listening socket made with proto 0 (as uvicorn's Config.bind_socket makes them): its
    # accepted sockets keep Nagle on, and the protocol must turn it off itself.
    loop = asyncio.new_event_loop()
    try:
        config = uvicorn.Config(FakeAvatario(), http=FakeH11Protocol)
        config.load()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            with socket.create_connection(listener.getsockname()):
                accepted, _ = listener.accept()
                with accepted:
                    assert (accepted.proto, nodelay(accepted)) == (0, 0)
                    protocol = FakeH11Protocol(
                        config=config, server_state=ServerState(), app_state={}, _loop=loop
                    )
                    protocol.connection_made(Transport(accepted))  # type: ignore[arg-type]
                    assert nodelay(accepted) == 1
    finally:
        loop.close()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix:
        set_nodelay(Transport(unix))  # type: ignore[arg-type]  # not TCP: left alone


def fake_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "fake-avatario"]


@pytest.fixture
def no_fake_threads_left() -> Iterator[None]:
    assert fake_threads() == []
    yield
    assert fake_threads() == []


@pytest.mark.usefixtures("no_fake_threads_left")
def test_stop_ends_the_thread_and_frees_the_port_with_connections_open() -> None:
    with run_fake_server(api_key=KEY) as server, httpx.Client() as http:
        http.post(f"{server.url}/start-session", json=BODY, headers={"x-api-key": KEY})
        port = server.port
        server.stop()
        assert fake_threads() == []
        with pytest.raises(httpx.TransportError):  # the kept-alive connection was closed
            http.post(f"{server.url}/start-session", json=BODY, headers={"x-api-key": KEY})
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.usefixtures("no_fake_threads_left")
def test_stop_ends_a_stalled_exchange() -> None:
    # A stalled request holds its connection: stop waits out the grace period (1 s), then
    # drops it; the client sees the connection end, and no thread is left.
    outcome: list[BaseException] = []
    with run_fake_server(api_key=KEY, faults="stall") as server:

        def call() -> None:
            try:
                httpx.post(
                    f"{server.url}/start-session", json=BODY, headers={"x-api-key": KEY}, timeout=30
                )
            except httpx.HTTPError as error:
                outcome.append(error)

        caller = threading.Thread(target=call)
        caller.start()
        for _ in range(1000):
            if server.requests:
                break
            threading.Event().wait(0.005)
        assert server.requests[0].fault == "stall"
    caller.join(30)
    assert not caller.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], httpx.TransportError)


@pytest.mark.usefixtures("no_fake_threads_left")
def test_a_busy_port_is_reported_and_leaves_nothing_behind() -> None:
    with run_fake_server(api_key=KEY) as server:
        taken = FakeServer(port=server.port)
        with pytest.raises(OSError, match="in use") as caught:
            taken.start()
        assert caught.value.errno == errno.EADDRINUSE
        taken.stop()  # nothing to stop: harmless


def test_start_and_stop_many_times() -> None:
    for _ in range(20):
        with run_fake_server(api_key=KEY) as server:
            assert server.port
    assert fake_threads() == []
