"""The host-wide store: its folder and file, and what it does when the file fails.

Real SQLite files in temp folders, real processes holding locks, killed mid-transaction, and
spawned as LiveKit spawns its job processes. Timing bounds here are loose (a loaded machine);
the cost per operation is measured by benchmarks/stores.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from avatario_wrapper._stores import HostStore, Status
from avatario_wrapper._stores.folder import default_path
from avatario_wrapper._stores.rules import RECOVERED_MIN
from avatario_wrapper.testing import FakeClock

from .store_kit import allowed, new_scope, run_jobs
from .test_fork import _in_child

#: Far above the few milliseconds an operation takes when the file fails, far below a call.
SLOW = 0.5


@pytest.fixture
def warnings_seen(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="avatario_wrapper")
    return caplog


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """A store's file, in a folder of the test's own."""
    return tmp_path / "budget.sqlite3"


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _rows(path: Path) -> dict[str, list[object]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT scope, state FROM budget_v1").fetchall()
    return {scope: json.loads(state) for scope, state in rows}


# -- where it lives ------------------------------------------------------------------------------


def test_the_default_file_is_in_the_users_runtime_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = tmp_path / "run-user"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    store = HostStore()
    assert store.path == runtime / "avatario" / "budget.sqlite3"
    store.deposit(new_scope())
    assert _mode(runtime / "avatario") == 0o700
    for name in ("budget.sqlite3", "budget.sqlite3-wal", "budget.sqlite3-shm"):
        assert _mode(runtime / "avatario" / name) == 0o600, name
    store.close()


def test_without_a_runtime_folder_it_is_a_private_folder_in_the_temp_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert default_path() == tmp_path / f"avatario-{os.geteuid()}" / "budget.sqlite3"
    monkeypatch.setenv("XDG_RUNTIME_DIR", "relative/not/trusted")
    assert default_path().parent == tmp_path / f"avatario-{os.geteuid()}"


def test_a_folder_open_to_others_is_refused_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, warnings_seen: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "avatario"
    folder.mkdir()
    folder.chmod(0o755)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    store = HostStore()
    scope = new_scope()
    for _ in range(5):
        store.deposit(scope)
    assert allowed(store, scope, 9) == 4
    [warning] = _warnings(warnings_seen)
    assert str(folder) in warning
    assert "0755" in warning
    assert "this process's own budget" in warning
    assert not (folder / "budget.sqlite3").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_a_folder_of_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, warnings_seen: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "avatario"
    folder.mkdir(mode=0o700)
    os.chown(folder, 12345, 12345)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    store = HostStore()
    # The fallback answers, and says it never saw the shared scope: neither its status nor
    # its "no trouble" after a success (True: the next success is told too) is news.
    assert store.status(new_scope()) == Status(None, None, 0, None, known=False)
    assert store.succeeded(new_scope()) is True
    own = HostStore(tmp_path / "own.sqlite3")
    assert own.succeeded(new_scope()) is False
    own.close()
    [warning] = _warnings(warnings_seen)
    assert "belongs to uid 12345" in warning


def test_a_folder_that_is_a_symbolic_link_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, warnings_seen: pytest.LogCaptureFixture
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (tmp_path / "avatario").symlink_to(elsewhere)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    HostStore().deposit(new_scope())
    [warning] = _warnings(warnings_seen)
    assert "not a folder" in warning
    assert not list(elsewhere.iterdir())


def test_a_given_file_open_to_others_is_refused(
    tmp_path: Path, warnings_seen: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "shared.sqlite3"
    HostStore(path).deposit(new_scope())  # made 0600
    assert _mode(path) == 0o600
    path.chmod(0o644)
    HostStore(path).deposit(new_scope())
    [warning] = _warnings(warnings_seen)
    assert "0644" in warning


def test_a_path_that_is_not_a_file_falls_back(
    tmp_path: Path, warnings_seen: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "budget.sqlite3").mkdir()
    store = HostStore(tmp_path / "budget.sqlite3")
    scope = new_scope()
    store.succeeded(scope)
    assert store.status(scope).successes == 1  # this process's own budget
    assert len(_warnings(warnings_seen)) == 1


# -- sharing -------------------------------------------------------------------------------------


def test_two_stores_on_one_file_share_everything(tmp_path: Path, clock: FakeClock) -> None:
    one = HostStore(tmp_path / "b.sqlite3", clock=clock)
    other = HostStore(tmp_path / "b.sqlite3", clock=clock)
    scope = new_scope()
    for _ in range(20):
        one.deposit(scope)
    assert allowed(other, scope, 9) == 7
    one.failed(scope, retry=False, share=None, cool_until=clock.time() + 5)
    assert other.status(scope).cooling_until == clock.time() + 5
    assert not other.take_probe(scope, lease=1, share=None)
    clock.advance(6)
    assert other.take_probe(scope, lease=1, share=None)
    assert not one.take_probe(scope, lease=1, share=None)
    for _ in range(RECOVERED_MIN):
        one.succeeded(scope)
    assert other.status(scope) == Status(None, None, RECOVERED_MIN, clock.time())


def test_forty_spawned_processes_share_one_budget(path: Path) -> None:
    scope = new_scope()
    outcomes = run_jobs("host", str(path), [""] * 40, scope)
    # Each made a first attempt and asked for one retry: floor(40 x 0.2 + 3) went through,
    # whatever the interleaving (the last failure comes after every first attempt).
    assert sum(granted for granted, _ in outcomes) == 11
    assert [w for _, w in outcomes if w] == []
    calls = _rows(path)[scope][1]
    assert isinstance(calls, list)
    assert sum(calls) == 40  # no first attempt lost to a concurrent update


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork on this platform")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_opens_the_file_anew(path: Path) -> None:
    store = HostStore(path)
    scope = new_scope()
    store.deposit(scope)  # the parent's connection is open at the fork

    def child() -> int:
        for _ in range(10):
            store.deposit(scope)
        return sum(_rows(path)[scope][1])  # type: ignore[arg-type]

    assert _in_child(child) == {"ok": 11}
    store.deposit(scope)  # the parent's connection still works
    assert sum(_rows(path)[scope][1]) == 12  # type: ignore[arg-type]


# -- when the file fails ------------------------------------------------------------------------

_HOLD = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA cache_size=1")  # spill pages into the WAL before any commit
conn.execute("BEGIN IMMEDIATE")
write = "INSERT OR REPLACE INTO budget_v1 VALUES (?, ?, 0)"
for i in range(2000):
    conn.execute(write, (f"{sys.argv[2]}-{i}", "x" * 500))
conn.execute(write, (sys.argv[2], "[]"))
print("inside", flush=True)
time.sleep(600)
"""


