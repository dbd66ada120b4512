"""The pytest plugin, as a user meets it: test files run by pytest in a subprocess (pytester).

Every run uses the settings careful users have (``-W error``, ``filterwarnings = error``,
``--strict-markers``), so a warning raised by the plugin, or a socket it leaves open (a
ResourceWarning when collected), fails the run. The plugin is loaded the way users get it:
through the ``pytest11`` entry point of the installed package.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest

from .spec_helpers import ROOT

pytestmark = pytest.mark.integration

INI = """
[pytest]
addopts = -p no:cacheprovider --strict-markers
filterwarnings = error
asyncio_default_fixture_loop_scope = function
"""

# What the inner test files share.
PRELUDE = """
import asyncio
import gc

import httpx
import pytest

from avatario_wrapper import (
    APIConnectionError,
    APITimeoutError,
    AsyncAvatarioClient,
    AuthenticationError,
    AvatarioClient,
    RetryPolicy,
    UnprocessableEntityError,
    WrongEventLoopError,
)
from avatario_wrapper.testing import FakeAvatario, FakeServer, OperationResponse, run_fake_server

CALL = {
    "avatar_id": "face_1",
    "agent_identity": "agent-7",
    "livekit_url": "wss://rooms.example.com",
    "livekit_token": "t.t.t",
}
BODY = {
    "avatario_face_id": "face_1",
    "agent_id": "agent-7",
    "livekit": {"url": "wss://rooms.example.com", "token": "t.t.t"},
}
FAST = RetryPolicy(initial_delay=0.01, max_delay=0.01)
"""


# Two plugins of the development environment that no inner run uses, and that would take
# seconds to import in each run (hypothesis' and schemathesis'); every other installed plugin,
# this package's included, loads through its entry point as it does for users.
UNUSED_PLUGINS = ("-p", "no:hypothesispytest", "-p", "no:schemathesis")


def run(pytester: pytest.Pytester, *args: str, isolated: bool = False) -> pytest.RunResult:
    """Run pytest on `pytester`'s files: in this process (fast: nothing to import again), or,
    `isolated`, in a new interpreter (for runs that leave a socket open on purpose, or hide an
    installed module)."""
    pytester.makeini(INI)
    if isolated:
        return pytester.runpytest_subprocess("-W", "error", *UNUSED_PLUGINS, *args, timeout=120)
    return pytester.runpytest_inprocess("-W", "error", *UNUSED_PLUGINS, *args)


def write(pytester: pytest.Pytester, name: str, code: str) -> None:
    pytester.makepyfile(**{name: PRELUDE + textwrap.dedent(code)})


def assert_clean(result: pytest.RunResult) -> None:
    """No warning anywhere in the run's output (the plugin adds none)."""
    text = result.stdout.str() + result.stderr.str()
    assert "warnings summary" not in text, text
    assert "Warning" not in text, text


# -- sync tests ---------------------------------------------------------------------------------

