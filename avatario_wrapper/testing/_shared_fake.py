"""The pytest plugin's fakes: one server for the run, lent to each test's own fake.

Starting a server costs a thread and a socket (a few milliseconds); making a `FakeAvatario`
costs microseconds. So the run starts one server (`fake_avatario_server`), and each test that
asks for `fake_avatario` gets a fresh `FakeAvatario` of its own, with its own options and
state, served at that server's address for the duration of the test. A request goes to the
fake of the test running when it arrives: one that a fault delays is still served and
recorded by that test's fake, however late it finishes.
"""

from __future__ import annotations

from typing import Any

from .._text import one_line
from .app import FakeAvatario
from .runner import FakeServer

#: What `stop()` on a fake that borrows the run's address says.
STOP_MESSAGE = (
    "this fake_avatario is served at the address of the run's shared fake server, which "
    "stays up for other tests; for a fake you can stop (to play Avatario being down), ask "
    "for one of its own: @pytest.mark.avatario(own_server=True)"
)


class LendingFake(FakeAvatario):
    """The run's fake: it serves requests itself, except while it lends its address to a
    test's fake (`lend`), which then serves every request that arrives."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._borrower: FakeAvatario | None = None

    def lend(self, fake: FakeAvatario | None) -> None:
        """Serve every request that arrives from now on with `fake` (None: with this one)."""
        self._borrower = fake

    @property
    def borrower(self) -> FakeAvatario | None:
        return self._borrower

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        borrower = self._borrower  # read once: the test thread may change it meanwhile
        if borrower is None:
            await super().__call__(scope, receive, send)
        else:
            await borrower(scope, receive, send)


class BorrowedServer(FakeServer):
    """A test's own fake (`app`), served at the run's server's address while the test runs.

    Everything a `FakeServer` offers works (`url`, `requests`, `sessions`, the faults, the
    hooks) except stopping: the address belongs to the run.
    """

    def __init__(self, app: FakeAvatario, lender: FakeServer) -> None:
        super().__init__(app, host=lender.host)
        self.port = lender.port

    def start(self) -> BorrowedServer:
        """Nothing to do: the run's server already serves this fake."""
        return self

    def stop(self) -> None:
        raise RuntimeError(STOP_MESSAGE)


def describe(fake: FakeServer) -> str:
    """What a failed test's report shows of its fake: the seed, what is left, each request."""
    app = fake.app
    lines = [
        f"url: {fake.url}",
        f"seed: {app.seed} (replay the random faults with @pytest.mark.avatario(seed={app.seed}))",
        f"faults left: {app.faults or '(none)'}",
        f"sessions started: {len(app.sessions)}",
        f"requests ({len(app.requests)}):",
    ]
    for request in app.requests:
        status = "no response" if request.status is None else str(request.status)
        fault = f" [fault {request.fault}]" if request.fault else ""
        lines.append(f"  {request.method} {one_line(request.path)} -> {status}{fault}")
    return "\n".join(lines)
