"""The ``avatario`` command: start a session, run the fake server, play the demo, or check the
contract (``contract-test``, whose logic lives in `_contract`).

Needs the ``cli`` extra (click, rich); ``fake-server`` and ``demo`` also need ``server``, and
``contract-test`` needs ``server`` and ``contract`` (schemathesis). The console script enters
through `avatario_wrapper.cli.main`, which says in one line which extra is missing.
Messages speak in flags and environment variables, and are never hard-wrapped.
The API key is read from ``AVATARIO_API_KEY`` (never from a flag, never printed); the LiveKit
token from ``--livekit-token-env`` (an environment variable name, by default
``AVATARIO_LIVEKIT_TOKEN``) or from standard input with ``--livekit-token-stdin``, so neither
shows up in shell history or in the process list.

Exit codes: 0 success · 2 usage · 3 bad input or configuration · 4 connection failed ·
5 timed out · 6 Avatario refused the request (4xx) · 7 Avatario failed (5xx) ·
8 a 2xx with an invalid body · 1 anything else. ``contract-test`` has its own (its --help):
the same 0 to 5, then 6 every answer was 401/403 · 9 a session may have started.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.markup import escape

from .._clients import AvatarioClient
from .._extras import hint
from .._inputs import is_loopback_host
from .._settings import API_KEY_ENV, RetryPolicy, VideoOptions
from .._text import one_line
from ..errors import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AvatarioConfigError,
    AvatarioError,
)
from ._console import RetryLogHandler
from ._exit import (
    EXIT_CONFIG,
    EXIT_CONNECTION,
    EXIT_INVALID_RESPONSE,
    EXIT_OTHER,
    EXIT_REFUSED,
    EXIT_SERVER,
    EXIT_TIMEOUT,
    EXIT_USAGE,
)

if TYPE_CHECKING:
    from ..testing import FakeAvatario, SessionStarted

TOKEN_ENV = "AVATARIO_LIVEKIT_TOKEN"  # noqa: S105 - the name of a variable, not a secret
#: Where ``fake-server`` reads the LiveKit key and secret it verifies tokens with (as LiveKit's
#: own tools and the avatar plugin name them).
LIVEKIT_KEY_ENV = "LIVEKIT_API_KEY"
LIVEKIT_SECRET_ENV = "LIVEKIT_API_SECRET"  # noqa: S105 - the name of a variable

# soft_wrap: a message is one line however narrow the terminal (or none, for a log file).
stderr: Console = Console(stderr=True, highlight=False, soft_wrap=True)

#: Python argument names in messages, as the command line spells them.
_FLAGS = {
    "avatar_id": "--avatar-id",
    "agent_identity": "--agent-identity",
    "livekit_url": "--livekit-url",
    "livekit_token": "the LiveKit token",
    "background_url": "--background-url",
    "height": "--height",
    "width": "--width",
    "idempotency_key": "--idempotency-key",
    "base_url": "--base-url",
    "timeout": "--timeout",
    "max_attempts": "--max-attempts",
    "max_elapsed": "--max-elapsed",
}
_PYTHON_ONLY = (
    (" (or pass api_key=)", ""),
    (
        "allow_insecure_http=True; on the command line --allow-insecure-http",
        "--allow-insecure-http",
    ),
    ("the API key goes in api_key", f"the API key goes in {API_KEY_ENV}"),
)


def describe(error: AvatarioError) -> str:
    """`error` as the command line says it: flags and environment variables, not arguments."""
    text = str(error)
    for python, flag in _PYTHON_ONLY:
        text = text.replace(python, flag)
    if isinstance(error, AvatarioConfigError):
        field = error.field
        name = _FLAGS.get(field, API_KEY_ENV if field == "api_key" else field)
        if text.startswith(f"{field}: "):
            text = f"{name}: {text[len(field) + 2 :]}"
    return f"{type(error).__name__}: {text}"


def _need(what: str, *extras: str) -> None:
    """Stop with one line (exit 2) when an extra that `what` needs is not installed."""
    problem = hint(what, *extras)
    if problem is not None:
        stderr.print(f"[red]error:[/] {escape(problem)}")
        sys.exit(EXIT_USAGE)


def exit_code(error: AvatarioError) -> int:
    """The documented exit code of an error family."""
    if isinstance(error, AvatarioConfigError):
        return EXIT_CONFIG
    if isinstance(error, APITimeoutError):
        return EXIT_TIMEOUT
    if isinstance(error, APIConnectionError):
        return EXIT_CONNECTION
    if isinstance(error, APIStatusError):
        return EXIT_SERVER if error.status_code >= 500 else EXIT_REFUSED
    if isinstance(error, APIResponseValidationError):
        return EXIT_INVALID_RESPONSE
    return EXIT_OTHER


def _read_token(token_env: str, from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().strip()
    token = os.environ.get(token_env)
    if not token:
        raise AvatarioConfigError(
            "livekit_token",
            f"no LiveKit token: set {token_env} (or pass --livekit-token-stdin and pipe it in)",
        )
    return token


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="avatario-wrapper")
def main() -> None:
    """Send Avatario avatars into LiveKit rooms, or try the client against a local fake.

    start-session needs the cli extra; fake-server and demo also need the server extra
    (from a checkout: pip install '.[cli,server]'); contract-test needs the cli, server and
    contract extras. The API key is read from AVATARIO_API_KEY.
    """


@main.command("start-session")
@click.option("--avatar-id", required=True, help="The avatar (face) to render.")
@click.option("--agent-identity", required=True, help="The LiveKit identity of your agent.")
@click.option("--livekit-url", required=True, help="The LiveKit server URL (wss://...).")
@click.option(
    "--livekit-token-env",
    default=TOKEN_ENV,
    show_default=True,
    help="Environment variable holding the avatar's LiveKit token.",
)
@click.option("--livekit-token-stdin", is_flag=True, help="Read the LiveKit token from stdin.")
@click.option("--height", type=int, default=720, show_default=True)
@click.option("--width", type=int, default=1280, show_default=True)
@click.option("--background-url", default=None, help="An http(s) image URL.")
@click.option("--idempotency-key", default=None, help="Default: a fresh UUID per call.")
@click.option("--base-url", default=None, help="Default: $AVATARIO_BASE_URL, then production.")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Per attempt.")
@click.option("--max-attempts", type=int, default=3, show_default=True)
@click.option("--max-elapsed", type=float, default=30.0, show_default=True)
@click.option(
    "--allow-insecure-http",
    is_flag=True,
    help="Allow a plain http:// --base-url to a non-loopback host (a fake on another machine).",
)
def start_session(
    avatar_id: str,
    agent_identity: str,
    livekit_url: str,
    livekit_token_env: str,
    livekit_token_stdin: bool,
    height: int,
    width: int,
    background_url: str | None,
    idempotency_key: str | None,
    base_url: str | None,
    timeout: float,
    max_attempts: int,
    max_elapsed: float,
    allow_insecure_http: bool,
) -> None:
    """Send an avatar into a room; print the result as JSON. Key from AVATARIO_API_KEY."""
    logger = logging.getLogger("avatario_wrapper")
    handler = RetryLogHandler(stderr)
    logger.addHandler(handler)
    try:
        token = _read_token(livekit_token_env, livekit_token_stdin)
        retry = RetryPolicy(max_attempts=max_attempts, max_elapsed=max_elapsed)
        with AvatarioClient(
            base_url=base_url,
            timeout=timeout,
            retry=retry,
            allow_insecure_http=allow_insecure_http,
        ) as client:
            result = client.start_session(
                avatar_id=avatar_id,
                agent_identity=agent_identity,
                livekit_url=livekit_url,
                livekit_token=token,
                video=VideoOptions(height=height, width=width, background_url=background_url),
                idempotency_key=idempotency_key,
            )
    except AvatarioError as error:
        stderr.print("[red]error:[/]", escape(describe(error)))
        sys.exit(exit_code(error))
    finally:
        logger.removeHandler(handler)
    output: dict[str, Any] = {
        "session_id": result.session_id,
        "request_id": result.request_id,
        "attempts": result.attempts,
        "status_code": result.status_code,
        "idempotency_key": result.idempotency_key,
        "data": dict(result.data),
    }
    click.echo(json.dumps(output, indent=2, sort_keys=True))


@main.command("fake-server")
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback unless told.")
@click.option("--port", type=int, default=8765, show_default=True)
@click.option(
    "--api-key",
    envvar=API_KEY_ENV,
    default=None,
    help=f"The key the fake accepts: set ${API_KEY_ENV} (never printed). As a flag it is "
    "deprecated: it shows in the process list and shell history.",
)
@click.option(
    "--api-key-stdin",
    is_flag=True,
    help="Read the key from the first line of standard input.",
)
@click.option("--faults", default="", help="A fault script, e.g. '503*2,429:retry-after=1'.")
@click.option(
    "--seed",
    type=int,
    default=None,
    help="Seed the random faults (503@10%); the seed in use is printed at start-up.",
)
@click.option(
    "--control",
    is_flag=True,
    help="Serve /_fake/faults to change the faults while it runs (loopback, with the API key).",
)
@click.option(
    "--spec",
    "spec_path",
    type=click.Path(exists=True, dir_okay=False, readable=True),
    default=None,
    help="Serve this OpenAPI document (YAML or JSON) instead of the bundled openapi.yaml.",
)
@click.option(
    "--livekit-api-key",
    envvar=LIVEKIT_KEY_ENV,
    default=None,
    help=f"With the LiveKit API secret: verify the avatar's LiveKit token (or ${LIVEKIT_KEY_ENV}).",
)
@click.option(
    "--livekit-api-secret",
    envvar=LIVEKIT_SECRET_ENV,
    default=None,
    help=f"The LiveKit API secret: set ${LIVEKIT_SECRET_ENV} (never printed). As a flag it is "
    "deprecated: it shows in the process list and shell history.",
)
@click.option(
    "--livekit-api-secret-stdin",
    is_flag=True,
    help="Read the LiveKit API secret from standard input (the line after the key with "
    "--api-key-stdin, else the first).",
)
@click.option(
    "--allow-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    help="Also answer requests whose Host is NAME (others than localhost, 127.0.0.1, [::1] and "
    "the address listened on get a 421: a guard against DNS rebinding). Repeatable.",
)
@click.option(
    "--ignore-idempotency-key",
    is_flag=True,
    help="Play a server that ignores Idempotency-Key (every valid request starts a session).",
)
def fake_server(
    host: str,
    port: int,
    api_key: str | None,
    api_key_stdin: bool,
    faults: str,
    seed: int | None,
    control: bool,
    spec_path: str | None,
    livekit_api_key: str | None,
    livekit_api_secret: str | None,
    livekit_api_secret_stdin: bool,
    allowed_hosts: tuple[str, ...],
    ignore_idempotency_key: bool,
) -> None:
    """Run the fake Avatario until interrupted (Ctrl-C). Needs the server extra.

    With --control, change its faults while it runs: PUT a script to /_fake/faults (GET shows
    them, POST adds, DELETE drops them), from this machine, with the x-api-key header.
    """
    import threading

    _need("avatario fake-server", "server")
    from ..testing import FakeAvatario, FakeServer
    from ..testing._spec import SpecError
    from ..testing.faults import FaultSyntaxError

    key, livekit_api_secret = _fake_secrets(
        api_key, api_key_stdin, livekit_api_key, livekit_api_secret, livekit_api_secret_stdin
    )
    spec = _read_spec(spec_path) if spec_path is not None else None
    try:
        app = FakeAvatario(
            api_key=key,
            faults=faults,
            honour_idempotency_key=not ignore_idempotency_key,
            livekit_api_key=livekit_api_key,
            livekit_api_secret=livekit_api_secret,
            spec=spec,
            seed=seed,
            control=control,
        )
    except FaultSyntaxError as error:
        raise click.BadParameter(str(error), param_hint="--faults") from None
    except SpecError as error:
        raise click.BadParameter(str(error), param_hint="--spec") from None
    for name in allowed_hosts:
        app.allow_host(name)
    app.on_session_started(lambda started: stderr.print(escape(_session_line(app, started))))
    server = FakeServer(app, host=host, port=port)
    _warn_beyond_loopback(host)
    try:
        server.start()
    except OSError as error:
        reason = error.strerror or str(error)
        stderr.print(
            f"[red]error:[/] cannot listen on {escape(host)}:{port}: {escape(reason)} "
            "(pick another --port, or --port 0 for a free one)"
        )
        sys.exit(EXIT_USAGE)
    try:
        url = escape(server.url)
        if spec_path is None:
            stderr.print(f"fake Avatario listening on [bold]{url}[/] (POST /start-session)")
        else:
            operations = ", ".join(app.operation_ids) or "none"
            stderr.print(f"fake Avatario listening on [bold]{url}[/] (operations: {operations})")
            stderr.print(f"serving the spec {escape(spec_path)}")
        if faults:
            stderr.print(f"fault script: {escape(faults)}")
        stderr.print(f"random faults seeded with {app.seed} (--seed {app.seed} replays them)")
        if ignore_idempotency_key:
            stderr.print("Idempotency-Key is ignored: every valid request starts a session")
        if app.verifies_tokens:
            stderr.print(
                "LiveKit tokens are verified with the given LiveKit API key and secret "
                "(a bad token is a 422)"
            )
        if control:
            for line in _control_help(server.url, _key_source()):
                stderr.print(escape(line))
        stderr.print("press Ctrl-C to stop")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            stderr.print(
                f"stopping; {len(server.requests)} requests served, "
                f"{len(server.sessions)} sessions started"
            )
    finally:
        server.stop()


def _session_line(app: FakeAvatario, started: SessionStarted) -> str:
    """The log line of a session the fake started (what the client sent, as one line)."""
    payload = started.payload
    room = f", room {started.room}" if started.room else ""
    return one_line(
        f"session {started.session_id} started (avatar {payload.get('avatario_face_id')}, "
        f"agent {payload.get('agent_id')}{room}); {len(app.sessions)} session(s) so far"
    )


def _read_spec(path: str) -> dict[str, Any]:
    """The OpenAPI document at `path` (YAML or JSON), or a usage error naming --spec."""
    import yaml

    try:
        with open(path, encoding="utf-8") as file:
            document = yaml.safe_load(file)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        problem = one_line(str(error).replace("\n", " "))
        raise click.BadParameter(f"cannot read {path}: {problem}", param_hint="--spec") from None
    if not isinstance(document, dict):
        raise click.BadParameter(
            f"{path} is not an OpenAPI document (a mapping with 'paths')", param_hint="--spec"
        )
    return document


def _warn_beyond_loopback(host: str) -> None:
    if not is_loopback_host(host):
        stderr.print(
            f"[yellow]WARNING:[/] listening on {escape(host)}, beyond loopback: anyone who can "
            "reach this machine can call the fake, and its API key travels in clear (plain "
            "http); use --host 127.0.0.1 unless another machine must reach it"
        )


def _fake_secrets(
    api_key: str | None,
    api_key_stdin: bool,
    livekit_api_key: str | None,
    livekit_api_secret: str | None,
    livekit_api_secret_stdin: bool,
) -> tuple[str, str | None]:
    """``fake-server``'s key and LiveKit API secret, or a usage error saying what is missing."""
    key = _fake_secret("api_key", api_key, api_key_stdin, API_KEY_ENV)
    secret = _fake_secret(
        "livekit_api_secret", livekit_api_secret, livekit_api_secret_stdin, LIVEKIT_SECRET_ENV
    )
    if key is None:
        raise click.UsageError(
            f"no API key for the fake: set {API_KEY_ENV} (or pass --api-key-stdin and pipe it in)"
        )
    if (livekit_api_key is None) != (secret is None):
        raise click.UsageError(
            f"give both {LIVEKIT_KEY_ENV} and {LIVEKIT_SECRET_ENV} (or --livekit-api-key and "
            "--livekit-api-secret-stdin) to verify LiveKit tokens, or neither"
        )
    return key, secret


