"""A spec-driven fake Avatario: an ASGI app that serves every operation of openapi.yaml.

How a request is served, in order:

1. **Route.** The spec's path templates, at the root and under each server URL's path
   (``/api/sdk`` for the bundled spec). A path parameter matches one whole segment of any
   characters once percent-decoded. An unknown path is a JSON 404; a known path with another
   method a JSON 405 with ``Allow``.
2. **Faults** (see `avatario_wrapper.testing.faults`) are played before anything else.
3. **Checks**, from the spec: the security scheme (a missing or wrong ``x-api-key`` is a 401),
   the body's ``Content-Type`` (415 unless ``application/json``), its JSON (400 when it is not
   JSON, or not the object the schema wants), its schema (422), the path, query and header
   parameters against their schemas (422).
4. **Answer.** An operation with a handler gets the handler's answer; any other the spec's
   example of its documented 2xx response (else a minimal instance of that response's schema).

Every answer is JSON with an ``x-request-id`` header, errors in the spec's Error shape
(``{"error", "message", "request_id"}``), unknown routes and the fake's own failures (a JSON
500) included; only the ``malformed`` fault sends anything else. Every request is recorded
(`FakeAvatario.requests`) with its operation, route, fault and status, and no credential: the
fake's key and LiveKit secret, and any key the client presented, are redacted from its path,
query string and headers. A request whose ``Host`` does not name the fake is a 421, before
anything else (see `avatario_wrapper.testing._host`: a guard against DNS rebinding).

**Stateful operations.** Start-session (``startSession``) has a built-in handler: a valid
request starts a session (`FakeAvatario.sessions`) and gets a 200 with a ``session_id``.
``Idempotency-Key`` is honoured by default: the same key and body return the same session
without starting another, the same key with another body is a 409. With
``honour_idempotency_key=False`` the fake plays a server that ignores the header (as nothing
shows Avatario honours it; it is not even validated): every valid request starts a new
session, whatever its key, so a test can count the avatars a retry would really have started.
Another operation gets state through the public hook
``FakeAvatario.register_handler(operation_id, handler)``: the handler receives an
`OperationRequest` that passed every check and returns an `OperationResponse` (see
`avatario_wrapper.testing._handlers`); it replaces the spec's example answer for that
operation only, faults and checks still apply.

**LiveKit.** Given ``livekit_api_key`` and ``livekit_api_secret``, the fake verifies the
avatar's LiveKit token (``livekit.token``) as LiveKit would: an HS256 JWT signed with the
secret, issued by the key (``iss``), not expired (``exp``) nor early (``nbf``), naming an
identity (``sub``), granting ``video.roomJoin`` for a ``video.room``, of participant ``kind``
``"agent"``, with the attribute ``lk.publish_on_behalf`` equal to the request's ``agent_id``.
A bad token is a 422 whose message names what is wrong (never the token, a claim's value or
the secret). Without both, tokens are not checked. The secret is kept only to check
signatures: never recorded, logged or shown in a repr. ``on_session_started(listener)``
registers a function called with a `SessionStarted` record each time start-session starts a
NEW session (the avatar's identity, name and room read from the token), in the thread that
serves the request: keep it short, hop to your own loop with ``loop.call_soon_threadsafe``.
A listener that raises is logged and kept in ``listener_errors``; the response goes out.

**Control.** With ``control=True`` the fake also serves ``/_fake/faults`` and
``/_fake/sessions`` (see `avatario_wrapper.testing._control`) so that a process that did not
start it can change its faults and count its sessions: loopback clients with the API key
only, never part of the spec's routes.
"""

from __future__ import annotations

import asyncio
import copy
import email.utils
import inspect
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs

import attrs

from .._text import REDACTED, one_line, redact
from ._checks import (
    Inputs,
    Problem,
    body_problem,
    credential_headers,
    credential_problem,
    parameter_problem,
    redacted_query,
)
from ._control import CONTROL_ROUTES, control_answer
from ._exchange import (
    MAX_BODY_BYTES,
    AsgiExchange,
    Outgoing,
    drop,
    error_reply,
    json_reply,
    lifespan,
)
from ._fault_plan import FaultPlan
from ._handlers import Handler, OperationRequest, OperationResponse, error_body
from ._host import host_name, is_addressed_to_us
from ._router import Match, Router, request_segments
from ._spec import ApiSpec, SpecOperation, bundled_api
from ._start_session import OPERATION_ID as START_SESSION
from ._start_session import SessionListener, StartSessionHandler
from .faults import SERVED_THEN_LOST, Fault

