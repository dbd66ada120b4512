"""The async client's default sender when aiohttp is installed (the ``aiohttp`` extra).

Measured in docs/benchmarks.md: httpx's own async pool falls from about 1.2k to 0.4k requests
per second between 1 and 32 requests in flight on loopback, and httpx over an aiohttp
transport stays near 3.5k, while aiohttp alone serves 11k-14k. So the async client talks to
aiohttp directly. Imported only when an `AsyncAvatarioClient` is made without an
`http_client`, never by ``import avatario_wrapper``.
"""

from __future__ import annotations

import asyncio
import urllib.parse
import urllib.request

import aiohttp

from ._core import BodyReader, PreparedCall, Reply

_CHUNK = 64 * 1024


class AiohttpSender:
    """Sends with one pooled `aiohttp.ClientSession`, opened on first use in the running loop.

    TLS is verified, redirects are not followed, and each attempt has a total timeout, so a
    server that trickles bytes cannot hold an attempt past its share of the deadline.
    Proxies come from the environment (``HTTPS_PROXY``, ``NO_PROXY``...) as with httpx, read
    once per host: aiohttp's own ``trust_env`` would look them up, and ~/.netrc, in a worker
    thread on every request (two thread hops, most of its per-call cost on loopback).
    """

    owns = True

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[str, str | None] = {}

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                trust_env=False, connector=aiohttp.TCPConnector(limit=100, ssl=True)
            )
        return self._session

    def _proxy(self, url: str) -> str | None:
        if url not in self._proxies:  # one URL per client: looked up once
            parts = urllib.parse.urlsplit(url)
            bypass = urllib.request.proxy_bypass(parts.hostname or "")
            self._proxies[url] = None if bypass else urllib.request.getproxies().get(parts.scheme)
        return self._proxies[url]

    async def send(self, call: PreparedCall, timeout: float, attempts: int) -> Reply:
        session = self._open()
        try:
            async with session.post(
                call.url,
                data=call.content,
                headers=call.headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
                proxy=self._proxy(call.url),
            ) as response:
                body = BodyReader(response.status)
                try:
                    async for chunk in response.content.iter_chunked(_CHUNK):
                        if body.feed(chunk):
                            break
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    body.fail(exc)
                return Reply(response.status, response.reason or "", response.headers, body)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            timed_out = isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError))
            raise call.connection_error(exc, attempts, timed_out=timed_out) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