def _fake_secret(name: str, given: str | None, from_stdin: bool, variable: str) -> str | None:
    """A secret of ``fake-server``: from standard input when asked, else its variable, else
    its deprecated flag (said so on stderr: a flag shows in ``ps`` and shell history)."""
    flag = "--" + name.replace("_", "-")
    source = click.get_current_context().get_parameter_source(name)
    on_command_line = source is click.core.ParameterSource.COMMANDLINE
    if from_stdin:
        if on_command_line:
            raise click.UsageError(f"give {flag} or {flag}-stdin, not both")
        line = sys.stdin.readline().strip()
        if not line:
            raise click.UsageError(f"{flag}-stdin: standard input has no line for it")
        return line
    if on_command_line:
        stderr.print(
            f"[yellow]warning:[/] {flag} is deprecated: it shows in the process list and "
            f"shell history; set {variable} or pipe it to {flag}-stdin"
        )
    return given


def _key_source() -> str:
    """How to write the API key in a shell command: its variable, never its value."""
    source = click.get_current_context().get_parameter_source("api_key")
    if source is click.core.ParameterSource.ENVIRONMENT:
        return f"${API_KEY_ENV}"
    return "<your API key>"


def _control_help(url: str, key: str) -> list[str]:
    """How to change a running fake's faults (the key as `key`, a variable or a placeholder)."""
    control = f"{url}/_fake/faults"
    header = f'-H "x-api-key: {key}"'
    return [
        f"control endpoint: {control} (clients on this machine, with the x-api-key header)",
        f"  replace the faults:  curl -X PUT {header} --data '503*2,reset@5%' {control}",
        f"  add to them:         curl -X POST {header} --data '429:retry-after=1' {control}",
        f"  see what is left:    curl {header} {control}",
        f"  drop them all:       curl -X DELETE {header} {control}",
        f"  restart the draws:   curl -X PUT {header} --data '503@10%' '{control}?seed=7'",
        f"  count the sessions:  curl {header} {url}/_fake/sessions",
    ]


