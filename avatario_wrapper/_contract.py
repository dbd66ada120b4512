"""``avatario contract-test``: openapi.yaml's promises checked against the fake or a deployment.

Needs the ``cli``, ``server`` and ``contract`` extras (schemathesis). Requests are generated
with schemathesis's Python API (``APIOperation.as_strategy``, positive and negative data) and
answers judged by its checks (``Case.validate_response``); they are sent with httpx, one at a
time, with no retry and no redirect. Every request is built *before* the first is sent, so a
run knows, and says first, exactly how many of them may start a session:

- a request **may start a session** (`may_start`) when it carries the real key and its body
  is a JSON object holding every field the spec requires, each of a type a lenient server
  could take (for a string: anything but null, an array or an object; for an object: an object
  with its own required fields). Content-Type is not looked at, since a server may parse JSON
  whatever the header says. Every other request is one the spec says must be refused: 401
  without the right key, 4xx for a body that cannot be a session;
- **safe** mode sends only `safe_requests` (none may start a session; their LiveKit URL and
  token are dummies no LiveKit server accepts) and stops at the first 2xx;
- **full** mode sends the same list, then the spec's examples and generated valid and invalid
  requests (``max_examples`` of each) with the real key.

A run where every answer was 401 or 403 fails with one line (a wrong key must not pass); in
full mode it then stops before sending anything that may start a session.
"""

from __future__ import annotations

import contextlib
import enum
import json
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

from ._settings import API_KEY_ENV, is_loopback_host, resolve_api_key, resolve_base_url
from ._text import safe_line
from ._transports.httpx import own_client
from ._version import __version__
from .testing import run_fake_server
from .testing.app import load_spec

#: The one operation that starts an avatar.
PATH = "/start-session"
METHOD = "POST"
JSON_TYPE = "application/json"
#: In every body safe mode sends: ``.invalid`` never resolves (RFC 6761), and a LiveKit token
#: is a JWT signed with the LiveKit server's secret, which this string is not.
DUMMY_LIVEKIT_URL = "wss://livekit.invalid"
DUMMY_LIVEKIT_TOKEN = "avatario-contract-test.not-a-livekit-token"  # noqa: S105 - a dummy
DUMMY_NAME = "avatario-contract-test"
USER_AGENT = f"avatario-wrapper/{__version__} contract-test"

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

EXIT_PASSED = 0
EXIT_FAILED = 1  # an answer broke the contract
EXIT_USAGE = 2  # flags that do not fit together, or --full unconfirmed against a deployment
EXIT_CONNECTION = 4  # a request got no response
EXIT_TIMEOUT = 5
EXIT_UNAUTHORIZED = 6  # every answer was 401 or 403
EXIT_ACCEPTED = 9  # a request the spec says must be refused got a 2xx


class Mode(enum.Enum):
    SAFE = "safe"
    FULL = "full"


class Key(enum.Enum):
    """Which key a hand-built request carries."""

    NONE = "none"
    WRONG = "wrong"  # a random one, never the deployment's
    EMPTY = "empty"
    REAL = "real"


@attrs.frozen
class Refusal:
    """A hand-built request the spec says must be refused; `expect` None means any 4xx."""

    what: str
    key: Key
    content_type: str
    body: bytes = attrs.field(repr=False)
    expect: frozenset[int] | None


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
    sent: int = 0
    may_start_sent: int = 0
    accepted: int = 0  # 2xx answers to requests that may start a session
    #: One printable line per broken promise, 2xx answers to refusable requests aside.
    violations: list[str] = attrs.field(factory=list)
    refused_2xx: str | None = None  # the first refusable request that got a 2xx
    no_answer: tuple[int, str] | None = None  # (exit code, line) when a request got none
    stopped_unauthorized: bool = False
    seconds: float = 0.0

    def only_auth_refusals(self) -> set[int] | None:
        """The statuses seen, when every answer (429s aside) was a 401 or a 403."""
        seen = {status for status in self.statuses if status != 429}
        return seen if seen and seen <= {401, 403} else None


# -- the spec ------------------------------------------------------------------------------


