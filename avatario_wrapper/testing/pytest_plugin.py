"""The pytest plugin of the fake Avatario (registered as ``avatario`` through ``pytest11``).

Loaded by pytest wherever avatario-wrapper is installed, so importing it costs nothing and
needs nothing beyond the core install; its fixtures import the fake (the ``server`` extra)
only when a test asks for one, and without it fail with one line saying what to install.

Fixtures (docs/testing.md, "The pytest plugin"):

``fake_avatario_server`` (session)
    One started fake for the whole run (a `FakeServer`), for what outlives a test: a
    session-scoped service or client pointed at its ``url``.
``fake_avatario`` (function)
    A fake of this test's own (a `FakeServer`: ``url``, ``api_key``, ``requests``,
    ``sessions``, ``set_faults`` / ``add_faults`` / ``clear_faults``, ``register_handler``,
    ``on_session_started``, ``app``), made with the options of ``@pytest.mark.avatario``.
    A fresh `FakeAvatario` is served at the address of ``fake_avatario_server`` while the
    test runs (microseconds, not a server start); ``own_server=True`` gives it a server of its
    own instead (a new port), which the test may ``stop()``.
``avatario_client`` / ``async_avatario_client`` (function)
    An `AvatarioClient` / `AsyncAvatarioClient` with ``fake_avatario``'s key and URL, closed
    after the test. The async one is a plain fixture, so it works on the per-test loops of
    pytest-asyncio (strict and auto mode) and anyio; it binds to the loop it first sends on
    and closes its connections there before that loop closes (as every async client closes
    the pool it made when its loop shuts down).

The marker, ``@pytest.mark.avatario(**options)`` (on a test, class or module; the closest
wins, option by option; ``fake_avatario`` parametrized with ``indirect=True`` and a dict of
options comes last):

    faults                  the fake's fault script (or `Fault` objects)
    seed                    seeds the random faults (@P%); shown when the test fails
    honour_idempotency_key  False: play a server that ignores Idempotency-Key
    livekit_api_key,
    livekit_api_secret      verify the avatar's LiveKit token with this key and secret
    api_key                 the key the fake accepts and the fixture clients send
    spec                    another OpenAPI document to serve (a dict)
    control                 serve the control endpoint /_fake/faults
    own_server              a server of its own for this test's fake (to stop() it)
    retry                   the fixture clients' `RetryPolicy`
    timeout                 the fixture clients' seconds per attempt
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import pytest

from .._extras import hint
from ..errors import AvatarioConfigError

if TYPE_CHECKING:  # the clients (and httpx) are imported only when a fixture makes one
    from .._clients import AsyncAvatarioClient, AvatarioClient

if TYPE_CHECKING:
    from .runner import FakeServer

ClientT = TypeVar("ClientT", "AvatarioClient", "AsyncAvatarioClient")

MARKER = "avatario"
#: The marker's options that make the fake (`FakeAvatario`'s own keyword arguments).
FAKE_OPTIONS = frozenset(
    {
        "api_key",
        "control",
        "faults",
        "honour_idempotency_key",
        "livekit_api_key",
        "livekit_api_secret",
        "seed",
        "spec",
    }
)
#: The marker's options for the client fixtures.
CLIENT_OPTIONS = frozenset({"retry", "timeout"})
OPTIONS = FAKE_OPTIONS | CLIENT_OPTIONS | {"own_server"}

_MARKER_HELP = (
    "avatario(**options): options of this test's fake_avatario and of the avatario_client "
    "and async_avatario_client fixtures: faults, seed, honour_idempotency_key, "
    "livekit_api_key, livekit_api_secret, api_key, spec, control, own_server, retry, "
    "timeout (see avatario-wrapper's docs/testing.md)"
)

#: The thread of the run's shared fake (a test's own fakes serve in "fake-avatario" threads).
SHARED_THREAD_NAME = "fake-avatario-shared"
#: The fake a test used, for its report when it fails.
_USED_FAKE = pytest.StashKey["FakeServer"]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _MARKER_HELP)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test that used ``fake_avatario`` shows the fake's seed and what it saw."""
    report = yield
    fake = item.stash.get(_USED_FAKE, None)
    if fake is not None and report.failed and call.when == "call":
        from ._shared_fake import describe  # noqa: PLC0415 - only when used

        report.sections.append(("avatario fake", describe(fake)))
    return report


# -- options ------------------------------------------------------------------------------------


def _usage(problem: str) -> NoReturn:
    """Fail the test at set-up with one line (no traceback into the plugin)."""
    pytest.fail(f"@pytest.mark.avatario: {problem}", pytrace=False)


