"""A spec-faithful fake Avatario: an ASGI app (Starlette) driven by openapi.yaml.

Every request is checked against the bundled spec: a missing or wrong ``x-api-key`` is a 401,
a body whose ``Content-Type`` is not ``application/json`` a 415, a body that is not a JSON
object a 400, one that breaks the request schema (or a bad ``Idempotency-Key``) a 422, each
with the spec's error body. Valid requests start a session and get a 200 with a
``session_id``; every response carries ``x-request-id``. Requests are recorded (the API key
redacted).

``Idempotency-Key`` is honoured by default: the same key and body return the same session
without starting another, the same key with another body is a 409. With
``honour_idempotency_key=False`` the fake plays a server that ignores the header (as nothing
shows Avatario honours it): every valid request starts a new session, whatever its key, so a
test can count the avatars a retry would really have started.

Given ``livekit_api_key`` and ``livekit_api_secret``, the fake also verifies the avatar's
LiveKit token (``livekit.token``) as LiveKit would: an HS256 JWT signed with the secret, issued
by the key (``iss``), not expired (``exp``) nor early (``nbf``), naming an identity (``sub``),
granting ``video.roomJoin`` for a ``video.room``, of participant ``kind`` ``"agent"``, with the
attribute ``lk.publish_on_behalf`` equal to the request's ``agent_id``. A bad token is a 422
whose message names what is wrong (never the token, a claim's value or the secret). Without
both, tokens are not checked. The secret is kept only to check signatures: never recorded,
logged or shown in a repr.

Scripted faults (see `faults`) are played before any of that.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import hashlib
import itertools
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

import attrs
import jsonschema
import yaml
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ._livekit_token import TokenProblem, verify_avatar_token
from ._transport import close_connection, reset_connection
from .faults import Fault, parse_faults

REDACTED = "[redacted]"
MAX_BODY_BYTES = 1024 * 1024
MAX_STALL_SECONDS = 300.0
SPEC_PATH_PREFIX = "/api/sdk"
JSON_MEDIA_TYPE = "application/json"
#: Faults that end the exchange without a response (the record's status is None).
_NO_RESPONSE = frozenset({"stall", "reset", "idle-close"})


def _spec_text() -> str:
    bundled = resources.files("avatario_wrapper.testing").joinpath("openapi.yaml")
    if bundled.is_file():  # an installed wheel carries its own copy
        return bundled.read_text(encoding="utf-8")
    # A source checkout (editable install): the one spec at the repository root.
    return (Path(__file__).resolve().parents[2] / "openapi.yaml").read_text(encoding="utf-8")


@functools.cache
def load_spec() -> dict[str, Any]:
    """openapi.yaml, parsed once."""
    spec: dict[str, Any] = yaml.safe_load(_spec_text())
    return spec


@functools.cache
def _validator(pointer: str) -> jsonschema.protocols.Validator:
    spec = load_spec()
    node: Any = spec
    for part in pointer.split("/"):
        node = node[part]
    schema = {**node, "components": spec["components"]}
    cls = jsonschema.Draft202012Validator
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _request_validator() -> jsonschema.protocols.Validator:
    return _validator("components/schemas/StartSessionRequest")


def _idempotency_validator() -> jsonschema.protocols.Validator:
    return _validator("components/parameters/IdempotencyKey/schema")


@attrs.frozen
class RecordedRequest:
    """One request as the fake saw it. The API key is never kept."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes = attrs.field(repr=False)  # holds the LiveKit token: kept out of reprs
    time: float
    fault: str | None
    status: int | None  # None when no response was sent (stall, reset, lost, *-close)
    #: The client's address and port ("127.0.0.1:50123"): one per connection, so two requests
    #: with the same `client` came over one kept-alive connection.
    client: str | None = None

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


@attrs.define
class _Session:
    session_id: str
    body_digest: str
    payload: dict[str, Any]


def _first_error(validator: jsonschema.protocols.Validator, instance: Any) -> str | None:
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "body"
    message = error.message
    if len(message) > 300:
        message = message[:300] + "…"
    return f"{where}: {message}"


