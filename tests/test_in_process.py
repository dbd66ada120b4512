"""Life inside the user's process: crossed answers, keep-alive, close during a wait, results
without secrets, warm_up, connect timeouts, and errors as values.

Real sockets on 127.0.0.1 for every transport (sync over httpx, async over aiohttp, async over
a given httpx.AsyncClient); `httpx.MockTransport` with a `FakeClock` where only decisions are
under test. Cancellation, event loops and fork have their own modules.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import multiprocessing
import pickle
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import httpx
import pytest

from avatario_wrapper import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AsyncAvatarioClient,
    AuthenticationError,
    AvatarioClient,
    AvatarioConfigError,
    ClientClosedError,
    InternalServerError,
    MissingAgentIdentityError,
    Outcome,
    RateLimitError,
    RetryPolicy,
    StartSessionResult,
    WrongEventLoopError,
)
from avatario_wrapper.testing import FakeClock

from .conftest import API_KEY, CALL, TOKEN, Script, error
from .loopback import KeepAliveServer, loopback, ok_session

FAST = RetryPolicy(initial_delay=0.01, max_delay=0.02)

Outcome_ = StartSessionResult | APIError


def calls(
    kind: str,
    url: str,
    count: int,
    *,
    warm_up: bool = False,
    http_options: dict[str, Any] | None = None,
    **options: Any,
) -> list[Any]:
    """`count` start_session calls over one client (one pool); each result or APIError.

    With `warm_up`, `warm_up()` goes first (its failure, if any, is not kept)."""
    options = {"base_url": url, "timeout": 2.0, "retry": FAST, **options}
    results: list[Any] = []
    if kind == "sync":
        with AvatarioClient(API_KEY, **options) as client:
            if warm_up:
                with contextlib.suppress(APIError):
                    client.warm_up()
            for _ in range(count):
                try:
                    results.append(client.start_session(**CALL))
                except APIError as exc:
                    results.append(exc)
        return results

    async def run(client: AsyncAvatarioClient) -> None:
        if warm_up:
            with contextlib.suppress(APIError):
                await client.warm_up()
        for _ in range(count):
            try:
                results.append(await client.start_session(**CALL))
            except APIError as exc:
                results.append(exc)

    async def main() -> None:
        if kind == "async-httpx":
            async with httpx.AsyncClient(**(http_options or {})) as http:
                async with AsyncAvatarioClient(API_KEY, http_client=http, **options) as client:
                    await run(client)
        else:
            async with AsyncAvatarioClient(API_KEY, **options) as client:
                await run(client)

    asyncio.run(main())
    return results


# -- answers never cross ---------------------------------------------------------------------

GHOST = ok_session(999)


def _with_leftover(extra: bytes) -> Callable[[int, int, str], bytes | None]:
    """Request 1 gets its answer followed by `extra` on the same connection; later requests
    get their own answers."""

    def answer(n: int, conn: int, head: str) -> bytes | None:
        return ok_session(n) + (extra if n == 1 else b"")

    return answer


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(GHOST, id="a second response"),
        pytest.param(b"HTTP/1.1 204 No Content\r\n\r\n", id="a stray 204"),
        pytest.param(b"garbage that is not HTTP", id="stray bytes"),
    ],
)
def test_bytes_left_after_a_response_are_never_taken_for_the_next_answer(
    real_kind: str, extra: bytes
) -> None:
    with KeepAliveServer(_with_leftover(extra)) as server:
        results = calls(real_kind, server.url, 3)
    # Every answer is its own request's (aiohttp may refuse the first reply outright when
    # garbage follows it in the same packet: an error, never another request's answer).
    assert [getattr(r, "session_id", None) for r in results[1:]] == ["s-2", "s-3"]
    assert getattr(results[0], "session_id", None) in ("s-1", None)
    if real_kind != "async-aiohttp" or extra is GHOST:
        assert isinstance(results[0], StartSessionResult), results[0]
    connections = [conn for conn, _ in server.seen]
    assert connections[1] != connections[0]  # the tainted connection was not reused
    assert connections[2] == connections[1]  # a clean one still is


def test_a_204_with_a_body_does_not_answer_the_next_request(real_kind: str) -> None:
    def answer(n: int, conn: int, head: str) -> bytes | None:
        if n == 1:
            return b"HTTP/1.1 204 No Content\r\n\r\n" + GHOST
        return ok_session(n)

    with KeepAliveServer(answer) as server:
        first, second = calls(real_kind, server.url, 2)
    # A 204 is a 2xx with no JSON: the first call fails (never resent); the second is its own.
    assert isinstance(first, APIResponseValidationError)
    assert isinstance(second, StartSessionResult)
    assert second.session_id == "s-2"


def test_a_head_answered_with_a_body_does_not_answer_the_call_after_warm_up(
    real_kind: str,
) -> None:
    def answer(n: int, conn: int, head: str) -> bytes | None:
        if head.startswith("HEAD"):
            return b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" + GHOST
        return ok_session(n)

    with KeepAliveServer(answer) as server:
        [result] = calls(real_kind, server.url, 1, warm_up=True)
    # warm_up's HEAD is request 1 (aiohttp refuses its reply outright: warm_up fails, which is
    # fine); the call is request 2 and gets its own answer, never the body after the HEAD.
    assert isinstance(result, StartSessionResult), result
    assert result.session_id == "s-2"


# -- keep-alive: never reuse a connection the server may be giving up ------------------------


@pytest.mark.parametrize(
    ("keep_alive", "reused"),
    [
        pytest.param(None, True, id="no header: reused within the client's 1.5 s"),
        pytest.param("timeout=5", True, id="timeout=5: reused for up to 4 s"),
        pytest.param("timeout=1", False, id="timeout=1: never reused"),
        pytest.param("timeout=1, max=100", False, id="timeout=1 among other parameters"),
    ],
)
def test_a_servers_keep_alive_timeout_is_honoured(
    real_kind: str, keep_alive: str | None, reused: bool
) -> None:
    headers = {"Keep-Alive": keep_alive} if keep_alive else {}
    with KeepAliveServer(lambda n, conn, head: ok_session(n, headers)) as server:
        results = calls(real_kind, server.url, 2)
    assert all(isinstance(r, StartSessionResult) for r in results), results
    assert (server.connections == 1) is reused


# -- close during a backoff wait keeps what is known --------------------------------------------


class ClosingClock(FakeClock):
    """Closes the client while the retry loop waits, as another thread or task would."""

    def __init__(self) -> None:
        super().__init__(seed=5)
        self.client: Any = None

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        self.client.close()

    async def asleep(self, seconds: float) -> None:
        await super().asleep(seconds)
        await self.client.aclose()


def test_closing_the_client_during_a_wait_ends_the_call_with_what_is_known(kind: str) -> None:
    # A 500 whose outcome is unknown, retried by policy; the client is closed in the wait.
    script = Script(error(500), httpx.Response(200, json={"session_id": "late"}))
    clock = ClosingClock()
    policy = RetryPolicy(retry_unknown_outcome=True)
    if kind == "sync":
        with httpx.Client(transport=httpx.MockTransport(script)) as http:
            client = AvatarioClient(API_KEY, http_client=http, retry=policy, clock=clock)
            clock.client = client
            with pytest.raises(InternalServerError) as caught:
                client.start_session(**CALL)
    else:

        async def main() -> None:
            async with httpx.AsyncClient(transport=httpx.MockTransport(script)) as http:
                client = AsyncAvatarioClient(API_KEY, http_client=http, retry=policy, clock=clock)
                clock.client = client
                await client.start_session(**CALL)

        with pytest.raises(InternalServerError) as caught:
            asyncio.run(main())
    error_ = caught.value
    assert len(script.requests) == 1  # nothing sent after the close
    assert error_.may_have_started is True
    assert error_.idempotency_key == script.requests[0].headers["idempotency-key"]
    assert error_.not_retried_because is not None
    assert "closed" in error_.not_retried_because
    assert "closed" in str(error_)


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- no attempt without time to hear its answer ----------------------------------------------


def test_a_retry_needs_min_attempt_time_left_after_its_wait(run: Any, clock: FakeClock) -> None:
    script = Script(error(503, headers={"Retry-After": "0.55"}), httpx.Response(200, json={}))
    with pytest.raises(InternalServerError) as caught:
        run(script, clock, RetryPolicy(max_elapsed=0.6))
    assert len(script.requests) == 1  # no POST goes out with 0.05 s left
    assert caught.value.retryable is True
    why = caught.value.not_retried_because or ""
    assert "min_attempt_time" in why
    assert "max_elapsed" in why
    assert why in str(caught.value)
    assert clock.sleeps == []  # it did not wait for nothing


def test_with_time_enough_the_same_retry_is_sent(run: Any, clock: FakeClock) -> None:
    script = Script(
        error(503, headers={"Retry-After": "0.55"}), httpx.Response(200, json={"session_id": "s"})
    )
    result = run(script, clock, RetryPolicy(max_elapsed=1.1))
    assert result.attempts == 2
    assert clock.sleeps == [0.55]


@pytest.mark.parametrize(
    ("policy", "steps", "reason"),
    [
        (RetryPolicy(max_attempts=2, initial_delay=0.0), [error(503)] * 2, "attempts are used"),
        (RetryPolicy.no_retries(), [error(503)], "retries are off"),
        (RetryPolicy(), [error(429, headers={"Retry-After": "120"})], "max_retry_after"),
    ],
)
def test_every_retryable_failure_not_retried_says_why(
    run: Any, clock: FakeClock, policy: RetryPolicy, steps: list[Any], reason: str
) -> None:
    with pytest.raises(APIStatusError) as caught:
        run(Script(*steps), clock, policy)
    assert caught.value.retryable is True
    assert reason in (caught.value.not_retried_because or "")
    assert reason in str(caught.value)


# -- results never show a secret ----------------------------------------------------------------


def test_a_result_never_shows_a_secret_the_server_echoed(run: Any, clock: FakeClock) -> None:
    echo = {
        "session_id": f"sess-{TOKEN}",
        "echo": {"token": TOKEN, "key": API_KEY, "list": [f"x{API_KEY}y"], TOKEN: 1},
    }
    result = run(Script(httpx.Response(200, json=echo, headers={"x-request-id": API_KEY})), clock)
    shown = repr(result) + str(result) + repr(result.data) + str(result.session_id)
    assert TOKEN not in shown
    assert API_KEY not in shown
    assert result.session_id == "sess-[redacted]"
    assert result.data["echo"]["token"] == "[redacted]"
    assert result.request_id == "[redacted]"


def test_a_result_without_secrets_keeps_its_data_as_sent(run: Any, clock: FakeClock) -> None:
    body = {"session_id": "s-1", "nested": {"a": [1, 2.5, None, True, "x"]}}
    result = run(Script(httpx.Response(200, json=body)), clock)
    assert result.data == body


# -- warm_up starts nothing -------------------------------------------------------------------


def _warm_up(kind: str, url: str, timeout: float) -> BaseException:
    if kind == "sync":
        with AvatarioClient(API_KEY, base_url=url, timeout=timeout) as client:
            try:
                client.warm_up()
            except APIError as exc:
                return exc
        raise AssertionError("warm_up did not fail")

    async def main() -> BaseException:
        async def go(client: AsyncAvatarioClient) -> BaseException:
            try:
                await client.warm_up()
            except APIError as exc:
                return exc
            raise AssertionError("warm_up did not fail")

        if kind == "async-httpx":
            async with httpx.AsyncClient() as http:
                async with AsyncAvatarioClient(
                    API_KEY, base_url=url, timeout=timeout, http_client=http
                ) as client:
                    return await go(client)
        async with AsyncAvatarioClient(API_KEY, base_url=url, timeout=timeout) as client:
            return await go(client)

    return asyncio.run(main())


@pytest.mark.parametrize("behaviour", ["stall", "reset"])
def test_no_warm_up_error_says_a_session_may_have_started(real_kind: str, behaviour: str) -> None:
    with loopback(behaviour) as server:
        exc = _warm_up(real_kind, server.url, timeout=0.3)
    assert isinstance(exc, APIConnectionError)
    assert exc.may_have_started is False
    assert "may have started" not in str(exc)


# -- the same socket events classify the same on every transport -------------------------------


def test_a_1xx_then_a_close_on_a_reused_connection_is_unknown(real_kind: str) -> None:
    def answer(n: int, conn: int, head: str) -> bytes | tuple[bytes, bool] | None:
        if n == 2:  # a 103 Early Hints (response bytes), then the server goes away
            return b"HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n", True
        return ok_session(n)

    with KeepAliveServer(answer) as server:
        first, second = calls(real_kind, server.url, 2)
    assert isinstance(first, StartSessionResult)
    assert isinstance(second, APIConnectionError), second
    assert second.outcome is Outcome.UNKNOWN
    assert second.may_have_started is True
    assert len(server.seen) == 2  # never resent


def test_a_pool_wait_timeout_on_a_given_async_httpx_pool_is_not_sent() -> None:
    # One connection in the caller's pool, held by a stalled call; a second call waits for it
    # past its timeout: nothing of it was sent, so it is NOT_SENT and retried.
    with loopback("stall") as server:

        async def main() -> tuple[BaseException, int]:
            limits = httpx.Limits(max_connections=1)
            async with httpx.AsyncClient(limits=limits) as http:
                async with AsyncAvatarioClient(
                    API_KEY,
                    base_url=server.url,
                    http_client=http,
                    timeout=0.3,
                    retry=RetryPolicy(max_attempts=2, initial_delay=0.0, max_elapsed=5.0),
                ) as client:
                    slow = client.with_options(timeout=1.5)
                    holder = asyncio.ensure_future(slow.start_session(**CALL))
                    await asyncio.sleep(0.1)  # the holder has the only connection
                    try:
                        await client.start_session(**CALL)
                    except APIError as exc:
                        waiting: BaseException = exc
                    with pytest.raises(APITimeoutError):
                        await holder
                    return waiting, len(server.requests)

        waiting, _ = asyncio.run(main())
    assert isinstance(waiting, APITimeoutError)
    assert waiting.outcome is Outcome.NOT_SENT
    assert waiting.may_have_started is False
    assert waiting.attempts == 2  # retried: it had not been sent


# -- connecting has its own, shorter timeout ---------------------------------------------------


def _silent_tls_server() -> tuple[socket.socket, list[socket.socket], threading.Event]:
    """Accepts TCP connections and never says a word: a TLS handshake to it never ends."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.settimeout(0.05)
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except (TimeoutError, OSError):
                continue
            held.append(conn)

    threading.Thread(target=serve, daemon=True).start()
    return sock, held, stop


