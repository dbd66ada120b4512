"""Transports: the only code that touches the network. Each sends a prepared request once.

`base` holds the sync and async protocols side by side and what every transport shares (the
record of how far an exchange got, and the one constructor of connection errors). `httpx`
serves the sync client and, given an `httpx.AsyncClient` or without aiohttp, the async one;
`aiohttp` is the async default when aiohttp is installed. Each maps its own exceptions to ours
at one choke point (its `_failure` function) and classifies timeouts there, once.
"""
