"""Request inputs, checked before any I/O: ids, URLs, the LiveKit token, the idempotency key,
video sizes and seconds.

Each check raises `AvatarioConfigError` naming the argument, or `TypeError` for a value of
the wrong type, and never echoes a secret. The rules are those of openapi.yaml or stricter,
so a value accepted here always produces a request that validates against the spec.

No id or URL may hold a character that can split or reorder text where it is shown (a log
line, a dashboard, Avatario's own records): Unicode's control characters (C0, DEL, C1), line
and paragraph separators, lone surrogates, and every format character, which are invisible:
the bidirectional controls, and the zero-width ones too (a zero-width space or joiner makes
two ids that print alike differ, so an emoji ZWJ sequence is refused with them). In a URL they
are refused percent-encoded as well, as a server would decode them.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import re
import unicodedata
import urllib.parse

from .errors import AvatarioConfigError, MissingAgentIdentityError

MAX_ID_CHARS = 256
MAX_URL_CHARS = 2048
MAX_TOKEN_CHARS = 8192
MAX_IDEMPOTENCY_KEY_CHARS = 255
MIN_VIDEO_SIZE = 1
MAX_VIDEO_SIZE = 4096

#: Unicode categories refused in ids and URLs: control, format (bidi, zero-width), surrogate,
#: line and paragraph separators.
_UNSHOWABLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# Visible ASCII only: what an HTTP header value or a JWT may hold without escaping.
_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")
# RFC 3986 characters (unreserved, reserved) and well-formed percent-escapes, nothing else.
_URI_CHARS = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})+")
_LOOPBACK_NAMES = frozenset({"localhost", "localhost."})


def require_str(field: str, value: object) -> str:
    if value is None:
        raise AvatarioConfigError(field, "is required")
    if not isinstance(value, str):
        raise TypeError(f"{field} must be a str, not {type(value).__name__}")
    return value


def is_visible_ascii(text: str) -> bool:
    """Whether `text` is visible ASCII only (what a header value or a JWT holds unescaped)."""
    return _VISIBLE_ASCII.fullmatch(text) is not None


def check_text_id(field: str, value: object) -> str:
    """An id such as the avatar id: non-empty, not blank, no control characters, bounded."""
    if type(value) is str and (field, value) in _GOOD_IDS:
        return value
    text = require_str(field, value)
    _check_text(field, text)
    if type(text) is str:  # a subclass may not hash (or compare) as a str does
        if len(_GOOD_IDS) >= _MAX_GOOD_IDS:
            _GOOD_IDS.clear()
        _GOOD_IDS.add((field, text))
    return text


#: Ids that passed `check_text_id` (avatar ids and identities recur from call to call).
_GOOD_IDS: set[tuple[str, str]] = set()
_MAX_GOOD_IDS = 1024


def _check_text(field: str, text: str) -> None:
    if not text or text.isspace():
        raise AvatarioConfigError(field, "must not be empty or blank")
    _check_showable(field, text)
    if len(text) > MAX_ID_CHARS:
        raise AvatarioConfigError(field, f"must be at most {MAX_ID_CHARS} characters")


def _unshowable(text: str) -> str | None:
    """The first character of `text` that can split or reorder text, or None."""
    if text.isprintable():  # most text: no control, format or separator character at all
        return None
    for char in text:
        if unicodedata.category(char) in _UNSHOWABLE:
            return char
    return None  # only spaces that print, e.g. a no-break space


def _check_showable(field: str, text: str, *, encoded: bool = False) -> None:
    char = _unshowable(text)
    if char is not None:
        where = ", even percent-encoded" if encoded else ""
        raise AvatarioConfigError(
            field,
            "must not contain control, invisible format or line-separator characters"
            f"{where} (it has U+{ord(char):04X} {unicodedata.name(char, 'a control character')})",
        )


def check_agent_identity(value: object, field: str = "agent_identity") -> str:
    """The agent's LiveKit identity: the precondition of every call."""
    if value is None or (isinstance(value, str) and (not value or value.isspace())):
        raise MissingAgentIdentityError(field)
    return check_text_id(field, value)


def _check_uri(
    field: str, value: object, schemes: tuple[str, ...], *, plain_to_loopback: bool = False
) -> str:
    text = value if type(value) is str else require_str(field, value)
    return _check_uri_text(field, text, schemes, plain_to_loopback)