SYNC_TESTS = """
SEEN = []


def test_a_session_starts_on_this_tests_own_fake(avatario_client, fake_avatario):
    assert isinstance(fake_avatario, FakeServer)
    assert avatario_client.base_url == fake_avatario.url
    assert fake_avatario.api_key == "test-key"
    result = avatario_client.start_session(**CALL)
    assert [s["session_id"] for s in fake_avatario.sessions] == [result.session_id]
    [request] = fake_avatario.requests
    assert request.headers["x-api-key"] == "[redacted]"
    assert (request.operation_id, request.status) == ("startSession", 200)


def test_what_a_test_does_to_its_fake_1(fake_avatario):
    fake_avatario.set_faults("503*5,reset@50%")
    fake_avatario.register_handler(
        "startSession", lambda request: OperationResponse(200, {"session_id": "mine"})
    )
    fake_avatario.on_session_started(lambda event: 1 / 0)
    httpx.post(f"{fake_avatario.url}/start-session", json=BODY)  # no key: a 401, recorded
    SEEN.append(fake_avatario)


def test_what_a_test_does_to_its_fake_2_stays_there(avatario_client, fake_avatario):
    [first] = SEEN
    assert fake_avatario.url == first.url  # the same address, another fake
    assert fake_avatario.app is not first.app
    assert (fake_avatario.requests, fake_avatario.sessions, fake_avatario.faults) == ([], [], "")
    result = avatario_client.start_session(**CALL)
    assert result.session_id != "mine" and result.attempts == 1
    assert fake_avatario.app.listener_errors == []
    assert len(first.requests) == 1 and first.faults == "503*4,reset@50%"  # faults come first


@pytest.mark.avatario(faults="ok:delay=0.3", timeout=0.1, retry=RetryPolicy.no_retries())
def test_a_late_request_1(avatario_client, fake_avatario):
    with pytest.raises(APITimeoutError):
        avatario_client.start_session(**CALL)
    SEEN.append(fake_avatario)


def test_a_late_request_2_is_served_by_the_fake_of_the_test_it_came_from(fake_avatario):
    late = SEEN[-1]
    import time

    deadline = time.monotonic() + 10
    while not late.sessions and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(late.sessions) == 1  # served after its test ended, by that test's fake
    assert fake_avatario.requests == [] and fake_avatario.sessions == []


RUN = []


def test_the_run_fake_lasts_the_run_1(fake_avatario_server):
    with AvatarioClient(fake_avatario_server.api_key, base_url=fake_avatario_server.url) as c:
        c.start_session(**CALL)
    RUN.append(len(fake_avatario_server.sessions))


def test_the_run_fake_serves_in_a_thread_of_its_own_name(fake_avatario_server):
    import threading

    assert "fake-avatario-shared" in [t.name for t in threading.enumerate()]


def test_the_run_fake_lasts_the_run_2(fake_avatario_server, fake_avatario, avatario_client):
    assert len(fake_avatario_server.sessions) == RUN[0] >= 1
    assert fake_avatario.url == fake_avatario_server.url
    avatario_client.start_session(**CALL)  # while this test runs: its own fake
    assert len(fake_avatario.sessions) == 1
    assert len(fake_avatario_server.sessions) == RUN[0]


def test_the_shared_address_cannot_be_stopped(fake_avatario):
    with pytest.raises(RuntimeError, match=r"own_server=True"):
        fake_avatario.stop()


@pytest.mark.avatario(own_server=True, retry=RetryPolicy.no_retries())
def test_a_fake_of_its_own_can_be_stopped(fake_avatario, avatario_client, fake_avatario_server):
    assert fake_avatario.url != fake_avatario_server.url
    avatario_client.start_session(**CALL)
    fake_avatario.stop()
    with pytest.raises(APIConnectionError) as caught:
        avatario_client.start_session(**CALL)
    assert caught.value.may_have_started is False  # refused: nothing was sent


# -- the marker's options

@pytest.mark.avatario(faults="503*2", retry=FAST)
def test_faults_and_a_fast_retry_policy(avatario_client, fake_avatario):
    assert avatario_client.retry == FAST
    result = avatario_client.start_session(**CALL)
    assert result.attempts == 3
    assert [r.status for r in fake_avatario.requests] == [503, 503, 200]


def statuses(server):
    with httpx.Client(headers={"x-api-key": server.api_key}) as http:
        return [http.post(f"{server.url}/start-session", json=BODY).status_code for _ in range(12)]


@pytest.mark.avatario(faults="503@50%", seed=7)
def test_a_seed_replays_the_random_faults(fake_avatario):
    assert fake_avatario.app.seed == 7
    with run_fake_server(faults="503@50%", seed=7) as reference:
        expected = statuses(reference)
    assert statuses(fake_avatario) == expected
    assert set(expected) == {200, 503}


@pytest.mark.avatario(honour_idempotency_key=False)
def test_a_fake_that_ignores_idempotency_keys(avatario_client, fake_avatario):
    avatario_client.start_session(**CALL, idempotency_key="same-key-1")
    avatario_client.start_session(**CALL, idempotency_key="same-key-1")
    assert len(fake_avatario.sessions) == 2
    assert fake_avatario.honour_idempotency_key is False


def test_by_default_idempotency_keys_are_honoured(avatario_client, fake_avatario):
    first = avatario_client.start_session(**CALL, idempotency_key="same-key-1")
    again = avatario_client.start_session(**CALL, idempotency_key="same-key-1")
    assert first.session_id == again.session_id and len(fake_avatario.sessions) == 1


LK_KEY, LK_SECRET = "APIpluginTest01", "lk-secret-plugin-0123456789abcdef0123456789"


@pytest.mark.avatario(livekit_api_key=LK_KEY, livekit_api_secret=LK_SECRET)
def test_livekit_tokens_are_checked(avatario_client, fake_avatario):
    from livekit.api import AccessToken, VideoGrants

    assert fake_avatario.app.verifies_tokens
    with pytest.raises(UnprocessableEntityError):
        avatario_client.start_session(**CALL)  # "t.t.t" is no LiveKit token
    token = (
        AccessToken(LK_KEY, LK_SECRET)
        .with_kind("agent")
        .with_identity("avatario-avatar-agent")
        .with_grants(VideoGrants(room_join=True, room="room-1"))
        .with_attributes({"lk.publish_on_behalf": "agent-7"})
        .to_jwt()
    )
    avatario_client.start_session(**{**CALL, "livekit_token": token})
    assert len(fake_avatario.sessions) == 1


@pytest.mark.avatario(api_key="another-key", control=True)
def test_the_key_and_the_control_endpoint(avatario_client, fake_avatario):
    assert fake_avatario.api_key == "another-key"
    avatario_client.start_session(**CALL)  # the fixture client sends that key
    control = f"{fake_avatario.url}/_fake/faults"
    state = httpx.put(control, content="401", headers={"x-api-key": "another-key"}).json()
    assert state["faults"] == "401"
    with pytest.raises(AuthenticationError):
        avatario_client.start_session(**CALL)


SPEC = FakeAvatario().spec
SPEC["paths"]["/sessions/{session_id}"] = {
    "get": {
        "operationId": "getSession",
        "parameters": [
            {"name": "session_id", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "responses": {
            "200": {
                "description": "The session.",
                "content": {"application/json": {"example": {"status": "live"}}},
            }
        },
    }
}


@pytest.mark.avatario(spec=SPEC, faults="getSession:503")
def test_another_spec(fake_avatario):
    url = f"{fake_avatario.url}/sessions/s_1"
    with httpx.Client(headers={"x-api-key": fake_avatario.api_key}) as http:
        assert http.get(url).status_code == 503
        assert http.get(url).json() == {"status": "live"}
    assert fake_avatario.app.operation_ids == ("getSession", "startSession")


@pytest.mark.avatario(faults="stall", timeout=0.2, retry=RetryPolicy.no_retries())
def test_a_timeout_for_the_clients(avatario_client, async_avatario_client, fake_avatario):
    assert avatario_client.timeout == async_avatario_client.timeout == 0.2
    with pytest.raises(APITimeoutError):
        avatario_client.start_session(**CALL)


@pytest.mark.avatario(faults="401", seed=11)
class TestMarkersMerge:
    def test_a_class_marker_applies(self, fake_avatario):
        assert (fake_avatario.faults, fake_avatario.app.seed) == ("401", 11)

    @pytest.mark.avatario(faults="429")
    def test_the_closest_marker_wins_option_by_option(self, fake_avatario):
        assert (fake_avatario.faults, fake_avatario.app.seed) == ("429", 11)


@pytest.mark.avatario(seed=5)
@pytest.mark.parametrize(
    ("fake_avatario", "expected"),
    [({"faults": "503"}, ("503", 5)), ({"faults": "429", "seed": 6}, ("429", 6))],
    indirect=["fake_avatario"],
)
def test_indirect_parameters_come_last(fake_avatario, expected):
    assert (fake_avatario.faults, fake_avatario.app.seed) == expected


def test_the_marker_is_registered(pytestconfig):
    assert any(line.startswith("avatario(") for line in pytestconfig.getini("markers"))
"""


