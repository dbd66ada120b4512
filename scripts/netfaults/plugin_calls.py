"""Calls with the old plugin (livekit-plugins-avatario 1.8.9), in its own environment.

    .bench/plugin/bin/python -m netfaults.plugin_calls SPEC_JSON

The same SPEC and output as `netfaults.calls`, ``spacing`` included; ``transport``,
``fresh``, ``max_elapsed`` and ``connect_timeout`` are ignored (the plugin has one aiohttp
session, its own fixed retry rule and no deadline). Its base URL is hard-coded to production;
it is pointed at the lab's fake by setting `livekit.plugins.avatario.api.DEFAULT_API_URL`, as
benchmarks/workloads.py does. Imports nothing from this project.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import Any

import aiohttp
import livekit.plugins.avatario.api as plugin_api

# The plugin logs every failure with a traceback; the figures are the output here.
logging.disable(logging.CRITICAL)


async def run(spec: dict[str, Any]) -> None:
    plugin_api.DEFAULT_API_URL = spec["url"]
    gate = asyncio.Semaphore(int(spec["concurrency"]))
    spacing = float(spec.get("spacing", 0.0))
    begin = time.monotonic()
    async with aiohttp.ClientSession() as session:

        async def one(n: int) -> None:
            avatar_id = f"{spec['prefix']}-{n}"
            api = plugin_api.AvatarioAPI(spec["key"], avatar_id, session=session)
            await asyncio.sleep(max(0.0, begin + n * spacing - time.monotonic()))
            async with gate:
                started = time.monotonic()
                line: dict[str, Any] = {"id": avatar_id}
                try:
                    await api.start_session(
                        livekit_agent_identity="agent-7",
                        properties={"url": "wss://rooms.example.com", "token": "lab.token"},
                    )
                except Exception as error:  # every failure is recorded
                    line.update(ok=False, error=type(error).__name__, typed=False)
                else:
                    line["ok"] = True
                line["elapsed"] = time.monotonic() - started
                print(json.dumps(line), flush=True)

        await asyncio.gather(*(one(n) for n in range(int(spec["calls"]))))


def main(argv: list[str]) -> int:
    asyncio.run(run(json.loads(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
