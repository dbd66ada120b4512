"""The ``avatario`` command's entry point: a missing extra is one line, never a traceback."""

from __future__ import annotations

import sys

from ._extras import hint

#: The usage exit code (as click uses it).
EXIT_USAGE = 2


def main() -> None:
    problem = hint("the avatario command", "cli")
    if problem is not None:
        sys.stderr.write(f"avatario: {problem}\n")
        sys.exit(EXIT_USAGE)
    from .cli import main as command  # noqa: PLC0415 - click and rich only when present

    command()


if __name__ == "__main__":  # pragma: no cover
    main()
