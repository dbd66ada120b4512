"""The Avatario avatar for LiveKit agents: a drop-in for ``livekit.plugins.avatario``.

    from avatario_wrapper.livekit import AvatarSession

    async def entrypoint(ctx: JobContext) -> None:
        await ctx.connect()
        session = AgentSession(...)
        avatar = AvatarSession()                 # AVATARIO_AVATAR_ID, AVATARIO_API_KEY
        await avatar.start(session, room=ctx.room)  # LIVEKIT_URL, LIVEKIT_API_KEY/SECRET
        await session.start(agent=..., room=ctx.room)

Needs the ``livekit`` extra (livekit-agents and livekit-api). `AvatarSession` has the old
plugin's constructor, environment variables, `VideoInfo` and `start(...)`, and subclasses
livekit.agents' avatar `AvatarSession`, so its join wait, avatar metrics and removal of the
avatar on shutdown work as before. What differs (see docs/livekit.md):

- `start` returns the `StartSessionResult`; it sends over the worker's shared aiohttp session
  (`client=` and `retry=` for those who want their own).
- An unknown outcome (the request went out, no answer says what happened) is settled by the
  room: `start` waits up to `join_timeout` seconds for the avatar to join. Joined means
  started; otherwise it sends once more with the same idempotency key if the retry policy's
  attempts and deadline allow. It never sends again while the avatar may still be joining.
- Errors are our `AvatarioError` tree, and API errors are also livekit.agents'
  `APIError` / `APIStatusError` / `APIConnectionError` / `APITimeoutError`.
- With OpenTelemetry configured, `start` is one span ``avatario.avatar_session.start`` around
  the call(s) and the wait for the avatar to join (``avatario.avatar_join_wait``); spans go to
  livekit-agents' tracer provider when one was given to it (its ``set_tracer_provider``, or
  LiveKit Cloud's), so they sit in the agent's own trace (docs/observability.md).

`mint_avatar_token` makes the avatar's LiveKit token on its own, for callers that use
`AsyncAvatarioClient` directly.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from livekit import api, rtc
from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    NOT_GIVEN,
    AgentSession,
    APIConnectOptions,
    NotGivenOr,
    get_job_context,
    utils,
)
from livekit.agents.telemetry import tracer as livekit_tracer
from livekit.agents.telemetry.trace_types import ATTR_PROVIDER_REQUEST_IDS, ATTR_RETRY_COUNT
from livekit.agents.voice.avatar import AvatarSession as BaseAvatarSession
from livekit.agents.voice.avatar import DataStreamAudioOutput
from livekit.agents.voice.room_io import ATTRIBUTE_PUBLISH_ON_BEHALF
from opentelemetry import trace as otel_trace

from . import _telemetry
from ._clients import AsyncAvatarioClient
from ._inputs import check_agent_identity, check_seconds, check_text_id
from ._livekit_errors import as_livekit_error
from ._operations import START_SESSION, StartSessionResult
from ._settings import RetryPolicy, VideoOptions, resolve_api_key
from .compat import AVATAR_ID_ENV, retry_from_conn_options
from .errors import APIError, AvatarioConfigError, AvatarioError, Outcome

__all__ = [
    "DEFAULT_JOIN_TIMEOUT",
    "DEFAULT_TOKEN_TTL",
    "AvatarSession",
    "mint_avatar_token",
]

logger: logging.Logger = logging.getLogger("avatario_wrapper.livekit")

#: The sample rate of the audio the agent streams to the avatar (as the old plugin).
SAMPLE_RATE = 24000
AVATAR_IDENTITY = "avatario-avatar-agent"
AVATAR_NAME = "avatario-avatar-agent"
#: How long the avatar's token is valid: long enough for the avatar to join, no longer.
DEFAULT_TOKEN_TTL = datetime.timedelta(minutes=10)
#: How long `start` waits for the avatar to join when the outcome of a call is unknown.
DEFAULT_JOIN_TIMEOUT = 5.0

LIVEKIT_URL_ENV = "LIVEKIT_URL"
LIVEKIT_API_KEY_ENV = "LIVEKIT_API_KEY"
LIVEKIT_API_SECRET_ENV = "LIVEKIT_API_SECRET"  # noqa: S105 - an environment variable's name

#: `StartSessionResult.data["settled_by"]` when the room, not an HTTP answer, said it started.
SETTLED_BY_ROOM_JOIN = "room_join"

#: The spans of `AvatarSession.start` and of its wait for the avatar to join.
START_SPAN = "avatario.avatar_session.start"
JOIN_WAIT_SPAN = "avatario.avatar_join_wait"


def _livekit_tracer() -> Any:
    """livekit-agents' tracer when it was given a tracer provider of its own, else None (then
    it follows the global provider, and so does `_telemetry`)."""
    provider = getattr(livekit_tracer, "_tracer_provider", None)
    if provider is None or isinstance(
        provider, (otel_trace.ProxyTracerProvider, otel_trace.NoOpTracerProvider)
    ):
        return None
    return livekit_tracer


_telemetry.follow_tracer(_livekit_tracer)


def _require_text(field: str, value: object, *, secret: bool = False) -> str:
    if not isinstance(value, str) or not value.strip():
        shown = "" if secret else f" (got {type(value).__name__})"
        raise AvatarioConfigError(field, f"must be a non-empty string{shown}")
    return value


def mint_avatar_token(
    *,
    livekit_api_key: str,
    livekit_api_secret: str,
    room_name: str,
    agent_identity: str,
    avatar_identity: str = AVATAR_IDENTITY,
    avatar_name: str = AVATAR_NAME,
    ttl: datetime.timedelta | float = DEFAULT_TOKEN_TTL,
) -> str:
    """A LiveKit access token for the avatar to join `room_name` on behalf of the agent.

    The token is for a participant of kind ``agent`` with identity `avatar_identity` and name
    `avatar_name`, may join `room_name` only, carries the attribute ``lk.publish_on_behalf``
    = `agent_identity` (so the avatar's tracks count as the agent's), and expires after `ttl`
    (a `timedelta` or seconds; 10 minutes by default). The secret never appears in an error.
    """
    key = _require_text("livekit_api_key", livekit_api_key, secret=True)
    secret = _require_text("livekit_api_secret", livekit_api_secret, secret=True)
    room = _require_text("room_name", room_name)
    agent = check_agent_identity(agent_identity)
    identity = check_text_id("avatar_identity", avatar_identity)
    name = _require_text("avatar_name", avatar_name)
    if not isinstance(ttl, datetime.timedelta):
        ttl = datetime.timedelta(seconds=check_seconds("ttl", ttl, allow_zero=False))
    elif ttl <= datetime.timedelta(0):
        raise AvatarioConfigError("ttl", "must be positive")
    return (
        api.AccessToken(api_key=key, api_secret=secret)
        .with_kind("agent")
        .with_identity(identity)
        .with_name(name)
        .with_grants(api.VideoGrants(room_join=True, room=room))
        .with_attributes({ATTRIBUTE_PUBLISH_ON_BEHALF: agent})
        .with_ttl(ttl)
        .to_jwt()
    )


def _shared_http_session() -> Any:
    """The worker's shared aiohttp session inside a job (or `http_context.open()`), else None."""
    try:
        return utils.http_context.http_session()
    except RuntimeError:
        return None


