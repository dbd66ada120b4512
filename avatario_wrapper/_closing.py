"""``with`` and ``async with`` for what has a `close()` or an `aclose()`: the object itself on
entry, closed on exit."""

from __future__ import annotations

from types import TracebackType
from typing import TypeVar

T = TypeVar("T")


class ClosedOnExit:
    """``with obj:`` gives `obj` and calls its `close()` on the way out."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: T) -> T:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AClosedOnExit:
    """``async with obj:`` gives `obj` and awaits its `aclose()` on the way out."""

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self: T) -> T:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
