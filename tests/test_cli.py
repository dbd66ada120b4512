"""The avatario command: start-session output and exit codes, fake-server, demo; no secrets."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from rich.console import Console

from avatario_wrapper import errors
from avatario_wrapper._demo import run_demo
from avatario_wrapper.cli import exit_code, main
from avatario_wrapper.testing import run_fake_server

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
        "sys.argv = ['avatario', '--help']\nfrom avatario_wrapper._launcher import main\nmain()",
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr  # one line, no traceback
    assert "pip install 'avatario-wrapper[cli]'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", ["demo", "fake-server"])
def test_server_commands_without_the_server_extra_say_how_to_install_it(command: str) -> None:
    argv = ["avatario", command] + (["--api-key", "k"] if command != "demo" else [])
    done = _run_without(
        ["starlette", "uvicorn"],
        f"sys.argv = {argv!r}\nfrom avatario_wrapper._launcher import main\nmain()",
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "pip install 'avatario-wrapper[server]'" in done.stderr


def test_help_says_which_commands_need_which_extra() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "fake-server and demo also need the server extra" in text


def test_a_busy_port_is_one_line_and_a_usage_exit_code() -> None:
    with run_fake_server(api_key=KEY) as server:
        result = invoke("fake-server", "--port", str(server.port), "--api-key", KEY)
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
    done = _run_without(["starlette"], "from avatario_wrapper.testing import run_fake_server")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ModuleNotFoundError: avatario_wrapper.testing.run_fake_server needs")
    assert "pip install 'avatario-wrapper[server]'" in last
    ok = _run_without(["starlette"], "from avatario_wrapper.testing import FakeClock")
    assert ok.returncode == 0, ok.stderr  # the virtual clock needs no extra


def test_contract_test_without_schemathesis_says_how_to_install_it() -> None:
    done = _run_without(
        ["schemathesis"],
        "sys.argv = ['avatario', 'contract-test']\n"
        "from avatario_wrapper._launcher import main\nmain()",
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "avatario contract-test needs the cli, server, contract extras" in done.stderr
    assert "(missing: schemathesis)" in done.stderr
    assert "pip install 'avatario-wrapper[cli,server,contract]'" in done.stderr
    assert "(from a checkout: pip install '.[cli,server,contract]')" in done.stderr
