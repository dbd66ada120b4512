"""What a handler of a stateful operation receives and returns.

The fake serves every operation of its spec by itself: it routes, checks the API key,
validates parameters and body, plays faults, then answers with the spec's example of the
documented 2xx response. An operation whose answer depends on state (start-session: sessions,
idempotency keys) gets a *handler*, registered by operationId::

    def get_session(request: OperationRequest) -> OperationResponse:
        session = sessions.get(request.path_params["session_id"])
        if session is None:
            return request.error(404, "not_found", "No session with that id.")
        return OperationResponse(200, {"session_id": session.id, "status": "live"})

    fake.register_handler("getSession", get_session)

A handler runs only for a request that passed every check, in the thread that serves the
fake (the server's thread under `run_fake_server`); it may be a plain function or a coroutine
function. Whatever it answers is sent as JSON with the request's ``x-request-id``; an
exception it raises becomes a JSON 500 (and is logged).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeAlias

import attrs

from .._text import one_line

#: The longest error message the fake sends.
MAX_MESSAGE = 400


@attrs.frozen
class OperationResponse:
    """An answer: a status, a JSON body (None: no body at all) and extra headers."""

    status: int
    body: Any = None
    headers: Mapping[str, str] = attrs.field(factory=dict)


def error_body(code: str, message: str, request_id: str) -> dict[str, str]:
    """The spec's Error body: ``{"error", "message", "request_id"}``, the message one printable
    line (it may quote what a client sent)."""
    return {
        "error": code or "error",
        "message": one_line(message, MAX_MESSAGE) or code,
        "request_id": request_id,
    }


@attrs.frozen
class OperationRequest:
    """A request that passed the spec's checks, as a handler sees it.

    The API key is not in `headers` (it was checked already).
    """

    operation_id: str
    method: str
    path: str  # as requested, percent-decoded
    route: str  # the spec's path template, e.g. "/sessions/{session_id}"
    path_params: Mapping[str, str]
    #: The spec's parameters (path, query, header, cookie) that were given, by name, as their
    #: schemas type them (an integer parameter is an int).
    params: Mapping[str, Any]
    headers: Mapping[str, str]  # lower-case names
    body: bytes = attrs.field(repr=False)
    #: The parsed JSON body (None when there is none); it validated against the spec.
    json: Any = attrs.field(repr=False)
    request_id: str
    client: str | None = None  # "host:port"
    #: The answer the fake sends for this operation without a handler (the spec's example).
    documented: OperationResponse | None = attrs.field(default=None, repr=False)

    def error(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> OperationResponse:
        """An error answer with the spec's Error body and this request's id."""
        return OperationResponse(
            status, error_body(code, message, self.request_id), dict(headers or {})
        )


#: A handler: a function (or coroutine function) of the request that returns the answer.
Handler: TypeAlias = Callable[
    [OperationRequest], "OperationResponse | Awaitable[OperationResponse]"
]
