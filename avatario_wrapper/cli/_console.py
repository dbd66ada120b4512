"""The retry log on a rich console, for the command line and the demo (needs the ``cli`` extra)."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.markup import escape


class RetryLogHandler(logging.Handler):
    """Shows the client's retry warnings as one line each on a rich console."""

    def __init__(self, console: Console, indent: str = "") -> None:
        super().__init__(logging.WARNING)
        self.console = console
        self.indent = indent

    def emit(self, record: logging.LogRecord) -> None:
        attempt = getattr(record, "avatario_attempt", None)
        if attempt is None:
            self.console.print(f"{self.indent}[yellow]{escape(record.getMessage())}[/]")
            return
        status = getattr(record, "avatario_status_code", None)
        what = f"HTTP {status}" if status is not None else "no response"
        total = getattr(record, "avatario_max_attempts", "?")
        delay = getattr(record, "avatario_delay", None)
        then = f"backing off {delay:.2f} s" if delay is not None else "not retried"
        self.console.print(
            f"{self.indent}[yellow]↻ attempt {attempt}/{total} failed ({what}); {then}[/]"
        )