OVERRIDDEN_TESTS = """
@pytest.fixture(scope="module")
def fake_avatario_server():
    with run_fake_server(api_key="my-key") as server:  # a plain fake: it cannot lend its address
        yield server


def test_fake_avatario_then_gets_a_server_of_its_own(fake_avatario, fake_avatario_server):
    assert fake_avatario.url != fake_avatario_server.url
    assert fake_avatario.api_key == "test-key"
    fake_avatario.stop()  # its own: it may
"""


def test_sync_tests_each_get_a_fake_of_their_own(pytester: pytest.Pytester) -> None:
    write(pytester, "test_sync", SYNC_TESTS)
    write(pytester, "test_overridden", OVERRIDDEN_TESTS)
    result = run(pytester)
    tests = len(re.findall(r"\n    def test_|\ndef test_", SYNC_TESTS))
    result.assert_outcomes(passed=tests + 1 + 1)  # one parametrized twice; the override
    assert_clean(result)


# -- usage errors and failures ------------------------------------------------------------------

FAILING_TESTS = """
@pytest.mark.avatario(fault="503")
def test_unknown_option(fake_avatario):
    pass


@pytest.mark.avatario("503")
def test_positional(fake_avatario):
    pass


@pytest.mark.avatario(faults="boom")
def test_bad_script(fake_avatario):
    pass


@pytest.mark.avatario(livekit_api_key="k")
def test_half_the_livekit_credentials(fake_avatario):
    pass


@pytest.mark.avatario(retry=3)
def test_a_retry_that_is_no_policy(avatario_client):
    pass


@pytest.mark.avatario(timeout=-1)
def test_a_bad_timeout(async_avatario_client):
    pass


@pytest.mark.avatario(own_server="yes")
def test_own_server_is_a_bool(fake_avatario):
    pass


@pytest.mark.avatario(faults="503,reset@50%", seed=42)
def test_a_failure_shows_the_fake(avatario_client, fake_avatario):
    with httpx.Client(headers={"x-api-key": "test-key"}) as http:
        http.post(f"{fake_avatario.url}/start-session", json=BODY)
        http.post(f"{fake_avatario.url}/start-session/test-key?api_key=test-key", json=BODY)
    assert False, "the assertion that failed"
"""


