"""``avatario contract-test``: openapi.yaml's promises checked against the fake or a deployment.

Needs the ``cli``, ``server`` and ``contract`` extras (schemathesis). Requests are generated
with schemathesis's Python API (``APIOperation.as_strategy``, positive and negative data) and
answers judged by its checks (``Case.validate_response``); httpx sends them one at a time,
with no retry and no redirect. Every request is built and classified (`_contract_rules`)
*before* the first is sent, so a run knows, and says first, how many could start a session:

- **safe** mode sends only `safe_requests`, none of which could start a session;
- **full** mode sends the same list, then the spec's examples and generated valid and invalid
  requests (``max_examples`` of each).

A request the run counts as unable to start a session that still gets a 2xx, a 5xx (which
may come after an avatar was started) or no answer once it went out may have started one: the
run stops there, at once, in either mode, and exits with `EXIT_MAY_HAVE_STARTED`. A run where
every answer was 401 or 403 fails with one line (a wrong key must not pass); in full mode it
then stops before sending anything that could start a session.
"""

from __future__ import annotations

import contextlib
import enum
import json
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs
import httpx
import hypothesis
import schemathesis
from hypothesis import HealthCheck, Phase, Verbosity
from schemathesis import GenerationMode
from schemathesis.errors import FailureGroup
from schemathesis.openapi.checks import UndefinedStatusCode

from .._environment import Environment
from .._request import PRODUCT
from .._settings import API_KEY_ENV, resolve_api_key, resolve_base_url
from .._text import safe_line
from .._transports.httpx import own_client
from ..testing import run_fake_server
from ..testing._spec import load_spec
from ._contract_rules import (
    DUMMY_NAME,
    JSON_TYPE,
    METHOD,
    PATH,
    Key,
    Refusal,
    examples,
    key_header,
    may_start,
    safe_requests,
)
from ._exit import (
    EXIT_CONNECTION,
    EXIT_MAY_HAVE_STARTED,
    EXIT_OK,
    EXIT_OTHER,
    EXIT_REFUSED,
    EXIT_TIMEOUT,
    EXIT_USAGE,
)

CONTRACT_USER_AGENT = f"{PRODUCT} contract-test"

#: schemathesis's checks that judge an answer without sending anything. Left out: the ones
#: that send requests of their own, uncounted (``ignored_auth`` re-sends a request without
#: and with a wrong key, which `safe_requests` does, counted), and stateful ones.
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "positive_data_acceptance",
)

# The command's exit codes (`_exit`), as contract-test means them.
EXIT_PASSED = EXIT_OK
EXIT_FAILED = EXIT_OTHER  # an answer broke the contract
EXIT_UNAUTHORIZED = EXIT_REFUSED  # every answer was 401 or 403
# EXIT_USAGE: flags that do not fit together, or --full unconfirmed against a --url;
# EXIT_CONNECTION / EXIT_TIMEOUT: a request got no response; EXIT_MAY_HAVE_STARTED: a request
# counted as unable to start a session got a 2xx, a 5xx or no answer once sent.

#: httpx's errors raised before any byte of the request went out: no server saw it.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError)


class Mode(enum.Enum):
    SAFE = "safe"
    FULL = "full"


@attrs.frozen
class Planned:
    """One request to send, built and classified before anything is sent."""

    what: str  # printable, never a secret
    request: httpx.Request = attrs.field(repr=False)
    case: schemathesis.Case[Any] = attrs.field(repr=False)  # for schemathesis's checks
    may_start: bool
    #: The statuses the spec demands of a hand-built request; None: schemathesis decides.
    expect: frozenset[int] | None = None
    #: Any 4xx will do, and its status is not checked against the spec, which lists none for
    #: a wrong Content-Type (the fake answers 415).
    any_refusal: bool = False


@attrs.frozen
class Plan:
    mode: Mode
    requests: list[Planned]
    seed: int

    @property
    def may_start(self) -> int:
        return sum(p.may_start for p in self.requests)


@attrs.define
class Report:
    """What a run saw."""

    statuses: Counter[int] = attrs.field(factory=Counter)
    tried: int = 0  # requests handed to httpx, answered or not
    sent: int = 0  # requests answered
    may_start_sent: int = 0
    #: One printable line per broken promise, the `stop` aside.
    violations: list[str] = attrs.field(factory=list)
    #: (exit code, line) when the run ended early: no answer, or a session may have started.
    stop: tuple[int, str] | None = None
    stopped_unauthorized: bool = False
    seconds: float = 0.0

    def answered(self, low: int) -> int:
        """How many answers had a status from `low` to `low` + 99 (200: every 2xx)."""
        return sum(n for status, n in self.statuses.items() if low <= status < low + 100)

    def only_auth_refusals(self) -> set[int] | None:
        """The statuses seen, when every answer (429s aside) was a 401 or a 403."""
        seen = {status for status in self.statuses if status != 429}
        return seen if seen and seen <= {401, 403} else None