@functools.lru_cache(maxsize=256)
def _check_uri_text(
    field: str, text: str, schemes: tuple[str, ...], plain_to_loopback: bool
) -> str:
    """The checks of `_check_uri` for a string; cached (a service sends the same LiveKit URL
    on every call). An exception is not cached: it is raised again each time."""
    allowed = " or ".join(schemes)
    if len(text) > MAX_URL_CHARS:
        raise AvatarioConfigError(field, f"must be at most {MAX_URL_CHARS} characters")
    _check_showable(field, text)
    if not _URI_CHARS.fullmatch(text):
        raise AvatarioConfigError(
            field, "must be a URL of ASCII characters with no spaces (percent-encode the rest)"
        )
    if "%" in text:  # what a server decodes must pass too
        _check_showable(field, urllib.parse.unquote(text, errors="replace"), encoded=True)
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018 - reading it checks the port
    except ValueError:
        raise AvatarioConfigError(field, "is not a valid URL") from None
    if parts.scheme not in schemes or not text.startswith(f"{parts.scheme}://"):
        raise AvatarioConfigError(field, f"must be a {allowed} URL")
    if "@" in parts.netloc:
        raise AvatarioConfigError(field, "must not carry credentials (user:password@)")
    if not parts.hostname:
        raise AvatarioConfigError(field, "must name a host")
    if plain_to_loopback and parts.scheme in _PLAIN and not is_loopback_host(parts.hostname):
        raise AvatarioConfigError(
            field,
            f"must use wss:// or https:// ({parts.scheme}:// sends the LiveKit token in clear; "
            "it is allowed only for loopback hosts, or with allow_insecure_http=True; on the "
            "command line --allow-insecure-http)",
        )
    return text


#: Schemes that send in clear.
_PLAIN = frozenset({"ws", "http"})


def check_livekit_url(value: object, *, allow_insecure_http: bool = False) -> str:
    """The LiveKit server URL: ws(s) or http(s), no credentials in it, and plain ws:// or
    http:// only to a loopback host unless `allow_insecure_http` (the token would go in
    clear)."""
    return _check_uri(
        "livekit_url",
        value,
        ("ws", "wss", "http", "https"),
        plain_to_loopback=not allow_insecure_http,
    )


def check_background_url(value: object) -> str | None:
    """An image URL Avatario fetches: http(s), no credentials in it."""
    if value is None:
        return None
    return _check_uri("background_url", value, ("http", "https"))


def check_livekit_token(value: object) -> str:
    """A LiveKit JWT: visible ASCII only. The message never shows the token."""
    text = require_str("livekit_token", value)
    if not text:
        raise AvatarioConfigError("livekit_token", "must not be empty")
    if len(text) > MAX_TOKEN_CHARS:
        raise AvatarioConfigError("livekit_token", f"must be at most {MAX_TOKEN_CHARS} characters")
    if not _VISIBLE_ASCII.fullmatch(text):
        raise AvatarioConfigError(
            "livekit_token", "must be visible ASCII with no spaces (is it a LiveKit JWT?)"
        )
    return text


def check_idempotency_key(value: object) -> str | None:
    if value is None:
        return None
    text = require_str("idempotency_key", value)
    if not _VISIBLE_ASCII.fullmatch(text) or len(text) > MAX_IDEMPOTENCY_KEY_CHARS:
        raise AvatarioConfigError(
            "idempotency_key",
            f"must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} visible ASCII characters with no spaces",
        )
    return text


def check_video_size(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{field} must be an int, not {type(value).__name__}")
    if not MIN_VIDEO_SIZE <= value <= MAX_VIDEO_SIZE:
        raise AvatarioConfigError(
            field, f"must be between {MIN_VIDEO_SIZE} and {MAX_VIDEO_SIZE} pixels"
        )
    return value


def check_seconds(field: str, value: object, *, allow_zero: bool = True) -> float:
    """A finite, non-negative (or positive) number of seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{field} must be a number of seconds, not {type(value).__name__}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        raise AvatarioConfigError(
            field, "must be a finite number of seconds, " + ("≥ 0" if allow_zero else "> 0")
        )
    return seconds


def is_loopback_host(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
