"""A server that echoes the key or the LiveKit token escaped: each form is redacted everywhere.

Real servers write an echoed secret as their encoders do: PHP's ``\\/``, Go's and Gson's
``\\u003c`` (lower-case hex), .NET's ``\\u002B`` (upper-case), an encoder that escapes every
character, percent-encoding in either case (a ``Link`` or ``Location`` header, a URL in a
body), HTML character references (an error page), and these nested (a stringified JSON error
inside a JSON body, a JSON value percent-encoded into a URL). A raw-socket server on 127.0.0.1
answers with each form in its body and its headers, on every transport; `str(error)`,
`error.body`, `error.headers`, `result.data` and `result.request_id` never carry the secret,
in the form it was echoed in nor decoded.
"""

from __future__ import annotations

import codecs
import html
import json
import re
import urllib.parse
from collections.abc import Callable

import pytest

from avatario_wrapper import APIResponseValidationError, APIStatusError

from .conftest import call_real
from .loopback import http_response, loopback

pytestmark = pytest.mark.integration

#: A key with every character some encoder escapes: / < > & ' + = "
KEY = "sk_live/LEAK<KEY>&'5f+2b=9c\""
TOKEN = "eyJhbGciOiJIUzI1NiJ9.LEAK_TOKEN.c2ln"
REDACTED = "[redacted]"


def _json(text: str) -> str:
    """`text` as the inside of a JSON string, as Python and JavaScript write it."""
    return json.dumps(text)[1:-1]


def _hex_escapes(text: str, chars: str, upper: bool) -> str:
    out = _json(text)
    for char in chars:
        code = f"{ord(char):04X}" if upper else f"{ord(char):04x}"
        out = out.replace(_json(char), f"\\u{code}")
    return out


def _lower_hex(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), text)


def _php(text: str) -> str:
    return _json(text).replace("/", "\\/")


FORMS: dict[str, Callable[[str], str]] = {
    "php": _php,
    "go": lambda s: _hex_escapes(s, "<>&", upper=False),
    "gson": lambda s: _hex_escapes(s, "<>&='", upper=False),
    "dotnet": lambda s: _hex_escapes(s, "<>&'+\"", upper=True),
    "every-char-u": lambda s: "".join(f"\\u{ord(c):04x}" for c in s),
    "percent": lambda s: urllib.parse.quote(s, safe=""),
    "percent-lower": lambda s: _lower_hex(urllib.parse.quote(s, safe="")),
    "percent-every-char": lambda s: "".join(f"%{ord(c):02X}" for c in s),
    "html": lambda s: html.escape(s).replace("/", "&#x2F;"),
    "json-in-json": lambda s: _php(json.dumps({"key": s}).replace("/", "\\/")),
    "go-json-in-a-url": lambda s: urllib.parse.quote(_hex_escapes(s, "<>&", upper=False)),
}


def _leaks(text: str, form: Callable[[str], str]) -> list[str]:
    """The secrets `text` shows, as sent or in `form`."""
    return [s for s in (KEY, TOKEN) for shown in (s, form(s)) if shown in text]


@pytest.fixture(params=sorted(FORMS))
def form(request: pytest.FixtureRequest) -> Callable[[str], str]:
    return FORMS[request.param]


def test_every_form_is_really_another_spelling_of_the_secret(form: Callable[[str], str]) -> None:
    # Guards the test itself: the forms differ from the key, and the key has one escape at least.
    assert form(KEY) != KEY
    assert KEY not in form(KEY)


