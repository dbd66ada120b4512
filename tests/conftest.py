"""Shared test helpers: a scripted httpx.MockTransport and one runner for both clients."""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from hypothesis import HealthCheck, settings

from avatario_wrapper import AsyncAvatarioClient, AvatarioClient, RetryPolicy, StartSessionResult
from avatario_wrapper.testing import FakeClock

# tests/test_pytest_plugin.py runs test files of its own through pytest's `pytester`.
pytest_plugins = ["pytester"]

# The suite must pass on a loaded machine (CI shares its cores): no property test fails
# because an example, or drawing one, was slow. Speed is measured by scripts/bench instead.
settings.register_profile("avatario", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("avatario")

# Recognisable secrets: no test output, log record, repr or error may contain them.
API_KEY = "sk_test_SECRET_KEY_5f2b9c"
TOKEN = "eyJ.SECRET_LIVEKIT_TOKEN.7d1e"
CALL: dict[str, Any] = {
    "avatar_id": "face_4f1c2a",
    "agent_identity": "agent-7",
    "livekit_url": "wss://rooms.example.com",
    "livekit_token": TOKEN,
}
BASE_URL = "https://avatario.test/api/sdk"

Step = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


def ok(**data: Any) -> httpx.Response:
    return httpx.Response(200, json={"session_id": "sess_1", **data}, headers={"x-request-id": "r"})


def error(status: int, headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
    payload = {"error": "e", "message": f"status {status}", **body}
    return httpx.Response(status, json=payload, headers=headers or {})


class Script:
    """Answers requests with the given steps in order (the last one repeats) and records them.

    A step is a response, an exception to raise, or a function of the request. `took` makes
    every request take that many seconds on the fake clock.
    """

    def __init__(self, *steps: Step, clock: FakeClock | None = None, took: float = 0.0) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []
        self.clock = clock
        self.took = took

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.clock is not None:
            self.clock.advance(self.took)
        step = self.steps[min(len(self.requests), len(self.steps)) - 1]
        if isinstance(step, Exception):
            raise step
        if isinstance(step, httpx.Response):
            return httpx.Response(
                step.status_code, headers=step.headers, content=step.content, request=request
            )
        return step(request)


Runner = Callable[..., StartSessionResult]


@dataclasses.dataclass(frozen=True)
class _Call:
    """One public method call: its name, arguments, retry policy and client options."""

    method: str
    args: dict[str, Any]
    retry: RetryPolicy | None
    options: dict[str, Any]


def _run_sync(call: _Call, script: Script, clock: FakeClock) -> Any:
    with (
        httpx.Client(transport=httpx.MockTransport(script)) as http,
        AvatarioClient(
            API_KEY,
            base_url=BASE_URL,
            retry=call.retry,
            clock=clock,
            http_client=http,
            **call.options,
        ) as client,
    ):
        return getattr(client, call.method)(**call.args)


def _run_async(call: _Call, script: Script, clock: FakeClock) -> Any:
    async def main() -> Any:
        async with (
            httpx.AsyncClient(transport=httpx.MockTransport(script)) as http,
            AsyncAvatarioClient(
                API_KEY,
                base_url=BASE_URL,
                retry=call.retry,
                clock=clock,
                http_client=http,
                **call.options,
            ) as client,
        ):
            return await getattr(client, call.method)(**call.args)

    return asyncio.run(main())


def client_runner(kind: str, method: str, defaults: dict[str, Any]) -> Callable[..., Any]:
    """`runner(script, clock, retry=None, client_options=..., **overrides)`: one `method` call
    on the `kind` ("sync" or "async") client over a MockTransport, `defaults` its arguments."""
    impl = _run_sync if kind == "sync" else _run_async

    def runner(
        script: Script, clock: FakeClock, retry: RetryPolicy | None = None, **kw: Any
    ) -> Any:
        options = kw.pop("client_options", {})
        return impl(_Call(method, {**defaults, **kw}, retry, options), script, clock)

    return runner


@pytest.fixture(params=["sync", "async"])
def run(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """`run(script, clock, retry=None, **start_session_overrides)` on the sync or async client."""
    return client_runner(request.param, "start_session", CALL)


#: What an agent's environment may hold: cleared by `no_agent_env`.
AGENT_ENV = (
    "AVATARIO_AVATAR_ID",
    "AVATARIO_API_KEY",
    "AVATARIO_BASE_URL",
    "LIVEKIT_URL",
    "LIVEKIT_API_KEY",
    "LIVEKIT_API_SECRET",
)


@pytest.fixture
def no_agent_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """None of the Avatario and LiveKit variables of the machine running the tests."""
    for name in AGENT_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(seed=7)


# -- real sockets --------------------------------------------------------------------------

#: The three ways a call can travel: the sync client (httpx), the async client over its
#: default aiohttp sender, and the async client over a given httpx.AsyncClient.
REAL_KINDS = ["sync", "async-aiohttp", "async-httpx"]
#: What a transport raises, kept as ``__cause__`` of our errors (httpx or aiohttp).
TRANSPORT_ERRORS = (httpx.HTTPError, aiohttp.ClientError, OSError)
# asyncio.TimeoutError is the builtin TimeoutError from 3.11 on, a class of its own on 3.10.
TIMEOUT_ERRORS = (httpx.TimeoutException, TimeoutError, asyncio.TimeoutError)


def call_real(
    kind: str,
    base_url: str,
    *,
    api_key: str = API_KEY,
    retry: RetryPolicy | None = None,
    timeout: float = 2.0,
    **overrides: Any,
) -> Any:
    """One start_session over a real socket with the chosen client and sender."""
    args = {**CALL, **overrides}
    options: dict[str, Any] = {"base_url": base_url, "retry": retry, "timeout": timeout}
    if kind == "sync":
        with AvatarioClient(api_key, **options) as client:
            return client.start_session(**args)

    async def main() -> Any:
        if kind == "async-httpx":
            async with httpx.AsyncClient() as http:
                async with AsyncAvatarioClient(api_key, http_client=http, **options) as client:
                    return await client.start_session(**args)
        async with AsyncAvatarioClient(api_key, **options) as client:
            return await client.start_session(**args)

    return asyncio.run(main())


@pytest.fixture(params=REAL_KINDS)
def real_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def pytest_sessionstart(session: pytest.Session) -> None:
    """A runtime folder of this run's own, so the host-wide retry budget (AvatarSession's
    default) is shared by this run's processes only, never with another run on the machine.
    With AVATARIO_TEST_ARTIFACT set (the release workflow's test job), the suite runs against
    the installed wheel: importing this checkout's sources instead is a usage error."""
    runtime = tempfile.mkdtemp(prefix="avatario-test-runtime-")  # 0700
    os.environ["XDG_RUNTIME_DIR"] = runtime
    atexit.register(shutil.rmtree, runtime, True)
    if not os.environ.get("AVATARIO_TEST_ARTIFACT"):
        return
    import avatario_wrapper
    from avatario_wrapper import _generated

    root = Path(__file__).resolve().parent.parent
    for module in (avatario_wrapper, _generated):
        where = Path(str(module.__file__)).resolve()
        if root in where.parents:
            raise pytest.UsageError(
                f"AVATARIO_TEST_ARTIFACT is set but {module.__name__} imports from the checkout "
                f"({where}): install the wheel and run pytest with --import-mode=append"
            )


def _build(target: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One distribution of the project, built by the locked hatchling into a fresh folder."""
    out = tmp_path_factory.mktemp(target)
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", target, "-d", str(out)],
        cwd=Path(__file__).resolve().parent.parent,
        check=True,
        capture_output=True,
    )
    [built] = out.glob("avatario_wrapper-*")
    return built


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built once for the tests that read it."""
    return _build("wheel", tmp_path_factory)


@pytest.fixture(scope="session")
def built_sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's sdist, built once for the tests that read it."""
    return _build("sdist", tmp_path_factory)


# -- a real Redis (tests/redis_server.py) --------------------------------------------------


@pytest.fixture(scope="session")
def redis_binary() -> str:
    """The redis-server the tests can start; the test is skipped, saying why, without one."""
    from .redis_server import MISSING, find_binary

    binary = find_binary()
    if binary is None:
        pytest.skip(MISSING)
    return binary


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a running Redis: scripts/test's ($AVATARIO_TEST_REDIS_URL), else one
    started for this session. Shared by concurrent runs: use scopes of your own, flush nothing."""
    from .redis_server import MISSING, URL_VAR, RedisServer, find_binary

    if url := os.environ.get(URL_VAR):
        yield url
        return
    binary = find_binary()
    if binary is None:
        pytest.skip(MISSING)
    with RedisServer(binary, tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture
def private_redis(redis_binary: str, tmp_path: Path) -> Iterator[Any]:
    """A Redis of this test's own (a `tests.redis_server.RedisServer`), to kill or flush."""
    from .redis_server import RedisServer

    folder = tmp_path / "redis"
    folder.mkdir()
    with RedisServer(redis_binary, folder) as server:
        yield server