@main.command("demo")
@click.option(
    "--spans",
    is_flag=True,
    help="Also print each scene's OpenTelemetry span tree (needs opentelemetry-sdk).",
)
def demo(spans: bool) -> None:
    """Play the client's story against an embedded fake Avatario. Needs the server extra."""
    _need("avatario demo", "server")
    from ._demo import run_demo

    sys.exit(run_demo(Console(highlight=False), spans=spans))


@main.command("contract-test")
@click.option("--url", default=None, help="A deployment's base URL. Default: an embedded fake.")
@click.option(
    "--safe/--full",
    "safe",
    default=None,
    help="--safe sends only requests that name neither an avatar nor an agent; --full also "
    "valid ones, which may start sessions. Default: --full on the embedded fake, --safe with "
    "--url.",
)
@click.option(
    "--yes-start-sessions",
    is_flag=True,
    help="Confirm --full against any --url, loopback too (it may start real avatars).",
)
@click.option(
    "--max-examples",
    type=click.IntRange(0, 10_000),
    default=50,
    show_default=True,
    help="Generated requests of each kind (valid, invalid) in --full.",
)
@click.option("--seed", type=int, default=None, help="Send a --full run's requests again.")
@click.option(
    "--timeout",
    type=click.FloatRange(0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds per request.",
)
@click.option(
    "--allow-insecure-http",
    is_flag=True,
    help="Allow a plain http:// --url to a non-loopback host (a fake on another machine).",
)
def contract_test(
    url: str | None,
    safe: bool | None,
    yes_start_sessions: bool,
    max_examples: int,
    seed: int | None,
    timeout: float,
    allow_insecure_http: bool,
) -> None:
    """Check openapi.yaml's contract against the fake or a deployment (key: AVATARIO_API_KEY).

    Says first how many requests could start sessions. Needs the cli, server and contract
    extras.

    \b
    Safe mode promises (details: docs/contract-testing.md):
    - no request names an avatar or an agent in any form, whatever its key (a gateway may add
      the real one): bodies that are not JSON, empty, JSON scalars, and one JSON object that
      holds only a LiveKit room no avatar can join (wss://livekit.invalid, a token that is
      not a JWT);
    - a 2xx, a 5xx, or no answer once a request went out stops the run at once, exit 9.

    \b
    What it cannot prevent:
    - a server that makes up both the avatar and the agent (String(undefined), str(None),
      defaults) may start one avatar, in that unusable room, and the run stops there (exit
      9); one that refuses the room yet makes up everything for a body without one may start
      one in a room of its own, and the run stops there too;
    - a server that starts an avatar and then answers 4xx goes unnoticed.

    \b
    --full sends valid requests too, after saying how many could start a session, and counts
    every 2xx; against any --url it needs --yes-start-sessions.

    \b
    Exit codes: 0 passed · 1 contract violated · 2 usage (or --full unconfirmed) · 3 no key or
    a bad --url · 4 no response · 5 timed out · 6 every response was 401/403 · 9 a session may
    have started (a request counted as unable to start one got a 2xx, a 5xx or no answer).
    """
    _need("avatario contract-test", "cli", "server", "contract")
    from ._contract import run_command

    try:
        code = run_command(
            url=url,
            safe=safe,
            yes_start_sessions=yes_start_sessions,
            max_examples=max_examples,
            seed=seed,
            timeout=timeout,
            allow_insecure_http=allow_insecure_http,
            out=click.echo,
            err=lambda line: stderr.print(f"[red]error:[/] {escape(line)}"),
        )
    except AvatarioConfigError as error:
        stderr.print("[red]error:[/]", escape(describe(error).replace("--base-url", "--url")))
        sys.exit(EXIT_CONFIG)
    sys.exit(code)
