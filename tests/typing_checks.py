"""Checked by mypy --strict (scripts/test), never run: the public API types as documented."""

from __future__ import annotations

from typing_extensions import assert_type

from avatario_wrapper import (
    APIStatusError,
    AsyncAvatarioClient,
    AvatarioClient,
    RateLimitError,
    RetryPolicy,
    StartSessionResult,
    VideoOptions,
)
from avatario_wrapper.compat import AvatarioAPI


def sync_usage() -> None:
    with AvatarioClient("key", retry=RetryPolicy(max_attempts=5)) as client:
        result = client.start_session(
            avatar_id="a",
            agent_identity="b",
            livekit_url="wss://h",
            livekit_token="t",
            video=VideoOptions(height=480),
        )
        assert_type(result, StartSessionResult)
        assert_type(result.session_id, str | None)
        assert_type(result.attempts, int)
        fast = client.with_options(timeout=2.0)
        assert_type(fast, AvatarioClient)


async def async_usage() -> None:
    async with AsyncAvatarioClient() as client:
        result = await client.start_session(
            avatar_id="a", agent_identity="b", livekit_url="wss://h", livekit_token="t"
        )
        assert_type(result, StartSessionResult)
        assert_type(client.with_options(retry=RetryPolicy.no_retries()), AsyncAvatarioClient)
    async with AvatarioAPI("key", "face") as api:
        assert_type(
            await api.start_session(livekit_agent_identity="a", properties={}),
            StartSessionResult,
        )


def errors(exc: Exception) -> None:
    if isinstance(exc, RateLimitError):
        assert_type(exc.retry_after, float | None)
    if isinstance(exc, APIStatusError):
        assert_type(exc.status_code, int)
        assert_type(exc.body, str)
        assert_type(exc.request_id, str | None)
