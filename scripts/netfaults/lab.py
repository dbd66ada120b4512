"""Two network namespaces joined by the fault relay: the client's and the fake Avatario's.

    with Lab(seed=1) as lab:
        lab.set_faults(Faults(loss=0.05))
        lab.run_in_client([python, "-m", "netfaults.calls", ...])
        lab.count()   # requests and sessions by avatar id

The client end is 10.77.0.1, the server end 10.77.0.2 (port 8080); each is a process started
with ``unshare --net`` that creates its TUN device ``nf0`` and passes the descriptor here; the
relay (`netfaults.relay`) holds both. Calls run in the client's namespace with ``nsenter``, so
they go through the kernel's own TCP stack (SYN retransmission, RTO, delayed ACKs) and only
the relay's faults stand between them and the server.

Nothing is made that outlives the lab: no named namespace (``ip netns add`` would leave a
mount), no persistent device. Every process is started with a parent-death signal, and the
namespace ends read stdin and exit when it closes, so even a lab killed with SIGKILL leaves
no process, namespace or device behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from netfaults.relay import Faults
from netfaults.tun import TUN_PATH, receive_fd

CLIENT_ADDRESS = "10.77.0.1"
SERVER_ADDRESS = "10.77.0.2"
PORT = 8080
PREFIX = 24
SCRIPTS = Path(__file__).resolve().parent.parent
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def child_env() -> dict[str, str]:
    """The environment of the lab's processes: `netfaults` importable, output unbuffered."""
    path = os.environ.get("PYTHONPATH", "")
    return {
        **os.environ,
        "PYTHONPATH": str(SCRIPTS) + (os.pathsep + path if path else ""),
        "PYTHONUNBUFFERED": "1",
    }


def why_unavailable() -> str | None:
    """Why a lab cannot be built on this machine, or None when it can."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces and TUN devices are Linux's; this is {sys.platform}"
    if os.geteuid() != 0:
        return "not root: creating network namespaces and TUN devices needs root"
    if not os.path.exists(TUN_PATH):
        return f"no {TUN_PATH} (the kernel has no TUN support, or the device is not exposed)"
    for tool in ("ip", "unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"no `{tool}` command (iproute2 / util-linux)"
    try:
        probe = subprocess.run(
            ["unshare", "--net", "--", "ip", "link", "set", "lo", "up"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"`unshare --net` failed: {error}"
    if probe.returncode != 0:
        return f"`unshare --net` refused: {probe.stderr.strip() or probe.returncode}"
    return None


class Lab:
    def __init__(self, *, seed: int, api_key: str, python: str = sys.executable) -> None:
        self.seed = seed
        self.api_key = api_key
        self.python = python
        self.processes: list[subprocess.Popen[str]] = []
        self.fds: list[int] = []
        self.server: subprocess.Popen[str] | None = None
        self.client: subprocess.Popen[str] | None = None
        self.relay: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://{SERVER_ADDRESS}:{PORT}"

    def __enter__(self) -> Lab:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _spawn(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(),
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - the lab starts no threads
            **kwargs,
        )
        self.processes.append(process)
        return process

    def _node(self, role: str, address: str, *extra: str) -> subprocess.Popen[str]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with ours, theirs:
            process = self._spawn(
                [
                    "unshare",
                    "--net",
                    "--",
                    self.python,
                    "-m",
                    "netfaults.node",
                    role,
                    f"{address}/{PREFIX}",
                    str(theirs.fileno()),
                    *extra,
                ],
                pass_fds=(theirs.fileno(),),
            )
            theirs.close()
            self.fds.append(receive_fd(ours, timeout=30))
        self._expect(process, "ready", 60)
        return process

    @staticmethod
    def _expect(process: subprocess.Popen[str], word: str, timeout: float) -> str:
        assert process.stdout is not None
        line = _readline(process.stdout, timeout)
        if line.strip() != word:
            raise RuntimeError(f"a lab process said {line.strip()!r}, not {word!r}")
        return line

    def start(self) -> None:
        self.client = self._node("client", CLIENT_ADDRESS)
        self.server = self._node("server", SERVER_ADDRESS, str(PORT), self.api_key)
        fd_client, fd_server = self.fds
        self.relay = self._spawn(
            [
                self.python,
                "-m",
                "netfaults.relay",
                str(fd_client),
                str(fd_server),
                str(self.seed),
            ],
            pass_fds=(fd_client, fd_server),
        )
        self.set_faults(Faults())

    def _ask(self, process: subprocess.Popen[str] | None, line: str) -> str:
        assert process is not None
        assert process.stdin is not None
        process.stdin.write(line + "\n")
        process.stdin.flush()
        assert process.stdout is not None
        return _readline(process.stdout, 30)

    def set_faults(self, faults: Faults) -> None:
        answer = self._ask(self.relay, json.dumps({"faults": faults.to_json()}))
        if answer.strip() != "ok":
            raise RuntimeError(f"the relay said {answer.strip()!r}")

    def relay_stats(self) -> dict[str, int]:
        return dict(json.loads(self._ask(self.relay, json.dumps({"stats": True}))))

    def count(self) -> dict[str, dict[str, int]]:
        """Requests received and sessions started by the fake, by avatar id."""
        return dict(json.loads(self._ask(self.server, "count")))

    def settle(self, quiet: float = 2.0, limit: float = 30.0) -> dict[str, dict[str, int]]:
        """`count()` once no request has arrived for `quiet` seconds (or after `limit`).

        A client that gave up may have left a request in its kernel's send queue; the kernel
        keeps retransmitting it, so a session can start after the call ended.
        """
        ends = time.monotonic() + limit
        last = self.count()
        quiet_since = time.monotonic()
        while time.monotonic() < ends:
            time.sleep(0.25)
            now = self.count()
            if now != last:
                last, quiet_since = now, time.monotonic()
            elif time.monotonic() - quiet_since >= quiet:
                break
        return last

    def client_command(self, argv: list[str]) -> list[str]:
        """`argv` run in the client's namespace."""
        assert self.client is not None
        return ["nsenter", f"--net=/proc/{self.client.pid}/ns/net", "--", *argv]

    def run_in_client(self, argv: list[str], timeout: float) -> str:
        """Run `argv` in the client's namespace; its stdout (it must exit 0)."""
        process = subprocess.Popen(
            self.client_command(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - the lab starts no threads
        )
        try:
            out, err = process.communicate(timeout=timeout)
        except BaseException:
            process.kill()
            process.wait()
            raise
        if process.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv[:4])} … exited {process.returncode}: {err.strip()[-2000:]}"
            )
        return out

    def close(self) -> None:
        for process in reversed(self.processes):
            with contextlib.suppress(OSError):
                if process.stdin is not None:
                    process.stdin.close()
        for process in reversed(self.processes):
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
        self.processes.clear()
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()


def _readline(stream: IO[str], timeout: float) -> str:
    import selectors  # noqa: PLC0415

    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise TimeoutError(f"no answer from a lab process within {timeout:g} s")
    line = stream.readline()
    if not line:
        raise RuntimeError("a lab process exited early")
    return line
