"""What a call sends: an operation of the spec as data, and its request built once.

    client method ─▶ prepare ─▶ the call flow (_flow) ─▶ transport.send ─▶ _reply.read_reply
                                                                          ─▶ result or error

An `Operation` is one operation of openapi.yaml as data (see `_operations`): how its inputs
are checked and handed to the generated request builder, which inputs are secrets, whether it
starts a session, the generated model of its 2xx body and the public result it becomes.
`prepare` runs the checks (raising before any I/O), adds what every request carries (the key,
``Accept``, ``Accept-Encoding: identity``, ``User-Agent``, the idempotency key of a call that
starts a session) and serialises the body once: every attempt sends the same bytes.
`warm_up_request` is the one request that is no operation of the spec. Reading the answer is
`_reply`'s; deciding what comes next is the call flow's.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from ._inputs import check_idempotency_key
from ._settings import Settings
from ._version import __version__

__all__ = [
    "PRODUCT",
    "USER_AGENT",
    "Operation",
    "PreparedRequest",
    "prepare",
    "warm_up_request",
]

ResultT = TypeVar("ResultT")

#: This package and its version, as every User-Agent it sends names it.
PRODUCT = f"avatario-wrapper/{__version__}"
USER_AGENT = f"{PRODUCT} (python)"


class Operation(Generic[ResultT]):
    """One operation of openapi.yaml, as the clients call it.

    - `name`: the public method's name (``start_session``): logs, spans and messages use it.
    - `build`: takes the public method's keyword arguments, checks each (raising
      `AvatarioConfigError` before any I/O) and returns the generated builder's
      ``_get_kwargs(...)``; an operation that `starts_session` also receives
      ``idempotency_key`` (the caller's, checked, or a new UUID) and ``allow_insecure_http``
      (the client's: a plain ``ws://`` / ``http://`` LiveKit URL beyond loopback).
    - `secret_inputs`: the names of inputs that are secrets (a LiveKit token): redacted from
      every message, log, result and telemetry, like the API key.
    - `model`: the generated model of the 2xx body; `result`: the public result type, built
      from `result_fields(parsed model)` plus what every result carries (``data``,
      ``request_id``, ``attempts``, ``status_code``, and ``idempotency_key`` for an
      operation that starts a session).
    - `starts_session`: True for an operation whose resend could start a second avatar: it
      sends an ``Idempotency-Key``, its unknown outcomes are resent only with
      ``retry_unknown_outcome``, and its errors may say ``may_have_started``. False for an
      operation that only reads: resent after an unknown outcome, never "may have started".
    """

    __slots__ = (
        "build",
        "model",
        "name",
        "result",
        "result_fields",
        "secret_inputs",
        "starts_session",
    )

    def __init__(
        self,
        *,
        name: str,
        build: Callable[..., dict[str, Any]],
        model: type[Any],
        result: Callable[..., ResultT],
        result_fields: Callable[[Any], Mapping[str, Any]],
        starts_session: bool,
        secret_inputs: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.build = build
        self.model = model
        self.result = result
        self.result_fields = result_fields
        self.starts_session = starts_session
        self.secret_inputs = secret_inputs

    def __repr__(self) -> str:
        return f"Operation({self.name!r})"


class PreparedRequest(Generic[ResultT]):
    """One call, checked and serialised once. Headers, body and secrets stay out of the repr.

    `operation` is None for `warm_up`'s request, which is no operation of the spec.
    `headers` is what the next attempt sends: telemetry replaces it per attempt to carry that
    attempt's ``traceparent`` when trace propagation is on (`_telemetry`); nothing else does.
    """

    __slots__ = (
        "content",
        "headers",
        "idempotency_key",
        "method",
        "name",
        "operation",
        "secrets",
        "starts_session",
        "url",
    )

    def __init__(
        self,
        *,
        operation: Operation[ResultT] | None,
        name: str,
        starts_session: bool,
        method: str,
        url: str,
        headers: Mapping[str, str],
        content: bytes | None,
        idempotency_key: str | None,
        secrets: tuple[str, ...],
    ) -> None:
        self.operation = operation
        self.name = name
        self.starts_session = starts_session
        self.method = method
        self.url = url
        self.headers = headers
        self.content = content
        self.idempotency_key = idempotency_key
        self.secrets = secrets

    def __repr__(self) -> str:
        return f"PreparedRequest({self.method} {self.url}, name={self.name!r})"


def prepare(
    settings: Settings, operation: Operation[ResultT], inputs: Mapping[str, Any]
) -> PreparedRequest[ResultT]:
    """Check the inputs and build the request once (raising before any I/O)."""
    inputs = dict(inputs)
    key: str | None = None
    if operation.starts_session:
        key = check_idempotency_key(inputs.get("idempotency_key")) or new_idempotency_key()
        inputs["idempotency_key"] = key
        inputs["allow_insecure_http"] = settings.allow_insecure_http  # for its LiveKit URL
    kwargs = operation.build(**inputs)
    built = kwargs.get("headers")
    own = settings.request_headers or _headers(settings)
    headers = {**built, **own} if built else dict(own)
    url = settings.base_url + kwargs["url"]
    params = kwargs.get("params")
    if params:
        params = {k: v for k, v in params.items() if v is not None}
        if params:
            url += "?" + urllib.parse.urlencode(params, doseq=True)
    content = None
    if "json" in kwargs:
        content = _json(kwargs["json"])
    return PreparedRequest(
        operation=operation,
        name=operation.name,
        starts_session=operation.starts_session,
        method=kwargs["method"].upper(),
        url=url,
        headers=headers,
        content=content,
        idempotency_key=key,
        secrets=(
            settings.api_key,
            *[inputs[name] for name in operation.secret_inputs],
            *_proxy_secrets(settings),
        ),
    )


def _proxy_secrets(settings: Settings) -> tuple[str, ...]:
    proxy = settings.environment.proxy
    return () if proxy is None else proxy.secrets()


def _not_json(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# One compact UTF-8 encoder for every body, made once: `json.dumps` (and a kept JSONEncoder)
# builds the C encoder again on every call. The generated `to_dict` gives plain JSON values
# with no cycles, so no cycle check is needed.
_C_ENCODER = getattr(json.encoder, "c_make_encoder", None)
if _C_ENCODER is not None:
    _encode = _C_ENCODER(
        None, _not_json, json.encoder.encode_basestring, None, ":", ",", False, False, True
    )

    def _json(value: Any) -> bytes:
        return "".join(_encode(value, 0)).encode()

else:  # pragma: no cover - a Python without the json C accelerator
    _encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

    def _json(value: Any) -> bytes:
        return _encoder.encode(value).encode()


def _headers(settings: Settings) -> dict[str, str]:
    """The headers every request of a client carries, made once per client (each request
    gets a copy)."""
    settings.request_headers = {
        "accept": "application/json",
        "accept-encoding": "identity",
        "user-agent": USER_AGENT,
        "x-api-key": settings.api_key,
    }
    return settings.request_headers


def new_idempotency_key() -> str:
    """A random (version 4) UUID as text, as `str(uuid.uuid4())` makes it, in a third of the
    time."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # the RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def warm_up_request(settings: Settings) -> PreparedRequest[None]:
    """``HEAD {base_url}/`` with no key and no body: what `warm_up` sends to open a connection.

    It starts nothing, so none of its errors says the session may have started.
    """
    return PreparedRequest(
        operation=None,
        name="warm_up",
        starts_session=False,
        method="HEAD",
        url=settings.base_url + "/",
        headers={"accept-encoding": "identity", "user-agent": USER_AGENT},
        content=None,
        idempotency_key=None,
        secrets=(settings.api_key, *_proxy_secrets(settings)),
    )