def test_usage_errors_are_one_line_and_a_failure_shows_the_fake(
    pytester: pytest.Pytester,
) -> None:
    write(pytester, "test_failing", FAILING_TESTS)
    result = run(pytester)
    result.assert_outcomes(errors=7, failed=1)
    out = result.stdout.str()
    lines = result.stdout.lines
    for start in (
        "@pytest.mark.avatario: unknown option fault (the options: api_key, control, ",
        "@pytest.mark.avatario: takes keyword options only (got 1 positional)",
        "@pytest.mark.avatario: faults: 'boom': expected a status or one of idle-close, ",
        "@pytest.mark.avatario: give both livekit_api_key and livekit_api_secret ",
        "@pytest.mark.avatario: retry must be an avatario_wrapper.RetryPolicy, not int",
        "@pytest.mark.avatario: timeout: must be a finite number of seconds",
        "@pytest.mark.avatario: own_server must be True or False",
    ):
        assert any(line.startswith(start) for line in lines), start
    # One line each: no traceback into the plugin, no chained exception.
    assert "pytest_plugin.py" not in out
    assert "During handling" not in out
    # The failed test's report shows its fake: the seed to replay it, and what it saw.
    section = out[out.index("avatario fake") :]
    assert "seed: 42 (replay the random faults with @pytest.mark.avatario(seed=42))" in section
    assert "faults left: reset@50%" in section
    assert "POST /start-session -> 503 [fault 503]" in section
    assert "POST /start-session/[redacted] -> 404" in section  # a key in a path is not shown
    assert "test-key" not in section


# -- async tests --------------------------------------------------------------------------------

