"""A tiny raw-socket HTTP server on 127.0.0.1 that misbehaves on purpose.

Each accepted connection gets the next behaviour from a list (the last one repeats):
a raw HTTP response, ``"stall"`` (read the request, never answer), or ``"reset"`` (read the
request, then close with an RST). It counts the requests it read.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Iterator

Behaviour = bytes | str | Callable[[socket.socket], None]


def http_response(status: int, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class LoopbackServer:
    def __init__(self, behaviours: list[Behaviour], tls: ssl.SSLContext | None = None) -> None:
        self.behaviours = behaviours
        self.tls = tls
        self.handshake_failures = 0
        self.requests: list[bytes] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _read_request(self, conn: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        return head + b"\r\n\r\n" + body

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            if self.tls is not None:
                try:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError):
                    self.handshake_failures += 1  # the client refused our certificate
                    conn.close()
                    continue
            try:
                request = self._read_request(conn)
            except OSError:
                conn.close()
                continue
            self.requests.append(request)
            behaviour = self.behaviours[min(len(self.requests), len(self.behaviours)) - 1]
            if behaviour == "stall":
                self._held.append(conn)  # never answered; closed at stop
                continue
            if behaviour == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                continue
            if callable(behaviour):
                with contextlib.suppress(OSError):
                    behaviour(conn)
                conn.close()
                continue
            assert isinstance(behaviour, bytes)
            with contextlib.suppress(OSError):
                conn.sendall(behaviour)
            conn.close()

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()
        for conn in self._held:
            conn.close()


@contextlib.contextmanager
def loopback(*behaviours: Behaviour, tls: ssl.SSLContext | None = None) -> Iterator[LoopbackServer]:
    with LoopbackServer(list(behaviours), tls=tls) as server:
        yield server


# -- a keep-alive server: many requests per connection -----------------------------------------

#: What a keep-alive server answers: the raw bytes to send (and keep the connection), a pair
#: (bytes, True) to send them and then close, or None to close the connection without
#: answering. Called with (request number, counting from 1; connection number; request head).
Answer = Callable[[int, int, str], "bytes | tuple[bytes, bool] | None"]


def ok_session(n: int, headers: dict[str, str] | None = None) -> bytes:
    """A keep-alive 200 with session ``s-<n>``."""
    body = f'{{"session_id":"s-{n}"}}'.encode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{extra}"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


class KeepAliveServer:
    """An HTTP/1.1 server on 127.0.0.1 that keeps connections open; `answer` says what each
    request gets. Records (connection number, request head) for every request it read."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.seen: list[tuple[int, str]] = []
        self.closed_by_client: list[int] = []  # connections the client closed (EOF seen)
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def connections(self) -> int:
        return self._accepted

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._accepted += 1
                number = self._accepted
                self._conns.append(conn)
            thread = threading.Thread(target=self._handle, args=(conn, number), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _handle(self, conn: socket.socket, number: int) -> None:
        buffer = b""
        # Idle for a minute: closed, as a server's keep-alive timeout would (a loaded machine
        # may keep a test's next request waiting for many seconds; stopping closes it sooner).
        conn.settimeout(60)
        try:
            while not self._stop.is_set():
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        with self._lock:
                            self.closed_by_client.append(number)
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                text = head.decode("latin-1")
                length = 0
                for line in text.split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                while len(buffer) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                buffer = buffer[length:]
                with self._lock:
                    self.seen.append((number, text))
                    index = len(self.seen)
                reply = self.answer(index, number, text)
                if reply is None:
                    conn.close()
                    return
                if isinstance(reply, tuple):
                    conn.sendall(reply[0])
                    conn.close()
                    return
                conn.sendall(reply)
        except OSError:
            with contextlib.suppress(OSError):
                conn.close()

    def __enter__(self) -> KeepAliveServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.close()
        for thread in self._threads:
            thread.join(5)
