"""Write docs/reliability.md: the fault matrix against the fake server, the soak, the idle race.

    scripts/reliability                  # full: every scenario with the default policy, the
                                         # soak, the idle race (about 3 minutes in all)
    scripts/reliability --quick --out /tmp/r   # seconds (the stall scenario with a 2 s deadline,
                                               # a short soak, a scaled-down idle race); tests
    scripts/reliability --sections idle-race   # only the idle race (keeps the other sections)

Each scenario is one real call over loopback with `AvatarioClient` and the default
`RetryPolicy`, played twice: against a fake that honours Idempotency-Key and against one that
ignores it; each column counts the requests the fake received and the sessions it started.
The old plugin's column repeats what was measured on 1.8.9 (docs/migrating.md), or (marked *)
what its documented rule implies: every exception and 5xx/408/429/499 retried, 3 attempts,
no key.

The idle race (`netfaults.idle_race`): a server whose idle-close FIN reaches the client late,
many independent clients at random gaps, counting false "may have started" errors, resends
and sessions per transport. The report's sections are rewritten one by one
(`netfaults.report`); scripts/network-faults writes its own section into the same file.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import httpx
from netfaults.idle_race import Setting, measure, render
from netfaults.report import update

from avatario_wrapper import AvatarioClient, AvatarioError, RetryPolicy, StartSessionResult
from avatario_wrapper.compat import AvatarioAPI
from avatario_wrapper.testing import FakeClock, run_fake_server

ROOT = Path(__file__).resolve().parent.parent
KEY = "reliability-key-0001"
CALL = {
    "avatar_id": "face_1",
    "agent_identity": "agent-7",
    "livekit_url": "wss://rooms.example.com",
    "livekit_token": "reliability.token",
}


@attrs.frozen
class Scenario:
    name: str
    faults: str
    plugin: str
    overrides: dict[str, Any] = attrs.field(factory=dict)
    policy: RetryPolicy = attrs.field(factory=RetryPolicy)
    key: str = KEY
    #: A first call that succeeds on the same client, so the scenario meets a reused connection.
    warm: bool = False


def scenarios(quick: bool) -> list[Scenario]:
    stall_policy = RetryPolicy(max_elapsed=2.0) if quick else RetryPolicy()
    return [
        Scenario("success", "", "1 / 1; result discarded"),
        Scenario("503, 503, then 200", "503*2", "3 / 1; 4.0 s of fixed sleeps"),
        Scenario("persistent 503", "503*5", "3 / 0; 4.0 s, then the 503"),
        Scenario("connection refused by nobody listening", "", "3 / 0 *", key="refused"),
        Scenario(
            "idle keep-alive connection closed by the server (idle race)",
            "idle-close",
            "retried with a new session *",
            warm=True,
        ),
        Scenario("reset after the request went out ×3", "reset*3", "3 / 0; cause lost"),
        Scenario(
            "response lost after the session started (RST)",
            "lost",
            "2 / 2: a second avatar (no key)",
        ),
        Scenario(
            "response lost after the session started (FIN, fresh connection)",
            "lost-close",
            "2 / 2: a second avatar *",
        ),
        Scenario("500 ×3", "500*3", "3 / 0 *; each may have started"),
        Scenario("502 ×3", "502*3", "3 / 0 *"),
        Scenario(
            f"stalled server (deadline {stall_policy.max_elapsed:g} s)",
            "stall*5",
            "3 / 0; 28.9 s, then a generic 'Failed … after all retries'",
            policy=stall_policy,
        ),
        Scenario(
            "200 with a non-JSON body",
            "malformed*3",
            "3 requests, each answered 200: three avatars may join",
        ),
        Scenario("429, Retry-After: 1", "429:retry-after=1", "2 / 1; Retry-After ignored (2.0 s)"),
        Scenario("429, Retry-After: 120", "429:retry-after=120", "2+ / 1; waits 2.0 s, retries"),
        Scenario("401 (wrong key)", "", "1 / 0; not retried", key="wrong-key-0001"),
        Scenario(
            "missing avatar id",
            "",
            "0 / 0; 4.0 s of sleeps, then a misleading connection error",
            overrides={"avatar_id": None},
        ),
        Scenario(
            "missing agent identity",
            "",
            "0 / 0; AvatarioException",
            overrides={"agent_identity": ""},
        ),
    ]


def _once(scenario: Scenario, url: str, server: Any) -> tuple[Any, float, int, int]:
    """One call of `scenario` against `server`: outcome, seconds, requests, sessions."""
    if scenario.key == "refused":
        url = _dead_url()
    with AvatarioClient(
        scenario.key if scenario.key != "refused" else KEY, base_url=url, retry=scenario.policy
    ) as client:
        if scenario.warm:
            client.start_session(**CALL)
        server.add_faults(scenario.faults)
        before_requests, before_sessions = len(server.requests), len(server.sessions)
        started = time.monotonic()
        outcome: StartSessionResult | Exception
        try:
            outcome = client.start_session(**{**CALL, **scenario.overrides})
        except (AvatarioError, TypeError) as error:
            outcome = error
        seconds = time.monotonic() - started
    server.app.clear_faults()
    return (
        outcome,
        seconds,
        len(server.requests) - before_requests,
        len(server.sessions) - before_sessions,
    )


def _dead_url() -> str:
    import socket  # noqa: PLC0415

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


def play(scenario: Scenario, honouring: Any, ignoring: Any) -> list[str]:
    outcome, seconds, requests, sessions = _once(scenario, honouring.url, honouring)
    _, _, requests_ignored, sessions_ignored = _once(scenario, ignoring.url, ignoring)
    if isinstance(outcome, StartSessionResult):
        behaviour, attempts = "StartSessionResult", str(outcome.attempts)
    else:
        behaviour = type(outcome).__name__
        attempts = str(getattr(outcome, "attempts", "–"))
        if getattr(outcome, "retry_after", None) is not None:
            behaviour += f" (retry_after={outcome.retry_after:g})"  # type: ignore[attr-defined]
        if getattr(outcome, "may_have_started", False):
            behaviour += ", may have started"
        if outcome.__cause__ is not None:
            behaviour += f", cause {type(outcome.__cause__).__name__}"
    return [
        scenario.name,
        behaviour,
        attempts,
        f"{requests} / {sessions}",
        f"{requests_ignored} / {sessions_ignored}",
        f"{seconds:.2f} s",
        scenario.plugin,
    ]


def outage_row(calls: int) -> list[str]:
    """The retry budget: `calls` calls on one client against a server that always answers 503.

    Real sockets; the backoff sleeps and the budget's window run on a `FakeClock`, so the
    figure does not depend on how long the run takes.
    """
    with (
        run_fake_server(api_key=KEY, faults=f"503*{calls * 3}") as server,
        AvatarioClient(KEY, base_url=server.url, clock=FakeClock(seed=1)) as client,
    ):
        started = time.monotonic()
        for _ in range(calls):
            with contextlib.suppress(AvatarioError):
                client.start_session(**CALL)
        seconds = time.monotonic() - started
        requests = len(server.requests)
    return [
        f"outage: {calls} calls, every request answered 503 (retry budget)",
        f"{requests / calls:.2f} requests per call",
        "–",
        f"{requests} / 0",
        f"{requests} / 0",
        f"{seconds:.2f} s",
        f"{calls * 3} / 0 *: 3 per call",
    ]


def compat_rows() -> list[list[str]]:
    rows = []
    try:
        AvatarioAPI(KEY, "face_1", {"avatario_face_id": "other"})
        behaviour = "accepted"
    except AvatarioError as error:
        behaviour = type(error).__name__
    rows.append(
        [
            "video_info overwriting avatario_face_id",
            behaviour,
            "–",
            "0 / 0",
            "0 / 0",
            "0.00 s",
            "payload silently overwritten",
        ]
    )
    return rows


def huge_body_row(url: str) -> list[str]:
    big = "x" * 5_000_000

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, text=big)

    http = httpx.Client(transport=httpx.MockTransport(handler))
    started = time.monotonic()
    with AvatarioClient(KEY, base_url=url, http_client=http) as client:
        try:
            client.start_session(**CALL)
            kept = "?"
        except AvatarioError as error:
            kept = f"{type(error).__name__}, body kept: {len(getattr(error, 'body', '')):,} chars"
    return [
        "5 MB error body",
        kept,
        "1",
        "1 / 0",
        "1 / 0",
        f"{time.monotonic() - started:.2f} s",
        "the whole body kept",
    ]


def soak(quick: bool) -> tuple[str, str]:
    args = ["--calls", "300", "--seconds", "30"] if quick else []
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "soak.py"), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip(), str(out.returncode)


SECTIONS = ("fault-matrix", "soak", "idle-race")


def fault_matrix_section(quick: bool) -> str:
    rows: list[list[str]] = []
    with (
        run_fake_server(api_key=KEY) as honouring,
        run_fake_server(api_key=KEY, honour_idempotency_key=False) as ignoring,
    ):
        for scenario in scenarios(quick):
            rows.append(play(scenario, honouring, ignoring))
        rows.append(huge_body_row(honouring.url))
    rows.append(outage_row(100 if quick else 500))
    rows += compat_rows()
    header = [
        "scenario",
        "behaviour",
        "attempts",
        "requests / sessions, key honoured",
        "requests / sessions, key ignored",
        "time",
        "old plugin 1.8.9: requests / sessions (measured, * by its rule)",
    ]
    table = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    table += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return f"""## Fault matrix

