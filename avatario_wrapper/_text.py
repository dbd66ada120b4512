"""Text that leaves this package: server text made one printable line, secrets redacted.

Anything a server sends (a JSON ``message``, a request id, a reason phrase, a body) is
untrusted: it may hold newlines that forge log lines, ANSI escapes that repaint a terminal, or
bytes that are not UTF-8. Before such text reaches an error message or a log record it goes
through `one_line`; bytes are decoded with `decode_body`.
"""

from __future__ import annotations

from typing import Any

REDACTED = "[redacted]"
#: Shorter "secrets" are not real keys or tokens; replacing them would garble messages.
MIN_REDACTED_CHARS = 6
#: The longest piece of server text a message or log line carries.
MAX_LINE_CHARS = 200
_ELLIPSIS = "…"


def one_line(text: str, limit: int = MAX_LINE_CHARS) -> str:
    """`text` as one printable line of at most `limit` characters.

    Every character that is not printable (control characters, line and paragraph separators,
    format characters such as bidirectional overrides, lone surrogates from undecodable bytes)
    is written as its backslash escape; runs of whitespace become one space.
    """
    if not text.isprintable():
        text = _escape(text)
    if len(text) > limit:
        text = text[: max(0, limit - 1)] + _ELLIPSIS
    return text


def _escape(text: str) -> str:
    out: list[str] = []
    for char in text:
        if char.isprintable():
            out.append(char)
        elif char in "\t\n\r":
            out.append(" ")
        else:
            out.append(char.encode("unicode_escape", "backslashreplace").decode("ascii"))
    return " ".join("".join(out).split())


def decode_body(raw: bytes) -> str:
    """A body as text: UTF-8, with every invalid byte written as ``\\xNN``."""
    return raw.decode("utf-8", errors="backslashreplace")


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """`text` with every secret replaced by a marker."""
    for secret in secrets:
        if len(secret) >= MIN_REDACTED_CHARS and secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_data(value: Any, secrets: tuple[str, ...], *, text: str | None = None) -> Any:
    """A JSON value with every secret inside its strings (keys included) redacted.

    Returns `value` itself when no string holds a secret, so a clean body is never copied.
    `text`, the JSON text `value` was decoded from, lets a clean body be recognised at once:
    with no escape (``\\``) in it, its strings are pieces of the text, so if no secret's start
    is in the text no string holds a secret. (A text with escapes is walked.)
    """
    secrets = _long(secrets)
    if not secrets:
        return value
    if text is not None and "\\" not in text:
        for start in _starts(secrets):
            if start in text:
                break
        else:
            return value
    if not _holds_secret(value, secrets):
        return value
    return _redacted(value, secrets)


def _long(secrets: tuple[str, ...]) -> tuple[str, ...]:
    """The secrets long enough to redact. (Not cached: a call's LiveKit token is new each
    time, and a cache would keep old ones alive.)"""
    return tuple([s for s in secrets if len(s) >= MIN_REDACTED_CHARS])


def _starts(secrets: tuple[str, ...]) -> tuple[str, ...]:
    """The first four characters of each secret long enough to redact."""
    return tuple([s[:4] for s in secrets if len(s) >= MIN_REDACTED_CHARS])


def _holds_secret(value: Any, secrets: tuple[str, ...]) -> bool:
    """Whether any string in a JSON value (keys included) holds a secret; no recursion."""
    pending = [value]
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind is str:
            for secret in secrets:
                if secret in item:
                    return True
        elif kind is dict:
            pending.extend(item)
            pending.extend(item.values())
        elif kind is list:
            pending.extend(item)
    return False


def _redacted(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {_redacted(k, secrets): _redacted(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v, secrets) for v in value]
    return value


def clip(text: str, limit: int, secrets: tuple[str, ...]) -> str:
    """`text` redacted, then cut to `limit` characters, never ending in the start of a secret.

    Redacting before cutting matters: a secret that straddles the cut would otherwise leave
    its first characters behind. The same holds at the end of a body that was itself cut off.
    """
    for start in _starts(secrets):
        if start in text:
            break
    else:
        return text[:limit]  # no secret, nor the start of one, anywhere in it
    text = redact(text, secrets)[:limit]
    for secret in secrets:
        if len(secret) < MIN_REDACTED_CHARS:
            continue
        for size in range(min(len(secret) - 1, len(text)), 3, -1):
            if text.endswith(secret[:size]):
                text = text[:-size]
                break
    return text


def safe_line(text: str, secrets: tuple[str, ...], limit: int = MAX_LINE_CHARS) -> str:
    """Server text for a message or a log: redacted, one printable line, bounded."""
    if len(text) <= limit and text.isprintable():  # the usual request id, reason, message
        for start in _starts(secrets):
            if start in text:
                break
        else:
            return text
    return one_line(clip(text, 4 * limit, secrets), limit)