ASYNC_TESTS = """
import pytest_asyncio

KEPT = []


{mark}
async def test_the_async_client_on_the_tests_loop(async_avatario_client, fake_avatario):
    result = await async_avatario_client.start_session(**CALL)
    assert fake_avatario.sessions[0]["session_id"] == result.session_id


{mark}
async def test_calls_share_a_pooled_connection(async_avatario_client, fake_avatario):
    await async_avatario_client.start_session(**CALL)
    await async_avatario_client.start_session(**CALL)
    first, second = fake_avatario.requests
    assert first.client == second.client


@pytest.mark.asyncio(loop_scope="module")
async def test_on_a_loop_that_outlives_the_test(async_avatario_client, fake_avatario):
    await async_avatario_client.start_session(**CALL)
    assert len(fake_avatario.sessions) == 1


@pytest_asyncio.fixture
async def started(async_avatario_client, fake_avatario):
    yield await async_avatario_client.start_session(**CALL)
    await async_avatario_client.start_session(**CALL)  # still open in an async teardown
    KEPT.append(fake_avatario)


{mark}
async def test_an_async_fixture_uses_the_client(started):
    assert started.attempts == 1


def test_the_async_fixture_teardown_sent_its_call():
    [fake] = KEPT
    assert len(fake.sessions) == 2


@pytest.mark.avatario(faults="503", retry=FAST)
{mark}
async def test_markers_apply_to_the_async_client(async_avatario_client, fake_avatario):
    result = await async_avatario_client.start_session(**CALL)
    assert result.attempts == 2


def test_a_sync_test_may_run_loops_of_its_own(async_avatario_client, fake_avatario):
    asyncio.run(async_avatario_client.start_session(**CALL))
    # Its loop is gone (its connections were closed there): as any client on another loop.
    with pytest.raises(WrongEventLoopError, match="now closed"):
        asyncio.run(async_avatario_client.start_session(**CALL))
    assert not async_avatario_client.closed
    assert len(fake_avatario.sessions) == 1


def test_a_client_closed_by_the_test_stays_closed(async_avatario_client):
    asyncio.run(async_avatario_client.aclose())
    assert async_avatario_client.closed


def test_nothing_was_left_open():
    gc.collect()  # a socket left open by a test above would raise ResourceWarning here
"""


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_async_client_on_pytest_asyncio_loops(pytester: pytest.Pytester, mode: str) -> None:
    # Strict mode needs the asyncio marker; auto mode runs unmarked coroutines too.
    mark = "@pytest.mark.asyncio" if mode == "strict" else ""
    write(pytester, "test_async", ASYNC_TESTS.replace("{mark}", mark))
    result = run(pytester, "-o", f"asyncio_mode={mode}")
    result.assert_outcomes(passed=9)
    assert_clean(result)


ANYIO_TESTS = """
import anyio

pytestmark = pytest.mark.anyio
KEPT = []


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def test_the_async_client_on_anyios_loop(async_avatario_client, fake_avatario):
    async with anyio.create_task_group() as group:
        for _ in range(3):
            group.start_soon(lambda: async_avatario_client.start_session(**CALL))
    assert len(fake_avatario.sessions) == 3


@pytest.fixture
async def started(async_avatario_client, fake_avatario):
    yield await async_avatario_client.start_session(**CALL)
    await async_avatario_client.start_session(**CALL)  # still open in an async teardown
    KEPT.append(fake_avatario)


async def test_an_async_fixture_uses_the_client(started):
    assert started.attempts == 1


def test_the_async_fixture_teardown_sent_its_call():
    [fake] = KEPT
    assert len(fake.sessions) == 2


@pytest.mark.avatario(faults="429", retry=FAST)
async def test_markers_apply(async_avatario_client, fake_avatario):
    assert (await async_avatario_client.start_session(**CALL)).attempts == 2


def test_nothing_was_left_open():
    gc.collect()
"""


def test_async_client_on_anyio_loops(pytester: pytest.Pytester) -> None:
    write(pytester, "test_anyio", ANYIO_TESTS)
    result = run(pytester)
    result.assert_outcomes(passed=5)
    assert_clean(result)


CLOSED_LATE_TESTS = """
@pytest.fixture
def late_client(fake_avatario):
    # Closed only at teardown, when the test's loop is closed already: the client closed the
    # pool it made as that loop shut down.
    client = AsyncAvatarioClient(fake_avatario.api_key, base_url=fake_avatario.url)
    yield client
    client._close_from_sync()


@pytest.mark.asyncio
async def test_closed_late(late_client):
    await late_client.start_session(**CALL)


def test_nothing_was_left_open():
    gc.collect()
"""

