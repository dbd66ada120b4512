"""docs/reliability.md is made of sections, each written by the script that measures it.

``scripts/reliability`` writes the fault matrix, the soak, the idle race and the list of what
is tested; ``scripts/network-faults`` writes the network faults (and, with ``--hedging``, the hedged
connects). Each section sits between
``<!-- reliability:NAME -->`` and ``<!-- /reliability:NAME -->``, and a script rewrites only
its own, keeping the others as they are.
"""

from __future__ import annotations

import re
from pathlib import Path

ORDER = ("fault-matrix", "soak", "idle-race", "network-faults", "hedged-connects", "tested")
TITLE = "# Reliability"
_SECTION = re.compile(
    r"^<!-- reliability:(?P<name>[a-z-]+) -->\n(?P<body>.*?)\n<!-- /reliability:(?P=name) -->$",
    re.DOTALL | re.MULTILINE,
)


def sections(text: str) -> dict[str, str]:
    """The sections found in `text`, by name."""
    return {m["name"]: m["body"] for m in _SECTION.finditer(text)}


def update(path: Path, new: dict[str, str], *, everything: bool = False) -> None:
    """Write `new`'s sections into the report at `path`, keeping its other sections.

    A report without markers (from before sections) is replaced only when `everything` says
    that `new` holds every section its writer makes; otherwise that would lose it.
    """
    old: dict[str, str] = {}
    if path.exists():
        text = path.read_text()
        old = sections(text)
        if not old and text.strip() and not everything:
            raise SystemExit(
                f"{path} has no section markers (written by an older scripts/reliability): "
                "run scripts/reliability once in full to rewrite it"
            )
    merged = {**old, **{name: body.strip() for name, body in new.items()}}
    names = [n for n in ORDER if n in merged] + sorted(n for n in merged if n not in ORDER)
    body = "\n\n".join(
        f"<!-- reliability:{n} -->\n{merged[n]}\n<!-- /reliability:{n} -->" for n in names
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{TITLE}\n\n{body}\n")