def _options(node: pytest.Item) -> dict[str, Any]:
    """The options of `node`: its markers from the farthest to the closest, then the dict it
    gave ``fake_avatario`` through ``indirect=True`` parametrization."""
    options: dict[str, Any] = {}
    for marker in reversed(list(node.iter_markers(MARKER))):
        if marker.args:
            _usage(f"takes keyword options only (got {len(marker.args)} positional)")
        options.update(marker.kwargs)
    callspec = getattr(node, "callspec", None)
    param = callspec.params.get("fake_avatario") if callspec is not None else None
    if param is not None:
        if not isinstance(param, Mapping):
            _usage(f"fake_avatario's indirect parameter must be a dict of options, not {param!r}")
        options.update(param)
    unknown = sorted(set(options) - OPTIONS)
    if unknown:
        _usage(f"unknown option {', '.join(unknown)} (the options: {', '.join(sorted(OPTIONS))})")
    if not isinstance(options.get("own_server", False), bool):
        _usage("own_server must be True or False")
    retry = options.get("retry")
    from .._settings import RetryPolicy  # noqa: PLC0415 - not at import (see the docstring)

    if retry is not None and not isinstance(retry, RetryPolicy):
        _usage(f"retry must be an avatario_wrapper.RetryPolicy, not {type(retry).__name__}")
    return options


def _need_server(fixture: str) -> None:
    problem = hint(f"the {fixture} fixture", "server")
    if problem is not None:
        pytest.fail(problem, pytrace=False)


def _client(kind: type[ClientT], fake: FakeServer, node: pytest.Item) -> ClientT:
    """A client of `kind` with `fake`'s key and URL and the options of `node`'s markers."""
    options = _options(node)
    problem = None
    try:
        return kind(
            fake.api_key,
            base_url=fake.url,
            **{name: options[name] for name in CLIENT_OPTIONS if name in options},
        )
    except AvatarioConfigError as error:
        problem = str(error)
    _usage(problem)


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def fake_avatario_server() -> Iterator[FakeServer]:
    """One fake Avatario for the whole run (key ``test-key``); stopped when the run ends.

    Its state (requests, sessions, faults) lasts the run. While a test uses ``fake_avatario``
    its address serves that test's own fake instead.
    """
    _need_server("fake_avatario_server")
    from ._shared_fake import LendingFake  # noqa: PLC0415 - only when used
    from .runner import FakeServer  # noqa: PLC0415 - only when used

    server = FakeServer(LendingFake()).start()
    if server._thread is not None:  # told apart from the fakes that tests start and stop
        server._thread.name = SHARED_THREAD_NAME
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fake_avatario(request: pytest.FixtureRequest) -> Iterator[FakeServer]:
    """A fake Avatario of this test's own, made with the ``@pytest.mark.avatario`` options."""
    _need_server("fake_avatario")
    options = _options(request.node)
    from ._spec import SpecError  # noqa: PLC0415 - only when used
    from .app import FakeAvatario  # noqa: PLC0415 - only when used
    from .faults import FaultSyntaxError  # noqa: PLC0415 - only when used

    problem = None
    try:
        app = FakeAvatario(**{name: options[name] for name in FAKE_OPTIONS if name in options})
    except FaultSyntaxError as error:
        problem = f"faults: {error}"
    except SpecError as error:
        problem = f"spec: {error}"
    except (TypeError, ValueError) as error:
        problem = str(error)
    if problem is not None:  # outside the except: one line, no chained traceback
        _usage(problem)
    from ._shared_fake import BorrowedServer, LendingFake  # noqa: PLC0415 - only when used
    from .runner import FakeServer  # noqa: PLC0415 - only when used

    lender: FakeServer | None = None
    if not options.get("own_server", False):
        lender = request.getfixturevalue("fake_avatario_server")
    if lender is None or not isinstance(lender.app, LendingFake):
        # A server of its own: asked for, or fake_avatario_server was overridden by a fake
        # that cannot lend its address.
        with FakeServer(app) as own:
            request.node.stash[_USED_FAKE] = own
            yield own
        return
    lending = lender.app
    lending.lend(app)
    try:
        server = BorrowedServer(app, lender)
        request.node.stash[_USED_FAKE] = server
        yield server
    finally:
        lending.lend(None)


@pytest.fixture
def avatario_client(
    fake_avatario: FakeServer, request: pytest.FixtureRequest
) -> Iterator[AvatarioClient]:
    """An `AvatarioClient` bound to ``fake_avatario``; closed after the test."""
    from .._clients import AvatarioClient  # noqa: PLC0415 - only when used

    client = _client(AvatarioClient, fake_avatario, request.node)
    with client:
        yield client


@pytest.fixture
def async_avatario_client(
    fake_avatario: FakeServer, request: pytest.FixtureRequest
) -> Iterator[AsyncAvatarioClient]:
    """An `AsyncAvatarioClient` bound to ``fake_avatario``; closed after the test.

    A plain (sync) fixture: it binds to the event loop the test first sends on, whichever
    plugin made it, and closes its connections on that loop before the loop closes.
    """
    from .._clients import AsyncAvatarioClient  # noqa: PLC0415 - only when used

    client = _client(AsyncAvatarioClient, fake_avatario, request.node)
    try:
        yield client
    finally:
        client._close_from_sync()
