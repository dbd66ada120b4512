"""An async transport belongs to one event loop: the first it sends on, or its pool's.

Used on another loop it raises `WrongEventLoopError` before anything is sent; closing works
from anywhere (`close_from_outside`).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from typing import Any

from ..errors import WrongEventLoopError
from ._timer import Deadlines


def asyncio_module() -> Any:
    """asyncio, imported by whoever runs a coroutine (not at import: the sync client never
    needs it)."""
    module = sys.modules.get("asyncio")
    if module is None:  # pragma: no cover - a coroutine is running, so it is imported
        import asyncio as module  # noqa: PLC0415
    return module


class LoopBinding:
    """The event loop an async transport belongs to, and the timers of its attempts there."""

    __slots__ = ("_deadlines", "loop")

    def __init__(self, loop: Any = None) -> None:
        self.loop = loop
        self._deadlines: Deadlines | None = None

    def deadlines(self) -> Deadlines:
        """The timers of the attempts on the bound loop (bind it first, with `check`)."""
        found = self._deadlines
        if found is None or found.loop is not self.loop:
            found = self._deadlines = Deadlines(self.loop)
        return found

    def check(self, client: str) -> None:
        """Bind to the running loop, or raise `WrongEventLoopError` if bound to another."""
        running = asyncio_module().get_running_loop()
        if self.loop is None:
            self.loop = running
        elif self.loop is not running:
            raise WrongEventLoopError(wrong_loop_message(client, self.loop))

    def is_other(self) -> bool:
        """True when a loop is bound and it is not the one running in this thread."""
        try:
            running = asyncio_module().get_running_loop()
        except RuntimeError:
            running = None
        return self.loop is not None and self.loop is not running


def wrong_loop_message(client: str, loop: Any) -> str:
    state = "now closed" if loop.is_closed() else "still open, in another thread or task runner"
    return (
        f"this {client} belongs to another event loop (the one it first sent on, {state}); "
        "nothing was sent. Make the client inside the event loop that uses it, one per loop "
        "(with pytest-asyncio or anyio, in a fixture of the same scope as the event loop; in a "
        "service, in its lifespan)"
    )


def close_from_outside(
    loop: Any,
    closing: Callable[[], Coroutine[Any, Any, None]],
    *,
    in_a_coroutine: bool,
) -> Awaitable[None] | None:
    """Close a pool whose connections belong to `loop`, from outside that loop.

    A loop running in another thread closes them itself (the returned awaitable, or a wait of
    up to 5 s from synchronous code); a loop that is idle is run to close them, when no other
    loop runs in this thread. A closed loop's connections cannot be closed any more (their
    transports need the loop): they are left as the loop's owner left them, as an idle loop
    seen from a coroutine of another loop is left to close its own.
    """
    asyncio = asyncio_module()
    if loop.is_closed():
        return None
    if loop.is_running():
        future = asyncio.run_coroutine_threadsafe(closing(), loop)
        if in_a_coroutine:
            return asyncio.wait_for(asyncio.wrap_future(future), 5.0)  # type: ignore[no-any-return]
        with contextlib.suppress(Exception):
            future.result(5.0)
        return None
    if not in_a_coroutine:
        loop.run_until_complete(closing())
    return None


async def aclose_on_its_loop(
    binding: LoopBinding, closing: Callable[[], Coroutine[Any, Any, None]]
) -> None:
    """`aclose` of a pool of ours: here when its loop runs here, else on its own loop."""
    if not binding.is_other():
        await closing()
        return
    waiting = close_from_outside(binding.loop, closing, in_a_coroutine=True)
    if waiting is not None:
        with contextlib.suppress(Exception):
            await waiting


class ClosedWithItsLoop:
    """Closes a pool the client made on its own event loop as that loop shuts down, so a
    client its owner never closed leaves nothing open and prints nothing ("Unclosed client
    session", unclosed sockets).

    `asyncio.run` and `asyncio.Runner` call `loop.shutdown_asyncgens()` before they close a
    loop; a suspended async generator started here (`arm`) is closed then, and its
    ``finally`` closes the pool on that loop. A pool closed by its owner first ends the
    generator too (`disarm`). Calls still in flight when the loop ends were cancelled by
    the runner before (they end in `CancelledError`, as any task of that loop).
    """

    __slots__ = ("_closing", "_watch")

    def __init__(self) -> None:
        self._watch: AsyncGenerator[None, None] | None = None
        self._closing: Callable[[], Coroutine[Any, Any, None]] | None = None

    @property
    def armed(self) -> bool:
        return self._watch is not None

    async def arm(self, closing: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Watch the running loop: `closing()` runs there when it shuts down."""
        self._closing = closing
        self._watch = self._watching()
        await self._watch.__anext__()  # the loop now tracks the suspended generator

    async def _watching(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            closing, self._closing = self._closing, None
            if closing is not None:
                with contextlib.suppress(Exception):
                    await closing()

    def disarm(self) -> None:
        """The owner closed the pool: end the watch without closing anything again. Its
        ``finally`` then awaits nothing, so it ends here, from any thread or loop."""
        watch, self._watch, self._closing = self._watch, None, None
        if watch is not None:
            ending = watch.aclose().__await__()
            with contextlib.suppress(StopIteration):
                ending.send(None)
