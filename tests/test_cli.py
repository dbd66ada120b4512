"""The avatario command: start-session output and exit codes, fake-server, demo; no secrets."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from click.testing import CliRunner
from livekit.api import AccessToken, VideoGrants
from rich.console import Console

from avatario_wrapper import errors
from avatario_wrapper.cli._commands import exit_code, main
from avatario_wrapper.cli._demo import run_demo
from avatario_wrapper.testing import FakeAvatario, run_fake_server

pytestmark = pytest.mark.integration

KEY = "sk_cli_SECRET_key_77aa"
TOKEN = "eyJ.cli_SECRET_token.99"
ARGS = ["--avatar-id", "face_1", "--agent-identity", "agent-7", "--livekit-url", "wss://h.example"]


def invoke(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> Any:
    runner = CliRunner()
    base = {"AVATARIO_API_KEY": KEY, "AVATARIO_LIVEKIT_TOKEN": TOKEN}
    return runner.invoke(main, list(args), env={**base, **(env or {})}, input=stdin)


def test_start_session_prints_the_result_as_json() -> None:
    with run_fake_server(api_key=KEY) as server:
        result = invoke("start-session", *ARGS, "--base-url", server.url)
        sent = server.requests[0].json()
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["session_id"].startswith("sess_")
    assert data["attempts"] == 1
    assert sent["livekit"]["token"] == TOKEN
    assert KEY not in result.output
    assert TOKEN not in result.output


def test_the_token_can_come_from_stdin() -> None:
    with run_fake_server(api_key=KEY) as server:
        result = invoke(
            "start-session",
            *ARGS,
            "--base-url",
            server.url,
            "--livekit-token-stdin",
            env={"AVATARIO_LIVEKIT_TOKEN": ""},
            stdin="piped.token.value\n",
        )
        assert server.requests[0].json()["livekit"]["token"] == "piped.token.value"
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("faults", "extra", "env", "code"),
    [
        ("", ["--agent-identity", " "], {}, 3),
        ("", [], {"AVATARIO_API_KEY": ""}, 3),
        ("", [], {"AVATARIO_LIVEKIT_TOKEN": ""}, 3),
        ("401", [], {}, 6),
        ("503*3", [], {}, 7),
        ("malformed", [], {}, 8),
        ("stall*3", ["--timeout", "0.2", "--max-attempts", "2"], {}, 5),
    ],
)
def test_each_error_family_has_its_exit_code(
    faults: str, extra: list[str], env: dict[str, str], code: int
) -> None:
    with run_fake_server(api_key=KEY, faults=faults) as server:
        result = invoke("start-session", *ARGS, "--base-url", server.url, *extra, env=env)
    assert result.exit_code == code, result.output
    assert "error:" in result.stderr
    assert KEY not in result.output
    assert TOKEN not in result.output


def test_a_connection_failure_exits_4() -> None:
    with run_fake_server(api_key=KEY) as server:
        url = server.url
    result = invoke("start-session", *ARGS, "--base-url", url, "--max-attempts", "1")
    assert result.exit_code == 4, result.output


def test_exit_codes_cover_every_family() -> None:
    def status(code: int) -> errors.APIStatusError:
        return errors.status_error_class(code)(
            "x", status_code=code, body="", request_id=None, headers={}
        )

    assert exit_code(errors.MissingAgentIdentityError()) == 3
    assert exit_code(errors.APIConnectionError("x")) == 4
    assert exit_code(errors.APITimeoutError("x")) == 5
    assert exit_code(status(404)) == 6
    assert exit_code(status(502)) == 7
    assert (
        exit_code(errors.APIResponseValidationError("x", status_code=200, body="", request_id=None))
        == 8
    )
    assert exit_code(errors.AvatarioError("x")) == 1


def test_bad_fault_scripts_are_usage_errors() -> None:
    result = invoke("fake-server", "--faults", "boom", "--port", "0")
    assert result.exit_code == 2
    assert "--faults" in result.output


def test_fake_server_command_serves_on_loopback_until_stopped() -> None:
    with run_fake_server() as probe:  # borrow a free port number
        port = probe.port
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "avatario_wrapper.cli",
            "fake-server",
            "--port",
            str(port),
            "--faults",
            "503",
        ],
        env={"AVATARIO_API_KEY": KEY, "PATH": ""},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/start-session"
        deadline = time.monotonic() + 15
        while True:
            try:
                first = httpx.post(url, json={}, headers={"x-api-key": KEY})
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "the fake server did not start"
                time.sleep(0.05)
        assert first.status_code == 503
        assert httpx.post(url, json={}, headers={"x-api-key": KEY}).status_code == 422
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert f"127.0.0.1:{port}" in stderr
    assert KEY not in stderr


def test_the_demo_plays_every_scene_as_promised(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    out = io.StringIO()
    assert run_demo(Console(file=out, width=120)) == 0
    text = out.getvalue()
    for scene in ("clean start", "503, 503", "Retry-After", "401", "no agent identity"):
        assert scene in text
    assert "every scene behaved as promised" in text
    assert "attempt 1/3 failed (HTTP 503)" in text
    assert "attempt 1/3 failed (HTTP 429); backing off 1.00 s" in text
    assert "demo-" not in text  # the made-up key and token are never shown
    for record in caplog.records:
        assert "demo-" not in record.getMessage()
        assert "demo." not in record.getMessage()


# -- missing extras, messages, flags --------------------------------------------------------


def _run_without(blocked: list[str], code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter where the `blocked` modules cannot be imported."""
    prelude = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in blocked)
    return subprocess.run(
        [sys.executable, "-c", prelude + code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_command_without_the_cli_extra_says_how_to_install_it() -> None:
    done = _run_without(
        ["click", "rich"],
        "sys.argv = ['avatario', '--help']\nfrom avatario_wrapper.cli import main\nmain()",
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr  # one line, no traceback
    assert "pip install '.[cli]' in a checkout" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", ["demo", "fake-server"])
def test_server_commands_without_the_server_extra_say_how_to_install_it(command: str) -> None:
    argv = ["avatario", command] + (["--api-key", "k"] if command != "demo" else [])
    done = _run_without(
        ["uvicorn", "jsonschema"],
        f"sys.argv = {argv!r}\nfrom avatario_wrapper.cli import main\nmain()",
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "pip install '.[server]' in a checkout" in done.stderr


def test_help_says_which_commands_need_which_extra() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "fake-server and demo also need the server extra" in text


def test_a_busy_port_is_one_line_and_a_usage_exit_code() -> None:
    with run_fake_server(api_key=KEY) as server:
        result = invoke("fake-server", "--port", str(server.port))
    assert result.exit_code == 2
    assert "cannot listen on 127.0.0.1" in result.output
    assert "Traceback" not in result.output


def test_messages_speak_in_flags_and_are_not_wrapped_off_a_terminal() -> None:
    result = invoke("start-session", *ARGS, "--base-url", "http://avatario.example/api")
    assert result.exit_code == 3
    [line] = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert "--allow-insecure-http" in line
    assert "allow_insecure_http" not in line
    assert line.startswith("error: AvatarioConfigError: --base-url: must use https")
    assert len(line) > 80  # one line, however long: not hard-wrapped at 80 columns

    result = invoke("start-session", *ARGS, env={"AVATARIO_API_KEY": ""})
    assert result.exit_code == 3
    assert "AVATARIO_API_KEY" in result.output
    assert "api_key=" not in result.output


def test_allow_insecure_http_lets_plain_http_reach_a_non_loopback_host() -> None:
    result = invoke(
        "start-session",
        *ARGS,
        "--base-url",
        "http://avatario.invalid/api",
        "--allow-insecure-http",
        "--max-attempts",
        "1",
    )
    assert result.exit_code == 4, result.output  # past the check: a connection failure


def test_the_demo_fits_80_columns() -> None:
    console = Console(width=80, record=True, highlight=False, file=io.StringIO())
    assert run_demo(console) == 0
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    summary = text[text.index("avatario demo: summary") :]
    assert "…" not in summary


def test_the_fake_server_without_the_server_extra_says_how_to_install_it() -> None:
    done = _run_without(["uvicorn"], "from avatario_wrapper.testing import run_fake_server")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ModuleNotFoundError: avatario_wrapper.testing.run_fake_server needs")
    assert "pip install '.[server]' in a checkout" in last
    ok = _run_without(["uvicorn"], "from avatario_wrapper.testing import FakeClock")
    assert ok.returncode == 0, ok.stderr  # the virtual clock needs no extra


def test_contract_test_without_schemathesis_says_how_to_install_it() -> None:
    done = _run_without(
        ["schemathesis"],
        "sys.argv = ['avatario', 'contract-test']\nfrom avatario_wrapper.cli import main\nmain()",
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "avatario contract-test needs the cli, server, contract extras" in done.stderr
    assert "(missing: schemathesis)" in done.stderr
    assert "pip install '.[cli,server,contract]' in a checkout" in done.stderr


# -- fake-server: --control, --seed, --spec, LiveKit token checks ----------------------------

BODY = {
    "avatario_face_id": "face_1",
    "agent_id": "agent-7",
    "livekit": {"url": "wss://rooms.example.com", "token": "t.t.t"},
}
LK_KEY = "APIcliTest01"
LK_SECRET = "lk_cli_SECRET_0123456789abcdef0123456789"


@contextlib.contextmanager
def serving(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> Iterator[tuple[str, list[str]]]:
    """``avatario fake-server --port 0 ARGS`` in its own process: its URL and what it printed
    (the start-up lines while it runs; everything once stopped). Only the given environment
    (the key in AVATARIO_API_KEY unless `env` says otherwise): no LIVEKIT_* variable of the
    machine running the tests leaks in. `stdin` is written to its standard input."""
    environment = {"AVATARIO_API_KEY": KEY, "PATH": "", **(env or {})}
    read_end, write_end = os.pipe()  # a few bytes: they fit the pipe before it is read
    os.write(write_end, (stdin or "").encode())
    os.close(write_end)
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "avatario_wrapper.cli", "fake-server", "--port", "0", *args],
            env={k: v for k, v in environment.items() if v},
            stdin=read_end,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        os.close(read_end)
    assert process.stderr is not None
    lines: list[str] = []
    try:
        while not lines or not lines[-1].startswith("press Ctrl-C"):
            line = process.stderr.readline()
            assert line, f"the fake server exited: {lines}"
            lines.append(line.rstrip("\n"))
        [found] = [m for m in map(re.compile(r"listening on (http://\S+)").search, lines) if m]
        yield found.group(1), lines
    finally:
        process.terminate()
        _, rest = process.communicate(timeout=10)
        lines.extend(rest.splitlines())


def avatar_token() -> str:
    """A LiveKit token for the avatar that the fake, given LK_KEY and LK_SECRET, accepts."""
    return (
        AccessToken(LK_KEY, LK_SECRET)
        .with_kind("agent")
        .with_identity("avatario-avatar-agent")
        .with_grants(VideoGrants(room_join=True, room="room-1"))
        .with_attributes({"lk.publish_on_behalf": "agent-7"})
        .to_jwt()
    )


def statuses(url: str, count: int = 12) -> list[int]:
    with httpx.Client(headers={"x-api-key": KEY}) as http:
        return [http.post(f"{url}/start-session", json=BODY).status_code for _ in range(count)]


def test_fake_server_control_changes_the_faults_while_it_runs() -> None:
    with serving("--control") as (url, lines):
        control = f"{url}/_fake/faults"
        # The printed commands name the variable, never the key.
        assert 'curl -X PUT -H "x-api-key: $AVATARIO_API_KEY" --data' in "\n".join(lines)
        assert any(line.strip().startswith("drop them all:") for line in lines)
        with httpx.Client(headers={"x-api-key": KEY}) as http:
            # As the printed curl line sends it (a form content type, the script as text).
            form = {"content-type": "application/x-www-form-urlencoded"}
            assert http.put(control, content="503", headers=form).json()["faults"] == "503"
            assert statuses(url, 2) == [503, 200]
            state = http.get(control).json()
        assert httpx.get(control).status_code == 401  # the key is needed
    [seeded] = [line for line in lines if line.startswith("random faults seeded with")]
    assert (
        seeded == f"random faults seeded with {state['seed']} (--seed {state['seed']} replays them)"
    )
    assert KEY not in "\n".join(lines)


def test_fake_server_shows_each_session_it_starts_and_counts_them() -> None:
    with serving("--control", "--ignore-idempotency-key") as (url, lines):
        assert any(line.strip().startswith("count the sessions:") for line in lines)
        with httpx.Client(headers={"x-api-key": KEY}) as http:
            assert statuses(url, 2) == [200, 200]
            state = http.get(f"{url}/_fake/sessions").json()
    assert state["count"] == 2
    first, second = (s["session_id"] for s in state["sessions"])
    assert f"session {first} started (avatar face_1, agent agent-7); 1 session(s) so far" in lines
    assert any(
        line.startswith(f"session {second} started") and "2 session(s)" in line for line in lines
    )


def test_fake_server_says_how_many_sessions_it_started_when_stopped() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "avatario_wrapper.cli", "fake-server", "--port", "0"],
        env={"AVATARIO_API_KEY": KEY},
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    lines: list[str] = []
    while not lines or not lines[-1].startswith("press Ctrl-C"):
        line = process.stderr.readline()
        assert line, f"the fake server exited: {lines}"
        lines.append(line.rstrip("\n"))
    [found] = [m for m in map(re.compile(r"listening on (http://\S+)").search, lines) if m]
    assert statuses(found.group(1), 1) == [200]
    process.send_signal(signal.SIGINT)  # Ctrl-C
    _, rest = process.communicate(timeout=10)
    assert "stopping; 1 requests served, 1 sessions started" in rest


def test_fake_server_without_control_has_no_control_endpoint() -> None:
    with serving() as (url, lines):
        response = httpx.get(f"{url}/_fake/faults", headers={"x-api-key": KEY})
    assert response.status_code == 404
    assert not any("_fake/faults" in line for line in lines)


def test_fake_server_seed_replays_the_random_faults() -> None:
    with serving("--faults", "503@50%", "--seed", "7") as (url, lines):
        served = statuses(url)
    assert "random faults seeded with 7 (--seed 7 replays them)" in lines
    with run_fake_server(api_key=KEY, faults="503@50%", seed=7) as reference:
        assert served == statuses(reference.url)
    assert set(served) == {200, 503}


def test_fake_server_serves_another_spec(tmp_path: Path) -> None:
    spec = FakeAvatario().spec
    spec["paths"]["/sessions/{session_id}"] = {
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
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    with serving("--spec", str(path), "--faults", "getSession:503") as (url, lines):
        with httpx.Client(headers={"x-api-key": KEY}) as http:
            assert http.get(f"{url}/sessions/s_1").status_code == 503
            assert http.get(f"{url}/sessions/s_1").json() == {"status": "live"}
    assert lines[0].endswith("(operations: getSession, startSession)")
    assert f"serving the spec {path}" in lines


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("paths: [", "cannot read"),
        ("- a list", "is not an OpenAPI document"),
        ("openapi: 3.1.0", "the spec must be an OpenAPI document (a mapping with 'paths')"),
    ],
)
def test_fake_server_refuses_a_spec_it_cannot_serve(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(content)
    result = invoke("fake-server", "--port", "0", "--spec", str(path))
    assert result.exit_code == 2, result.output
    assert "Invalid value for --spec" in result.output
    assert problem in " ".join(result.output.split())


def test_fake_server_verifies_livekit_tokens_from_the_environment() -> None:
    env = {"LIVEKIT_API_KEY": LK_KEY, "LIVEKIT_API_SECRET": LK_SECRET}
    token = avatar_token()
    with serving(env=env) as (url, lines):
        assert statuses(url, 1) == [422]  # "t.t.t" is no LiveKit token
        with httpx.Client(headers={"x-api-key": KEY}) as http:
            good = {**BODY, "livekit": {"url": "wss://rooms.example.com", "token": token}}
            assert http.post(f"{url}/start-session", json=good).status_code == 200
    assert any(line.startswith("LiveKit tokens are verified") for line in lines)
    [session] = [line for line in lines if line.startswith("session ")]
    assert "(avatar face_1, agent agent-7, room room-1); 1 session(s) so far" in session
    text = "\n".join(lines)
    assert LK_SECRET not in text
    assert KEY not in text
    assert token not in text


def test_fake_server_takes_the_secrets_as_deprecated_flags_too() -> None:
    with serving(
        "--api-key",
        KEY,
        "--livekit-api-key",
        LK_KEY,
        "--livekit-api-secret",
        LK_SECRET,
        env={"AVATARIO_API_KEY": ""},
    ) as (url, lines):
        assert statuses(url, 1) == [422]
    text = "\n".join(lines)
    assert LK_SECRET not in text
    assert KEY not in text
    for flag, variable in (
        ("--api-key", "AVATARIO_API_KEY"),
        ("--livekit-api-secret", "LIVEKIT_API_SECRET"),
    ):
        assert (
            f"warning: {flag} is deprecated: it shows in the process list and shell history; "
            f"set {variable} or pipe it to {flag}-stdin"
        ) in lines


def test_fake_server_reads_its_secrets_from_standard_input() -> None:
    token = avatar_token()
    args = ("--api-key-stdin", "--livekit-api-key", LK_KEY, "--livekit-api-secret-stdin")
    with serving(*args, env={"AVATARIO_API_KEY": ""}, stdin=f"{KEY}\n{LK_SECRET}\n") as (
        url,
        lines,
    ):
        with httpx.Client(headers={"x-api-key": KEY}) as http:
            good = {**BODY, "livekit": {"url": "wss://rooms.example.com", "token": token}}
            assert http.post(f"{url}/start-session", json=good).status_code == 200
        assert httpx.post(f"{url}/start-session", json=BODY).status_code == 401
    text = "\n".join(lines)
    assert "deprecated" not in text
    assert KEY not in text
    assert LK_SECRET not in text


@pytest.mark.parametrize(
    ("args", "env", "stdin", "problem"),
    [
        ((), {"AVATARIO_API_KEY": None}, "", "no API key for the fake: set AVATARIO_API_KEY"),
        (("--api-key-stdin",), {}, "\n", "--api-key-stdin: standard input has no line for it"),
        (
            ("--api-key", KEY, "--api-key-stdin"),
            {},
            f"{KEY}\n",
            "give --api-key or --api-key-stdin",
        ),
    ],
)
def test_fake_server_says_how_to_give_its_key(
    args: tuple[str, ...], env: dict[str, str | None], stdin: str, problem: str
) -> None:
    result = CliRunner().invoke(
        main,
        ["fake-server", "--port", "0", *args],
        env={"AVATARIO_API_KEY": KEY, **env},
        input=stdin,
    )
    assert result.exit_code == 2
    assert problem in " ".join(result.output.split())
    assert KEY not in result.output


def test_fake_server_warns_when_told_to_listen_beyond_loopback() -> None:
    # 192.0.2.1 (TEST-NET-1) is on no interface here: the bind fails, nothing listens anywhere.
    result = invoke("fake-server", "--port", "0", "--host", "192.0.2.1")
    assert result.exit_code == 2
    [warning] = [line for line in result.output.splitlines() if line.startswith("WARNING:")]
    assert warning.startswith("WARNING: listening on 192.0.2.1, beyond loopback: anyone who can")
    assert "cannot listen on 192.0.2.1" in result.output


def test_fake_server_on_loopback_warns_of_nothing() -> None:
    with serving("--host", "localhost") as (_, lines):
        pass
    assert not any("WARNING" in line for line in lines)


def test_fake_server_answers_only_hosts_it_is_told() -> None:
    with serving("--allow-host", "devbox.test") as (url, _):
        port = url.rsplit(":", 1)[1]
        with httpx.Client(headers={"x-api-key": KEY}) as http:
            for host, status in (
                (f"devbox.test:{port}", 200),
                (f"localhost:{port}", 200),
                (f"rebound.example:{port}", 421),
            ):
                sent = http.post(f"{url}/start-session", json=BODY, headers={"host": host})
                assert sent.status_code == status, host


def test_fake_server_needs_both_livekit_credentials() -> None:
    runner = CliRunner()
    result = runner.invoke(
        main,
        ["fake-server", "--port", "0", "--livekit-api-key", LK_KEY],
        env={"AVATARIO_API_KEY": KEY, "LIVEKIT_API_KEY": None, "LIVEKIT_API_SECRET": None},
    )
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "give both LIVEKIT_API_KEY and LIVEKIT_API_SECRET" in text
    assert "(or --livekit-api-key and --livekit-api-secret-stdin)" in text
