"""Redaction of a decoded JSON body, of escaped echoes, and the idempotency keys the client
makes.

`redact_data` takes a shortcut when the body's bytes show that no string can hold a secret;
these tests pin the cases where the bytes alone cannot say so (escapes, UTF-16) and the clean
case where the value must come back untouched.
"""

from __future__ import annotations

import json
import urllib.parse
import uuid

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avatario_wrapper._reply import Body
from avatario_wrapper._request import new_idempotency_key
from avatario_wrapper._text import REDACTED, _plain_views, clip, redact, redact_data, safe_line

from .conftest import API_KEY, Script

SECRETS = (API_KEY, "lk-token-abcdef")


def cleaned(raw: bytes) -> object:
    """The body `raw` decoded and redacted as a reply's is (with the text the body gives)."""
    body = Body(200)
    body.feed(raw)
    text = body.json_text()
    return redact_data(json.loads(raw if text is None else text), SECRETS, text=text)


def escaped(text: str) -> str:
    """`text` written with a JSON \\u escape for every character."""
    return "".join(f"\\u{ord(c):04x}" for c in text)


def test_a_clean_body_comes_back_as_the_same_object() -> None:
    raw = json.dumps({"session_id": "s-1", "items": ["a", {"b": "c"}]})
    value = json.loads(raw)
    assert redact_data(value, SECRETS, text=raw) is value
    assert redact_data(value, SECRETS) is value
    assert cleaned(raw.encode()) == value


@pytest.mark.parametrize(
    "raw",
    [
        # Every character of the key as an escape: its bytes are nowhere in the body.
        ('{"session_id": "s-1", "note": "' + escaped(API_KEY) + '"}').encode(),
        # One escaped character in the middle of the key.
        ('{"note": "' + API_KEY[:5] + escaped(API_KEY[5]) + API_KEY[6:] + '"}').encode(),
        # A key written as an escaped object key.
        ('{"' + escaped(API_KEY) + '": 1}').encode(),
        # UTF-16 and UTF-32 JSON (json.loads takes them): the key's UTF-8 bytes are not there.
        json.dumps({"note": f"x {API_KEY} y"}).encode("utf-16"),
        json.dumps({"note": [API_KEY]}).encode("utf-32-le"),
    ],
    ids=["escaped", "one-escape", "escaped-key", "utf-16", "utf-32"],
)
def test_a_secret_the_bytes_hide_is_still_redacted(raw: bytes) -> None:
    value = json.loads(raw)
    assert API_KEY in json.dumps(value, ensure_ascii=False)  # the body does hold the key
    text = json.dumps(cleaned(raw), ensure_ascii=False)
    assert API_KEY not in text
    assert REDACTED in text


def test_a_secret_in_plain_bytes_is_redacted_in_keys_and_nested_values() -> None:
    raw = json.dumps({API_KEY: [{"x": f"at {SECRETS[1]}"}]}).encode()
    assert cleaned(raw) == {REDACTED: [{"x": f"at {REDACTED}"}]}


@pytest.mark.parametrize(
    ("raw", "as_text"),
    [
        (b'{"a": "\xc3\xa9"}', True),
        (b'\xef\xbb\xbf{"a": 1}', False),  # UTF-8 with a byte-order mark
        ('{"a": 1}'.encode("utf-16"), False),
        ('{"a": 1}'.encode("utf-16-be"), False),
        ('{"a": 1}'.encode("utf-32"), False),
        ('{"a": 1}'.encode("utf-32-le"), False),
        (b'{"a": "\xed\xa0\x80"}', False),  # a surrogate, which json.loads lets through
    ],
    ids=["utf-8", "utf-8-bom", "utf-16", "utf-16-be", "utf-32", "utf-32-le", "surrogate"],
)
def test_a_body_is_read_as_text_only_when_it_can_only_be_utf8(raw: bytes, as_text: bool) -> None:
    body = Body(200)
    body.feed(raw)
    text = body.json_text()
    assert (text is not None) is as_text
    assert json.loads(raw if text is None else text) == json.loads(raw)


def test_a_session_id_holding_an_escaped_key_is_redacted_in_the_result(run, clock) -> None:
    body = ('{"session_id": "s-' + escaped(API_KEY) + '", "status": "starting"}').encode()
    script = Script(httpx.Response(200, content=body, headers={"content-type": "application/json"}))
    result = run(script, clock)
    assert result.session_id == f"s-{REDACTED}"
    assert API_KEY not in repr(result)
    assert API_KEY not in json.dumps(result.data)


def test_idempotency_keys_are_random_version_4_uuids_in_canonical_form() -> None:
    keys = [new_idempotency_key() for _ in range(2000)]
    assert len(set(keys)) == len(keys)
    for key in keys:
        parsed = uuid.UUID(key)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == key  # lower-case, hyphenated, 36 characters
    # Every random bit is used: across many keys each of the 122 random bits takes both values.
    ints = [uuid.UUID(k).int for k in keys]
    fixed = (0xF << 76) | (0x3 << 62)  # the version and variant bits
    varying = 0
    for i in ints[1:]:
        varying |= i ^ ints[0]
    assert varying == ((1 << 128) - 1) & ~fixed


