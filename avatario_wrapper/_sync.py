"""AvatarioClient: the blocking client. Sending is the sender's; sleeping the clock's."""

from __future__ import annotations

from types import TracebackType

import httpx

from ._base import ClientBase
from ._models import StartSessionResult, VideoOptions
from ._retry import run_sync
from ._senders import HttpxSender


class AvatarioClient(ClientBase[httpx.Client, HttpxSender]):
    """A blocking Avatario client with one pooled `httpx.Client`, safe to share across threads.

    ``AvatarioClient(api_key=None, *, base_url=None, timeout=10.0, retry=None,
    http_client=None, allow_insecure_http=False)``: the key falls back to ``AVATARIO_API_KEY``,
    the base URL to ``AVATARIO_BASE_URL`` and then production. A pool passed as `http_client`
    is used as is (its TLS settings included) and not closed by `close()`.
    """

    def _new_sender(self, http_client: httpx.Client | None) -> HttpxSender:
        return HttpxSender(http_client, self._settings.timeout)

    def start_session(
        self,
        *,
        avatar_id: str,
        agent_identity: str,
        livekit_url: str,
        livekit_token: str,
        video: VideoOptions | None = None,
        idempotency_key: str | None = None,
    ) -> StartSessionResult:
        """Send the avatar `avatar_id` into the LiveKit room at `livekit_url`.

        Every input is checked before any I/O; failures are retried by the client's
        `RetryPolicy` with one idempotency key. Raises an `AvatarioError` subclass.
        """
        call, state = self._prepare(
            avatar_id, agent_identity, livekit_url, livekit_token, video, idempotency_key
        )

        def attempt() -> StartSessionResult:
            reply = self._sender.send(call, state.begin_attempt(), state.attempts)
            return call.outcome(reply, state.attempts, self._settings.clock)

        return run_sync(attempt, state)

    def close(self) -> None:
        """Close the connection pool, if this client made it."""
        if self._owns_sender:
            self._sender.close()

    def __enter__(self) -> AvatarioClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