# -- planning: every request built and classified before the first is sent ----------------


def _hand_built(
    refusal: Refusal,
    operation: schemathesis.APIOperation[Any, Any, Any, Any],
    spec: Mapping[str, Any],
    base_url: str,
    keys: Mapping[Key, str],
) -> Planned:
    headers = {"User-Agent": CONTRACT_USER_AGENT, "Content-Type": refusal.content_type}
    if refusal.key is not Key.NONE:
        headers[key_header(spec)] = keys[refusal.key]
    request = httpx.Request(METHOD, base_url + PATH, headers=headers, content=refusal.body)
    return Planned(
        what=refusal.what,
        request=request,
        case=operation.Case(media_type=refusal.content_type),
        may_start=may_start(request, spec),
        expect=refusal.expect,
        any_refusal=refusal.expect is None,
    )


#: What HTTP/1.1 lets through (RFC 9110 5.1 and 5.5, as h11 enforces it): a token for a name;
#: visible characters, spaces and tabs inside a value, none at its ends.
_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(rb"(?:[\x21-\x7e\x80-\xff](?:[ \t\x21-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?")


def _request(case: schemathesis.Case[Any], base_url: str) -> httpx.Request | None:
    """`case` as the exact request that will be sent, or None when HTTP/1.1 cannot carry it."""
    sent = case.as_transport_kwargs(base_url=base_url)
    if set(sent) - {"method", "url", "headers", "params", "cookies", "json", "data"}:
        return None  # files, or another shape this operation does not have
    data = sent.get("data", b"")
    if "json" in sent:
        try:
            content = json.dumps(sent["json"], allow_nan=False).encode()
        except (TypeError, ValueError):
            return None
    elif isinstance(data, (str, bytes)):
        content = data.encode() if isinstance(data, str) else data
    else:
        return None
    try:
        headers = [
            (str(k).encode("ascii"), str(v).encode("latin-1"))
            for k, v in dict(sent["headers"]).items()
        ]
        request = httpx.Request(
            str(sent["method"]),
            str(sent["url"]),
            params=sent.get("params") or None,
            headers=headers,
            cookies=sent.get("cookies") or None,
            content=content,
        )
    except (UnicodeError, ValueError, TypeError):
        return None
    for name, value in request.headers.raw:
        if not _NAME.fullmatch(name) or not _VALUE.fullmatch(value):
            return None
    return request


def _draw(strategy: Any, count: int, seed: int) -> list[schemathesis.Case[Any]]:
    """Up to `count` cases from a schemathesis strategy; the same ones for the same seed."""
    if count <= 0:
        return []
    drawn: list[schemathesis.Case[Any]] = []

    @hypothesis.seed(seed)
    @hypothesis.settings(
        max_examples=count,
        phases=[Phase.generate],  # no replay from a database, no shrinking: nothing is sent
        database=None,
        derandomize=False,  # whatever profile is loaded (Hypothesis's "ci" one sets it)
        deadline=None,
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
    )
    @hypothesis.given(case=strategy)
    def collect(case: schemathesis.Case[Any]) -> None:
        drawn.append(case)

    collect()
    return drawn[:count]


def plan(*, mode: Mode, base_url: str, api_key: str, max_examples: int, seed: int) -> Plan:
    """Every request the run will send, in order, each classified. Sends nothing."""
    spec = load_spec()
    config = schemathesis.Config.from_dict(
        {
            "base-url": base_url,
            "auth": {"openapi": {"apiKey": {"api_key": api_key}}},
            "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
        }
    )
    operation = schemathesis.openapi.from_dict(dict(spec), config=config)[PATH][METHOD]
    keys = {
        Key.REAL: api_key,
        Key.WRONG: f"{DUMMY_NAME}-wrong-{secrets.token_hex(12)}",
        Key.EMPTY: "",
    }
    planned = [
        _hand_built(refusal, operation, spec, base_url, keys) for refusal in safe_requests(spec)
    ]
    if mode is Mode.FULL:
        for name, example in examples(spec):
            headers = {key_header(spec): api_key}  # generated cases get it from the config
            case = operation.Case(body=example, media_type=JSON_TYPE, headers=headers)
            request = _request(case, base_url)
            if request is not None:
                what = f"the spec's example {name!r}"
                planned.append(Planned(what, request, case, may_start(request, spec)))
        # GenerationMode(...), not .POSITIVE: mypy (checking for 3.10) cannot see it is an enum.
        kinds = [(GenerationMode("positive"), "valid"), (GenerationMode("negative"), "invalid")]
        for generation, label in kinds:
            cases = _draw(operation.as_strategy(generation_mode=generation), max_examples, seed)
            for number, case in enumerate(cases, start=1):
                request = _request(case, base_url)
                if request is not None:
                    what = f"generated {label} request {number}"
                    planned.append(Planned(what, request, case, may_start(request, spec)))
    return Plan(mode=mode, requests=planned, seed=seed)


