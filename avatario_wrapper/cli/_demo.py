"""``avatario demo``: the client's story, played against an embedded fake Avatario.

Each scene sets the fake's fault script, makes one real call over loopback and checks that the
outcome is the one the client promises. The exit status is 0 only if every scene did. With
``spans=True`` (``avatario demo --spans``, needs opentelemetry-sdk) each scene also prints the
OpenTelemetry span tree its call recorded (`_span_tree`), recorded in memory for this run only.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from typing import Any, Protocol

import attrs
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .._clients import AvatarioClient
from .._operations import StartSessionResult
from .._settings import RetryPolicy
from ..errors import APIError, AuthenticationError, AvatarioError, MissingAgentIdentityError
from ..testing import FakeServer, run_fake_server
from ._console import RetryLogHandler

AVATAR = "face_demo_01"
AGENT = "agent-demo"
ROOM = "wss://rooms.example.com"


@attrs.frozen
class Scene:
    title: str
    explain: str
    faults: str
    expect: str  # "ok" or an error class name
    overrides: dict[str, Any] = attrs.field(factory=dict)
    wrong_key: bool = False


SCENES = [
    Scene("clean start", "A valid request: one attempt, one session.", "", "ok"),
    Scene(
        "503, 503, then service",
        "Two 503s, then service: retried with jittered exponential backoff, one idempotency key.",
        "503*2",
        "ok",
    ),
    Scene(
        "429, Retry-After: 1",
        "Rate limited: the client waits exactly what the server asked, not its own backoff.",
        "429:retry-after=1",
        "ok",
    ),
    Scene(
        "response lost",
        "Avatario starts the avatar, then the connection drops before the answer: the outcome "
        "is unknown, so the client does not resend (a second avatar) and says the avatar may "
        "have started.",
        "lost",
        "APIConnectionError",
    ),
    Scene(
        "401 is final",
        "A wrong key: retrying cannot help, so the error comes back after one attempt.",
        "",
        "AuthenticationError",
        wrong_key=True,
    ),
    Scene(
        "no agent identity",
        "The agent identity is blank: refused before any I/O, so nothing reaches the server.",
        "",
        "MissingAgentIdentityError",
        overrides={"agent_identity": "  "},
    ),
]


@attrs.frozen
class Outcome:
    scene: Scene
    result: str
    attempts: int | None
    seconds: float
    requests: int
    sessions: int
    passed: bool


class _Spans(Protocol):
    def take(self) -> list[Any]: ...


def _print_spans(console: Console, recorder: _Spans | None) -> None:
    if recorder is None:
        return
    from ._span_tree import tree  # noqa: PLC0415 - only with --spans

    spans = recorder.take()
    if not spans:
        console.print("[dim]spans: none (nothing was sent)[/]")
        return
    console.print("[dim]spans:[/]")
    for root in tree(spans):
        console.print(root)


def _play(
    scene: Scene,
    server: FakeServer,
    console: Console,
    token: str,
    recorder: _Spans | None = None,
) -> Outcome:
    console.rule(f"[bold]{scene.title}")
    console.print(escape(scene.explain))
    if scene.faults:
        console.print(f"fault script: [cyan]{scene.faults}[/]")
        server.add_faults(scene.faults)
    key = "wrong-" + secrets.token_hex(8) if scene.wrong_key else server.api_key
    before_requests, before_sessions = len(server.requests), len(server.sessions)
    call: dict[str, Any] = {
        "avatar_id": AVATAR,
        "agent_identity": AGENT,
        "livekit_url": ROOM,
        "livekit_token": token,
        **scene.overrides,
    }
    started = time.monotonic()
    outcome: StartSessionResult | AvatarioError
    with AvatarioClient(key, base_url=server.url, retry=RetryPolicy()) as client:
        try:
            outcome = client.start_session(**call)
        except AvatarioError as error:
            outcome = error
    seconds = time.monotonic() - started
    requests = len(server.requests) - before_requests
    sessions = len(server.sessions) - before_sessions
    keys = {r.headers.get("idempotency-key") for r in server.requests[before_requests:]}
    if isinstance(outcome, StartSessionResult):
        label = "started"
        attempts: int | None = outcome.attempts
        console.print(
            f"[green]✓ session {escape(str(outcome.session_id))}[/] after {attempts} "
            f"attempt(s), {seconds:.2f} s"
        )
        passed = scene.expect == "ok" and sessions == 1 and len(keys) == 1
    else:
        label = type(outcome).__name__
        attempts = outcome.attempts if isinstance(outcome, APIError) else None
        console.print(f"[red]✗ {label}[/]: {escape(str(outcome))}")
        passed = label == scene.expect
        if isinstance(outcome, AuthenticationError):
            passed = passed and outcome.attempts == 1 and requests == 1
        if isinstance(outcome, MissingAgentIdentityError):
            passed = passed and requests == 0
        if scene.faults == "lost":
            passed = passed and requests == sessions == 1
            passed = passed and isinstance(outcome, APIError) and outcome.may_have_started
    console.print(
        f"the fake server saw {requests} request(s) with {len(keys)} idempotency key(s) "
        f"and started {sessions} session(s)"
    )
    _print_spans(console, recorder)
    return Outcome(scene, label, attempts, seconds, requests, sessions, passed)


def _summary(outcomes: list[Outcome]) -> Table:
    # Fits 80 columns: short headings, no vertical rules, the error names without "Error".
    table = Table(
        title="avatario demo: summary",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,
        collapse_padding=True,
    )
    for column in ("scene", "outcome", "tries", "time", "req", "sess", "ok"):
        table.add_column(column, no_wrap=True, min_width=len(column))
    for o in outcomes:
        table.add_row(
            o.scene.title,
            escape(o.result.removesuffix("Error")),
            "-" if o.attempts is None else str(o.attempts),
            f"{o.seconds:.2f} s",
            str(o.requests),
            str(o.sessions),
            "[green]yes[/]" if o.passed else "[red]NO[/]",
        )
    return table


def run_demo(console: Console, *, scenes: list[Scene] | None = None, spans: bool = False) -> int:
    """Play every scene; 0 when each behaved as promised, 1 otherwise (2: `spans` asked for
    without opentelemetry-sdk installed).

    With `spans`, each scene also prints the span tree of its call.
    """
    recording: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if spans:
        from ._span_tree import SDK_HINT, SpanRecorder, sdk_installed  # noqa: PLC0415

        if not sdk_installed():
            console.print(f"[red]avatario demo --spans {SDK_HINT}[/]")
            return 2
        recording = SpanRecorder()
    logger = logging.getLogger("avatario_wrapper")
    handler = RetryLogHandler(console, indent="  ")
    logger.addHandler(handler)
    # A made-up key and token for the fake; neither is ever printed.
    api_key = "demo-" + secrets.token_hex(12)
    token = "demo." + secrets.token_hex(24)
    console.print("[bold]avatario demo[/]: real calls over loopback to an embedded fake Avatario")
    try:
        with recording as recorder, run_fake_server(api_key=api_key) as server:
            console.print(f"fake Avatario on {server.url}")
            outcomes = [
                _play(scene, server, console, token, recorder) for scene in scenes or SCENES
            ]
    finally:
        logger.removeHandler(handler)
    console.print()
    console.print(_summary(outcomes))
    failed = [o.scene.title for o in outcomes if not o.passed]
    if failed:
        console.print(f"[red]not as promised: {', '.join(failed)}[/]")
        return 1
    console.print("[green]every scene behaved as promised[/]")
    return 0