@contextlib.contextmanager
def _holder(path: Path, scope: str) -> Iterator[subprocess.Popen[str]]:
    """A real process inside a write transaction on `path` (thousands of uncommitted rows),
    killed with SIGKILL (if still alive) when the block ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path), scope], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == "inside"
        yield holder
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        holder.stdout.close()


def test_a_process_killed_inside_a_transaction_leaves_nothing_half_written(
    path: Path, warnings_seen: pytest.LogCaptureFixture
) -> None:
    store = HostStore(path)
    scope = new_scope()
    store.succeeded(scope)
    with _holder(path, scope):  # SIGKILLed at the end of the block, inside its transaction
        assert os.path.getsize(f"{path}-wal") > 100_000  # its uncommitted pages are in the WAL
    started = time.monotonic()
    store.succeeded(scope)
    assert time.monotonic() - started < SLOW
    assert store.status(scope).successes == 2  # the killed process's row never existed
    assert list(_rows(path)) == [scope]
    assert _warnings(warnings_seen) == []
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_file_locked_by_a_live_process_falls_back_at_once_with_one_warning(
    path: Path, clock: FakeClock, warnings_seen: pytest.LogCaptureFixture
) -> None:
    store = HostStore(path, clock=clock)
    scope = new_scope()
    store.deposit(scope)
    with _holder(path, new_scope()):
        started = time.monotonic()
        store.deposit(scope)
        assert time.monotonic() - started < SLOW
        for _ in range(20):  # from the third: the file is left alone, no waits, no warnings
            store.failed(scope, retry=True, share=None, cool_until=None)
        assert time.monotonic() - started < SLOW
        [warning] = _warnings(warnings_seen)
        assert "database is locked" in warning
        assert "tried again every 30 s" in warning
        clock.advance(29)
        store.succeeded(scope)
        assert _rows(path)[scope][5] == 0  # still not written to the file
    clock.advance(2)
    store.succeeded(scope)  # the file again: the earlier success stayed in this process
    assert _rows(path)[scope][5] == 1
    assert [r.getMessage() for r in warnings_seen.records if r.levelno == logging.INFO] == [
        f"Avatario retry budget: the host-wide store {path} works again"
    ]


def test_a_retry_meeting_a_busy_file_is_refused_without_a_warning(
    path: Path, warnings_seen: pytest.LogCaptureFixture
) -> None:
    store = HostStore(path)
    scope = new_scope()
    store.deposit(scope)
    with _holder(path, new_scope()):
        started = time.monotonic()
        verdict = store.failed(scope, retry=True, share=0.2, cool_until=None)
        assert time.monotonic() - started < SLOW
        # Contention means many failing calls at once: no retry from this process's reserve.
        assert (verdict.allowed, verdict.refused_by) == (False, "budget")
        assert verdict.trouble_since is not None
        assert not store.take_probe(scope, lease=1.0, share=None)
    assert store.failed(scope, retry=True, share=0.2, cool_until=None).allowed  # the file's
    assert _warnings(warnings_seen) == []  # two busy operations: contention, not an outage
    assert _rows(path)[scope][2] != [0] * 10


def test_a_corrupt_file_is_moved_aside_and_a_new_one_started(
    path: Path, warnings_seen: pytest.LogCaptureFixture
) -> None:
    path.write_bytes(b"this is not SQLite " * 500)
    path.chmod(0o600)
    store = HostStore(path)
    scope = new_scope()
    store.succeeded(scope)
    assert store.status(scope).successes == 1
    assert _rows(path)[scope][5] == 1  # in the new file
    [warning] = _warnings(warnings_seen)
    assert "not a usable database" in warning
    [aside] = path.parent.glob("budget.sqlite3.corrupt-*")
    assert aside.name in warning
    assert aside.read_bytes().startswith(b"this is not SQLite")


def test_a_file_corrupted_while_in_use_never_fails_a_call_and_is_shared_again(
    path: Path,
) -> None:
    one, other = HostStore(path), HostStore(path)
    scope = new_scope()
    one.succeeded(scope)
    other.succeeded(scope)
    with path.open("r+b") as file:  # garbage over the open database, in place
        file.write(os.urandom(path.stat().st_size))
    for store in (one, other, one, other):  # nothing raises, whatever each one notices
        store.deposit(scope)
        store.failed(scope, retry=True, share=0.2, cool_until=None)
        store.status(scope)
    fresh = HostStore(path)
    fresh.deposit(scope)  # opens the file as it now is: moved aside if still garbage
    before = fresh.status(scope).successes
    one.succeeded(scope)
    other.succeeded(scope)
    assert fresh.status(scope).successes == before + 2  # one file for all three again
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_row_that_is_not_a_state_starts_afresh(path: Path) -> None:
    store = HostStore(path)
    scope = new_scope()
    store.succeeded(scope)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("UPDATE budget_v1 SET state = '[1, \"x\"]' WHERE scope = ?", (scope,))
        conn.commit()
    assert store.status(scope) == Status(None, None, 0, None)
    store.succeeded(scope)
    assert store.status(scope).successes == 1