# -- sending and judging -------------------------------------------------------------------


def _violations(planned: Planned, response: httpx.Response, api_key: str) -> list[str]:
    """The promises `response` broke, one printable line each (server text made safe)."""
    problems: list[str] = []
    status = response.status_code
    if planned.expect is not None and status not in planned.expect and status != 429:
        wanted = " or ".join(str(s) for s in sorted(planned.expect))
        problems.append(f"expected {wanted}, got {status}")
    if planned.any_refusal and not 400 <= status < 500:
        problems.append(f"expected a 4xx, got {status}")
    try:
        planned.case.validate_response(response)
    except FailureGroup as group:
        for failure in group.exceptions:
            if planned.any_refusal and isinstance(failure, UndefinedStatusCode):
                continue
            text = str(getattr(failure, "title", "") or type(failure).__name__)
            detail = str(getattr(failure, "message", "")).strip().splitlines()
            problems.append(f"{text} ({detail[0]})" if detail else text)
    except Exception as error:  # a check that cannot run is a finding, not a crash
        problems.append(f"the answer could not be checked ({type(error).__name__})")
    return [safe_line(f"{planned.what}: {problem}", (api_key,), limit=300) for problem in problems]


def _no_answer(planned: Planned, error: httpx.HTTPError, api_key: str) -> tuple[int, str]:
    """The exit code and line for a request that got no answer."""
    reason = safe_line(str(error) or type(error).__name__, (api_key,))
    timed_out = isinstance(error, httpx.TimeoutException)
    how = "no answer in time" if timed_out else "no response"
    line = f"{planned.what}: {how} ({type(error).__name__}: {reason})"
    if isinstance(error, NOT_SENT):
        return (EXIT_TIMEOUT if timed_out else EXIT_CONNECTION), line
    if not planned.may_start:
        return EXIT_MAY_HAVE_STARTED, f"{line} after it went out: a session may have started"
    return (EXIT_TIMEOUT if timed_out else EXIT_CONNECTION), f"{line}; a session may have started"


def _answered_anyway(planned: Planned, status: int) -> str:
    """The line for a 2xx or 5xx to a request counted as unable to start a session."""
    if status < 300:
        why = "though its body names neither an avatar nor an agent"
    else:
        why = "and a server error may come after an avatar was started"
    return f"{planned.what}: HTTP {status}, {why}: a session may have started"


def execute(
    run: Plan,
    *,
    base_url: str,
    api_key: str,
    timeout: float,
    say: Callable[[str], None] = lambda line: None,
) -> Report:
    """Send the plan's requests in order and judge each answer; `say` hears a stop at once."""
    report = Report()
    started = time.monotonic()
    checked_key = False
    with own_client(httpx.Client, Environment.read(base_url), timeout) as http:
        for planned in run.requests:
            if planned.may_start and not checked_key:
                checked_key = True
                if report.only_auth_refusals():
                    report.stopped_unauthorized = True
                    break  # a wrong key: send nothing that could start a session
            report.tried += 1
            try:
                response = http.send(planned.request)
            except httpx.HTTPError as error:
                report.stop = _no_answer(planned, error, api_key)
                break
            report.sent += 1
            report.may_start_sent += planned.may_start
            status = response.status_code
            report.statuses[status] += 1
            if not planned.may_start and (200 <= status < 300 or status >= 500):
                line = _answered_anyway(planned, status)
                say(f"FAIL {line}")
                report.stop = (EXIT_MAY_HAVE_STARTED, line)
                break  # outside what the run announced: send nothing more
            report.violations.extend(_violations(planned, response, api_key))
    report.seconds = time.monotonic() - started
    return report


# -- the command ---------------------------------------------------------------------------


@attrs.frozen
class Target:
    base_url: str
    api_key: str = attrs.field(repr=False)
    label: str
    embedded: bool