def _from_env(value: object, env: str) -> str | None:
    # The old plugin's rule: a falsy argument (NOT_GIVEN, None, "") falls back to the environment.
    if value and isinstance(value, str):
        return value
    return os.environ.get(env) or None


class AvatarSession(BaseAvatarSession[Literal["metrics_collected"]]):
    """An Avatario avatar in a LiveKit room, driven by an `AgentSession`.

    The old plugin's constructor, plus three keyword arguments (`client`, `retry`,
    `join_timeout`).

    Args:
        avatar_id: The avatar (face) to render; default ``AVATARIO_AVATAR_ID``.
        video_info: The video's size and background (`AvatarSession.VideoInfo`); default
            1280 x 720 with no background.
        api_key: The Avatario API key; default ``AVATARIO_API_KEY``. Never shown or logged.
        avatar_participant_identity: The avatar's participant identity in the room (and in
            its token); default ``avatario-avatar-agent``.
        avatar_participant_name: The avatar's display name; default ``avatario-avatar-agent``.
        conn_options: livekit.agents' `APIConnectOptions`: its `timeout` is each attempt's,
            its `max_retry` and `retry_interval` become the `RetryPolicy` (3 attempts, now
            jittered and deadline-bound) unless `retry` is given.
        client: An `AsyncAvatarioClient` to send with (not closed here); then `api_key` and
            `conn_options` must not be given.
        retry: A `RetryPolicy` instead of the one made from `conn_options`.
        join_timeout: How long `start` waits for the avatar to join the room when a call's
            outcome is unknown, in seconds (default 5).
    """

    @dataclass
    class VideoInfo:
        """The plugin's video settings: size in pixels and an optional background URL."""

        video_height: int = 720
        video_width: int = 1280
        custom_background_url: str | None = None

    def __init__(
        self,
        *,
        avatar_id: NotGivenOr[str] = NOT_GIVEN,
        video_info: NotGivenOr[VideoInfo] = NOT_GIVEN,
        api_key: NotGivenOr[str] = NOT_GIVEN,
        avatar_participant_identity: NotGivenOr[str] = NOT_GIVEN,
        avatar_participant_name: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        client: AsyncAvatarioClient | None = None,
        retry: RetryPolicy | None = None,
        join_timeout: float = 5.0,  # DEFAULT_JOIN_TIMEOUT, written out for the reference
    ) -> None:
        super().__init__()
        avatar = avatar_id if utils.is_given(avatar_id) else os.environ.get(AVATAR_ID_ENV)
        if not avatar:
            raise AvatarioConfigError(
                "avatar_id", f"no avatar id: pass avatar_id or set {AVATAR_ID_ENV}"
            )
        self._avatar_id = check_text_id("avatar_id", avatar)
        info = video_info if utils.is_given(video_info) else self.VideoInfo()
        self._video = VideoOptions(
            height=info.video_height,
            width=info.video_width,
            background_url=info.custom_background_url,
        )
        self._avatar_participant_identity = check_text_id(
            "avatar_participant_identity",
            avatar_participant_identity
            if utils.is_given(avatar_participant_identity)
            else AVATAR_IDENTITY,
        )
        self._avatar_participant_name = _require_text(
            "avatar_participant_name",
            avatar_participant_name if utils.is_given(avatar_participant_name) else AVATAR_NAME,
        )
        self._join_timeout = check_seconds("join_timeout", join_timeout)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy, not {type(retry).__name__}")
        self._retry = retry
        self._client = client
        if client is not None:
            if not isinstance(client, AsyncAvatarioClient):
                raise TypeError(
                    f"client must be an AsyncAvatarioClient, not {type(client).__name__}"
                )
            if utils.is_given(api_key):
                raise AvatarioConfigError("api_key", "pass either client= or api_key=, not both")
            if conn_options is not DEFAULT_API_CONNECT_OPTIONS:
                raise AvatarioConfigError(
                    "conn_options", "the client= given has its own timeout and retry policy"
                )
            self._api_key: str | None = None
        else:
            # Checked now, as the old plugin did; AVATARIO_API_KEY when not given.
            self._api_key = resolve_api_key(api_key if utils.is_given(api_key) else None)
        self._conn_options = conn_options

    def __repr__(self) -> str:
        return (
            f"AvatarSession(avatar_id={self._avatar_id!r}, "
            f"avatar_identity={self._avatar_participant_identity!r}, "
            f"join_timeout={self._join_timeout!r}, api_key='***')"
        )

    @property
    def avatar_identity(self) -> str:
        return self._avatar_participant_identity

    @property
    def provider(self) -> str:
        return "avatario"

    async def start(  # type: ignore[override] # returns the result, the base returns None
        self,
        agent_session: AgentSession[Any],
        room: rtc.Room,
        *,
        livekit_url: NotGivenOr[str] = NOT_GIVEN,
        livekit_api_key: NotGivenOr[str] = NOT_GIVEN,
        livekit_api_secret: NotGivenOr[str] = NOT_GIVEN,
    ) -> StartSessionResult:
        """Send the avatar into `room` and route `agent_session`'s audio to it.

        The LiveKit URL, API key and secret fall back to ``LIVEKIT_URL``,
        ``LIVEKIT_API_KEY`` and ``LIVEKIT_API_SECRET``. Configuration is checked before
        anything is sent or registered (`AvatarioConfigError`). Returns the
        `StartSessionResult`; when the room settled an unknown outcome (the avatar joined)
        its ``data`` is ``{"settled_by": "room_join", ...}``, its `session_id` None and its
        `status_code` 0 (no HTTP answer said so; see docs/livekit.md). API failures raise
        our `APIError` subclasses, which are livekit.agents' API errors as well.
        """
        tracer = _telemetry.current_tracer()
        if tracer is None:
            return await self._start(
                agent_session, room, livekit_url, livekit_api_key, livekit_api_secret
            )
        span = tracer.start_span(
            START_SPAN,
            kind=otel_trace.SpanKind.INTERNAL,
            attributes={"avatario.avatar_id": self._avatar_id},
        )
        with otel_trace.use_span(
            span, end_on_exit=True, record_exception=False, set_status_on_exception=False
        ):
            try:
                result = await self._start(
                    agent_session, room, livekit_url, livekit_api_key, livekit_api_secret
                )
            except BaseException as error:
                _record_failure(span, error)
                raise
            _record_result(span, result)
            return result

    async def _start(
        self,
        agent_session: AgentSession[Any],
        room: rtc.Room,
        livekit_url: NotGivenOr[str],
        livekit_api_key: NotGivenOr[str],
        livekit_api_secret: NotGivenOr[str],
    ) -> StartSessionResult:
        url = _from_env(livekit_url, LIVEKIT_URL_ENV)
        key = _from_env(livekit_api_key, LIVEKIT_API_KEY_ENV)
        secret = _from_env(livekit_api_secret, LIVEKIT_API_SECRET_ENV)
        missing = [
            name
            for name, value in (
                ("livekit_url", url),
                ("livekit_api_key", key),
                ("livekit_api_secret", secret),
            )
            if value is None
        ]
        if missing or url is None or key is None or secret is None:
            raise AvatarioConfigError(
                missing[0] if len(missing) == 1 else "livekit",
                f"{', '.join(missing)} must be given as arguments or set as "
                f"{LIVEKIT_URL_ENV} / {LIVEKIT_API_KEY_ENV} / {LIVEKIT_API_SECRET_ENV}",
            )
        agent_identity = self._agent_identity(room)
        token = mint_avatar_token(
            livekit_api_key=key,
            livekit_api_secret=secret,
            room_name=self._room_name(room),
            agent_identity=agent_identity,
            avatar_identity=self._avatar_participant_identity,
            avatar_name=self._avatar_participant_name,
        )
        client, owned = self._client_for_call()
        try:
            await super().start(agent_session, room)
            logger.debug("starting the Avatario avatar %s", self._avatar_id)
            try:
                result = await self._send(
                    client, room, agent_identity=agent_identity, livekit_url=url, token=token
                )
            except APIError as error:
                failure = error
            else:
                agent_session.output.replace_audio_tail(
                    DataStreamAudioOutput(
                        room=room,
                        destination_identity=self._avatar_participant_identity,
                        sample_rate=SAMPLE_RATE,
                        wait_remote_track=rtc.TrackKind.KIND_VIDEO,
                    )
                )
                return result
        finally:
            if owned:
                await client.aclose()
        # Outside the handler, so the copy keeps the original's cause and context.
        raise as_livekit_error(failure)

    # -- helpers ---------------------------------------------------------------------------

    def _agent_identity(self, room: rtc.Room) -> str:
        job = get_job_context(required=False)
        identity: object = None
        if job is not None:
            try:
                identity = job.local_participant_identity
            except Exception:  # no identity in the job's token, and its room not connected
                identity = None
        if not identity and room.isconnected():
            identity = room.local_participant.identity
        if not identity:
            raise AvatarioConfigError(
                "agent_identity",
                "the agent's LiveKit identity comes from the job context, else from the "
                "connected room's local participant: call start() inside a job entrypoint or "
                "after room.connect()",
            )
        return check_agent_identity(identity)

    @staticmethod
    def _room_name(room: rtc.Room) -> str:
        name = room.name
        if not name:
            job = get_job_context(required=False)
            name = job.job.room.name if job is not None else ""
        if not name:
            raise AvatarioConfigError(
                "room", "the room has no name yet: connect it before starting the avatar"
            )
        return name

    def _client_for_call(self) -> tuple[AsyncAvatarioClient, bool]:
        """The client to send with, and whether this call made it (and must close it)."""
        if self._client is not None:
            if self._retry is None:
                return self._client, False
            return self._client.with_options(retry=self._retry), False
        client = AsyncAvatarioClient(
            self._api_key,
            timeout=self._conn_options.timeout,
            retry=self._retry or retry_from_conn_options(self._conn_options),
            # Inside a job, the worker's shared session (never closed by the client).
            http_client=_shared_http_session(),
        )
        return client, True

    async def _send(
        self,
        client: AsyncAvatarioClient,
        room: rtc.Room,
        *,
        agent_identity: str,
        livekit_url: str,
        token: str,
    ) -> StartSessionResult:
        """One logical start-session call; an unknown outcome is settled by the room (a step
        of the call flow: `_AvatarJoin`)."""
        return await client._call(
            START_SESSION,
            room=_AvatarJoin(self, room),
            avatar_id=self._avatar_id,
            agent_identity=agent_identity,
            livekit_url=livekit_url,
            livekit_token=token,
            video=self._video,
        )

    async def _avatar_joins(self, room: rtc.Room, seconds: float) -> bool | None:
        """Whether the avatar joins within `seconds`; None when the room cannot tell.

        Traced as a span ``avatario.avatar_join_wait`` when telemetry is on."""
        tracer = _telemetry.current_tracer()
        if tracer is None:
            return await self._wait_for_avatar(room, seconds)
        began = time.monotonic()
        with tracer.start_as_current_span(
            JOIN_WAIT_SPAN,
            attributes={"avatario.join_wait.timeout": seconds},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            joined = await self._wait_for_avatar(room, seconds)
            span.set_attributes(
                {
                    "avatario.join_wait.result": "joined"
                    if joined
                    else "room_cannot_tell"
                    if joined is None
                    else "not_joined",
                    "avatario.join_wait.duration": time.monotonic() - began,
                }
            )
            return joined

    async def _wait_for_avatar(self, room: rtc.Room, seconds: float) -> bool | None:
        identity = self._avatar_participant_identity
        if not room.isconnected():
            return None
        if identity in room.remote_participants:
            return True
        loop = asyncio.get_running_loop()
        seen: asyncio.Future[bool | None] = loop.create_future()

        def on_participant(participant: rtc.RemoteParticipant) -> None:
            if participant.identity == identity and not seen.done():
                seen.set_result(True)

        def on_state(state: rtc.ConnectionState.ValueType) -> None:
            if state == rtc.ConnectionState.CONN_DISCONNECTED and not seen.done():
                seen.set_result(None)

        handlers: Mapping[str, Callable[..., None]] = {
            "participant_connected": on_participant,
            "connection_state_changed": on_state,
        }
        for event, handler in handlers.items():
            room.on(event, handler)  # type: ignore[arg-type]
        try:
            if identity in room.remote_participants:
                return True
            try:
                return await asyncio.wait_for(seen, seconds)
            except asyncio.TimeoutError:
                return False
        finally:
            for event, handler in handlers.items():
                room.off(event, handler)  # type: ignore[arg-type]


class _AvatarJoin:
    """How an `AvatarSession` settles a call whose outcome is unknown: by its room (the call
    flow's `RoomWatch`). Joined means started; the flow decides what else follows."""

    __slots__ = ("_room", "_session", "seconds")

    def __init__(self, session: AvatarSession, room: rtc.Room) -> None:
        self._session = session
        self._room = room
        self.seconds = session._join_timeout

    async def joined(self, seconds: float) -> bool | None:
        return await self._session._avatar_joins(self._room, seconds)

    def settled(self, error: APIError, attempts: int) -> StartSessionResult:
        return _settled(error, attempts)


def _settled(error: APIError, attempts: int) -> StartSessionResult:
    """The result of a call whose answer was lost but whose avatar joined the room."""
    # A 2xx with a bad body keeps its real status; otherwise no HTTP answer said "started".
    status = int(getattr(error, "status_code", 0)) if error.outcome is Outcome.STARTED else 0
    return StartSessionResult(
        session_id=None,
        data={"settled_by": SETTLED_BY_ROOM_JOIN, "outcome": error.outcome.value},
        request_id=getattr(error, "request_id", None),
        attempts=attempts,
        status_code=status,
        idempotency_key=error.idempotency_key,
    )


def _record_result(span: Any, result: StartSessionResult) -> None:
    """`AvatarSession.start`'s span attributes for a result (nothing secret: ids only)."""
    by_room = result.session_id is None and result.data.get("settled_by") == SETTLED_BY_ROOM_JOIN
    values: dict[str, Any] = {
        "avatario.attempts": result.attempts,
        ATTR_RETRY_COUNT: max(0, result.attempts - 1),
        "avatario.outcome": Outcome.STARTED.value,
        "avatario.settled_by": SETTLED_BY_ROOM_JOIN if by_room else "http",
    }
    if result.idempotency_key:
        values["avatario.idempotency_key"] = result.idempotency_key
    ids = [i for i in (result.request_id, result.session_id) if isinstance(i, str) and i]
    if ids:
        values[ATTR_PROVIDER_REQUEST_IDS] = ids
    if result.session_id:
        values["avatario.session_id"] = result.session_id
    span.set_attributes(values)


def _record_failure(span: Any, error: BaseException) -> None:
    """`AvatarSession.start`'s span status and attributes for a failure."""
    values: dict[str, Any] = {"error.type": _telemetry.error_type(error)}
    description = type(error).__qualname__
    if isinstance(error, AvatarioError):
        description = str(error)  # one line, no secret (errors.py)
    if isinstance(error, APIError):
        values.update(
            {
                "avatario.attempts": error.attempts,
                ATTR_RETRY_COUNT: max(0, error.attempts - 1),
                "avatario.outcome": error.outcome.value,
                "avatario.may_have_started": error.may_have_started,
            }
        )
        if error.idempotency_key:
            values["avatario.idempotency_key"] = error.idempotency_key
        request_id = getattr(error, "request_id", None)
        if isinstance(request_id, str) and request_id:
            values[ATTR_PROVIDER_REQUEST_IDS] = [request_id]
        if error.not_retried_because:
            values["avatario.not_retried_because"] = error.not_retried_because
    span.set_attributes(values)
    span.set_status(otel_trace.StatusCode.ERROR, description)
