"""The host-wide store: every process of one user on one machine shares its budgets.

SQLite from the standard library, in WAL mode, one row per scope, in a per-user runtime folder
(`folder`). Every operation is one short transaction (``BEGIN IMMEDIATE``, read the row, apply
`rules`, write it back, commit) under a busy timeout of a few milliseconds; a read (`status`)
takes no lock at all. A process killed mid-update leaves nothing half-written: its transaction
never committed and the kernel drops its locks. An operation that finds the file locked past
the busy timeout goes to this process's own budget; a file locked that long for three
operations in a row, unwritable or in an unsafe folder sends them all there for a while, with
one WARNING; a file that is not a database is moved aside and a new one started, with a
WARNING.

The async twins run inline: an operation costs tens of microseconds and at most the busy
timeout, less than a hop to a worker thread would (docs/retries.md has the figures).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs

from .._clock import SYSTEM_CLOCK, Clock
from .._text import one_line
from .base import InlineAsync, Status, Verdict, check_scope
from .fallback import Outage, logger
from .folder import default_path, private_file, private_folder
from .process import ProcessStore
from .rules import DEFAULT_RESERVE, IDLE_SECONDS, SLOTS, ScopeState

T = TypeVar("T")

#: How long an operation waits for another process's transaction before falling back.
DEFAULT_BUSY_TIMEOUT = 0.005
#: Operations in a row that find the file locked past the busy timeout before the file is left
#: alone (with a WARNING): one is contention between processes, three a process stuck holding
#: the lock.
BUSY_STREAK = 3
#: How long a file that failed is left alone before it is tried again.
DEFAULT_RECHECK_AFTER = 30.0

_TABLE = "budget_v1"
_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {_TABLE} "
    "(scope TEXT PRIMARY KEY, state TEXT NOT NULL, touched REAL NOT NULL) WITHOUT ROWID"
)
_READ = f"SELECT state FROM {_TABLE} WHERE scope = ?"  # noqa: S608 - a constant name
_WRITE = f"INSERT OR REPLACE INTO {_TABLE} (scope, state, touched) VALUES (?, ?, ?)"  # noqa: S608
_PRUNE = f"DELETE FROM {_TABLE} WHERE touched < ?"  # noqa: S608 - a constant name
_FAILURES = (sqlite3.Error, OSError)


class _Unsafe(Exception):
    """The folder or file is not this user's own and private (the message says how)."""


