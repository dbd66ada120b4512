"""Both sides of the contract with openapi.yaml.

Server side: schemathesis (pytest integration) drives the fake's ASGI app with positive and
negative data and every check. Client side: every request the wrapper sends for valid inputs
validates against the request schema, and every response the spec allows maps to the right
result or error class.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig

from avatario_wrapper import (
    APIStatusError,
    AvatarioClient,
    AvatarioConfigError,
    RetryPolicy,
    StartSessionResult,
    VideoOptions,
)
from avatario_wrapper.errors import status_error_class
from avatario_wrapper.testing import FakeAvatario, FakeClock

from .spec_helpers import SPEC_PATH, spec, validator
from .test_fake_spec import with_session_lookup

pytestmark = pytest.mark.contract

KEY = "sk_contract_key_0001"
FAKE = FakeAvatario(api_key=KEY)

CONFIG = SchemathesisConfig.from_dict(
    {
        "auth": {"openapi": {"apiKey": {"api_key": KEY}}},
        "generation": {"mode": "all", "max-examples": 60},
        "checks": {"enabled": True},
    }
)
SCHEMA = schemathesis.openapi.from_path(str(SPEC_PATH), config=CONFIG)
SCHEMA.app = FAKE.app


@SCHEMA.parametrize()
def test_the_fake_server_honours_the_spec(case: Any) -> None:
    case.call_and_validate()


# The same for an operation the fake has no handler for: served from the spec alone.
EXTENDED = schemathesis.openapi.from_dict(with_session_lookup(), config=CONFIG)
EXTENDED.app = FakeAvatario(api_key=KEY, spec=with_session_lookup()).app


@EXTENDED.include(operation_id="getSession").parametrize()
def test_the_fake_serves_an_operation_from_the_spec_alone(case: Any) -> None:
    case.call_and_validate()


# -- client side: requests -----------------------------------------------------------------

printable_id = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x7f"),
    min_size=1,
    max_size=300,
)
url_text = st.from_regex(
    r"\A(wss?|https?)://[a-z0-9.\-]{1,30}(:[0-9]{1,5})?(/[A-Za-z0-9._~%!$&'()*+,;=:@/-]{0,40})?\Z"
)
token = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x17F), max_size=40)


def _capture(**call: Any) -> dict[str, Any] | AvatarioConfigError | TypeError:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"session_id": "s"})

    http = httpx.Client(transport=httpx.MockTransport(handler))
    with AvatarioClient(KEY, base_url="https://avatario.test", http_client=http) as client:
        try:
            client.start_session(**call)
        except (AvatarioConfigError, TypeError) as refused:
            assert seen == []  # a refusal never sends anything
            return refused
    [request] = seen
    assert request.headers["x-api-key"] == KEY
    key = request.headers["idempotency-key"]
    validator_for_header = spec()["components"]["parameters"]["IdempotencyKey"]["schema"]
    assert 1 <= len(key) <= validator_for_header["maxLength"]
    result: dict[str, Any] = json.loads(request.content)
    return result


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    avatar=printable_id,
    agent=printable_id,
    url=st.one_of(url_text, st.text(max_size=30)),
    secret=token,
    height=st.integers(-10, 5000),
    width=st.integers(-10, 5000),
    background=st.one_of(st.none(), url_text, st.text(max_size=20)),
    key=st.one_of(st.none(), st.text(max_size=260)),
)
def test_every_request_the_wrapper_sends_validates_against_the_spec(
    avatar: str,
    agent: str,
    url: str,
    secret: str,
    height: int,
    width: int,
    background: str | None,
    key: str | None,
) -> None:
    try:
        video = VideoOptions(height=height, width=width, background_url=background)
    except AvatarioConfigError:
        video = None
    outcome = _capture(
        avatar_id=avatar,
        agent_identity=agent,
        livekit_url=url,
        livekit_token=secret,
        video=video,
        idempotency_key=key,
    )
    if isinstance(outcome, dict):
        validator("StartSessionRequest").validate(outcome)


def test_valid_inputs_are_not_refused() -> None:
    body = _capture(
        avatar_id="face é 1",
        agent_identity="agent-ü",
        livekit_url="wss://rooms.example.com:7880/rtc?x=1",
        livekit_token="eyJ.abc.def",
        video=VideoOptions(height=1080, width=1920, background_url="https://c.example/b.png"),
    )
    assert isinstance(body, dict)
    validator("StartSessionRequest").validate(body)


# -- client side: responses ----------------------------------------------------------------

documented = st.sampled_from([200, 400, 401, 403, 404, 409, 422, 429, 500, 502, 503, 504, 599])
error_bodies = st.fixed_dictionaries(
    {"error": st.text(min_size=1, max_size=20), "message": st.text(min_size=1, max_size=50)},
    optional={"request_id": st.text(max_size=20)},
)
success_bodies = st.dictionaries(
    st.text(max_size=10).filter(lambda k: k != "session_id"),
    st.one_of(st.none(), st.integers(), st.text(max_size=10), st.booleans()),
    max_size=5,
).flatmap(
    lambda extra: st.one_of(
        st.just(extra), st.text(max_size=20).map(lambda sid: {**extra, "session_id": sid})
    )
)


@settings(max_examples=200, deadline=None)
@given(status=documented, data=st.data())
def test_every_documented_response_maps_to_a_result_or_its_error(status: int, data: Any) -> None:
    body = data.draw(success_bodies if status == 200 else error_bodies)
    name = "StartSessionResponse" if status == 200 else "Error"
    validator(name).validate(body)  # the generated response is one the spec allows
    response = httpx.Response(status, json=body, headers={"x-request-id": "rid"})
    http = httpx.Client(transport=httpx.MockTransport(lambda request: response))
    with AvatarioClient(
        KEY,
        base_url="https://avatario.test",
        http_client=http,
        clock=FakeClock(),
        retry=RetryPolicy(max_attempts=1),
    ) as client:
        try:
            outcome: StartSessionResult | APIStatusError = client.start_session(
                avatar_id="f", agent_identity="a", livekit_url="wss://h", livekit_token="t0k"
            )
        except APIStatusError as error:
            outcome = error
    if status == 200:
        assert isinstance(outcome, StartSessionResult)
        assert outcome.data == body
        assert outcome.session_id == body.get("session_id")
        assert outcome.request_id == "rid"
    else:
        assert type(outcome) is status_error_class(status)
        assert outcome.status_code == status
        assert json.loads(outcome.body) == body
        assert outcome.request_id == "rid"
