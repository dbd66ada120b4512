"""Redaction of a decoded JSON body and the idempotency keys the client makes.

`redact_data` takes a shortcut when the body's bytes show that no string can hold a secret;
these tests pin the cases where the bytes alone cannot say so (escapes, UTF-16) and the clean
case where the value must come back untouched.
"""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from avatario_wrapper._reply import Body
from avatario_wrapper._request import new_idempotency_key
from avatario_wrapper._text import REDACTED, redact_data

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