{_measured("scripts/reliability", quick)}

One real call per row over loopback against the fake Avatario
(`avatario_wrapper.testing`), with `AvatarioClient` and the default `RetryPolicy`
(3 attempts, full jitter from 0.5 s up to 8 s, 30 s deadline, 10 s per attempt, unknown
outcomes not resent, retry budget 20 %), played against a fake that honours `Idempotency-Key`
and against one that ignores it. The last column is what was measured for the old plugin on a
loopback fault server (the figures in [migrating.md](migrating.md)), or, marked *, what its
documented rule implies (every exception and 5xx/408/429/499 retried with fixed 2.0 s sleeps,
3 attempts, no idempotency key, so a key-honouring server changes nothing for it).

No row starts two sessions for one call against the key-ignoring fake. Two rows depend on
what the socket shows: the idle race (a reused connection closed cleanly before any response
byte) is resent, as Go's net/http resends it; a server that crashes after starting the session
and closes a *reused* connection the same clean way would be resent too (docs/retries.md).

{chr(10).join(table)}

Times include the jittered backoff, so they vary from run to run; attempts and outcomes do not."""


def soak_section(quick: bool) -> tuple[str, bool]:
    """The soak's section, and whether it kept every invariant."""
    soak_output, soak_status = soak(quick)
    last = soak_output.splitlines()[-1] if soak_output else "soak produced no output"
    text = f"""## Soak

{_measured("scripts/reliability", quick)}

`scripts/soak{" --calls 300 --seconds 30" if quick else ""}`: async calls (over the aiohttp
sender and over httpx) and threaded sync calls at once against the fake, which plays a random
mix of 5xx, resets, lost responses, stalls, 429s (short and over the limit) and malformed 2xx.
Every call is checked (typed outcome, attempts ≤ max_attempts, elapsed ≤ max_elapsed + 0.5 s,
at most one session per call), then open descriptors against the baseline and every captured
log line (DEBUG, all loggers) and error text for the key and the token. Exit status
{soak_status}.

```
{soak_output}
```

Closing line: `{last}`."""
    return text, soak_status == "0" and re.search(r"violations=0 ", last) is not None


