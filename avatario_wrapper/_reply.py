"""Reading a reply, all of it: a bounded body, then the operation's result or the error.

Transports hand over raw bytes as they arrive (`Body.feed`); nothing is decompressed beyond the
limits that bound what is kept: 1 MiB for a success, `MAX_ERROR_BODY_BYTES` otherwise.
`read_reply` turns a `Reply` into what the call returns: a non-2xx becomes its status error
(with its `Outcome`), a 2xx body is read as a JSON object into the operation's generated model
(any mismatch an `APIResponseValidationError`), secrets the server echoed are redacted, and
the operation's result is built. Every piece of server text that reaches a message goes
through `_text.one_line`.
"""

from __future__ import annotations

import codecs
import email.utils
import json
import math
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx

from ._models import InvalidReply, read_model
from ._outcome import may_have_started, outcome_of_status, unreadable_success_note
from ._text import clip, decode_body, one_line, redact_data, safe_line
from .errors import (
    MAX_ERROR_BODY_CHARS,
    APIResponseValidationError,
    status_error_class,
)

if TYPE_CHECKING:
    from ._request import PreparedRequest


#: Success bodies larger than this (once inflated) are not read whole; the call fails.
MAX_SUCCESS_BODY_BYTES = 1024 * 1024
#: Enough bytes for MAX_ERROR_BODY_CHARS characters of UTF-8.
MAX_ERROR_BODY_BYTES = MAX_ERROR_BODY_CHARS * 4
#: Compressed layers a body may have (``Content-Encoding: gzip, gzip`` is two).
MAX_ENCODINGS = 2


def _inflater(encoding: str) -> Any:
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(zlib.MAX_WBITS | 16)
    if encoding == "deflate":
        return _Deflate()
    return None


class _Deflate:
    """``deflate`` is zlib-wrapped by the RFC and raw in practice: the first two bytes say which
    (a zlib header is 0x?8 0x?? with a multiple of 31), however the body is cut into chunks."""

    def __init__(self) -> None:
        self._inner: Any = None
        self._head = b""
        self.unconsumed_tail = b""

    @property
    def eof(self) -> bool:
        return self._inner is not None and bool(self._inner.eof)

    @property
    def unused_data(self) -> bytes:
        return b"" if self._inner is None else bytes(self._inner.unused_data)

    def decompress(self, data: bytes, max_length: int) -> bytes:
        if self._inner is None:
            self._head += data
            if len(self._head) < 2:
                return b""
            data, self._head = self._head, b""
            wrapped = data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            self._inner = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        out: bytes = self._inner.decompress(data, max_length)
        self.unconsumed_tail = self._inner.unconsumed_tail
        return out


#: Byte-order marks json.loads accepts in bytes: UTF-8's, and UTF-16's (UTF-32 LE starts
#: with UTF-16 LE's).
_BOMS = (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_BE)


