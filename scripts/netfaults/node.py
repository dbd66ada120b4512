"""One end of the lab, run inside its own network namespace (``unshare --net``).

    python -m netfaults.node client ADDRESS/PREFIX FD
    python -m netfaults.node server ADDRESS/PREFIX FD PORT API_KEY

It brings up loopback, creates the TUN device ``nf0`` with ADDRESS, hands the device's
descriptor to the lab over the Unix socket FD (inherited) and prints ``ready``. The client end
then only holds its namespace open (calls are started in it with ``nsenter``); the server end
serves the fake Avatario, ignoring ``Idempotency-Key``, on ADDRESS:PORT (also when called
`SERVER_NAME`) and answers commands on stdin (``count``: the requests received and sessions
started, by avatar id, as one JSON line). Both exit when stdin closes, so a lab that dies
takes its namespaces with it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from netfaults.tun import open_tun, send_fd

DEVICE = "nf0"
#: The server's host name besides its address (it answers requests for it).
SERVER_NAME = "avatario.lab"
MTU = 1500


def bring_up(address: str) -> int:
    """Loopback up, ``nf0`` made, addressed and up in this namespace; its descriptor."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    fd = open_tun(DEVICE)
    # Only IPv4 crosses the relay; no IPv6 router solicitations on the device.
    with contextlib.suppress(OSError):
        Path(f"/proc/sys/net/ipv6/conf/{DEVICE}/disable_ipv6").write_text("1")
    subprocess.run(["ip", "addr", "add", address, "dev", DEVICE], check=True)
    subprocess.run(["ip", "link", "set", DEVICE, "mtu", str(MTU), "up"], check=True)
    return fd


def _avatar(body: bytes) -> str:
    try:
        return str(json.loads(body)["avatario_face_id"])
    except (ValueError, KeyError, TypeError):
        return "?"


def serve(host: str, port: int, api_key: str) -> None:
    from avatario_wrapper.testing import run_fake_server  # noqa: PLC0415 - only this end

    with run_fake_server(
        api_key=api_key, host=host, port=port, honour_idempotency_key=False
    ) as server:
        # Requests cut off by the faults make uvicorn log tracebacks; the lab counts them
        # instead. (Set once uvicorn has configured its loggers.)
        logging.getLogger("uvicorn.error").disabled = True
        server.app.allow_host(SERVER_NAME)  # the name a client may call it by (netfaults.calls)
        print("ready", flush=True)
        for line in sys.stdin:
            if line.strip() == "count":
                requests = Counter(_avatar(r.body) for r in server.requests)
                sessions: Counter[str] = Counter(
                    str(s["payload"]["avatario_face_id"]) for s in server.sessions
                )
                answer: dict[str, Any] = {"requests": requests, "sessions": sessions}
                print(json.dumps(answer), flush=True)


def main(argv: list[str]) -> int:
    role, address, fd_text = argv[:3]
    channel = socket.socket(fileno=int(fd_text))
    tun = bring_up(address)
    send_fd(channel, tun)
    channel.close()
    # The lab's relay holds the device now; this end keeps its copy open for as long as the
    # namespace lives, so the device stays while either side holds it.
    if role == "server":
        serve(address.split("/")[0], int(argv[3]), argv[4])
        return 0
    print("ready", flush=True)
    for _ in sys.stdin:  # hold the namespace until the lab closes stdin
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
