"""A spec-faithful fake Avatario: an ASGI app (Starlette) driven by openapi.yaml.

Every request is checked against the bundled spec: a missing or wrong ``x-api-key`` is a 401,
a body that is not a JSON object a 400, one that breaks the request schema (or a bad
``Idempotency-Key``) a 422, each with the spec's error body. Valid requests start a session
and get a 200 with a ``session_id``; every response carries ``x-request-id``. Requests are
recorded (the key redacted) and ``Idempotency-Key`` is honoured: the same key and body return
the same session without starting another, the same key with another body is a 409.
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

from ._transport import reset_connection
from .faults import Fault, parse_faults

REDACTED = "[redacted]"
MAX_BODY_BYTES = 1024 * 1024
MAX_STALL_SECONDS = 300.0
SPEC_PATH_PREFIX = "/api/sdk"


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
    status: int | None  # None when no response was sent (stall, reset)

    def json(self) -> Any:
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
    """

    def __init__(self, api_key: str = "test-key", faults: str | Iterable[Fault] = "") -> None:
        self.api_key = api_key
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
        self.app = Starlette(routes=routes)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    # -- for tests -------------------------------------------------------------------------

    def add_faults(self, faults: str | Iterable[Fault]) -> None:
        """Queue more fault steps (a script string or `Fault` objects)."""
        steps = parse_faults(faults) if isinstance(faults, str) else list(faults)
        with self._lock:
            self._faults.extend(steps)

    def clear_faults(self) -> None:
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
        if fault is not None and fault.what in ("stall", "reset"):
            self._record(request, body, fault, None)
            if fault.what == "reset":
                reset_connection(request.scope)
                return Response(status_code=500)  # never reaches the client
            await self._stall(request)
            return Response(status_code=503)  # the client has gone; nobody reads this
        response = self._fault_response(fault, request_id) if fault else None
        if response is None:
            response = self._serve(request, body, request_id)
        if fault is not None and fault.what == "lost":
            self._record(request, body, fault, None)
            reset_connection(request.scope)
            return response  # served, but the client never sees it
        response.headers["x-request-id"] = request_id
        self._record(request, body, fault, response.status_code)
        return response

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
        if fault.what in ("ok", "lost"):
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
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            return _error(400, "bad_request", "The body is not JSON.", request_id)
        if not isinstance(payload, dict):
            return _error(400, "bad_request", "The body is not a JSON object.", request_id)
        problem = _first_error(_request_validator(), payload)
        key = request.headers.get("idempotency-key")
        if problem is None and key is not None:
            key_problem = _first_error(_idempotency_validator(), key)
            if key_problem is not None:
                problem = f"Idempotency-Key: {key_problem.split(': ', 1)[1]}"
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
