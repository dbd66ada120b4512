"""Text that leaves this package: server text made one printable line, secrets redacted.

Anything a server sends (a JSON ``message``, a request id, a reason phrase, a body) is
untrusted: it may hold newlines that forge log lines, ANSI escapes that repaint a terminal, or
bytes that are not UTF-8. Before such text reaches an error message or a log record it goes
through `one_line`; bytes are decoded with `decode_body`.

A server may echo a secret escaped rather than as it was sent: JSON's ``\\/`` (PHP) and
``\\uXXXX`` (Go, Gson and .NET escape ``<``, ``>``, ``&``, ``+``; some encoders every
character), percent-encoding (a ``Location`` or ``Link`` header), an HTML character reference
(an error page), in either case of hex digit, mixed within one secret, and nested up to
`MAX_LAYERS` deep (JSON inside a JSON string, a percent-encoded JSON escape). Redaction finds
the secret in each decoded view of the text and removes the characters that spell it in the
text itself. Text with no ``\\``, ``%`` or ``&`` has no escape to decode: it costs a substring
search, as before.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Iterator
from typing import Any

REDACTED = "[redacted]"
#: Shorter "secrets" are not real keys or tokens; replacing them would garble messages.
MIN_REDACTED_CHARS = 6
#: The longest piece of server text a message or log line carries.
MAX_LINE_CHARS = 200
#: How many escapes deep a secret is looked for (three covers JSON in JSON in a URL).
MAX_LAYERS = 3
_ELLIPSIS = "…"

#: One escaped character: a JSON escape, a percent-encoded byte, an HTML character reference.
_ESCAPE = re.compile(
    r'\\u[0-9A-Fa-f]{4}|\\["\\/]|%[0-9A-Fa-f]{2}'
    r"|&#[0-9]{1,7};|&#[xX][0-9A-Fa-f]{1,6};|&(?:amp|lt|gt|quot|apos);"
)
#: An escape cut off by the end of a clipped text.
_CUT_ESCAPE = re.compile(r"(?:\\(?:u[0-9A-Fa-f]{0,3})?|%[0-9A-Fa-f]?|&#?[xX]?[0-9A-Za-z]{0,6})\Z")
_ENTITIES = {"&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&apos;": "'"}


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
    """A body as text, with every invalid byte written as ``\\xNN``: UTF-8, unless its
    byte-order mark or its first bytes say UTF-16 or UTF-32 as JSON's do (a secret echoed
    in UTF-16 would otherwise be spelled with a NUL between its characters)."""
    return raw.decode(json.detect_encoding(raw), errors="backslashreplace")


# -- decoded views ------------------------------------------------------------------------------


def _may_escape(text: str) -> bool:
    """Whether `text` may hold an escape at all (the fast path's test)."""
    return "\\" in text or "%" in text or "&" in text


def _char(token: str) -> str:
    """The character one `_ESCAPE` match stands for (the match itself when it stands for none).
    Cached: an escape spells one character, never a secret."""
    char = _CHARS.get(token)
    if char is None:
        if len(_CHARS) >= _MAX_CHARS:
            _CHARS.clear()
        char = _CHARS[token] = _unescaped(token)
    return char


def _unescaped(token: str) -> str:
    if token[0] == "\\":
        return chr(int(token[2:], 16)) if token[1] == "u" else token[1]
    if token[0] == "%":  # one byte: the secrets redacted here are ASCII
        return chr(int(token[1:], 16))
    if token[1] != "#":
        return _ENTITIES[token]
    code = int(token[3:-1], 16) if token[2] in "xX" else int(token[2:-1])
    return chr(code) if code <= 0x10FFFF else token


_CHARS: dict[str, str] = {}
_MAX_CHARS = 4096


def _plain(match: re.Match[str]) -> str:
    return _char(match.group())


def _plain_views(text: str) -> Iterator[str]:
    """Each deeper decoding of `text` (what a check needs: no way back to the text)."""
    for _ in range(MAX_LAYERS):
        decoded = _ESCAPE.sub(_plain, text)
        if decoded == text:
            return
        text = decoded
        yield text
        if not _may_escape(text):
            return


class _Layer:
    """A text with each escape undone once (`text`), and where each escape sat in the source,
    so that a stretch of `text` maps back to the source characters that spell it."""

    __slots__ = ("_at", "_size", "_source", "text")

    def __init__(self, text: str, at: list[int], source: list[int], size: list[int]) -> None:
        self.text = text
        self._at = at  # where each escape's character is in `text`
        self._source = source  # where that escape starts in the source
        self._size = size  # how long it is there

    def start(self, i: int) -> int:
        """Where the character at `i` in `text` starts in the source."""
        k = bisect.bisect_right(self._at, i) - 1
        if k < 0:
            return i
        if self._at[k] == i:
            return self._source[k]
        return self._source[k] + self._size[k] + i - self._at[k] - 1

    def end(self, j: int) -> int:
        """Where the character before `j` in `text` ends in the source."""
        k = bisect.bisect_right(self._at, j - 1) - 1
        if k >= 0 and self._at[k] == j - 1:
            return self._source[k] + self._size[k]
        return self.start(j - 1) + 1


def _decoded(text: str) -> _Layer | None:
    """`text` with every escape undone once, or None when it has none."""
    pieces: list[str] = []
    at: list[int] = []
    source: list[int] = []
    size: list[int] = []
    last = length = 0
    for match in _ESCAPE.finditer(text):
        char = _char(match.group())
        if len(char) > 1:  # no character: left as it is
            continue
        begin, end = match.span()
        pieces.append(text[last:begin])
        length += begin - last
        at.append(length)
        source.append(begin)
        size.append(end - begin)
        pieces.append(char)
        length += 1
        last = end
    if not at:
        return None
    pieces.append(text[last:])
    return _Layer("".join(pieces), at, source, size)


def _views(text: str) -> Iterator[tuple[str, list[_Layer]]]:
    """`text` itself, then each deeper decoding of it, with the layers that lead back."""
    chain: list[_Layer] = []
    yield text, chain
    if not _may_escape(text):
        return
    for _ in range(MAX_LAYERS):
        layer = _decoded(chain[-1].text if chain else text)
        if layer is None:
            return
        chain = [*chain, layer]
        yield layer.text, chain


def _span(chain: list[_Layer], start: int, end: int) -> tuple[int, int]:
    """The source stretch that spells ``view[start:end]`` of the view `chain` leads to."""
    for layer in reversed(chain):
        start, end = layer.start(start), layer.end(end)
    return start, end


# -- redaction ------------------------------------------------------------------------------------


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """`text` with every secret, as sent or escaped, replaced by a marker."""
    secrets = _long(secrets)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    if not secrets or not _may_escape(text):
        return text
    spans: list[tuple[int, int]] = []
    for view, chain in _views(text):
        if not chain:
            continue  # the text itself: done above
        for secret in secrets:
            found = view.find(secret)
            while found >= 0:
                spans.append(_span(chain, found, found + len(secret)))
                found = view.find(secret, found + len(secret))
    if not spans:
        return text
    out: list[str] = []
    last = 0
    for start, end in sorted(spans):
        if start >= last:
            out.append(text[last:start])
            out.append(REDACTED)
        last = max(last, end)
    out.append(text[last:])
    return "".join(out)


def _holds(text: str, secrets: tuple[str, ...]) -> bool:
    """Whether `text` holds one of `secrets` (long enough to redact), as sent or escaped."""
    for secret in secrets:
        if secret in text:
            return True
    if not _may_escape(text):
        return False
    for view in _plain_views(text):
        for secret in secrets:
            if secret in view:
                return True
    return False


def _shows_start(text: str, secrets: tuple[str, ...]) -> bool:
    """Whether the first four characters of a secret are in `text`, as sent or escaped: when
    not, nothing in it needs redacting, nor can it end in the start of a secret."""
    starts = _starts(secrets)
    for start in starts:
        if start in text:
            return True
    if starts and _may_escape(text):
        for view in _plain_views(text):
            for start in starts:
                if start in view:
                    return True
    return False


def redact_data(value: Any, secrets: tuple[str, ...], *, text: str | None = None) -> Any:
    """A JSON value with every secret inside its strings (keys included) redacted.

    Returns `value` itself when no string holds a secret, so a clean body is never copied.
    `text`, the JSON text `value` was decoded from, lets a clean body be recognised at once:
    with no escape (``\\``, ``%``, ``&``) in it, its strings are pieces of the text, so if no
    secret's start is in the text no string holds a secret. (A text with escapes is walked.)
    """
    secrets = _long(secrets)
    if not secrets:
        return value
    if text is not None and not _may_escape(text):
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
            if _holds(item, secrets):
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
    """`text` redacted, then cut to `limit` characters, never ending in the start of a secret
    (as sent or escaped, an escape cut in two included).

    Redacting before cutting matters: a secret that straddles the cut would otherwise leave
    its first characters behind. The same holds at the end of a body that was itself cut off.
    """
    if not _shows_start(text, secrets):
        return text[:limit]  # no secret, nor the start of one, anywhere in it
    text = redact(text, secrets)[:limit]
    for secret in _long(secrets):
        cut = _start_at_end(text, secret)
        if cut is not None:
            text = text[:cut]
    return text


def _start_at_end(text: str, secret: str) -> int | None:
    """Where a start of `secret` (four characters or more) that ends `text` begins in it."""
    half = _CUT_ESCAPE.search(text)
    for whole in (text, text[: half.start()]) if half else (text,):
        for view, chain in _views(whole):
            for size in range(min(len(secret) - 1, len(view)), 3, -1):
                if view.endswith(secret[:size]):
                    return _span(chain, len(view) - size, len(view))[0]
    return None


def safe_line(text: str, secrets: tuple[str, ...], limit: int = MAX_LINE_CHARS) -> str:
    """Server text for a message or a log: redacted, one printable line, bounded."""
    if len(text) <= limit and text.isprintable() and not _shows_start(text, secrets):
        return text  # the usual request id, reason, message
    return one_line(clip(text, 4 * limit, secrets), limit)