MAX_STALL_SECONDS = 300.0
#: Faults that end the exchange without a response (the record's status is None).
_NO_RESPONSE = frozenset({"stall", "reset", "idle-close"})
_IDEMPOTENCY_KEY = "idempotency-key"

logger: logging.Logger = logging.getLogger("avatario_wrapper.testing")


@attrs.frozen
class RecordedRequest:
    """One request as the fake saw it. No credential is kept: not the fake's key or LiveKit
    secret, nor a key the client sent, in a header, the path or the query string (the body,
    kept out of reprs, is as sent)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes = attrs.field(repr=False)  # holds the LiveKit token: kept out of reprs
    time: float
    fault: str | None
    status: int | None  # None when no response was sent (stall, reset, lost*, idle-close)
    #: The client's address and port ("127.0.0.1:50123"): one per connection, so two requests
    #: with the same `client` came over one kept-alive connection.
    client: str | None = None
    #: The spec's operationId it was routed to (None: an unknown route or method).
    operation_id: str | None = None
    #: The spec's path template it matched, e.g. "/start-session" (None: an unknown path).
    route: str | None = None
    #: The ``x-request-id`` it was answered with.
    request_id: str | None = None
    #: The query string, as sent (credentials in it redacted).
    query: str = ""

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


class FakeAvatario:
    """The fake service: an ASGI application (call it, or pass `app`), plus what it saw.

    Thread-safe: tests read `requests` and `sessions`, and change faults, while a server
    thread serves. The options are described in the module's docstring; `spec` is an OpenAPI
    document as a dict (default: the bundled openapi.yaml); `faults` a script or `Fault`
    objects (None: none); `seed` seeds the random faults (None: a random seed, see `seed`).
    """

    def __init__(
        self,
        api_key: str = "test-key",
        faults: str | Iterable[Fault] | None = "",
        *,
        honour_idempotency_key: bool = True,
        livekit_api_key: str | None = None,
        livekit_api_secret: str | None = None,
        spec: Mapping[str, Any] | None = None,
        seed: int | None = None,
        control: bool = False,
    ) -> None:
        if (livekit_api_key is None) != (livekit_api_secret is None):
            raise ValueError(
                "give both livekit_api_key and livekit_api_secret to verify tokens, or neither"
            )
        self.api_key = api_key
        #: What is never recorded, reported or logged, even in a path or a query string.
        self._secrets = tuple(s for s in (api_key, livekit_api_secret) if s)
        self._allowed_hosts: set[str] = set()
        self.honour_idempotency_key = honour_idempotency_key
        self.livekit_api_key = livekit_api_key
        self.control = control
        self._verifies_tokens = livekit_api_secret is not None
        self._api = bundled_api() if spec is None else ApiSpec(spec)
        self._router = Router(self._api.operations.values(), self._api.prefixes)
        self._ignored = frozenset() if honour_idempotency_key else frozenset({_IDEMPOTENCY_KEY})
        self._plan = FaultPlan(self._api.operations, seed=seed)
        self._plan.add(faults)
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._handlers: dict[str, Handler] = {}
        #: Every ``*_id`` value a 2xx of the fake's handlers named (a session id, say): the
        #: ids a path may name without a handler of its own (`_from_the_spec`).
        self._issued_ids: set[str] = set()
        start = self._api.operations.get(START_SESSION)
        self._start_session = StartSessionHandler(
            body_schema=start.body.schema if start and start.body else {},
            honour_idempotency_key=honour_idempotency_key,
            livekit_api_key=livekit_api_key,
            livekit_api_secret=livekit_api_secret,
        )
        if start is not None:
            self._handlers[START_SESSION] = self._start_session

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":  # a websocket: refused before it is accepted
            await send({"type": "websocket.close", "code": 1008})
            return
        exchange = AsgiExchange(scope, receive, send)
        try:
            await self._serve(exchange)
        except Exception:
            path = redact(scope["path"], self._secrets_of(exchange))
            logger.exception("the fake Avatario failed on %s %s", exchange.method, one_line(path))
            if not exchange.started:
                answer = error_reply(
                    500, "internal_error", "The fake failed; see its log.", exchange.request_id
                )
                self._record(exchange, answer.status)
                await exchange.respond(answer)

    @property
    def app(self) -> FakeAvatario:
        """The ASGI application: the fake itself (kept for callers that pass ``fake.app``)."""
        return self

    def __repr__(self) -> str:
        return (
            f"FakeAvatario(honour_idempotency_key={self.honour_idempotency_key!r}, "
            f"verifies_tokens={self.verifies_tokens!r}, control={self.control!r})"
        )

    @property
    def verifies_tokens(self) -> bool:
        """True when the fake checks `livekit.token` (it was given a LiveKit key and secret)."""
        return self._verifies_tokens

    @property
    def spec(self) -> dict[str, Any]:
        """A copy of the OpenAPI document the fake serves (to extend for another fake)."""
        return copy.deepcopy(dict(self._api.document))

    @property
    def operation_ids(self) -> tuple[str, ...]:
        """The operationIds of the spec, each served at its route."""
        return tuple(sorted(self._api.operations))

    # -- hooks ---------------------------------------------------------------------------------

    def allow_host(self, name: str) -> None:
        """Answer requests whose ``Host`` is `name` too (with the port they came in on).

        Without it the fake answers only to ``localhost``, ``127.0.0.1``, ``[::1]`` and the
        address a connection came in on: any other ``Host`` is a 421 (a web page using DNS
        rebinding to reach a fake on this machine sends its own name). `run_fake_server` allows
        the host it binds.
        """
        self._allowed_hosts.add(host_name(name))

    def register_handler(self, operation_id: str, handler: Handler) -> None:
        """Answer `operation_id` with `handler` instead of the spec's example.

        The handler gets an `OperationRequest` (checked against the spec) and returns an
        `OperationResponse`; it may be a coroutine function. Registering ``startSession``
        replaces the built-in sessions (and their listeners).
        """
        if operation_id not in self._api.operations:
            known = ", ".join(self.operation_ids) or "none"
            raise ValueError(
                f"the spec has no operation {operation_id!r} (its operations: {known})"
            )
        if not callable(handler):
            raise TypeError("a handler is a function of an OperationRequest")
        self._handlers[operation_id] = handler

    def on_session_started(self, listener: SessionListener) -> Callable[[], None]:
        """Call `listener(SessionStarted)` whenever start-session starts a NEW session.

        It runs in the thread that serves the request (the server's thread), before the
        response is sent. Returns a function that removes the listener.
        """
        if not callable(listener):
            raise TypeError("a listener is a function of a SessionStarted record")
        return self._start_session.add_listener(listener)

    @property
    def listener_errors(self) -> list[BaseException]:
        """What session-started listeners raised (each was logged; the responses went out)."""
        return self._start_session.listener_errors

    # -- faults ---------------------------------------------------------------------------------

    def set_faults(self, faults: str | Iterable[Fault] | None, *, seed: int | None = None) -> None:
        """Replace every fault (steps and chances) with `faults`; the random draws restart from
        `seed` (or the current seed)."""
        self._plan.replace(faults, seed=seed)

    def add_faults(self, faults: str | Iterable[Fault] | None) -> None:
        """Queue more fault steps and add more chances (a script string or `Fault` objects)."""
        self._plan.add(faults)

    def clear_faults(self) -> None:
        """Drop every fault step not yet played, and every chance."""
        self._plan.clear()

    @property
    def faults(self) -> str:
        """The faults left, as a script: the pending steps in order, then the chances."""
        return self._plan.script

    @property
    def pending_faults(self) -> int:
        """How many fault steps are left to play (chances are not counted)."""
        return self._plan.pending

    @property
    def seed(self) -> int:
        """The seed of the random faults (chosen at random when none was given)."""
        return self._plan.seed

    # -- what it saw ----------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def sessions(self) -> list[dict[str, Any]]:
        """Every session started, in order: ``{"session_id", "payload"}`` (token redacted)."""
        return self._start_session.sessions

    def reset(self) -> None:
        """Forget requests, sessions, idempotency keys and faults (steps and chances)."""
        self._plan.clear()
        with self._lock:
            self._requests.clear()
        self._start_session.reset()

    # -- serving ---------------------------------------------------------------------------------

    async def _serve(self, exchange: AsgiExchange) -> None:
        body = await exchange.read_body()
        if body is None:  # the client gave up before its body arrived: no one to answer
            self._record(exchange, None)
            return
        exchange.body = body
        if not is_addressed_to_us(
            exchange.scope, exchange.headers.get("host"), self._allowed_hosts
        ):
            answer = error_reply(
                421,
                "misdirected_request",
                "The fake answers only to Host localhost, 127.0.0.1, [::1] or the address it "
                "listens on, with its port (a guard against DNS rebinding); allow another name "
                "with FakeAvatario.allow_host (avatario fake-server --allow-host NAME).",
                exchange.request_id,
            )
            self._record(exchange, answer.status)
            await exchange.respond(answer)
            return
        segments = request_segments(exchange.scope)
        if self.control and segments in CONTROL_ROUTES:  # never recorded nor faulted
            await exchange.respond(json_reply(self._control_answer(exchange, segments)))
            return
        exchange.match = match = self._router.match(exchange.method, segments)
        if match.operation is None:
            answer = self._no_operation(match, exchange)
            self._record(exchange, answer.status)
            await exchange.respond(answer)
            return
        await self._serve_operation(exchange, match, match.operation)

    async def _serve_operation(
        self, exchange: AsgiExchange, match: Match, op: SpecOperation
    ) -> None:
        exchange.fault = fault = self._plan.take(op.operation_id)
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)
        what = fault.what if fault is not None else "ok"
        if what in _NO_RESPONSE:  # the request is not served: no session
            self._record(exchange, None)
            if what == "stall":
                await self._stall(exchange)
            else:
                await drop(exchange, clean=what == "idle-close")
            return
        answer = self._fault_answer(fault, op, exchange.request_id) if fault else None
        if answer is None:
            answer = await self._answer(exchange, match, op)
        if what in SERVED_THEN_LOST:  # served, but the client never sees the response
            self._record(exchange, None)
            if what == "lost-stall":
                await self._stall(exchange)
            else:
                await drop(exchange, clean=what == "lost-close")
            return
        self._record(exchange, answer.status)
        await exchange.respond(answer)

    async def _answer(self, exchange: AsgiExchange, match: Match, op: SpecOperation) -> Outgoing:
        body = exchange.body
        query = parse_qs(
            exchange.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True
        )
        inputs = Inputs(exchange.headers, query, match.path_params, body)
        value, problem = None, credential_problem(op, inputs, self.api_key)
        if problem is None and len(body) > MAX_BODY_BYTES:
            problem = Problem(413, "payload_too_large", "The body is larger than 1 MiB.")
        if problem is None:
            value, problem = body_problem(op.body, inputs)
        params: dict[str, Any] = {}
        if problem is None:
            params, problem = parameter_problem(op, inputs, self._ignored)
        if problem is not None:
            return _problem_answer(problem, exchange.request_id)
        documented = OperationResponse(
            op.success.status, op.success.body if op.success.has_body else None
        )
        handler = self._handlers.get(op.operation_id)
        if handler is None:
            return json_reply(self._from_the_spec(op, match.path_params, documented, exchange))
        hidden = credential_headers(op)
        request = OperationRequest(
            operation_id=op.operation_id,
            method=exchange.method,
            path=exchange.scope.get("path", ""),
            route=op.route,
            path_params=dict(match.path_params),
            params=params,
            headers={k: v for k, v in exchange.headers.items() if k not in hidden},
            body=body,
            json=value,
            request_id=exchange.request_id,
            client=exchange.client,
            documented=documented,
        )
        response = handler(request)
        if inspect.isawaitable(response):
            response = await response
        if not isinstance(response, OperationResponse):
            raise TypeError(
                f"the handler of {op.operation_id} returned {type(response).__name__}, "
                "not an OperationResponse"
            )
        if 200 <= response.status < 300 and isinstance(response.body, dict):
            self._issued_ids.update(
                value
                for key, value in response.body.items()
                if key.endswith("_id") and key != "request_id" and isinstance(value, str)
            )
        return json_reply(response)

    def _from_the_spec(
        self,
        op: SpecOperation,
        path_params: Mapping[str, str],
        documented: OperationResponse,
        exchange: AsgiExchange,
    ) -> OperationResponse:
        """The answer of an operation with no handler: the spec's example, for ids the fake
        issued (or the example's own); the spec's 404 for a path ``*_id`` it never issued
        (where a 404 is documented), as a server with state would answer."""
        example = documented.body if isinstance(documented.body, dict) else {}
        for name, value in path_params.items():
            known = value in self._issued_ids or example.get(name) == value
            if name.endswith("_id") and not known and 404 in op.answers:
                return OperationResponse(
                    404,
                    error_body(
                        "not_found", f"No {name} {value!r} was issued here.", exchange.request_id
                    ),
                )
        named = {k: v for k, v in path_params.items() if k in example}
        if named:  # the example names the id the path names: this one
            return OperationResponse(documented.status, {**example, **named})
        return documented

    def _no_operation(self, match: Match, exchange: AsgiExchange) -> Outgoing:
        if match.allowed:
            allowed = ", ".join(match.allowed)
            return error_reply(
                405,
                "method_not_allowed",
                f"{exchange.method} is not allowed here; this path takes {allowed}.",
                exchange.request_id,
                allow=allowed,
            )
        return error_reply(404, "not_found", "No such route in the spec.", exchange.request_id)

    def _fault_answer(self, fault: Fault, op: SpecOperation, request_id: str) -> Outgoing | None:
        if fault.what == "ok" or fault.what in SERVED_THEN_LOST:
            return None
        if fault.what == "malformed":
            return Outgoing(200, b"<html>this is not JSON</html>", "text/html")
        status = fault.status
        assert status is not None
        headers: dict[str, str] = {}
        if fault.retry_after is not None:
            value = fault.retry_after
            if value.startswith("date+"):
                value = email.utils.formatdate(time.time() + float(value[5:]), usegmt=True)
            headers["Retry-After"] = value
        if fault.retry_after_ms is not None:
            headers["retry-after-ms"] = fault.retry_after_ms
        if 200 <= status < 300:
            documented = op.answer_for(status)
            body = documented.body if documented.has_body else None
            return json_reply(OperationResponse(status, body, headers))
        source = "fault script" if fault.chance is None else "random fault"
        return error_reply(
            status, "injected_fault", f"{source}: HTTP {status}", request_id, **headers
        )

    def _control_answer(self, exchange: AsgiExchange, segments: list[str]) -> OperationResponse:
        return control_answer(
            segments=segments,
            method=exchange.method,
            client_host=exchange.client_host,
            headers=exchange.headers,
            query_string=exchange.scope.get("query_string", b""),
            body=exchange.body,
            api_key=self.api_key,
            plan=self._plan,
            sessions=lambda: self.sessions,
            request_id=exchange.request_id,
        )

    async def _stall(self, exchange: AsgiExchange) -> None:
        """Answer nothing until the client leaves (at most MAX_STALL_SECONDS, then reset)."""
        try:
            await asyncio.wait_for(exchange.wait_for_disconnect(), MAX_STALL_SECONDS)
        except asyncio.TimeoutError:
            await drop(exchange, clean=False)

    def _secrets_of(self, exchange: AsgiExchange) -> tuple[str, ...]:
        """What must not be kept from `exchange`: the fake's own secrets and every credential
        the client presented (a wrong key may be a real one)."""
        match = exchange.match
        presented: list[str] = []
        for name in credential_headers(match.operation if match is not None else None):
            value = exchange.headers.get(name)
            if value:
                presented += [value, value.partition(" ")[2]]  # "Bearer <token>" too
        return (*self._secrets, *presented)

    def _record(self, exchange: AsgiExchange, status: int | None) -> None:
        """Keep what the fake saw of `exchange` and answered (`status`; None: nothing), every
        credential redacted wherever it was put."""
        match = exchange.match
        op = match.operation if match is not None else None
        hidden = credential_headers(op)
        secrets = self._secrets_of(exchange)
        query_string = exchange.scope.get("query_string", b"").decode("latin-1")
        entry = RecordedRequest(
            method=exchange.method,
            path=redact(exchange.scope.get("path", ""), secrets),
            headers={
                k: (REDACTED if k in hidden else redact(v, secrets))
                for k, v in exchange.headers.items()
            },
            body=exchange.body,
            time=time.time(),
            fault=exchange.fault.describe() if exchange.fault else None,
            status=status,
            client=exchange.client,
            operation_id=op.operation_id if op is not None else None,
            route=match.route if match is not None else None,
            request_id=exchange.request_id,
            query=redacted_query(op, query_string, secrets),
        )
        with self._lock:
            self._requests.append(entry)


def _problem_answer(problem: Problem, request_id: str) -> Outgoing:
    return error_reply(problem.status, problem.code, problem.message, request_id)
