"""`AvatarSession`: one Avatario avatar per session, from `start` until the agent ends.

The life of one avatar, in order:

1. `start` checks its configuration (nothing is sent or registered before), claims the
   session's one avatar (a second `start` sends nothing: it waits for and returns the first
   one's outcome), then sends start-session through the call flow. An unknown outcome is
   settled by the room (`_join.AvatarJoin`); `wait_for_join=True` also waits for the avatar's
   video on success. The agent's audio is then routed to the avatar.
2. The avatar is removed through LiveKit's server API (`_ending.AvatarRemoval`, once) when the
   `AgentSession` closes, when `max_duration` has passed since it joined, or at the latest in
   `aclose()`, which the base class registers as a job shutdown callback.
3. `aclose()` then detaches everything; a `start` after it is a new avatar.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any, Literal

import attrs
from livekit import rtc
from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    NOT_GIVEN,
    AgentSession,
    APIConnectOptions,
    NotGivenOr,
    get_job_context,
    utils,
)
from livekit.agents.voice.avatar import AvatarSession as BaseAvatarSession
from livekit.agents.voice.avatar import DataStreamAudioOutput
from opentelemetry import trace as otel_trace

from .. import _telemetry
from .._clients import AsyncAvatarioClient
from .._clock import SYSTEM_CLOCK, Clock
from .._inputs import check_agent_identity, check_seconds, check_text_id
from .._livekit_errors import as_livekit_error
from .._operations import START_SESSION, StartSessionResult
from .._settings import RetryPolicy, VideoOptions, resolve_api_key
from .._stores.base import ENV_VAR as RETRY_BUDGET_ENV
from .._text import one_line
from ..compat import AVATAR_ID_ENV, retry_from_conn_options
from ..errors import APIError, AvatarioConfigError
from ._avatar import StartedAvatar
from ._join import SETTLED_BY_ROOM_JOIN, AvatarJoin, AvatarJoinTimeoutError
from ._spans import START_SPAN, EventSpans, record_failure, record_result
from ._token import (
    AVATAR_IDENTITY,
    AVATAR_NAME,
    DEFAULT_TOKEN_TTL,
    mint_avatar_token,
    require_text,
    token_ttl,
    websocket_url,
)

logger: logging.Logger = logging.getLogger("avatario_wrapper.livekit")

#: The sample rate of the audio the agent streams to the avatar (as the old plugin).
SAMPLE_RATE = 24000
#: How long an avatar may take to join the room: livekit-agents' own ``wait_for_join``.
DEFAULT_JOIN_TIMEOUT = 30.0
#: How long asking LiveKit to remove the avatar may take.
DEFAULT_REMOVAL_TIMEOUT = 5.0

LIVEKIT_URL_ENV = "LIVEKIT_URL"
LIVEKIT_API_KEY_ENV = "LIVEKIT_API_KEY"
LIVEKIT_API_SECRET_ENV = "LIVEKIT_API_SECRET"  # noqa: S105 - an environment variable's name


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
    """An Avatario avatar in a LiveKit room, driven by an `AgentSession`: one avatar per
    session, ended with the agent.

    The old plugin's constructor, plus keyword arguments of its own (see docs/livekit.md).

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
            jittered and deadline-bound, the deadline leaving `join_timeout` for the room to
            settle a lost answer) unless `retry` is given.
        client: An `AsyncAvatarioClient` to send with (not closed here), used with its own
            policy; then `api_key`, `api_url`, `conn_options` and `allow_insecure_http` must
            not be given.
        retry: A `RetryPolicy` instead of the one made from `conn_options`, used as it is:
            its `max_elapsed` bounds the whole call, the room's wait included.
        join_timeout: How long an avatar may take to join the room, in seconds (default 30,
            livekit-agents' ``wait_for_join``): how long the room is watched after an unknown
            outcome before the one resend, and the bound of `wait_for_join`.
        api_url: The Avatario API root (default ``AVATARIO_BASE_URL``, then Avatario's).
        allow_insecure_http: Allow plain ``http://`` `api_url` and plain ``ws://`` /
            ``http://`` LiveKit URLs beyond loopback (e.g. ``http://livekit:7880`` in a
            docker network): the avatar's token then travels in clear.
        token_ttl: How long the avatar's LiveKit token is valid (a `timedelta` or seconds);
            default 6 hours, or `max_duration` plus `join_timeout` when longer. A shorter one
            is logged as a WARNING: an avatar that rejoins after it expires is refused.
        wait_for_join: `start` returns only once the avatar is in the room publishing video
            (within `join_timeout`, else `AvatarJoinTimeoutError`); default False, the old
            plugin's non-blocking start.
        max_duration: Remove the avatar this many seconds after it joined (an agent-side
            cap); default None (no cap).
        wait_playback_start: `DataStreamAudioOutput`'s: count playback from the avatar's
            "playback started" instead of from sending (default False).
        clear_buffer_timeout: `DataStreamAudioOutput`'s: seconds to wait for the avatar to
            confirm an interruption (default 2.0; None: wait without limit).
        removal_timeout: How long asking LiveKit to remove the avatar may take, in seconds
            (default 5).
        retry_budget_store: Where the retry budget of the client made here lives (the
            client's `retry_budget_store`): default ``AVATARIO_RETRY_BUDGET_URL``, else
            ``"host"``, shared by every job process of the worker's user on the machine (each
            job makes its own client; a budget per client would let a fleet of jobs retry
            into an outage at three requests per call). A ``redis://`` URL shares it across
            machines.
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
        join_timeout: float = 30.0,  # DEFAULT_JOIN_TIMEOUT, written out for the reference
        api_url: str | None = None,
        allow_insecure_http: bool = False,
        token_ttl: datetime.timedelta | float | None = None,
        wait_for_join: bool = False,
        max_duration: float | None = None,
        wait_playback_start: bool = False,
        clear_buffer_timeout: float | None = 2.0,
        removal_timeout: float = 5.0,  # DEFAULT_REMOVAL_TIMEOUT
        retry_budget_store: str | None = None,
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
        self._avatar_participant_name = require_text(
            "avatar_participant_name",
            avatar_participant_name if utils.is_given(avatar_participant_name) else AVATAR_NAME,
        )
        self._join_timeout = check_seconds("join_timeout", join_timeout)
        self._max_duration = (
            None
            if max_duration is None
            else check_seconds("max_duration", max_duration, allow_zero=False)
        )
        self._token_ttl = self._checked_token_ttl(token_ttl)
        self._wait_for_join = _flag("wait_for_join", wait_for_join)
        self._wait_playback_start = _flag("wait_playback_start", wait_playback_start)
        self._clear_buffer_timeout = (
            None
            if clear_buffer_timeout is None
            else check_seconds("clear_buffer_timeout", clear_buffer_timeout)
        )
        self._removal_timeout = check_seconds("removal_timeout", removal_timeout, allow_zero=False)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy, not {type(retry).__name__}")
        self._retry = retry
        self._client = client
        self._api_url = api_url
        self._allow_insecure_http = _flag("allow_insecure_http", allow_insecure_http)
        if retry_budget_store is not None and not isinstance(retry_budget_store, str):
            raise TypeError(
                f"retry_budget_store must be a str, not {type(retry_budget_store).__name__}"
            )
        self._retry_budget_store = retry_budget_store
        if client is not None:
            if not isinstance(client, AsyncAvatarioClient):
                raise TypeError(
                    f"client must be an AsyncAvatarioClient, not {type(client).__name__}"
                )
            for field, given in (
                ("api_key", utils.is_given(api_key)),
                ("api_url", api_url is not None),
                ("allow_insecure_http", allow_insecure_http),
                ("conn_options", conn_options is not DEFAULT_API_CONNECT_OPTIONS),
                ("retry_budget_store", retry_budget_store is not None),
            ):
                if given:
                    raise AvatarioConfigError(
                        field, "the client= given has its own; pass either client= or this"
                    )
            self._api_key: str | None = None
        else:
            # Checked now, as the old plugin did; AVATARIO_API_KEY when not given.
            self._api_key = resolve_api_key(api_key if utils.is_given(api_key) else None)
        self._conn_options = conn_options
        self._avatar: StartedAvatar | None = None

    def _checked_token_ttl(self, ttl: datetime.timedelta | float | None) -> datetime.timedelta:
        """The token's lifetime: long enough for the avatar's whole stay unless told."""
        stay = datetime.timedelta(seconds=(self._max_duration or 0.0) + self._join_timeout)
        needed = max(DEFAULT_TOKEN_TTL, stay)
        if ttl is None:
            return needed
        given = token_ttl(ttl)
        if given < needed:
            logger.warning(
                "token_ttl=%s is shorter than %s (6 hours, or max_duration plus join_timeout): "
                "an avatar that has to rejoin the room after its token expired (a network "
                "change) is refused by LiveKit",
                given,
                needed,
            )
        return given

    def __repr__(self) -> str:
        return (
            f"AvatarSession(avatar_id={self._avatar_id!r}, "
            f"avatar_identity={self._avatar_participant_identity!r}, "
            f"join_timeout={self._join_timeout!r}, started={self._avatar is not None!r}, "
            "api_key='***')"
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
        ``LIVEKIT_API_KEY`` and ``LIVEKIT_API_SECRET``; an ``https://`` / ``http://`` URL is
        sent as ``wss://`` / ``ws://``. Configuration is checked before anything is sent or
        registered (`AvatarioConfigError`). Returns the `StartSessionResult`; when the room
        settled an unknown outcome (the avatar joined) its ``data`` is ``{"settled_by":
        "room_join", ...}``, its `session_id` None and its `status_code` 0 (see
        docs/livekit.md). API failures raise our `APIError` subclasses, which are
        livekit.agents' API errors as well.

        One avatar per `AvatarSession`: a second call, while the first runs or after it,
        sends nothing and returns the first call's result (or raises its error); with another
        room or `AgentSession` it is an `AvatarioConfigError`. After `aclose()`, `start`
        starts a new avatar.
        """
        if self._avatar is not None:
            return await self._again(self._avatar, agent_session, room)
        livekit = (livekit_url, livekit_api_key, livekit_api_secret)
        tracer = _telemetry.current_tracer()
        if tracer is None:
            return await self._first_start(agent_session, room, livekit, EventSpans())
        span = tracer.start_span(
            START_SPAN,
            kind=otel_trace.SpanKind.INTERNAL,
            attributes={"avatario.avatar_id": self._avatar_id},
        )
        spans = EventSpans(span)
        with otel_trace.use_span(
            span, end_on_exit=True, record_exception=False, set_status_on_exception=False
        ):
            try:
                result = await self._first_start(agent_session, room, livekit, spans)
            except BaseException as error:
                record_failure(span, error)
                raise
            by_room = result.session_id is None and (
                result.data.get("settled_by") == SETTLED_BY_ROOM_JOIN
            )
            record_result(span, result, SETTLED_BY_ROOM_JOIN if by_room else "http")
            return result

    async def aclose(self) -> None:
        """End the avatar and release what `start` set up.

        Asks LiveKit to remove the avatar participant (by the room's name, so also after the
        room disconnected; once per avatar, bounded by `removal_timeout`, failures logged,
        never raised), unless the AgentSession's close or `max_duration` did already. The
        base class registers it as a job shutdown callback. After it, `start` starts a new
        avatar.
        """
        avatar, self._avatar = self._avatar, None
        if avatar is not None:
            try:
                await avatar.end("aclose()")
            finally:
                avatar.detach()
        room = self._room
        if room is not None:
            # The base removes the avatar only while it holds a connected room; ours did that
            # (once), so it gets none, and its room handler is taken off here.
            room.off("connection_state_changed", self._on_connection_state_changed)
            self._room = None
        await super().aclose()

    # -- the first start --------------------------------------------------------------------

    async def _first_start(
        self,
        agent_session: AgentSession[Any],
        room: rtc.Room,
        livekit: tuple[NotGivenOr[str], NotGivenOr[str], NotGivenOr[str]],
        spans: EventSpans,
    ) -> StartSessionResult:
        url, key, secret = _livekit_settings(*livekit)
        agent_identity = self._agent_identity(room)
        room_name = self._room_name(room)
        token = mint_avatar_token(
            livekit_api_key=key,
            livekit_api_secret=secret,
            room_name=room_name,
            agent_identity=agent_identity,
            avatar_identity=self._avatar_participant_identity,
            avatar_name=self._avatar_participant_name,
            ttl=self._token_ttl,
        )
        client, owned = self._client_for_call()
        avatar = StartedAvatar(
            agent_session,
            room,
            room_name,
            self._avatar_participant_identity,
            clock=_clock_of(client),
            spans=spans,
            max_duration=self._max_duration,
            removal_timeout=self._removal_timeout,
        )
        try:
            # The inputs are checked here, before anything is registered or sent.
            call = client._call(
                START_SESSION,
                room=AvatarJoin(avatar.presence, self._join_timeout),
                avatar_id=self._avatar_id,
                agent_identity=agent_identity,
                livekit_url=websocket_url(url),
                livekit_token=token,
                video=self._video,
            )
        except BaseException:
            if owned:
                await client.aclose()
            raise
        self._avatar = avatar  # no await since start() looked: one avatar per session
        try:
            result = await self._start(avatar, call, client, owned)
        except BaseException as error:
            avatar.settle(None, error)
            raise
        avatar.settle(result, None)
        return result

    async def _start(
        self,
        avatar: StartedAvatar,
        call: Any,
        client: AsyncAvatarioClient,
        owned: bool,
    ) -> StartSessionResult:
        failure: APIError | None = None
        try:
            try:
                await super().start(avatar.agent_session, avatar.room)
            except BaseException:
                call.close()  # never awaited: nothing was sent
                raise
            avatar.attach()
            logger.debug("starting the Avatario avatar %s", self._avatar_id)
            avatar.may_exist = True  # from here on a request may go out
            try:
                result = await call
            except APIError as error:
                avatar.may_exist = error.may_have_started
                failure = error
        finally:
            if owned:
                await client.aclose()
        if failure is not None:
            # Outside the handler, so the copy keeps the original's cause and context.
            raise as_livekit_error(failure)
        return await self._route_audio(avatar, result)

    async def _route_audio(
        self, avatar: StartedAvatar, result: StartSessionResult
    ) -> StartSessionResult:
        """Route the agent's audio to the avatar (once it publishes video, with
        `wait_for_join`)."""
        if self._wait_for_join:
            joined = await avatar.presence.wait(self._join_timeout, avatar.clock, video=True)
            if not joined:
                raise AvatarJoinTimeoutError(
                    result,
                    identity=self._avatar_participant_identity,
                    room=avatar.room_name,
                    seconds=self._join_timeout,
                )
        avatar.agent_session.output.replace_audio_tail(
            DataStreamAudioOutput(
                room=avatar.room,
                destination_identity=self._avatar_participant_identity,
                sample_rate=SAMPLE_RATE,
                wait_remote_track=rtc.TrackKind.KIND_VIDEO,
                clear_buffer_timeout=self._clear_buffer_timeout,
                wait_playback_start=self._wait_playback_start,
            )
        )
        return result

    async def _again(
        self, avatar: StartedAvatar, agent_session: AgentSession[Any], room: rtc.Room
    ) -> StartSessionResult:
        """A second `start`: the first one's outcome, sending nothing."""
        if room is not avatar.room or agent_session is not avatar.agent_session:
            raise AvatarioConfigError(
                "room" if room is not avatar.room else "agent_session",
                "this AvatarSession's avatar was started for another room or AgentSession "
                f"(room {one_line(avatar.room_name)!r}): one avatar per AvatarSession; "
                "aclose() it before starting it again, or use another AvatarSession",
            )
        logger.info(
            "AvatarSession.start() called again: one avatar per AvatarSession, so nothing is "
            "sent; it returns the first call's outcome"
        )
        return await asyncio.shield(avatar.outcome)

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
        # One call per job process: a budget of its own would share nothing, so the
        # default is the host's (or the fleet's, by the environment).
        store = self._retry_budget_store
        if store is None and not os.environ.get(RETRY_BUDGET_ENV, "").strip():
            store = "host"  # else None: the client reads the variable (and names it in errors)
        client = AsyncAvatarioClient(
            self._api_key,
            base_url=self._api_url,
            timeout=self._conn_options.timeout,
            retry=self._retry or self._default_policy(),
            # Inside a job, the worker's shared session (never closed by the client).
            http_client=_shared_http_session(),
            allow_insecure_http=self._allow_insecure_http,
            retry_budget_store=store,
        )
        return client, True

    def _default_policy(self) -> RetryPolicy:
        """`conn_options` as a policy whose deadline leaves `join_timeout` for the room to
        settle a lost answer: the watch is part of the call, bounded by `max_elapsed`."""
        policy = retry_from_conn_options(self._conn_options)
        return attrs.evolve(policy, max_elapsed=policy.max_elapsed + self._join_timeout)


def _livekit_settings(
    livekit_url: NotGivenOr[str],
    livekit_api_key: NotGivenOr[str],
    livekit_api_secret: NotGivenOr[str],
) -> tuple[str, str, str]:
    """The LiveKit URL, key and secret: the arguments, else the environment."""
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
    return url, key, secret


def _clock_of(client: AsyncAvatarioClient) -> Clock:
    """The client's clock (a test's `FakeClock`), which the avatar's waits run on."""
    settings = getattr(client, "_settings", None)
    return getattr(settings, "clock", SYSTEM_CLOCK)


def _flag(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise AvatarioConfigError(field, f"must be True or False, not {type(value).__name__}")
    return value