def _resolve(spec: Mapping[str, Any], node: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in node:
        target: Any = spec
        for part in str(node["$ref"]).removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _json_body(spec: Mapping[str, Any]) -> Mapping[str, Any]:
    content: Mapping[str, Any] = spec["paths"][PATH][METHOD.lower()]["requestBody"]["content"]
    return _resolve(spec, content[JSON_TYPE])


def key_header(spec: Mapping[str, Any]) -> str:
    """The header the spec's API key goes in (``x-api-key``)."""
    name: str = spec["components"]["securitySchemes"]["apiKey"]["name"]
    return name


def required_fields(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A start-session body's required fields as a tree: an object's own, or None for a leaf."""

    def walk(schema: Mapping[str, Any]) -> dict[str, Any]:
        properties = schema.get("properties", {})
        tree: dict[str, Any] = {}
        for name in schema.get("required", []):
            field = _resolve(spec, properties.get(name, {}))
            tree[name] = walk(field) if field.get("type") == "object" else None
        return tree

    return walk(_resolve(spec, _json_body(spec)["schema"]))


def _examples(spec: Mapping[str, Any]) -> list[tuple[str, Any]]:
    examples = _json_body(spec).get("examples", {})
    return [(name, _resolve(spec, example)["value"]) for name, example in examples.items()]


# -- which requests may start a session ----------------------------------------------------


class _RepeatedKey(ValueError):
    pass


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({key for key, _ in pairs}) != len(pairs):
        raise _RepeatedKey  # parsers disagree on which value wins
    return dict(pairs)


def _fits(value: Any, shape: dict[str, Any] | None) -> bool:
    if shape is None:  # a leaf: lenient servers coerce numbers and booleans to strings
        return value is not None and not isinstance(value, (list, dict))
    return isinstance(value, dict) and all(
        name in value and _fits(value[name], inner) for name, inner in shape.items()
    )


def may_start(request: httpx.Request, api_key: str, spec: Mapping[str, Any] | None = None) -> bool:
    """Whether a server lenient in every way the spec leaves open could start a session for it.

    True for a request to the start-session operation that carries `api_key` and whose body
    parses as a JSON object with every required field present and of a type a server could
    coerce; also, assuming the worst, for a JSON object with a repeated key. False exactly for
    requests the spec says must be refused.
    """
    spec = spec if spec is not None else load_spec()
    if request.method != METHOD or not request.url.path.endswith(PATH):
        return False
    if request.headers.get(key_header(spec)) != api_key:
        return False
    try:
        body = json.loads(request.content, object_pairs_hook=_no_repeated_keys)
    except _RepeatedKey:
        return True
    except (ValueError, RecursionError):
        return False
    return _fits(body, required_fields(spec))


# -- what safe mode sends ------------------------------------------------------------------


def _valid_body() -> dict[str, Any]:
    return {
        "avatario_face_id": DUMMY_NAME,
        "agent_id": DUMMY_NAME,
        "livekit": {"url": DUMMY_LIVEKIT_URL, "token": DUMMY_LIVEKIT_TOKEN},
    }


def _edited(body: dict[str, Any], path: tuple[str, ...], value: Any = None) -> bytes:
    """`body` as JSON with the field at `path` replaced by `value`, or removed when None."""
    copy = json.loads(json.dumps(body))
    node = copy
    for part in path[:-1]:
        node = node[part]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return json.dumps(copy).encode()


def _leaves(
    tree: dict[str, Any], prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], bool]]:
    """Every required field's path, parents first, and whether it is an object."""
    for name, inner in tree.items():
        yield (*prefix, name), inner is not None
        if inner is not None:
            yield from _leaves(inner, (*prefix, name))


def safe_requests(spec: Mapping[str, Any] | None = None) -> list[Refusal]:
    """Everything safe mode sends, in order; full mode sends it first too.

    Bodies carry a dummy LiveKit URL and token (`DUMMY_LIVEKIT_URL`, `DUMMY_LIVEKIT_TOKEN`).
    With the real key, no body holds every required field with a usable type.
    """
    spec = spec if spec is not None else load_spec()
    valid = _valid_body()
    text = json.dumps(valid).encode()
    unauthorized, malformed, invalid = frozenset({401}), frozenset({400}), frozenset({422})
    fields = list(_leaves(required_fields(spec)))
    refusals = [
        Refusal("no key", Key.NONE, JSON_TYPE, text, unauthorized),
        Refusal("a wrong key", Key.WRONG, JSON_TYPE, text, unauthorized),
        Refusal("an empty key", Key.EMPTY, JSON_TYPE, text, unauthorized),
        Refusal("a body that is not JSON", Key.REAL, JSON_TYPE, text[:40], malformed),
        Refusal("an empty body", Key.REAL, JSON_TYPE, b"", malformed),
        Refusal("a JSON array", Key.REAL, JSON_TYPE, b"[" + text + b"]", malformed),
        Refusal("JSON null", Key.REAL, JSON_TYPE, b"null", malformed),
        Refusal("an empty JSON object", Key.REAL, JSON_TYPE, b"{}", invalid),
    ]
    for path, _ in fields:
        body = _edited(valid, path)
        refusals.append(Refusal(f"no {'.'.join(path)}", Key.REAL, JSON_TYPE, body, invalid))
    for path, is_object in fields:
        kind, value = ("a string", DUMMY_LIVEKIT_URL) if is_object else ("an array", [DUMMY_NAME])
        body = _edited(valid, path, value)
        what = f"{'.'.join(path)} as {kind}"
        refusals.append(Refusal(what, Key.REAL, JSON_TYPE, body, invalid))
    # Without a required field too, so a server that ignores Content-Type still refuses it.
    missing = next((path for path, is_object in fields if is_object), fields[0][0])
    what = f"Content-Type text/plain (and no {'.'.join(missing)})"
    refusals.append(Refusal(what, Key.REAL, "text/plain", _edited(valid, missing), None))
    return refusals


# -- planning: every request built and classified before the first is sent ----------------


def _hand_built(
    refusal: Refusal,
    operation: schemathesis.APIOperation[Any, Any, Any, Any],
    spec: Mapping[str, Any],
    base_url: str,
    keys: Mapping[Key, str],
) -> Planned:
    headers = {"User-Agent": USER_AGENT, "Content-Type": refusal.content_type}
    if refusal.key is not Key.NONE:
        headers[key_header(spec)] = keys[refusal.key]
    request = httpx.Request(METHOD, base_url + PATH, headers=headers, content=refusal.body)
    return Planned(
        what=refusal.what,
        request=request,
        case=operation.Case(media_type=refusal.content_type),
        may_start=may_start(request, keys[Key.REAL], spec),
        expect=refusal.expect,
        any_refusal=refusal.expect is None,
    )


_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def _request(case: schemathesis.Case[Any], base_url: str) -> httpx.Request | None:
    """`case` as the exact request that will be sent, or None when HTTP cannot carry it."""
    sent = case.as_transport_kwargs(base_url=base_url)
    if set(sent) - {"method", "url", "headers", "params", "cookies", "json", "data"}:
        return None  # files, or another shape this operation does not have
    headers: list[tuple[bytes, bytes]] = []
    for name, value in dict(sent["headers"]).items():
        text = str(value)
        if not name or not set(name) <= _TOKEN or any(c in text for c in "\r\n\0"):
            return None
        try:
            headers.append((name.encode("ascii"), text.encode("latin-1")))
        except UnicodeEncodeError:
            return None
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
    return httpx.Request(
        str(sent["method"]),
        str(sent["url"]),
        params=sent.get("params") or None,
        headers=headers,
        cookies=sent.get("cookies") or None,
        content=content,
    )


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
        for name, example in _examples(spec):
            headers = {key_header(spec): api_key}  # generated cases get it from the config
            case = operation.Case(body=example, media_type=JSON_TYPE, headers=headers)
            request = _request(case, base_url)
            if request is not None:
                what = f"the spec's example {name!r}"
                planned.append(Planned(what, request, case, may_start(request, api_key, spec)))
        # GenerationMode(...), not .POSITIVE: mypy (checking for 3.10) cannot see it is an enum.
        kinds = [(GenerationMode("positive"), "valid"), (GenerationMode("negative"), "invalid")]
        for generation, label in kinds:
            cases = _draw(operation.as_strategy(generation_mode=generation), max_examples, seed)
            for number, case in enumerate(cases, start=1):
                request = _request(case, base_url)
                if request is not None:
                    what = f"generated {label} request {number}"
                    planned.append(Planned(what, request, case, may_start(request, api_key, spec)))
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


def _no_answer(planned: Planned, error: httpx.HTTPError, how: str) -> str:
    reason = safe_line(str(error) or type(error).__name__, ())
    tail = "; a session may have started" if planned.may_start else ""
    return f"{planned.what}: {how} ({type(error).__name__}: {reason}){tail}"


def execute(
    run: Plan,
    *,
    base_url: str,
    api_key: str,
    timeout: float,
    say: Callable[[str], None] = lambda line: None,
) -> Report:
    """Send the plan's requests in order and judge each answer; `say` hears a 2xx at once."""
    report = Report()
    started = time.monotonic()
    checked_key = False
    with own_client(httpx.Client, base_url, timeout) as http:
        for planned in run.requests:
            if planned.may_start and not checked_key:
                checked_key = True
                if report.only_auth_refusals():
                    report.stopped_unauthorized = True
                    break  # a wrong key: send nothing that could start a session
            try:
                response = http.send(planned.request)
            except httpx.TimeoutException as error:
                report.no_answer = (EXIT_TIMEOUT, _no_answer(planned, error, "no answer in time"))
                break
            except httpx.HTTPError as error:
                report.no_answer = (EXIT_CONNECTION, _no_answer(planned, error, "no response"))
                break
            report.sent += 1
            report.may_start_sent += planned.may_start
            status = response.status_code
            report.statuses[status] += 1
            if 200 <= status < 300 and planned.may_start:
                report.accepted += 1
            elif 200 <= status < 300:
                say(f"FAIL {planned.what}: HTTP {status}, but the spec says it must be refused")
                report.refused_2xx = report.refused_2xx or planned.what
                if run.mode is Mode.SAFE:
                    break
                continue
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
    loopback: bool


@contextlib.contextmanager
def target(url: str | None, *, allow_insecure_http: bool) -> Iterator[Target]:
    """The deployment at `url` (its key from AVATARIO_API_KEY), or an embedded fake."""
    if url is not None:
        base_url = resolve_base_url(url, allow_insecure_http=allow_insecure_http)
        api_key = resolve_api_key(None)
        loopback = is_loopback_host(httpx.URL(base_url).host)
        yield Target(base_url, api_key, base_url, embedded=False, loopback=loopback)
        return
    api_key = f"{DUMMY_NAME}-{secrets.token_hex(16)}"
    with run_fake_server(api_key=api_key) as server:
        label = f"the embedded fake Avatario at {server.url}"
        yield Target(server.url, api_key, label, embedded=True, loopback=True)


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
    """The whole command: plan, say what may start sessions, confirm, send, judge.

    Returns the exit code; `out` hears the report and `err` the one line of a failed run.
    Raises `AvatarioConfigError` for a missing key or a bad URL, before anything is sent.
    """
    seed = seed if seed is not None else secrets.randbits(64)
    with target(url, allow_insecure_http=allow_insecure_http) as where:
        mode = choose_mode(safe, embedded=where.embedded)
        if yes_start_sessions and mode is Mode.SAFE:
            err(
                "--yes-start-sessions confirms --full, and this run is --safe: add --full to "
                "send requests that may start sessions, or drop --yes-start-sessions"
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
        if mode is Mode.SAFE:
            out(f"safe mode against {where.label}")
            out(
                f"{total} requests; none may start a session: each must be refused (401 "
                "without the right key, 4xx for a body that cannot be a session), and the "
                "first 2xx stops the run"
            )
        else:
            out(f"full mode against {where.label} (seed {seed})")
            out(
                f"{total} requests; exactly {starting} may start a session (they carry the "
                f"key and a body with every required field): at most {starting} sessions; the "
                f"other {total - starting} must be refused"
            )
        if mode is Mode.FULL and starting and not where.loopback and not yes_start_sessions:
            err(
                f"--full would send {starting} requests that may start sessions (real "
                f"avatars) at {where.base_url}: add --yes-start-sessions to send them, or use "
                "--safe, which starts none"
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
        out(
            f"{report.may_start_sent} of them may have started a session; the deployment "
            f"accepted {report.accepted} (2xx)"
        )
    only = report.only_auth_refusals()
    if only is not None and report.refused_2xx is None:
        codes = " or ".join(str(s) for s in sorted(only))
        held_back = " (nothing that may start a session was sent)"
        err(
            f"every response was {codes}: is {API_KEY_ENV} the key of this deployment?"
            + (held_back if report.stopped_unauthorized else "")
        )
        return EXIT_UNAUTHORIZED
    for line in report.violations:
        out(f"FAIL {line}")
    if report.refused_2xx is not None:
        err(
            "the deployment accepted a request it must refuse "
            f"({report.refused_2xx}): a session may have started"
        )
        return EXIT_ACCEPTED
    if report.no_answer is not None:
        code, line = report.no_answer
        err(line)
        return code
    if report.violations:
        again = f"; --seed {run.seed} sends the same requests" if run.mode is Mode.FULL else ""
        err(f"{len(report.violations)} broken promises (listed above{again})")
        return EXIT_FAILED
    out("passed: every answer kept the contract")
    return EXIT_PASSED