def test_a_handshake_past_connect_timeout_is_not_sent_and_retried(real_kind: str) -> None:
    sock, held, stop = _silent_tls_server()
    url = f"https://127.0.0.1:{sock.getsockname()[1]}"
    policy = RetryPolicy(max_attempts=3, initial_delay=0.0, max_elapsed=10.0, min_attempt_time=0.1)
    began = time.monotonic()
    try:
        error_ = _call_once(real_kind, url, timeout=10.0, connect_timeout=0.2, retry=policy)
    finally:
        stop.set()
        sock.close()
        for conn in held:
            conn.close()
    took = time.monotonic() - began
    assert isinstance(error_, APITimeoutError), error_
    assert error_.outcome is Outcome.NOT_SENT
    assert error_.attempts == 3  # a connect timeout leaves time for fresh attempts
    assert "connect_timeout" in str(error_)
    assert took < 5.0  # three 0.2 s handshakes, not a 10 s attempt (a loaded-machine bound)


def _call_once(kind: str, url: str, **options: Any) -> BaseException:
    ssl_context = ssl.create_default_context()  # the silent server has no certificate at all
    if kind == "sync":
        with AvatarioClient(API_KEY, base_url=url, **options) as client:
            try:
                client.start_session(**CALL)
            except APIError as exc:
                return exc
        raise AssertionError("no error")

    async def main() -> BaseException:
        try:
            if kind == "async-httpx":
                async with httpx.AsyncClient(verify=ssl_context) as http:
                    async with AsyncAvatarioClient(
                        API_KEY, base_url=url, http_client=http, **options
                    ) as client:
                        await client.start_session(**CALL)
            else:
                async with AsyncAvatarioClient(API_KEY, base_url=url, **options) as client:
                    await client.start_session(**CALL)
        except APIError as exc:
            return exc
        raise AssertionError("no error")

    return asyncio.run(main())