def test_an_error_echoing_the_secrets_escaped_shows_them_nowhere(
    real_kind: str, form: Callable[[str], str]
) -> None:
    echoed = f"{form(KEY)} and {form(TOKEN)}"
    body = ('{"error":"bad","message":"wrong key ' + echoed + '"}').encode()
    headers = {
        "Content-Type": "application/json",
        "x-request-id": f"req-{form(KEY)}",
        "Link": f'<https://avatario.test/next?key={form(KEY)}&t={form(TOKEN)}>; rel="next"',
        "Location": f"https://avatario.test/x?key={form(KEY)}",
        "x-echo": echoed,
    }
    with loopback(http_response(400, body, headers)) as server:
        with pytest.raises(APIStatusError) as caught:
            call_real(real_kind, server.url, api_key=KEY, livekit_token=TOKEN)
    error = caught.value
    assert len(server.requests) == 1
    assert _leaks(str(error), form) == []
    assert _leaks(repr(error), form) == []
    assert _leaks(error.body, form) == []
    assert REDACTED in error.body
    assert "wrong key" in error.body  # the rest of the body is kept
    shown = "\n".join(f"{k}: {v}" for k, v in error.headers.items())
    assert _leaks(shown, form) == []
    link = error.headers["link"]  # the rest of each header is kept
    assert link.startswith("<https://avatario.test/next?key=")
    assert link.endswith('>; rel="next"')
    assert REDACTED in link
    assert error.request_id is not None
    assert error.request_id.startswith("req-")
    assert REDACTED in error.request_id


def test_a_result_echoing_the_secrets_escaped_shows_them_nowhere(
    real_kind: str, form: Callable[[str], str]
) -> None:
    body = (
        '{"session_id":"s-1","next":"https://avatario.test/?key='
        + form(KEY)
        + '","detail":"token '
        + form(TOKEN)
        + '"}'
    ).encode()
    headers = {"Content-Type": "application/json", "x-request-id": f"req-{form(KEY)}"}
    with loopback(http_response(200, body, headers)) as server:
        result = call_real(real_kind, server.url, api_key=KEY, livekit_token=TOKEN)
    data = json.dumps(result.data, ensure_ascii=False)
    assert _leaks(data, form) == []
    assert _leaks(repr(result), form) == []
    assert result.data["next"].startswith("https://avatario.test/?key=")
    assert REDACTED in result.data["next"]
    assert result.data["detail"].startswith("token ")
    assert REDACTED in result.data["detail"]
    assert result.request_id is not None
    assert REDACTED in result.request_id
    assert result.session_id == "s-1"


def _chain(error: BaseException) -> list[BaseException]:
    """`error` and every exception chained to it (cause and context)."""
    seen: list[BaseException] = []
    pending: list[BaseException | None] = [error]
    while pending:
        item = pending.pop()
        if item is not None and all(item is not s for s in seen):
            seen.append(item)
            pending += [item.__cause__, item.__context__]
    return seen


@pytest.mark.parametrize(
    "body",
    [
        f"<html>not JSON; your key was {KEY}, token {TOKEN}</html>".encode(),
        # A UTF-16 byte-order mark, then UTF-16 cut off mid-character: a UnicodeDecodeError.
        codecs.BOM_UTF16_LE + f"<{KEY}{TOKEN}>".encode("utf-16-le")[:-1],
    ],
    ids=["not-json", "not-utf-16"],
)
def test_no_chained_exception_keeps_the_raw_body_of_a_non_json_2xx(
    real_kind: str, body: bytes
) -> None:
    with loopback(http_response(200, body, {"Content-Type": "application/json"})) as server:
        with pytest.raises(APIResponseValidationError) as caught:
            call_real(real_kind, server.url, api_key=KEY, livekit_token=TOKEN)
    chain = _chain(caught.value)
    assert len(chain) == 2  # the error and the scrubbed reason it gives as its cause
    assert "is not JSON" in str(caught.value)
    for item in chain:
        texts = [str(item), repr(item), repr(vars(item)), repr(item.args)]
        texts += [str(getattr(item, name, "")) for name in ("doc", "object", "body")]
        raw = getattr(item, "object", b"")  # a UnicodeDecodeError's bytes, read as UTF-16
        texts.append(raw.decode("utf-16-le", "replace") if isinstance(raw, bytes) else "")
        for text in texts:
            assert KEY not in text
            assert TOKEN not in text
            assert "LEAK" not in text


def test_an_error_body_in_utf_16_is_read_as_such_and_redacted(real_kind: str) -> None:
    body = json.dumps({"message": f"wrong key {KEY}"}).encode("utf-16")
    with loopback(http_response(401, body, {"Content-Type": "application/json"})) as server:
        with pytest.raises(APIStatusError) as caught:
            call_real(real_kind, server.url, api_key=KEY, livekit_token=TOKEN)
    assert caught.value.body == json.dumps({"message": f"wrong key {REDACTED}"})
    assert f"wrong key {REDACTED}" in str(caught.value)