def idle_race_section(quick: bool, seed: int, dump: str | None) -> tuple[str, bool]:
    """The idle race (netfaults.idle_race), with and without `Keep-Alive: timeout=N`."""
    setting = Setting.quick() if quick else Setting.full()
    runs = [
        measure(setting, keep_alive_header=header, seed=seed, python=sys.executable)
        for header in (False, True)
    ]
    for run in runs:
        for transport, figures in run["transports"].items():
            print(
                f"idle race, Keep-Alive header {run['keep_alive_header']}, {transport}: "
                f"calls={figures['calls']} race_hits={figures['race_hits']} "
                f"resends={figures['resends']} false_alarms={figures['false_alarms']} "
                f"sessions={figures['sessions']} violations={len(figures['violations'])} "
                f"wall={run['wall']:.0f}s",
                file=sys.stderr,
            )
    if dump:
        Path(dump).write_text(json.dumps(runs, indent=1))
    command = "scripts/reliability" + (" --quick" if quick else "")
    text = render(setting, runs, command=command)
    if quick:
        text += (
            "\n\nA smoke run (`--quick`): the idle timeout, gaps and counts are scaled down, "
            "so these figures are not the ones to quote."
        )
    ok = not any(f["violations"] for run in runs for f in run["transports"].values())
    return text, ok