def test_connect_timeout_is_checked_and_shown() -> None:
    with pytest.raises(AvatarioConfigError, match="connect_timeout"):
        AvatarioClient(API_KEY, connect_timeout=0)
    client = AvatarioClient(API_KEY, connect_timeout=None)
    assert client.connect_timeout is None
    assert "connect_timeout=None" in repr(client)
    assert client.with_options(connect_timeout=2.5).connect_timeout == 2.5
    assert client.with_options(timeout=3.0).connect_timeout is None
    client.close()
    assert AvatarioClient(API_KEY).connect_timeout == 1.0


# -- errors are values ------------------------------------------------------------------------


def _examples() -> list[BaseException]:
    headers = httpx.Headers({"x-request-id": "r-1", "retry-after": "2"})
    rate = RateLimitError(
        "Avatario answered HTTP 429",
        status_code=429,
        body='{"error":"rate_limited"}',
        request_id="r-1",
        headers=headers,
        retry_after=2.0,
        attempts=3,
        idempotency_key="key-1",
    )
    rate.retryable = True
    rate.not_retried_because = "all 3 attempts are used (max_attempts)"
    timeout = APITimeoutError(
        "timed out", outcome=Outcome.UNKNOWN, idempotency_key="key-2", attempts=2
    )
    return [
        rate,
        timeout,
        AuthenticationError(
            "401", status_code=401, body="no", request_id=None, headers={}, idempotency_key="k"
        ),
        APIConnectionError("refused", outcome=Outcome.NOT_SENT, may_have_started=False),
        APIResponseValidationError(
            "bad", status_code=200, body="<html>", request_id="r", idempotency_key="k3"
        ),
        AvatarioConfigError("livekit_url", "must be a ws, wss, http or https URL"),
        MissingAgentIdentityError(),
        ClientClosedError("closed"),
        WrongEventLoopError("another loop"),
    ]


