"""The checks of a call's inputs: characters that split or reorder text, credentials in URLs,
LiveKit URLs in clear. Each refusal names the field and comes before any request is sent."""

from __future__ import annotations

import pytest

from avatario_wrapper import AvatarioConfigError
from avatario_wrapper._inputs import check_background_url, check_livekit_url, check_text_id

from .conftest import TOKEN, Script, ok

#: One of each kind of character that can split or reorder text, by its Unicode category.
UNSHOWABLE = {
    "C0 (NUL)": "\x00",
    "C0 (ESC)": "\x1b",
    "DEL": "\x7f",
    "C1 (NEL)": "\x85",
    "C1 (CSI)": "\x9b",
    "arabic letter mark": "\u061c",
    "left-to-right mark": "\u200e",
    "right-to-left mark": "\u200f",
    "left-to-right embedding": "\u202a",
    "right-to-left override": "\u202e",
    "left-to-right isolate": "\u2066",
    "pop directional isolate": "\u2069",
    "line separator": "\u2028",
    "paragraph separator": "\u2029",
    "zero-width space": "\u200b",
    "zero-width joiner": "\u200d",
    "word joiner": "\u2060",
    "byte-order mark": "\ufeff",
    "soft hyphen": "\u00ad",
    "tag character": "\U000e0041",
    "lone surrogate": "\ud800",
}


@pytest.mark.parametrize("char", list(UNSHOWABLE.values()), ids=list(UNSHOWABLE))
@pytest.mark.parametrize("field", ["avatar_id", "agent_identity"])
def test_ids_refuse_every_character_that_splits_or_reorders_text(
    run, clock, field: str, char: str
) -> None:
    script = Script(ok())
    with pytest.raises(AvatarioConfigError) as caught:
        run(script, clock, **{field: f"agent{char}7"})
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: must not contain control, invisible format")
    assert f"U+{ord(char):04X}" in str(caught.value)
    assert script.requests == []


@pytest.mark.parametrize("char", list(UNSHOWABLE.values()), ids=list(UNSHOWABLE))
def test_urls_refuse_them_as_sent_and_percent_encoded(char: str) -> None:
    urls = [f"wss://rooms.example.com/{char}x"]
    if not 0xD800 <= ord(char) <= 0xDFFF:  # (a surrogate has no UTF-8 to percent-encode)
        encoded = "".join(f"%{b:02X}" for b in char.encode())
        urls.append(f"wss://rooms.example.com/?room={encoded}")
    for url in urls:
        with pytest.raises(AvatarioConfigError) as caught:
            check_livekit_url(url)
        assert caught.value.field == "livekit_url"
        assert "must not contain control" in str(caught.value)
        with pytest.raises(AvatarioConfigError) as caught:
            check_background_url(url.replace("wss://", "https://"))
        assert caught.value.field == "background_url"


@pytest.mark.parametrize(
    "text", ["face é 1", "agent-ü", "名前", "a\u00a0b", "emoji 🙂", "\ue000 private use"]
)
def test_printable_unicode_and_spaces_that_print_are_accepted_in_ids(text: str) -> None:
    assert check_text_id("avatar_id", text) == text


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (f"wss://{TOKEN}@rooms.example.com", "must not carry credentials"),
        ("wss://user:s3cr3tPW@rooms.example.com", "must not carry credentials"),
        ("https://user@rooms.example.com", "must not carry credentials"),
        ("ws://user:s3cr3tPW@127.0.0.1:7880", "must not carry credentials"),
        # In clear to a host that is not loopback: the token would cross the network readable.
        ("ws://rooms.example.com", "must use wss:// or https:// (ws:// sends the LiveKit token"),
        ("http://rooms.example.com:7880", "must use wss:// or https://"),
        ("ws://10.0.0.5:7880", "allowed only for loopback hosts, or with allow_insecure_http=True"),
        ("ws://[2001:db8::1]", "must use wss:// or https://"),
    ],
)
def test_a_livekit_url_with_credentials_or_in_clear_to_another_host_is_refused(
    run, clock, url: str, problem: str
) -> None:
    script = Script(ok())
    with pytest.raises(AvatarioConfigError) as caught:
        run(script, clock, livekit_url=url)
    assert caught.value.field == "livekit_url"
    assert problem in str(caught.value)
    assert TOKEN not in str(caught.value)
    assert "s3cr3tPW" not in str(caught.value)
    assert script.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "ws://localhost:7880",
        "ws://LOCALHOST:7880",
        "http://127.0.0.1:7880",
        "ws://127.1.2.3",
        "ws://[::1]:7880/rtc",
        "wss://rooms.example.com",
        "https://rooms.example.com:443/x",
    ],
)
def test_a_livekit_url_in_clear_to_loopback_or_over_tls_is_accepted(run, clock, url: str) -> None:
    script = Script(ok())
    run(script, clock, livekit_url=url)
    [request] = script.requests
    assert url.encode() in request.content


@pytest.mark.parametrize("url", ["ws://rooms.example.com", "http://10.0.0.5:7880/x"])
def test_a_livekit_url_in_clear_is_accepted_with_the_explicit_allowance(url: str) -> None:
    assert check_livekit_url(url, allow_insecure_http=True) == url
    with pytest.raises(AvatarioConfigError):
        check_livekit_url(url)  # the allowance is not remembered by the cache
    with pytest.raises(AvatarioConfigError, match="credentials"):
        check_livekit_url(url.replace("://", "://u:p@"), allow_insecure_http=True)
