"""TUN devices, and handing their descriptors from one process to another.

A TUN device is a network interface whose packets a process reads and writes through a file
descriptor (Linux's ``/dev/net/tun``, see the kernel's Documentation/networking/tuntap.rst).
One opened without ``IFF_PERSIST`` vanishes when its last descriptor closes, so nothing here
can outlive the processes that hold it.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct

TUN_PATH = "/dev/net/tun"
_TUNSETIFF = 0x400454CA
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000  # raw IP packets, no 4-byte packet-information header


def open_tun(name: str) -> int:
    """Create the TUN device `name` in this process's network namespace; its descriptor."""
    fd = os.open(TUN_PATH, os.O_RDWR | os.O_CLOEXEC)
    try:
        request = struct.pack("16sH22x", name.encode(), _IFF_TUN | _IFF_NO_PI)
        fcntl.ioctl(fd, _TUNSETIFF, request)
    except OSError:
        os.close(fd)
        raise
    return fd


def send_fd(sock: socket.socket, fd: int) -> None:
    """Pass `fd` over the Unix socket `sock` (SCM_RIGHTS)."""
    socket.send_fds(sock, [b"tun"], [fd])


def receive_fd(sock: socket.socket, timeout: float) -> int:
    """The descriptor sent with `send_fd`, within `timeout` seconds."""
    sock.settimeout(timeout)
    _, fds, _, _ = socket.recv_fds(sock, 16, 1)
    if not fds:
        raise RuntimeError("the namespace process sent no TUN descriptor")
    return fds[0]