def _state(exc: BaseException) -> tuple[Any, ...]:
    return (type(exc), exc.args, str(exc), {k: str(v) for k, v in vars(exc).items()})


@pytest.mark.parametrize("exc", _examples(), ids=lambda e: type(e).__name__)
def test_every_error_survives_pickle_and_deepcopy(exc: BaseException) -> None:
    for copied in (pickle.loads(pickle.dumps(exc)), copy.deepcopy(exc), copy.copy(exc)):
        assert _state(copied) == _state(exc)
    if isinstance(exc, APIError):
        restored = pickle.loads(pickle.dumps(exc))
        assert restored.may_have_started is exc.may_have_started
        assert restored.outcome is exc.outcome
        assert restored.idempotency_key == exc.idempotency_key


def test_errors_from_real_calls_pickle(real_kind: str) -> None:
    with loopback(
        b"HTTP/1.1 429 X\r\nContent-Length: 2\r\nRetry-After: 120\r\nx-request-id: r9\r\n"
        b"Connection: close\r\n\r\n{}",
    ) as server:
        [exc] = calls(real_kind, server.url, 1)
    assert isinstance(exc, RateLimitError)
    restored = pickle.loads(pickle.dumps(exc))
    assert (restored.status_code, restored.retry_after, restored.request_id) == (429, 120.0, "r9")
    assert restored.headers["retry-after"] == "120"
    assert restored.not_retried_because == exc.not_retried_because