def test_an_id_that_is_an_unhashable_str_subclass_is_checked_as_before() -> None:
    from avatario_wrapper._inputs import check_text_id

    class Text(str):
        def __eq__(self, other: object) -> bool:
            return str.__eq__(self, other)

        __hash__ = None  # type: ignore[assignment]

    assert check_text_id("avatar_id", Text("face_1")) == "face_1"
    assert check_text_id("avatar_id", Text("face_1")) == "face_1"  # and again (not cached)


# -- escaped echoes -------------------------------------------------------------------------------

#: A key with characters encoders escape; a JWT-like token.
ODD_KEY = "sk/LEAK<KEY>&'5f+2b=9c\""
ODD_SECRETS = (ODD_KEY, "eyJ.LEAK_TOKEN.sig")


def _one_char(char: str, how: int) -> str:
    """`char` written one of the ways a server may write it."""
    code = ord(char)
    return [
        char,
        f"\\u{code:04x}",
        f"\\u{code:04X}",
        f"%{code:02x}",
        f"%{code:02X}",
        f"&#{code};",
        f"&#x{code:x};",
        "\\" + char if char in '\\/"' else char,
    ][how]


@settings(max_examples=300, deadline=None)
@given(
    secret=st.sampled_from(ODD_SECRETS),
    ways=st.lists(st.integers(0, 7), min_size=40, max_size=40),
    before=st.text(max_size=20),
    after=st.text(max_size=20),
)
def test_a_secret_spelled_with_any_mix_of_escapes_is_redacted(
    secret: str, ways: list[int], before: str, after: str
) -> None:
    spelled = "".join(_one_char(c, ways[i]) for i, c in enumerate(secret))
    text = f"{before} {spelled} {after}"
    redacted = redact(text, ODD_SECRETS)
    assert spelled not in redacted
    assert REDACTED in redacted
    for view in (redacted, *_plain_views(redacted)):
        assert secret not in view


@pytest.mark.parametrize(
    "spelled",
    [
        ODD_KEY.replace("/", "\\/"),  # PHP
        json.dumps(ODD_KEY)[1:-1].replace("<", "\\u003c").replace(">", "\\u003e"),  # Go
        urllib.parse.quote(ODD_KEY, safe=""),
        urllib.parse.quote(urllib.parse.quote(ODD_KEY, safe=""), safe=""),  # twice
        json.dumps(json.dumps({"k": ODD_KEY}))[1:-1],  # JSON in a JSON string
    ],
    ids=["php", "go", "percent", "percent-twice", "json-in-json"],
)
def test_clip_and_safe_line_redact_every_form(spelled: str) -> None:
    text = f"bad key {spelled} here"
    assert ODD_KEY not in clip(text, 4096, ODD_SECRETS)
    assert spelled not in clip(text, 4096, ODD_SECRETS)
    assert clip(text, 4096, ODD_SECRETS).startswith("bad key ")
    assert clip(text, 4096, ODD_SECRETS).endswith(" here")
    line = safe_line(text, ODD_SECRETS)
    assert spelled not in line
    assert REDACTED in line


@pytest.mark.parametrize(
    "tail",
    [
        "sk\\/LEAK\\u003cKE",  # an escaped start of the key
        "sk%2FLEAK%3CK",
        "sk%2FLEAK%3",  # a percent-escape cut in two
        "sk\\/LEAK\\u00",  # a JSON escape cut in two
        "sk&#x2F;LEAK&#x3",  # an HTML reference cut in two
    ],
)
def test_a_clipped_text_never_ends_in_an_escaped_start_of_a_secret(tail: str) -> None:
    clipped = clip("x" * 20 + tail, 4096, ODD_SECRETS)
    assert clipped == "x" * 20


@pytest.mark.parametrize(
    "raw",
    [
        '{"next": "https://avatario.test/?page=2&per_page=50%2C"}',  # % and &, no secret
        '{"url": "https:\\/\\/cdn.example\\/a.png", "n": "\\u003c"}',  # PHP and Go escapes
    ],
)
def test_a_clean_body_with_escapes_still_comes_back_as_the_same_object(raw: str) -> None:
    value = json.loads(raw)
    assert redact_data(value, ODD_SECRETS, text=raw) is value
    assert clip(raw, 4096, ODD_SECRETS) == raw
    assert safe_line(raw, ODD_SECRETS) == raw


def test_a_secret_percent_encoded_in_a_json_value_is_redacted_in_the_data() -> None:
    raw = json.dumps({"next": "https://a.test/?key=" + urllib.parse.quote(ODD_KEY, safe="")})
    value = json.loads(raw)
    assert redact_data(value, ODD_SECRETS, text=raw) == {"next": f"https://a.test/?key={REDACTED}"}
