"""The ``avatario`` command (the ``cli`` extra), walled off from the clients.

    __init__        the entry point: a missing extra is one line, never a traceback
    _commands       the click commands: start-session, fake-server, demo, contract-test
    _demo           the demo's scenes against the embedded fake
    _contract       ``contract-test``: the plan and its run; `_contract_rules`: its pure rules
    _console        the rich retry log line; `_span_tree`: a span tree drawn as text

Nothing outside this package imports it; it imports the clients and the testing kit.
"""

from __future__ import annotations

import sys

from .._extras import hint
from ._exit import EXIT_USAGE


def main() -> None:
    problem = hint("the avatario command", "cli")
    if problem is not None:
        sys.stderr.write(f"avatario: {problem}\n")
        sys.exit(EXIT_USAGE)
    from ._commands import main as command  # noqa: PLC0415 - click and rich only when present

    command()
