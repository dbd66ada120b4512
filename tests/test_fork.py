"""A client made before os.fork() never shares a pooled connection with its child.

gunicorn --preload and multiprocessing's fork start method copy a parent's client into every
child. A keep-alive server on 127.0.0.1 numbers its connections and answers each request with
its own session id, so a child that wrote on its parent's connection would be seen (and, with
both writing at once, would read the other's answer).
"""

from __future__ import annotations

import asyncio
import gc
import json
import multiprocessing
import os
import sys
from typing import Any

import pytest

from avatario_wrapper import AsyncAvatarioClient, AvatarioClient

from .conftest import API_KEY, CALL
from .loopback import KeepAliveServer, ok_session

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork on this platform"),
    # The test server runs in threads; Python 3.12+ warns that forking such a process may
    # deadlock the child. The child here only uses the client.
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]


def _answer(n: int, conn: int, head: str) -> bytes:
    # The server says it keeps an idle connection a minute: a child slowed by a loaded machine
    # must not outlast the parent's pooled connection's idle expiry (a pool the client made
    # reuses it for 1.5 s when the server says nothing), or the parent would rightly open a
    # new one and the test would say nothing about the fork.
    return ok_session(n, {"Keep-Alive": "timeout=60"})


def _in_child(work: Any) -> dict[str, Any]:
    """Run `work()` in a forked child; its JSON-able result, or the error it raised."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        try:
            out = {"ok": work()}
        except BaseException as exc:
            out = {"error": f"{type(exc).__name__}: {exc}"}
        os.write(write, json.dumps(out).encode())
        os.close(write)
        os._exit(0)
    os.close(write)
    data = b""
    while chunk := os.read(read, 65536):
        data += chunk
    os.close(read)
    os.waitpid(pid, 0)
    result: dict[str, Any] = json.loads(data)
    return result


def test_a_sync_client_in_a_forked_child_opens_its_own_connection() -> None:
    with KeepAliveServer(_answer) as server:
        client = AvatarioClient(API_KEY, base_url=server.url)
        first = client.start_session(**CALL)  # leaves connection 1 in the pool
        child = _in_child(lambda: client.start_session(**CALL).session_id)
        after = client.start_session(**CALL)
        client.close()
        seen = [conn for conn, _ in server.seen]
    assert first.session_id == "s-1"
    assert child == {"ok": "s-2"}
    assert after.session_id == "s-3"
    assert seen == [1, 2, 1]  # the child on a connection of its own; the parent kept its own


def test_a_given_httpx_pool_is_not_shared_with_the_child_either() -> None:
    import httpx

    with KeepAliveServer(_answer) as server:
        # A caller's pool keeps its own expiry (httpx's 5 s), whatever the server says.
        http = httpx.Client(limits=httpx.Limits(keepalive_expiry=60))
        client = AvatarioClient(API_KEY, base_url=server.url, http_client=http)
        client.start_session(**CALL)
        child = _in_child(lambda: client.start_session(**CALL).session_id)
        client.start_session(**CALL)
        http.close()
        seen = [conn for conn, _ in server.seen]
    assert child == {"ok": "s-2"}
    assert seen == [1, 2, 1]


def test_an_async_client_of_its_own_pool_works_in_the_child() -> None:
    # The parent used it on its loop (idle at the fork); the child runs a loop of its own: a
    # pool the client made starts afresh there, and the parent's goes on.
    with KeepAliveServer(_answer) as server:
        loop = asyncio.new_event_loop()
        try:
            client = AsyncAvatarioClient(API_KEY, base_url=server.url)
            loop.run_until_complete(client.start_session(**CALL))

            def work() -> str | None:
                async def main() -> str | None:
                    result = await client.start_session(**CALL)
                    await client.aclose()
                    return result.session_id

                session_id = asyncio.run(main())
                # What the child drops is collected: that must not touch the parent's loop (its
                # epoll is shared across the fork), or the parent's next answer never arrives.
                gc.collect()
                return session_id

            try:
                child = _in_child(work)
                after = loop.run_until_complete(client.start_session(**CALL))
            finally:
                loop.run_until_complete(client.aclose())
        finally:
            loop.close()
        seen = [conn for conn, _ in server.seen]
    assert child == {"ok": "s-2"}
    assert after.session_id == "s-3"
    assert seen == [1, 2, 1]


def _worker(url: str) -> str | None:
    return _SHARED[url].start_session(**CALL).session_id


_SHARED: dict[str, AvatarioClient] = {}


@pytest.mark.skipif(sys.platform == "darwin", reason="fork start method only where it is safe")
def test_multiprocessing_fork_workers_each_use_their_own_connection() -> None:
    with KeepAliveServer(_answer) as server:
        client = AvatarioClient(API_KEY, base_url=server.url)
        _SHARED[server.url] = client
        try:
            client.start_session(**CALL)  # the parent pools connection 1 before forking
            with multiprocessing.get_context("fork").Pool(2) as pool:
                ids = pool.map(_worker, [server.url] * 4)
        finally:
            _SHARED.pop(server.url, None)
            client.close()
        seen = [conn for conn, _ in server.seen]
    assert sorted(ids) == sorted(f"s-{n}" for n in range(2, 6))  # each call its own answer
    assert 1 not in seen[1:]  # no worker wrote on the parent's connection