@contextlib.contextmanager
def target(url: str | None, *, allow_insecure_http: bool) -> Iterator[Target]:
    """The deployment at `url` (its key from AVATARIO_API_KEY), or an embedded fake."""
    if url is not None:
        base_url = resolve_base_url(url, allow_insecure_http=allow_insecure_http)
        yield Target(base_url, resolve_api_key(None), base_url, embedded=False)
        return
    api_key = f"{DUMMY_NAME}-{secrets.token_hex(16)}"
    with run_fake_server(api_key=api_key) as server:
        yield Target(server.url, api_key, f"the embedded fake Avatario at {server.url}", True)


def choose_mode(safe: bool | None, *, embedded: bool) -> Mode:
    """--safe or --full as given; else full on the embedded fake, safe against any --url."""
    if safe is None:
        return Mode.FULL if embedded else Mode.SAFE
    return Mode.SAFE if safe else Mode.FULL


def run_command(
    *,
    url: str | None,
    safe: bool | None,
    yes_start_sessions: bool,
    max_examples: int,
    seed: int | None,
    timeout: float,
    allow_insecure_http: bool,
    out: Callable[[str], None],
    err: Callable[[str], None],
) -> int:
    """The whole command: plan, say what could start sessions, confirm, send, judge.

    Returns the exit code; `out` hears the report and `err` the one line of a failed run.
    Raises `AvatarioConfigError` for a missing key or a bad URL, before anything is sent.
    """
    seed = seed if seed is not None else secrets.randbits(64)
    with target(url, allow_insecure_http=allow_insecure_http) as where:
        mode = choose_mode(safe, embedded=where.embedded)
        if yes_start_sessions and mode is Mode.SAFE:
            err(
                "--yes-start-sessions confirms --full, and this run is --safe: add --full to "
                "send requests that could start sessions, or drop --yes-start-sessions"
            )
            return EXIT_USAGE
        run = plan(
            mode=mode,
            base_url=where.base_url,
            api_key=where.api_key,
            max_examples=max_examples,
            seed=seed,
        )
        total, starting = len(run.requests), run.may_start
        stops = "a 2xx, a 5xx or no answer to one of them stops the run at once"
        if mode is Mode.SAFE:
            out(f"safe mode against {where.label}")
            out(
                f"{total} requests, none able to start a session: none names an avatar or an "
                "agent (whatever its key), the one JSON object among them names an unusable "
                f"LiveKit room, and {stops}"
            )
        else:
            out(f"full mode against {where.label} (seed {seed})")
            out(
                f"{total} requests; {starting} could start a session (a body that names an "
                f"avatar or an agent, whatever its key): up to {starting} sessions; the other "
                f"{total - starting} name neither, and {stops}"
            )
        if mode is Mode.FULL and not where.embedded and not yes_start_sessions:
            err(
                f"--full would send {starting} requests that could start sessions (real "
                f"avatars) to {where.base_url}: add --yes-start-sessions to send them (asked "
                "for every --url, loopback too: a local port may be a tunnel to a "
                "deployment), or use --safe"
            )
            return EXIT_USAGE
        report = execute(
            run, base_url=where.base_url, api_key=where.api_key, timeout=timeout, say=out
        )
    return judge(run, report, out, err)


def judge(run: Plan, report: Report, out: Callable[[str], None], err: Callable[[str], None]) -> int:
    """Print the counts, then the violations and the verdict; the exit code."""
    by_status = ", ".join(f"{status}: {n}" for status, n in sorted(report.statuses.items()))
    out(f"sent {report.sent} requests in {report.seconds:.2f} s; by status: {by_status or '-'}")
    if run.mode is Mode.FULL:
        errors = report.answered(500)
        out(
            f"2xx answers: {report.answered(200)}, each of which may have started a session; "
            f"{report.may_start_sent} of the requests sent could start one"
            + (f"; 5xx answers: {errors}, which may have started one each too" if errors else "")
        )
    code, line = report.stop or (EXIT_PASSED, "")
    only = report.only_auth_refusals()
    if only is not None and code != EXIT_MAY_HAVE_STARTED:
        codes = " or ".join(str(s) for s in sorted(only))
        held_back = " (nothing that could start a session was sent)"
        err(
            f"every response was {codes}: is {API_KEY_ENV} the key of this deployment?"
            + (held_back if report.stopped_unauthorized else "")
        )
        return EXIT_UNAUTHORIZED
    for violation in report.violations:
        out(f"FAIL {violation}")
    if report.stop is not None:
        unsent = len(run.requests) - report.tried
        err(line + (f"; the run stopped there ({unsent} requests not sent)" if unsent else ""))
        return code
    if report.violations:
        again = f"; --seed {run.seed} sends the same requests" if run.mode is Mode.FULL else ""
        err(f"{len(report.violations)} broken promises (listed above{again})")
        return EXIT_FAILED
    out("passed: every answer kept the contract")
    return EXIT_PASSED
