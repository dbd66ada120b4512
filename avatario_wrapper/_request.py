"""The one request path every operation goes through, minus the I/O.

An `Operation` is a generated request builder (its inputs checked first) plus how a 2xx reply
is read into a result. `prepare` turns a call into a `PreparedRequest`, serialised once and
sent the same on every attempt; `finish` turns a transport's `Reply` into the result or the
error to raise. The clients add only the retry loop, sending and sleeping.
"""

from __future__ import annotations

import json
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import attrs

from ._reply import Reply, read_json, request_id_of, validation_error
from ._settings import Settings, check_idempotency_key
from ._version import __version__

ResultT = TypeVar("ResultT")

USER_AGENT = f"avatario-wrapper/{__version__} (python)"


@attrs.frozen
class ReplyInfo:
    """What every result carries besides the body: how the call went."""

    status_code: int
    request_id: str | None
    attempts: int
    idempotency_key: str | None


@attrs.frozen
class Built:
    """An operation's checked inputs: the generated builder's kwargs and the secrets in them."""

    kwargs: dict[str, Any]
    secrets: tuple[str, ...] = ()
    idempotency_key: str | None = None


@attrs.frozen
class Operation(Generic[ResultT]):
    """One operation of openapi.yaml, as the clients call it.

    `build` checks the inputs (raising `AvatarioConfigError` before any I/O) and returns the
    generated request builder's kwargs; `parse` reads the 2xx JSON object into the result.
    `idempotent` operations (reads) may be resent after an unknown outcome; others only when
    the retry policy says the deployment deduplicates by ``Idempotency-Key``.
    """

    name: str
    build: Callable[..., Built]
    parse: Callable[[dict[str, Any], ReplyInfo], ResultT]
    idempotent: bool = False
    #: Send an ``Idempotency-Key`` (the caller's, else a new one) with every attempt.
    keyed: bool = False


@attrs.define(slots=True)
class PreparedRequest(Generic[ResultT]):
    """One call, checked and serialised once. Headers, body and secrets stay out of the repr."""

    operation: Operation[ResultT]
    method: str
    url: str
    headers: Mapping[str, str] = attrs.field(repr=False)
    content: bytes | None = attrs.field(repr=False)
    idempotency_key: str | None
    secrets: tuple[str, ...] = attrs.field(repr=False)


def prepare(
    settings: Settings, operation: Operation[ResultT], inputs: Mapping[str, Any]
) -> PreparedRequest[ResultT]:
    """Check the inputs and build the request once (raising before any I/O)."""
    inputs = dict(inputs)
    key: str | None = None
    if operation.keyed:
        key = check_idempotency_key(inputs.get("idempotency_key")) or str(uuid.uuid4())
        inputs["idempotency_key"] = key
    built = operation.build(**inputs)
    kwargs = built.kwargs
    headers = {
        **kwargs.get("headers", {}),
        "accept": "application/json",
        "accept-encoding": "identity",
        "user-agent": USER_AGENT,
        "x-api-key": settings.api_key,
    }
    url = settings.base_url + kwargs["url"]
    params = {k: v for k, v in kwargs.get("params", {}).items() if v is not None}
    if params:
        url += "?" + urllib.parse.urlencode(params, doseq=True)
    content = None
    if "json" in kwargs:
        content = json.dumps(kwargs["json"], ensure_ascii=False, separators=(",", ":")).encode()
    return PreparedRequest(
        operation=operation,
        method=kwargs["method"].upper(),
        url=url,
        headers=headers,
        content=content,
        idempotency_key=key,
        secrets=(settings.api_key, *built.secrets),
    )


def finish(request: PreparedRequest[ResultT], reply: Reply, attempts: int, now: float) -> ResultT:
    """The operation's result for `reply`, or the error it means (raised)."""
    data = read_json(
        reply,
        attempts=attempts,
        idempotency_key=request.idempotency_key,
        secrets=request.secrets,
        now=now,
    )
    info = ReplyInfo(
        status_code=reply.status,
        request_id=request_id_of(reply, request.secrets),
        attempts=attempts,
        idempotency_key=request.idempotency_key,
    )
    try:
        return request.operation.parse(data, info)
    except InvalidReply as exc:
        raise validation_error(
            reply,
            str(exc),
            attempts=attempts,
            idempotency_key=request.idempotency_key,
            secrets=request.secrets,
        ) from None


class InvalidReply(Exception):
    """Raised by an operation's `parse`: the 2xx body breaks the spec (say how)."""