class HostStore(InlineAsync):
    """Budgets in a SQLite file shared by this user's processes (falls back to its own)."""

    name = "host"

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        reserve: float = DEFAULT_RESERVE,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        recheck_after: float = DEFAULT_RECHECK_AFTER,
    ) -> None:
        #: The database file (the default one: see `folder.default_path`).
        self.path = default_path() if path is None else Path(path).expanduser()
        self._own_folder = path is None  # a path the user gave: its folder is the user's call
        self._clock = clock
        self._reserve = reserve
        self._busy_timeout = busy_timeout
        self._fallback = ProcessStore(clock=clock, reserve=reserve)
        self._outage = Outage(
            f"the host-wide store {self.path}", "this process's own budget", recheck_after, clock
        )
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._closer = weakref.finalize(self, lambda: None)  # closes `_conn` once, when dropped
        self._file: tuple[int, int] | None = None  # (device, inode) of the file opened
        self._pid = os.getpid()
        self._busy_streak = 0  # operations in a row that found the file locked

    def __repr__(self) -> str:
        return f"HostStore({str(self.path)!r})"

    # -- the operations -------------------------------------------------------------------------

    def deposit(self, scope: str) -> bool:
        return self._run(scope, lambda state, now: state.deposit(now), self._fallback.deposit)

    def failed(
        self,
        scope: str,
        *,
        retry: bool,
        share: float | None,
        cool_until: float | None,
        dated: float = 0.0,
    ) -> Verdict:
        def apply(state: ScopeState, now: float) -> Verdict:
            allowed, refused_by = state.failed(
                now,
                retry=retry,
                share=share,
                cool_until=cool_until,
                reserve=self._reserve,
                dated=dated,
            )
            return Verdict(allowed, refused_by, state.cooling_until, state.trouble_since)

        def crowded(scope: str) -> Verdict:
            # Another process held the file past the busy timeout: many calls are failing at
            # once, so this retry is refused rather than taken from a reserve of this process.
            seen = self._fallback.failed(
                scope, retry=False, share=share, cool_until=cool_until, dated=dated
            )
            return attrs.evolve(seen, refused_by="budget" if retry else None)

        return self._run(
            scope,
            apply,
            lambda s: self._fallback.failed(
                s, retry=retry, share=share, cool_until=cool_until, dated=dated
            ),
            busy=crowded,
        )

    def succeeded(self, scope: str) -> bool:
        return self._run(scope, lambda state, now: state.succeeded(now), self._unsure_succeeded)

    def _unsure_succeeded(self, scope: str) -> bool:
        """The fallback heard the success, but cannot tell the shared scope's trouble."""
        self._fallback.succeeded(scope)
        return True

    def status(self, scope: str) -> Status:
        def read(state: ScopeState, now: float) -> Status:
            return Status(
                state.trouble_since, state.cooling_until, state.successes, state.last_success
            )

        return self._run(
            scope, read, lambda s: attrs.evolve(self._fallback.status(s), known=False), write=False
        )

    def take_probe(self, scope: str, *, lease: float, share: float | None) -> bool:
        def apply(state: ScopeState, now: float) -> bool:
            return state.take_probe(now, lease=lease, share=share, reserve=self._reserve)

        return self._run(
            scope,
            apply,
            lambda s: self._fallback.take_probe(s, lease=lease, share=share),
            busy=lambda s: False,  # the file is busy: the probe of another process, maybe
        )

    def close(self) -> None:
        with self._lock:
            self._drop()

    # -- the file -----------------------------------------------------------------------------

    def _run(
        self,
        scope: str,
        apply: Callable[[ScopeState, float], T],
        fallback: Callable[[str], T],
        *,
        write: bool = True,
        busy: Callable[[str], T] | None = None,
    ) -> T:
        """`apply` to the scope's row in one transaction; `fallback` when the file fails, and
        `busy` (else `fallback`) for an operation that found it locked past the timeout."""
        check_scope(scope)
        if self._outage.down:
            return fallback(scope)
        for first in (True, False):
            try:
                result = self._transaction(scope, apply, write)
            except (*_FAILURES, _Unsafe) as error:
                if first and self._moved_aside(error):
                    continue  # once more, on a new file
                if _busy(error) and self._busy_streak < BUSY_STREAK - 1:
                    self._busy_streak += 1  # contention: only this operation falls back
                    return (busy or fallback)(scope)
                with self._lock:
                    self._drop()
                self._outage.failed(_reason(error))
                break
            self._busy_streak = 0
            self._outage.worked()
            return result
        return fallback(scope)

    def _transaction(self, scope: str, apply: Callable[[ScopeState, float], T], write: bool) -> T:
        if self._pid != os.getpid():
            # Forked: the parent's connection is not ours to use. Closing our copy is safe:
            # the parent's locks keep SQLite from checkpointing or deleting its WAL.
            self._pid, self._lock = os.getpid(), threading.Lock()
            self._drop()
        with self._lock:
            conn = self._connection()
            if write:
                self._patiently(conn, "BEGIN IMMEDIATE")
            try:
                row = self._patiently(conn, _READ, (scope,)).fetchone()
                state = _load(row[0] if row else None)
                now = self._clock.time()  # after the lock: the rows' times follow the commits
                state.settle(now)
                result = apply(state, now)
                if write:
                    conn.execute(_WRITE, (scope, _dump(state), now))
                    conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
            return result

    def _connection(self) -> sqlite3.Connection:
        """The open connection, or a new one (the file made if missing); with the lock held."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            info = None
        if self._conn is not None and info is not None and self._file == _identity(info):
            return self._conn
        self._drop()  # no file yet, or another process replaced it
        if self._own_folder and (problem := private_folder(self.path.parent)):
            raise _Unsafe(problem)
        if info is None:
            self._create()
        if problem := private_file(self.path):
            raise _Unsafe(problem)
        self._file = _identity(os.stat(self.path))
        conn = self._connect(self.path)
        try:
            if str(self._patiently(conn, "PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                self._patiently(conn, "PRAGMA journal_mode=WAL")
            self._patiently(conn, _SCHEMA)
            # The file holds counters only: an OS crash may lose it (it is then moved aside),
            # a killed process cannot (a commit is in the WAL before COMMIT returns).
            conn.execute("PRAGMA synchronous=OFF")
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._closer = weakref.finalize(self, functools.partial(_close, conn))  # if unclosed
        with contextlib.suppress(sqlite3.OperationalError):  # busy: another process prunes
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(_PRUNE, (self._clock.time() - IDLE_SECONDS,))
            conn.execute("COMMIT")
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        return conn

    def _patiently(
        self, conn: sqlite3.Connection, sql: str, params: tuple[str, ...] = ()
    ) -> sqlite3.Cursor:
        """`sql`, retried while the file is locked, up to the busy timeout. Polled every
        0.1-1 ms: SQLite's own busy handler sleeps 1 ms, then 2, then 5, so a waiter loses the
        lock to every newcomer. A read waits only in WAL's rare moments (another connection
        recovering or closing the WAL); BEGIN IMMEDIATE waits for the writer before it."""
        deadline = time.monotonic() + self._busy_timeout
        pause = 0.0001
        while True:
            try:
                return conn.execute(sql, params)
            except sqlite3.OperationalError as error:
                left = deadline - time.monotonic()
                if not _busy(error) or left <= 0:
                    raise
                time.sleep(min(pause, left))
                pause = min(2 * pause, 0.001)

    def _connect(self, path: Path) -> sqlite3.Connection:
        # No busy handler of SQLite's own: `_patiently` waits, more finely.
        return sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)

    def _create(self) -> None:
        """Make the database whole in a private file, then link it into place: two processes
        starting at once never see a half-made file, and no lock is waited for."""
        spare = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}")
        os.close(os.open(spare, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600))
        try:
            conn = self._connect(spare)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=OFF")  # as every connection: see _connection
                conn.execute(_SCHEMA)
            finally:
                conn.close()
            with contextlib.suppress(FileExistsError):  # another process was first: use its
                os.link(spare, self.path)
        finally:
            for leftover in (spare, Path(f"{spare}-wal"), Path(f"{spare}-shm")):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()

    def _moved_aside(self, error: BaseException) -> bool:
        """If `error` says the file is not a database: move it aside (once, whoever sees it
        first) so that the next try starts a new one."""
        if not isinstance(error, sqlite3.DatabaseError) or isinstance(
            error, sqlite3.OperationalError
        ):
            return False
        with self._lock:
            broken = self._file
            self._drop()
            try:
                if broken is None or _identity(os.stat(self.path)) != broken:
                    return True  # already replaced by another process
                aside = self.path.with_name(f"{self.path.name}.corrupt-{uuid.uuid4().hex[:8]}")
                os.replace(self.path, aside)
                for suffix in ("-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")
            except OSError:
                return False
        logger.warning(
            "Avatario retry budget: the host-wide store %s was not a usable database (%s); "
            "moved it aside to %s and started a new one",
            self.path,
            _reason(error),
            aside.name,
        )
        return True

    def _drop(self) -> None:
        """Close the connection, if any (with the lock held)."""
        self._conn, self._file = None, None
        self._closer()


def _close(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        conn.close()


def _busy(error: BaseException) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED: another connection holds the lock."""
    return isinstance(error, sqlite3.OperationalError) and "is locked" in str(error)