class Body:
    """Collects a body up to `limit` bytes after decoding its ``Content-Encoding``.

    Compressed layers are inflated with `max_length`, so a small bomb never expands past the
    limit in memory. An encoding this client does not decode leaves the body `undecodable`.
    """

    __slots__ = (
        "_chunks",
        "_decoded",
        "_layers",
        "_size",
        "_text",
        "failure",
        "limit",
        "overflow",
        "undecodable",
    )

    def __init__(self, status_code: int, content_encoding: str | None = None) -> None:
        self.limit = MAX_SUCCESS_BODY_BYTES if 200 <= status_code < 300 else MAX_ERROR_BODY_BYTES
        self._chunks: list[bytes] = []
        self._size = 0
        self.overflow = False
        self.failure: Exception | None = None
        self.undecodable: str | None = None
        self._layers: list[Any] = []
        self._decoded = False  # see json_text
        self._text: str | None = None
        if content_encoding:
            codings = [c.strip().lower() for c in content_encoding.split(",")]
            codings = [c for c in codings if c and c != "identity"]
            if len(codings) > MAX_ENCODINGS:
                self.undecodable = content_encoding
            for coding in reversed(codings):  # the last one applied is undone first
                layer = _inflater(coding)
                if layer is None:
                    self.undecodable = coding
                self._layers.append(layer)
            if self.undecodable is not None:
                self.undecodable = one_line(self.undecodable, 40)
                self._layers = []

    def feed(self, chunk: bytes) -> bool:
        """Take raw bytes; True when reading should stop (the limit is passed)."""
        if self.undecodable is not None:
            return True
        try:
            for layer in self._layers:
                chunk = layer.decompress(chunk, self.limit - self._size + 1)
                if layer.unconsumed_tail:
                    self.overflow = True
        except zlib.error as exc:
            self.failure = exc
            return True
        room = self.limit - self._size
        self._chunks.append(chunk[:room])
        self._size += min(len(chunk), room)
        if len(chunk) > room:
            self.overflow = True
        return self.overflow

    def fail(self, exc: Exception) -> None:
        """The body broke off: keep what arrived and the reason."""
        self.failure = exc

    def compression_problem(self) -> str | None:
        """For a body read to its end: why its compressed stream is not whole, or None."""
        for layer in self._layers:
            if not layer.eof:
                return "its compressed body ends before the compressed stream does"
            if layer.unused_data:
                return "its compressed body has data after the end of the compressed stream"
        return None

    def json_text(self) -> str | None:
        """The body decoded as UTF-8 when it can only be UTF-8 JSON (no byte-order mark, no
        NUL in its first four bytes, as UTF-16 and UTF-32 JSON have); else None, and
        `json.loads` finds the encoding from the bytes. Decoded once."""
        if not self._decoded:
            self._decoded = True
            raw = self.raw()
            if b"\x00" not in raw[:4] and not raw.startswith(_BOMS):
                try:
                    self._text = raw.decode()
                except UnicodeDecodeError:  # e.g. a surrogate, which json.loads lets pass
                    self._text = None
        return self._text

    def raw(self) -> bytes:
        chunks = self._chunks
        if len(chunks) != 1:
            joined = b"".join(chunks)
            self._chunks = chunks = [joined]
        return chunks[0]

    def text(self, secrets: tuple[str, ...]) -> str:
        """The body as text for an error: redacted, then cut to `MAX_ERROR_BODY_CHARS`."""
        if self.undecodable is not None:
            return f"(a body compressed with {self.undecodable}, not decoded)"
        return clip(decode_body(self.raw()), MAX_ERROR_BODY_CHARS, secrets)


class Reply:
    """What a transport got back: status line, headers and the (bounded) body."""

    __slots__ = ("body", "headers", "reason", "status")

    def __init__(self, status: int, reason: str, headers: Mapping[str, str], body: Body) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"Reply({self.status})"


def read_reply(request: PreparedRequest[Any], reply: Reply, attempts: int, now: float) -> Any:
    """The operation's result for `reply`, or the error it means (raised). `warm_up`'s
    request is no operation: any answer will do, and is its result as it came."""
    operation = request.operation
    if operation is None:
        return reply
    # Secrets the server echoed are redacted before anything is read from the body.
    data = redact_data(
        read_json(reply, request, attempts=attempts, now=now),
        request.secrets,
        text=reply.body.json_text(),
    )
    try:
        own = operation.result_fields(read_model(operation.model, data))
    except InvalidReply as exc:
        raise validation_error(reply, request, str(exc), attempts=attempts) from exc
    fields: dict[str, Any] = {
        **own,
        "data": data,
        "request_id": request_id_of(reply, request.secrets),
        "attempts": attempts,
        "status_code": reply.status,
    }
    if operation.starts_session:
        fields["idempotency_key"] = request.idempotency_key
    return operation.result(**fields)


def read_json(
    reply: Reply, sent: PreparedRequest[Any], *, attempts: int, now: float
) -> dict[str, Any]:
    """The JSON object of a 2xx reply; else the error to raise (a status or validation error)."""
    status, body = reply.status, reply.body
    if not 200 <= status < 300:
        raise _status_error(reply, sent, attempts, now)

    def invalid(problem: str) -> APIResponseValidationError:
        return validation_error(reply, sent, problem, attempts=attempts)

    if body.undecodable is not None:
        raise invalid(f"the body is compressed with {body.undecodable}, which is not decoded")
    if body.failure is not None:
        raise invalid("the body was cut off or could not be inflated") from body.failure
    if body.overflow:
        raise invalid(f"the body is larger than {body.limit} bytes")
    problem = body.compression_problem()
    if problem is not None:
        raise invalid(problem)
    broken: str | None = None
    try:
        text = body.json_text()
        data = json.loads(body.raw() if text is None else text)
    except (ValueError, RecursionError) as exc:
        broken = f"{type(exc).__name__}: {exc}"
    if broken is not None:
        # Raised here, not in the handler, and from a new error: a JSONDecodeError keeps the
        # whole body (`.doc`) and a UnicodeDecodeError its bytes (`.object`), as `__cause__`
        # or `__context__`; their messages say only where the body breaks.
        raise invalid("the body is not JSON") from ValueError(broken)
    if not isinstance(data, dict):
        raise invalid(f"the body is a JSON {type(data).__name__}, not an object")
    return data