TESTED = """## What is tested on every run

- `tests/test_hostile.py`: hypothesis feeds every argument and constructor field arbitrary
  values (empty, blank, control characters, huge, non-ASCII, wrong types, None): always a
  spec-valid request or an `AvatarioConfigError`/`TypeError` before any I/O; and arbitrary
  statuses, `Retry-After` values, bodies (non-JSON, huge, deeply nested, wrongly typed) and
  cut-off streams: always a typed result or error, within the deadline, never a resend after
  a 2xx.
- `tests/test_tls.py`: certificates made at test time with trustme; verification is on by
  default (sync and both async senders), a custom CA through `http_client` works, plain http to
  a remote host is refused before any I/O.
- `tests/test_secrets.py`: the wrapper, the CLI and the demo at DEBUG logging with a
  recognisable key and token; neither appears in any output, log record, repr or error.
- `tests/test_soak.py`: a short soak with the same invariants.
- `tests/test_safe_retries.py`: every row of the outcome table (docs/retries.md) on every
  transport (sync httpx, async aiohttp, async httpx) against both fake modes, counting requests
  and sessions; the idle race on a reused connection; a hypothesis property (any fault sequence
  against a key-ignoring fake starts at most one session per call); the retry budget (500 calls
  against a failing server) and its sharing across threads, tasks and `with_options` copies.
- `tests/test_hardening.py`: hostile servers on every transport: a 307 to another origin
  (never followed, even by a caller's pool that follows redirects), gzip bombs of one and two
  layers (peak memory measured), corrupt and unknown encodings, a status line, headers or body
  trickled a byte at a time (`max_elapsed` holds), ANSI escapes, newlines and invalid UTF-8 in
  server text (one printable line in errors and logs), 20 KB headers, closed clients and
  pools, proxies from the environment (`HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`, an unusable
  scheme), a server echoing the key and token back.
- `tests/test_network_faults.py`: a short `scripts/network-faults --quick` run (all three
  transports through the kernel's TCP stack, with jitter, loss and a blackhole), keeping the
  same per-call invariants (the deadline bound widened to 0.5 s for loaded machines), on every
  Python; skipped with the reason where the machine cannot make network namespaces or TUN
  devices. A run killed with SIGKILL leaves no process or namespace behind.
- `tests/test_reports.py`: `scripts/reliability --quick` end to end, the idle race included."""


def _measured(command: str, quick: bool) -> str:
    return (
        f"Measured {datetime.date.today().isoformat()} on {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, by `{command}{' --quick' if quick else ''}`."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "docs"))
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"which sections to measure and rewrite, of {', '.join(SECTIONS)} "
        "(the others, and scripts/network-faults' section, are kept as they are)",
    )
    parser.add_argument("--seed", type=int, default=1, help="the idle race's gaps")
    parser.add_argument("--json", help="write the idle race's every call to this file")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.sections.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    new: dict[str, str] = {"tested": TESTED}
    ok = True
    if "fault-matrix" in chosen:
        new["fault-matrix"] = fault_matrix_section(args.quick)
    if "soak" in chosen:
        new["soak"], passed = soak_section(args.quick)
        ok = ok and passed
    if "idle-race" in chosen:
        new["idle-race"], passed = idle_race_section(args.quick, args.seed, args.json)
        ok = ok and passed
    path = Path(args.out) / "reliability.md"
    update(path, new, everything=set(chosen) == set(SECTIONS))
    print(f"wrote {path}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
