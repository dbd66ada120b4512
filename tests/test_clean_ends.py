"""An async client its owner never closed leaves nothing behind when its event loop ends: no
"Unclosed client session", no unclosed socket, no warning, on every async transport; a call
still in flight when the loop ends is cancelled, never lost silently.

Each case runs in a fresh interpreter with every warning an error (a ResourceWarning or an
unawaited coroutine shows on stderr) against a real server on 127.0.0.1 in this process.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from .conftest import API_KEY
from .loopback import http_response, loopback

pytestmark = pytest.mark.integration

OK = http_response(200, b'{"session_id": "s-1"}', {"Connection": "keep-alive"})

PROGRAM = """
import asyncio, gc, sys
import avatario_wrapper._clients as clients
from avatario_wrapper import AsyncAvatarioClient
if sys.argv[2] == "httpx":
    clients._aiohttp_fits = lambda environment: False  # the client's own httpx pool
CALL = dict(avatar_id="a", agent_identity="b", livekit_url="wss://h.test", livekit_token="t")

async def main() -> None:
    client = AsyncAvatarioClient({key!r}, base_url=sys.argv[1])
    print((await client.start_session(**CALL)).session_id)
    if sys.argv[3] == "in-flight":  # a second call, sent and unanswered, the loop's end cancels
        task = asyncio.ensure_future(client.start_session(**CALL))
        await asyncio.sleep(0.5)
        task.add_done_callback(lambda t: print("cancelled" if t.cancelled() else "done"))

asyncio.run(main())
gc.collect()
print("end")
"""


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
@pytest.mark.parametrize("how", ["idle", "in-flight"])
def test_an_unclosed_async_client_prints_nothing_when_its_loop_ends(
    transport: str, how: str
) -> None:
    behaviours = [OK] if how == "idle" else [OK, "stall"]
    with loopback(*behaviours) as server:
        run = subprocess.run(
            [
                sys.executable,
                "-W",
                "error",
                "-c",
                textwrap.dedent(PROGRAM).format(key=API_KEY),
                server.url,
                transport,
                how,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    expected = ["s-1", "end"] if how == "idle" else ["s-1", "cancelled", "end"]
    assert run.stdout.split() == expected