class FakeAvatario:
    """The fake service. `app` is the ASGI application; the rest is for assertions.

    Thread-safe: tests read `requests` and `sessions` while a server thread serves.
    `honour_idempotency_key` and the LiveKit key and secret are described in the module's
    docstring.
    """

    def __init__(
        self,
        api_key: str = "test-key",
        faults: str | Iterable[Fault] = "",
        *,
        honour_idempotency_key: bool = True,
        livekit_api_key: str | None = None,
        livekit_api_secret: str | None = None,
    ) -> None:
        if (livekit_api_key is None) != (livekit_api_secret is None):
            raise ValueError(
                "give both livekit_api_key and livekit_api_secret to verify tokens, or neither"
            )
        self.api_key = api_key
        self.honour_idempotency_key = honour_idempotency_key
        self.livekit_api_key = livekit_api_key
        self._livekit_api_secret = livekit_api_secret
        self._lock = threading.Lock()
        self._faults: deque[Fault] = deque()
        self._requests: list[RecordedRequest] = []
        self._sessions: dict[str, _Session] = {}  # by session id
        self._by_key: dict[str, _Session] = {}
        self._ids = itertools.count(1)
        self.add_faults(faults)
        # Served at the root (base_url = server.url) and under the production path prefix
        # (base_url = server.url + "/api/sdk"), so either base URL works.
        routes = [
            Route(prefix + "/start-session", self._start_session, methods=["POST"])
            for prefix in ("", SPEC_PATH_PREFIX)
        ]
        self.app: Starlette = Starlette(routes=routes)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    def __repr__(self) -> str:
        return (
            f"FakeAvatario(honour_idempotency_key={self.honour_idempotency_key!r}, "
            f"verifies_tokens={self.verifies_tokens!r})"
        )

    @property
    def verifies_tokens(self) -> bool:
        """True when the fake checks `livekit.token` (it was given a LiveKit key and secret)."""
        return self._livekit_api_secret is not None

    # -- for tests -------------------------------------------------------------------------

    def add_faults(self, faults: str | Iterable[Fault]) -> None:
        """Queue more fault steps (a script string or `Fault` objects)."""
        steps = parse_faults(faults) if isinstance(faults, str) else list(faults)
        with self._lock:
            self._faults.extend(steps)

    def clear_faults(self) -> None:
        """Drop every fault step not yet played."""
        with self._lock:
            self._faults.clear()

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def sessions(self) -> list[dict[str, Any]]:
        """Every session started, in order: ``{"session_id", "payload"}`` (token redacted)."""
        with self._lock:
            return [
                {"session_id": s.session_id, "payload": s.payload} for s in self._sessions.values()
            ]

    def reset(self) -> None:
        """Forget requests, sessions, idempotency keys and pending faults."""
        with self._lock:
            self._faults.clear()
            self._requests.clear()
            self._sessions.clear()
            self._by_key.clear()

    # -- the endpoint ----------------------------------------------------------------------

    def _next_fault(self) -> Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def _record(
        self, request: Request, body: bytes, fault: Fault | None, status: int | None
    ) -> None:
        headers = {
            k: (REDACTED if k.lower() == "x-api-key" else v) for k, v in request.headers.items()
        }
        entry = RecordedRequest(
            method=request.method,
            path=request.url.path,
            headers=headers,
            body=body,
            time=time.time(),
            fault=fault.describe() if fault else None,
            status=status,
            client=f"{request.client.host}:{request.client.port}" if request.client else None,
        )
        with self._lock:
            self._requests.append(entry)

    async def _start_session(self, request: Request) -> Response:
        request_id = f"req_{uuid.uuid4().hex[:16]}"
        try:
            body = await self._read_body(request)
        except ClientDisconnect:  # the client gave up before its body arrived: no one to answer
            self._record(request, b"", None, None)
            return Response(status_code=400)
        fault = self._next_fault()
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)
        what = fault.what if fault is not None else "ok"
        if what in _NO_RESPONSE:  # the request is not served: no session
            self._record(request, body, fault, None)
            if what == "stall":
                await self._stall(request)
            else:
                await self._drop(request, clean=what == "idle-close")
            return Response(status_code=503)  # the client has gone; nobody reads this
        response = self._fault_response(fault, request_id) if fault else None
        if response is None:
            response = self._serve(request, body, request_id)
        if what in ("lost", "lost-close"):  # served, but the client never sees the response
            self._record(request, body, fault, None)
            await self._drop(request, clean=what == "lost-close")
            return response
        response.headers["x-request-id"] = request_id
        self._record(request, body, fault, response.status_code)
        return response

    async def _drop(self, request: Request, *, clean: bool) -> None:
        """End the connection without a response: a FIN when `clean`, else a reset."""
        if clean:
            close_connection(request.scope)
        else:
            reset_connection(request.scope)
        # Let the server see the connection go, so it does not try to answer on it.
        await asyncio.sleep(0)

    async def _read_body(self, request: Request) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    async def _stall(self, request: Request) -> None:
        deadline = time.monotonic() + MAX_STALL_SECONDS
        # Starlette only offers a non-blocking disconnect check, so poll it.
        while time.monotonic() < deadline and not await request.is_disconnected():  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    def _fault_response(self, fault: Fault, request_id: str) -> Response | None:
        if fault.what in ("ok", "lost", "lost-close"):
            return None
        if fault.what == "malformed":
            return Response(b"<html>this is not JSON</html>", 200, media_type="text/html")
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
            return JSONResponse({"session_id": self._new_id()}, status, headers=headers)
        return _error(status, "injected_fault", f"fault script: HTTP {status}", request_id, headers)

    def _serve(self, request: Request, body: bytes, request_id: str) -> Response:
        if request.headers.get("x-api-key") != self.api_key:
            return _error(401, "unauthorized", "Missing or invalid API key.", request_id)
        media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type != JSON_MEDIA_TYPE:
            return _error(
                415,
                "unsupported_media_type",
                f"The body must be sent as {JSON_MEDIA_TYPE} (Content-Type).",
                request_id,
            )
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            return _error(400, "bad_request", "The body is not JSON.", request_id)
        if not isinstance(payload, dict):
            return _error(400, "bad_request", "The body is not a JSON object.", request_id)
        problem = _first_error(_request_validator(), payload)
        key = request.headers.get("idempotency-key") if self.honour_idempotency_key else None
        if problem is None and key is not None:
            key_problem = _first_error(_idempotency_validator(), key)
            if key_problem is not None:
                problem = f"Idempotency-Key: {key_problem.split(': ', 1)[1]}"
        if problem is None:
            problem = self._token_problem(payload)
        if problem is not None:
            return _error(422, "validation_error", problem, request_id)
        digest = hashlib.sha256(
            json.dumps(_canonical(payload), sort_keys=True).encode()
        ).hexdigest()
        with self._lock:
            session = self._by_key.get(key) if key is not None else None
            if session is not None and session.body_digest != digest:
                conflict = True
            else:
                conflict = False
                if session is None:
                    session = _Session(self._new_id(), digest, _redacted(payload))
                    self._sessions[session.session_id] = session
                    if key is not None:
                        self._by_key[key] = session
        if conflict:
            return _error(
                409,
                "conflict",
                "This Idempotency-Key was used with a different request.",
                request_id,
            )
        assert session is not None
        return JSONResponse(
            {
                "session_id": session.session_id,
                "status": "starting",
                "avatario_face_id": payload["avatario_face_id"],
                "agent_id": payload["agent_id"],
            }
        )

    def _token_problem(self, payload: dict[str, Any]) -> str | None:
        if self.livekit_api_key is None or self._livekit_api_secret is None:
            return None
        try:
            verify_avatar_token(
                payload["livekit"]["token"],
                api_key=self.livekit_api_key,
                api_secret=self._livekit_api_secret,
                agent_id=payload["agent_id"],
                now=time.time(),
            )
        except TokenProblem as problem:
            return f"livekit/token: the LiveKit token is not valid for the avatar: {problem}"
        return None

    def _new_id(self) -> str:
        return f"sess_{next(self._ids):06d}_{uuid.uuid4().hex[:8]}"


def _canonical(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload with the spec's defaults filled in, so equal requests compare equal."""
    properties = load_spec()["components"]["schemas"]["StartSessionRequest"]["properties"]
    defaults = {name: p["default"] for name, p in properties.items() if "default" in p}
    canonical = {**defaults, **payload}
    if canonical.get("custom_background_url") is None:
        canonical.pop("custom_background_url", None)
    return canonical


def _redacted(payload: dict[str, Any]) -> dict[str, Any]:
    livekit = dict(payload["livekit"])
    livekit["token"] = REDACTED
    return {**payload, "livekit": livekit}


def _error(
    status: int,
    code: str,
    message: str,
    request_id: str,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        {"error": code, "message": message, "request_id": request_id},
        status_code=status,
        headers=headers,
    )