def _identity(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


def _reason(error: BaseException) -> str:
    """What went wrong, in one line (our own messages, or SQLite's and the OS's)."""
    if isinstance(error, _Unsafe):
        return str(error)
    return one_line(f"{type(error).__name__}: {error}")


def _dump(state: ScopeState) -> str:
    return json.dumps(
        [
            state.slot_of,
            state.calls,
            state.retries,
            state.trouble_since,
            state.cooling_until,
            state.successes,
            state.last_success,
            state.lease_until,
            state.touched,
            state.fails,
            state.oks,
            state.last_failure,
        ],
        separators=(",", ":"),
    )


def _load(text: str | None) -> ScopeState:
    """A row's state; a row that is missing or not what `_dump` writes starts afresh."""
    state = ScopeState()
    if text is None:
        return state
    try:
        fields: Any = json.loads(text)
        (slot_of, calls, retries, trouble, cooling, successes, last, lease, touched, fails, oks,
         failure) = fields  # fmt: skip
        if not all(map(_ring, (slot_of, calls, retries, fails, oks))) or not _count(successes):
            return state
        times = (trouble, cooling, last, lease, touched, failure)
        if not all(t is None or isinstance(t, (int, float)) for t in times):
            return state
    except (ValueError, TypeError):
        return state
    state.slot_of, state.calls, state.retries = slot_of, calls, retries
    state.trouble_since, state.cooling_until, state.successes = trouble, cooling, successes
    state.last_success, state.lease_until, state.touched = last, lease, touched
    state.fails, state.oks, state.last_failure = fails, oks, failure
    return state


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ring(values: Any) -> bool:
    return isinstance(values, list) and len(values) == SLOTS and all(map(_count, values))