def validation_error(
    reply: Reply, sent: PreparedRequest[Any], problem: str, *, attempts: int
) -> APIResponseValidationError:
    """The error for a 2xx whose body is not what the spec documents (never resent).

    `problem` may quote the server: it reaches the message as one redacted printable line.
    """
    secrets = sent.secrets
    request_id = request_id_of(reply, secrets)
    return APIResponseValidationError(
        f"Avatario answered HTTP {reply.status} but {safe_line(problem, secrets, 300)}"
        + unreadable_success_note(starts_session=sent.starts_session)
        + (f" [request id {request_id}]" if request_id else ""),
        status_code=reply.status,
        body=reply.body.text(secrets),
        request_id=request_id,
        attempts=attempts,
        idempotency_key=sent.idempotency_key,
        may_have_started=sent.starts_session,
    )


def request_id_of(reply: Reply, secrets: tuple[str, ...]) -> str | None:
    """The server's ``x-request-id``: redacted, one printable line."""
    value = reply.headers.get("x-request-id")
    return None if value is None else safe_line(value, secrets)


def _status_error(reply: Reply, sent: PreparedRequest[Any], attempts: int, now: float) -> Exception:
    status, secrets = reply.status, sent.secrets
    request_id = request_id_of(reply, secrets)
    text = reply.body.text(secrets)
    reason = safe_line(reply.reason, secrets, 60) or "error"
    summary = safe_line(_error_summary(text), secrets)
    message = f"Avatario answered HTTP {status} {reason}"
    if summary:
        message += f": {summary}"
    if request_id:
        message += f" [request id {request_id}]"
    outcome = outcome_of_status(status)
    error = status_error_class(status)(
        message,
        status_code=status,
        body=text,
        request_id=request_id,
        headers=_headers(reply.headers, secrets),
        retry_after=parse_retry_after(reply.headers, now=now),
        attempts=attempts,
        outcome=outcome,
        idempotency_key=sent.idempotency_key,
        may_have_started=may_have_started(outcome, starts_session=sent.starts_session),
    )
    error.__cause__ = reply.body.failure
    return error


def _headers(headers: Mapping[str, str], secrets: tuple[str, ...]) -> Mapping[str, str]:
    """The reply's headers as a picklable `httpx.Headers` (an error must cross processes),
    with secrets redacted if a server echoed one back."""
    items = list(headers.items())
    if any(clip(value, len(value), secrets) != value for _, value in items):
        items = [(name, clip(value, len(value), secrets)) for name, value in items]
    elif isinstance(headers, httpx.Headers):
        return headers
    # aiohttp decodes header bytes with surrogateescape: give httpx the bytes back.
    return httpx.Headers([(_raw(name), _raw(value)) for name, value in items])


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _error_summary(text: str) -> str:
    """The `message` of a JSON error body (or its start), for one line."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict):
        message = data.get("message") or data.get("error") or data.get("detail")
        if isinstance(message, str):
            return message
    if text.lstrip().startswith("<"):  # an HTML page from a proxy says nothing useful
        return ""
    return text[:400]


def parse_retry_after(headers: Mapping[str, str], *, now: float) -> float | None:
    """Seconds the server asked to wait: ``retry-after-ms``, else ``Retry-After`` as
    seconds or an HTTP-date. None when absent, negative, not finite or unreadable.

    A date is measured from the response's own ``Date`` when it has a readable one (the
    wait the server meant, whatever its clock says), else from `now` (this machine's clock).
    """
    millis = headers.get("retry-after-ms")
    if millis is not None:
        seconds = _number(millis)
        if seconds is not None:
            return seconds / 1000.0
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _number(value)
    if seconds is not None:
        return seconds
    when = _http_date(value)
    if when is None:
        return None
    sent = _http_date(headers.get("date"))
    return max(0.0, when - (now if sent is None else sent))


def _http_date(value: str | None) -> float | None:
    """An HTTP-date as a timestamp, or None when absent or unreadable."""
    if value is None:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # an HTTP-date is always GMT
        return None
    try:
        return when.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def _number(text: str) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return value