LEAKY_TESTS = """
import aiohttp


@pytest.mark.asyncio
async def test_leaky(fake_avatario):
    # A pool of the test's own, never closed: the client does not close what it was given.
    session = aiohttp.ClientSession()
    client = AsyncAvatarioClient(
        fake_avatario.api_key, base_url=fake_avatario.url, http_client=session
    )
    await client.start_session(**CALL)


def test_nothing_was_left_open():
    gc.collect()
"""


def test_a_client_closed_only_after_its_loop_ended_left_nothing_open(
    pytester: pytest.Pytester,
) -> None:
    write(pytester, "test_closed_late", CLOSED_LATE_TESTS)
    result = run(pytester, isolated=True)
    result.assert_outcomes(passed=2)
    assert_clean(result)


def test_the_runs_above_would_catch_a_pool_left_open(pytester: pytest.Pytester) -> None:
    # The control experiment for the async runs: the same settings fail a test that leaves a
    # pool of its own open when its per-test event loop closes.
    write(pytester, "test_leaky", LEAKY_TESTS)
    result = run(pytester, isolated=True)
    assert result.ret != 0
    text = result.stdout.str()
    assert "ResourceWarning" in text or "PytestUnraisableExceptionWarning" in text, text


# -- without the server extra; import cost -------------------------------------------------------

BLOCK_UVICORN = """
import sys

sys.modules["uvicorn"] = None  # as if the server extra were not installed
"""

WITHOUT_EXTRA_TESTS = """
import sys


def test_the_plugin_loads_without_the_extra(pytestconfig):
    assert pytestconfig.pluginmanager.has_plugin("avatario")
    assert "uvicorn" not in sys.modules or sys.modules["uvicorn"] is None


def test_fake(fake_avatario):
    pass


def test_run_fake(fake_avatario_server):
    pass


def test_client(avatario_client):
    pass
"""


def test_without_the_server_extra_the_fixtures_say_what_to_install(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(BLOCK_UVICORN)
    pytester.makepyfile(test_without=WITHOUT_EXTRA_TESTS)
    result = run(pytester, isolated=True)
    result.assert_outcomes(passed=1, errors=3)
    out = result.stdout.str()
    install = (
        "needs the server extra (missing: uvicorn): pip install '.[server]' in a checkout of "
        "avatario-wrapper"
    )
    assert f"the fake_avatario fixture {install}" in result.stdout.lines
    assert f"the fake_avatario_server fixture {install}" in result.stdout.lines
    # once per test in the error sections, one line each (the short summary repeats it on one
    # line per test, cut to the terminal's width, so only whole lines are counted)
    assert result.stdout.lines.count(f"the fake_avatario fixture {install}") == 2
    assert result.stdout.lines.count(f"the fake_avatario_server fixture {install}") == 1
    assert "Traceback" not in out


def test_importing_the_plugin_costs_almost_nothing() -> None:
    # pytest imports the plugin in every run wherever the package is installed: it loads the
    # package's errors and its own module, never the clients, httpx, asyncio or the fake.
    code = (
        "import sys, pytest\n"
        "before = set(sys.modules)\n"
        "import avatario_wrapper.testing.pytest_plugin\n"
        "print(' '.join(sorted(set(sys.modules) - before)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = done.stdout.split()
    assert "avatario_wrapper.testing.pytest_plugin" in loaded
    heavy = ("httpx", "httpcore", "attrs", "asyncio", "uvicorn", "aiohttp")
    assert not [m for m in loaded if m.split(".")[0] in heavy], loaded
    assert not [m for m in loaded if m.startswith("avatario_wrapper._clients")], loaded
    assert not [m for m in loaded if m.startswith("avatario_wrapper._generated")], loaded


# -- the documented example ---------------------------------------------------------------------

EXAMPLE = re.compile(r"<!-- pytest-plugin-example -->\n```python\n(.*?)^```", re.S | re.M)


def test_the_documented_example_runs_unchanged(pytester: pytest.Pytester) -> None:
    [code] = EXAMPLE.findall((ROOT / "docs" / "testing.md").read_text())
    pytester.makepyfile(test_documented=code)
    result = run(pytester)
    result.assert_outcomes(passed=len(re.findall(r"^(?:async )?def test_", code, re.M)))
    assert_clean(result)