def _raise_rate_limit() -> None:
    raise _examples()[0]


def test_a_rate_limit_error_crosses_a_process_pool() -> None:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        future = pool.submit(_raise_rate_limit)
        with pytest.raises(RateLimitError) as caught:
            future.result(timeout=60)
    assert caught.value.retry_after == 2.0
    assert caught.value.idempotency_key == "key-1"
    assert caught.value.may_have_started is False


# -- every request on the wire is an attempt the call flow decided ---------------------------

HEAD_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


@pytest.mark.parametrize("pool", ["own", "caller's"])
def test_no_transport_resends_an_idempotent_request_by_itself(real_kind: str, pool: str) -> None:
    # warm_up's HEAD is idempotent, so a library may resend it by itself when a reused
    # connection drops it (aiohttp does, unless told not to). The server answers the first
    # HEAD and keeps the connection, then reads the second and closes without a word.
    def answer(n: int, conn: int, head: str) -> bytes | None:
        return HEAD_OK if n == 1 else None

    with KeepAliveServer(answer) as server:
        second = _two_warm_ups(real_kind, pool, server.url)
        seen = list(server.seen)
    assert isinstance(second, APIError), second  # the drop reached the caller ...
    assert second.attempts == 1  # ... after the one attempt warm_up makes
    assert [head.split(" ", 1)[0] for _, head in seen] == ["HEAD", "HEAD"]  # nothing resent
    assert {conn for conn, _ in seen} == {1}  # the second went out on the reused connection


def _two_warm_ups(kind: str, pool: str, url: str) -> Any:
    """Two warm_ups over one client; the second's error (or None)."""
    if kind == "sync":
        with (
            httpx.Client() if pool != "own" else contextlib.nullcontext() as http,
            AvatarioClient(API_KEY, base_url=url, http_client=http) as client,
        ):
            client.warm_up()
            try:
                client.warm_up()
            except APIError as exc:
                return exc
            return None

    async def main() -> Any:
        async with contextlib.AsyncExitStack() as stack:
            http: Any = None
            if pool != "own":
                opened = httpx.AsyncClient() if kind == "async-httpx" else aiohttp.ClientSession()
                http = await stack.enter_async_context(opened)
            elif kind == "async-httpx":
                pytest.skip("the async client's own pool is aiohttp's when aiohttp is installed")
            client = await stack.enter_async_context(
                AsyncAvatarioClient(API_KEY, base_url=url, http_client=http)
            )
            await client.warm_up()
            try:
                await client.warm_up()
            except APIError as exc:
                return exc
            return None

    return asyncio.run(main())
