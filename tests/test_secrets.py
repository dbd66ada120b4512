"""The secret scan: with DEBUG logging everywhere, a recognisable key and token never appear in
any output, log record, repr or exception text of the wrapper, the CLI or the demo."""

from __future__ import annotations

import asyncio
import io
import logging
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console

from avatario_wrapper import (
    APIError,
    AsyncAvatarioClient,
    AvatarioClient,
    AvatarioError,
    RetryPolicy,
    VideoOptions,
)
from avatario_wrapper.cli._commands import main
from avatario_wrapper.cli._demo import run_demo
from avatario_wrapper.compat import AvatarioAPI
from avatario_wrapper.testing import run_fake_server

pytestmark = pytest.mark.integration

KEY = "sk_live_LEAKCANARY_KEY_3f9a1c"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.LEAKCANARY_TOKEN.c2ln"
FAST = RetryPolicy(max_attempts=2, initial_delay=0.01, max_delay=0.02)
CALL = {
    "avatar_id": "face_1",
    "agent_identity": "agent-7",
    "livekit_url": "wss://rooms.example.com",
    "livekit_token": TOKEN,
}
BAD_INPUTS: list[dict[str, Any]] = [
    {"agent_identity": " "},
    {"livekit_token": TOKEN + " "},
    {"livekit_token": TOKEN + "\n"},
    {"livekit_url": f"wss://{TOKEN}@"},
    {"idempotency_key": KEY + " x"},
    {"avatar_id": TOKEN + "\x00"},
]
SCENARIOS = ["", "503*2", "reset*2", "lost", "429:retry-after=0.01", "malformed", "401", "422"]


def test_no_secret_leaks_anywhere(caplog: pytest.LogCaptureFixture, capsys: Any) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx/httpcore/aiohttp/uvicorn included
    texts: list[str] = []

    def keep(*objects: object) -> None:
        for obj in objects:
            texts.extend([str(obj), repr(obj)])
            if isinstance(obj, BaseException):
                cause = obj.__cause__
                texts.extend([str(cause), repr(cause)])
                texts.append(str(getattr(obj, "body", "")))
                texts.append(repr(getattr(obj, "headers", "")))

    with run_fake_server(api_key=KEY) as server:
        # The sync and async clients through every fault and bad input.
        with AvatarioClient(KEY, base_url=server.url, retry=FAST) as client:
            keep(client, client.with_options(timeout=1.0))
            for faults in SCENARIOS:
                server.add_faults(faults)
                try:
                    keep(client.start_session(**CALL, video=VideoOptions()))
                except AvatarioError as error:
                    keep(error)
            for bad in BAD_INPUTS:
                with pytest.raises((AvatarioError, TypeError)) as caught:
                    client.start_session(**{**CALL, **bad})
                keep(caught.value)
        with AvatarioClient("wrong-" + KEY, base_url=server.url) as wrong:
            with pytest.raises(APIError) as denied:
                wrong.start_session(**CALL)
            keep(denied.value)
        for bad_key in (KEY + " ", KEY + "\n"):
            with pytest.raises(AvatarioError) as refused:
                AvatarioClient(bad_key, base_url=server.url)
            keep(refused.value)

        async def run_async() -> None:
            async with AsyncAvatarioClient(KEY, base_url=server.url, retry=FAST) as client:
                keep(client)
                for faults in SCENARIOS:
                    server.add_faults(faults)
                    try:
                        keep(await client.start_session(**CALL))
                    except AvatarioError as error:
                        keep(error)
            api = AvatarioAPI(KEY, "face_1")
            keep(api)
            await api.aclose()

        asyncio.run(run_async())
        keep(*server.requests, *server.sessions)

        # The CLI, success and failure.
        runner = CliRunner()
        env = {"AVATARIO_API_KEY": KEY, "AVATARIO_LIVEKIT_TOKEN": TOKEN}
        args = [
            "start-session",
            "--avatar-id",
            "f",
            "--agent-identity",
            "a",
            "--livekit-url",
            "wss://h.example",
            "--base-url",
            server.url,
        ]
        for faults in ("", "503*3", "401"):
            server.add_faults(faults)
            result = runner.invoke(main, args, env=env)
            texts.append(result.output)
        result = runner.invoke(main, [*args[:4], " ", *args[5:]], env=env)
        texts.append(result.output)

    # The demo (its own made-up key and token are checked in test_cli).
    out = io.StringIO()
    assert run_demo(Console(file=out, width=120)) == 0
    texts.append(out.getvalue())

    captured = capsys.readouterr()
    texts += [captured.out, captured.err]
    texts += [record.getMessage() for record in caplog.records]
    texts += [str(record.__dict__) for record in caplog.records]
    assert len(caplog.records) > 10  # the scan really saw log output
    leaks = [t for t in texts if KEY in t or TOKEN in t]
    assert leaks == []
