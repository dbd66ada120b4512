"""Faults for users: by operation, by chance with a seed, changed while the fake runs (from
Python and over the control endpoint)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from avatario_wrapper.testing import (
    FakeAvatario,
    FakeServer,
    Fault,
    FaultSyntaxError,
    parse_faults,
    run_fake_server,
)
from avatario_wrapper.testing._fault_plan import FaultPlan
from avatario_wrapper.testing.faults import WHATS, describe_faults

from .spec_helpers import validator
from .test_fake_spec import ID, with_session_lookup

pytestmark = pytest.mark.integration

KEY = "sk_fake_faults_key_0001"
BODY = {
    "avatario_face_id": "f",
    "agent_id": "a",
    "livekit": {"url": "wss://h.example", "token": "t0k"},
}
OPS = ("getSession", "startSession")


# -- the grammar -----------------------------------------------------------------------------------


def test_items_may_name_their_operation_and_take_a_chance() -> None:
    assert parse_faults("startSession:503*2") == [Fault("503", operation="startSession")] * 2
    assert parse_faults("503@10%, reset@0.5%") == [
        Fault("503", chance=10.0),
        Fault("reset", chance=0.5),
    ]
    [step] = parse_faults("getSession:429:retry-after=2:delay=0.1@100%")
    assert (step.operation, step.what, step.retry_after, step.delay, step.chance) == (
        "getSession",
        "429",
        "2",
        0.1,
        100.0,
    )
    assert parse_faults("503:retry-after=1")[0].operation is None  # an option, not a name
    assert parse_faults(None) == []


@pytest.mark.parametrize(
    "script",
    [
        "503*2@10%",  # a count or a chance, not both
        "503@0%",
        "503@101%",
        "503@10",  # the percent sign is part of it
        "503@x%",
        "503@nan%",
        "getSession",  # a name alone is not a fault
        "getSession:boom",
        "get Session:503",
        "getSession:503:retry-after",
    ],
)
def test_bad_items_say_what_is_wrong(script: str) -> None:
    with pytest.raises(FaultSyntaxError):
        parse_faults(script)


@pytest.mark.parametrize(
    "script",
    [
        "503*2,429:retry-after=date+2,ok",
        "startSession:reset,getSession:lost-close*3",
        "503@12.5%,startSession:reset@5%",
        "ok:delay=0.25*2",
    ],
)
def test_a_script_describes_itself_back(script: str) -> None:
    assert describe_faults(parse_faults(script)) == script


def test_fault_objects_are_checked_like_scripts() -> None:
    fake = FakeAvatario()
    with pytest.raises(FaultSyntaxError):
        fake.add_faults([Fault("boom")])
    with pytest.raises(FaultSyntaxError):
        fake.add_faults([Fault("503", chance=150)])
    with pytest.raises(TypeError):
        fake.add_faults(["503"])  # type: ignore[list-item]


def test_faults_none_means_no_faults() -> None:
    with run_fake_server(api_key=KEY, faults=None) as server:
        assert server.app.pending_faults == 0
        assert server.faults == ""


# -- the plan: which request takes which fault ----------------------------------------------------


def test_a_step_waits_for_a_request_of_its_operation() -> None:
    plan = FaultPlan(OPS, seed=1)
    plan.add("getSession:503,startSession:reset,500")
    assert plan.take("startSession") == Fault("reset", operation="startSession")
    assert plan.take("startSession") == Fault("500")  # an unnamed step: any operation
    assert plan.take("getSession") == Fault("503", operation="getSession")
    assert plan.take("getSession") is None
    assert plan.pending == 0


def test_steps_come_before_chances() -> None:
    plan = FaultPlan(OPS, seed=1)
    plan.add("reset@100%,503")
    assert plan.take("startSession") == Fault("503")
    assert plan.take("startSession") == Fault("reset", chance=100.0)
    assert plan.script == "reset@100%"


def draws(plan: FaultPlan, operation: str, n: int) -> list[str | None]:
    return [f.what if (f := plan.take(operation)) else None for _ in range(n)]


def test_chances_are_drawn_with_the_seed_and_replay_with_it() -> None:
    first, again, other = FaultPlan(OPS, seed=7), FaultPlan(OPS, seed=7), FaultPlan(OPS, seed=8)
    for plan in (first, again, other):
        plan.add("503@10%,reset@5%")
    sequence = draws(first, "startSession", 2000)
    assert draws(again, "startSession", 2000) == sequence
    assert draws(other, "startSession", 2000) != sequence
    # The proportions are those asked for (bounds many standard deviations wide).
    assert 140 <= sequence.count("503") <= 260
    assert 60 <= sequence.count("reset") <= 140
    assert sequence.count(None) == 2000 - sequence.count("503") - sequence.count("reset")


def test_each_operation_draws_on_its_own() -> None:
    alone, mixed = FaultPlan(OPS, seed=3), FaultPlan(OPS, seed=3)
    alone.add("503@30%")
    mixed.add("503@30%")
    expected = draws(alone, "startSession", 300)
    seen = []
    for _ in range(300):
        draws(mixed, "getSession", 2)  # other operations' requests do not shift the draws
        seen.extend(draws(mixed, "startSession", 1))
    assert seen == expected


def test_replacing_restarts_the_draws_from_the_seed() -> None:
    plan = FaultPlan(OPS, seed=5)
    plan.replace("503@50%")
    first = draws(plan, "startSession", 50)
    plan.replace("503@50%")
    assert draws(plan, "startSession", 50) == first
    plan.replace("503@50%", seed=6)
    assert plan.seed == 6
    assert draws(plan, "startSession", 50) != first


def test_chances_may_not_add_up_past_100_percent() -> None:
    plan = FaultPlan(OPS, seed=1)
    plan.add("503@60%,getSession:reset@40%")  # 100 % for getSession, 60 % for startSession
    with pytest.raises(FaultSyntaxError, match=r"getSession add up to 100\.5%"):
        plan.add("getSession:500@0.5%")
    with pytest.raises(FaultSyntaxError, match="startSession add up to 110%"):
        plan.replace("503@60%,startSession:reset@50%")
    assert plan.script == "503@60%,getSession:reset@40%"  # a refused change changes nothing
    plan.add("startSession:500@40%")


def test_a_fault_naming_an_unknown_operation_is_refused() -> None:
    fake = FakeAvatario()
    with pytest.raises(FaultSyntaxError, match=r"no operation 'getSesion'.*startSession"):
        fake.add_faults("getSesion:503")
    with pytest.raises(FaultSyntaxError, match="no operation"):
        FakeAvatario(faults="noSuchOperation:503")


def test_a_fake_without_a_seed_picks_one_and_shows_it() -> None:
    fake = FakeAvatario(faults="503@50%")
    again = FakeAvatario(faults="503@50%", seed=fake.seed)
    assert isinstance(fake.seed, int)
    assert draws(fake._plan, "startSession", 40) == draws(again._plan, "startSession", 40)


# -- a running fake ------------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with run_fake_server(api_key=KEY, spec=with_session_lookup(), seed=11) as running:
        yield running


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(headers={"x-api-key": KEY}) as client:
        yield client


def start(server: FakeServer, http: httpx.Client) -> int:
    return http.post(f"{server.url}/start-session", json=BODY).status_code


def lookup(server: FakeServer, http: httpx.Client) -> int:
    return http.get(f"{server.url}/sessions/{ID}").status_code


def test_faults_change_while_it_runs(server: FakeServer, http: httpx.Client) -> None:
    server.set_faults("503*2")
    assert [start(server, http) for _ in range(3)] == [503, 503, 200]
    server.add_faults("startSession:429")
    assert [lookup(server, http), start(server, http)] == [200, 429]
    server.set_faults("getSession:500@100%")
    assert [lookup(server, http) for _ in range(3)] == [500] * 3
    assert start(server, http) == 200
    server.clear_faults()
    assert lookup(server, http) == 200
    assert [r.fault for r in server.requests][-5:] == [
        "getSession:500@100%",
        "getSession:500@100%",
        "getSession:500@100%",
        None,
        None,
    ]


def test_random_faults_replay_with_the_seed_over_sockets(http: httpx.Client) -> None:
    def run() -> list[int]:
        with run_fake_server(api_key=KEY, faults="503@30%,429@20%", seed=2024) as server:
            return [start(server, http) for _ in range(40)]

    first = run()
    assert run() == first
    assert {503, 429, 200} == set(first)


def test_faults_may_change_from_other_threads_while_it_serves(
    server: FakeServer, http: httpx.Client
) -> None:
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            server.add_faults("startSession:503")
            server.clear_faults()

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        statuses = {start(server, http) for _ in range(30)}
    finally:
        stop.set()
        thread.join()
    assert statuses <= {200, 503}


# -- what each fault does to sessions -----------------------------------------------------------

#: Each fault once: (what, sessions it starts, whether the client gets an answer). As
#: docs/testing.md's table says.
EACH_FAULT = [
    ("ok", 1, True),
    ("503", 0, True),
    ("200", 0, True),  # the documented body, without acting
    ("malformed", 0, True),
    ("stall", 0, False),
    ("reset", 0, False),
    ("idle-close", 0, False),
    ("lost", 1, False),
    ("lost-close", 1, False),
    ("lost-stall", 1, False),
]


def test_every_fault_is_in_the_table() -> None:
    assert {what for what, _, _ in EACH_FAULT if not what.isdigit()} == WHATS


@pytest.mark.parametrize(("fault", "sessions", "answered"), EACH_FAULT)
def test_what_each_fault_does_to_sessions(fault: str, sessions: int, answered: bool) -> None:
    with run_fake_server(api_key=KEY, faults=fault) as server:
        with httpx.Client(headers={"x-api-key": KEY}, timeout=0.5) as http:
            try:
                status: int | None = start(server, http)
            except httpx.TransportError:  # reset, closed, or the client's timeout (stalls)
                status = None
        assert (status is not None) == answered
        assert len(server.sessions) == sessions
        [recorded] = server.requests
        assert (recorded.fault, recorded.status) == (fault, status)


def test_lost_stall_starts_the_session_and_never_answers() -> None:
    with run_fake_server(api_key=KEY, faults="lost-stall") as server:
        with httpx.Client(headers={"x-api-key": KEY}, timeout=0.3) as http:
            with pytest.raises(httpx.ReadTimeout):
                start(server, http)
            assert len(server.sessions) == 1  # started before the answer was lost
            assert start(server, http) == 200  # served normally once the step is played
        assert len(server.sessions) == 2
        assert server.faults == ""


# -- the control endpoint ------------------------------------------------------------------------


@pytest.fixture
def controlled() -> Iterator[FakeServer]:
    with run_fake_server(api_key=KEY, control=True, seed=3) as running:
        yield running


def test_the_control_endpoint_reads_replaces_adds_and_clears(
    controlled: FakeServer, http: httpx.Client
) -> None:
    url = f"{controlled.url}/_fake/faults"
    assert http.get(url).json() == {"faults": "", "pending": 0, "seed": 3}
    put = http.put(url, content="503*2,reset@5%", headers={"content-type": "text/plain"})
    assert put.json() == {"faults": "503*2,reset@5%", "pending": 2, "seed": 3}
    assert http.post(url, json={"faults": "startSession:429"}).json()["faults"] == (
        "503*2,startSession:429,reset@5%"
    )
    assert start(controlled, http) == 503
    assert http.get(url).json()["pending"] == 2
    assert http.put(f"{url}?seed=9", content="ok").json() == {
        "faults": "ok",
        "pending": 1,
        "seed": 9,
    }
    assert http.put(url, json={"faults": "500", "seed": 10}).json()["seed"] == 10
    assert http.put(url, json="502").json()["faults"] == "502"
    assert http.delete(url).json() == {"faults": "", "pending": 0, "seed": 10}
    # The endpoint is not recorded and takes no faults; only the start-session call is there.
    assert [r.path for r in controlled.requests] == ["/start-session"]


@pytest.mark.parametrize(
    ("send", "status"),
    [
        ({"content": "boom"}, 422),
        ({"content": "noSuchOperation:503"}, 422),  # no operation of that name
        ({"json": {"faults": 5}}, 400),
        ({"json": {"faults": "503", "seed": "x"}}, 400),
        ({"content": b"\xff", "headers": {"content-type": "text/plain"}}, 400),
        ({"content": b"{", "headers": {"content-type": "application/json"}}, 400),
    ],
)
def test_a_bad_control_request_is_refused_in_json(
    controlled: FakeServer, http: httpx.Client, send: dict[str, Any], status: int
) -> None:
    controlled.set_faults("503")
    response = http.put(f"{controlled.url}/_fake/faults", **send)
    assert response.status_code == status
    validator("Error").validate(response.json())
    assert controlled.faults == "503"  # unchanged


def test_the_control_endpoint_needs_the_key_and_a_known_method(controlled: FakeServer) -> None:
    url = f"{controlled.url}/_fake/faults"
    for headers in ({}, {"x-api-key": "wrong"}):
        response = httpx.put(url, content="503", headers=headers)
        assert response.status_code == 401
        validator("Error").validate(response.json())
    response = httpx.patch(url, headers={"x-api-key": KEY})
    assert (response.status_code, response.headers["allow"]) == (405, "DELETE, GET, POST, PUT")
    assert controlled.faults == ""


def test_the_sessions_endpoint_counts_the_sessions_started(
    controlled: FakeServer, http: httpx.Client
) -> None:
    url = f"{controlled.url}/_fake/sessions"
    assert http.get(url).json() == {"count": 0, "sessions": []}
    controlled.set_faults("lost")
    with pytest.raises(httpx.TransportError):
        start(controlled, http)  # lost: no answer, yet a session
    assert start(controlled, http) == 200
    state = http.get(url).json()
    assert state["count"] == 2
    assert state["sessions"] == [
        {"session_id": session["session_id"], "avatario_face_id": "f", "agent_id": "a"}
        for session in controlled.sessions
    ]
    response = httpx.delete(url, headers={"x-api-key": KEY})
    assert (response.status_code, response.headers["allow"]) == (405, "GET")
    assert httpx.get(url).status_code == 401
    assert [r.path for r in controlled.requests] == ["/start-session"] * 2  # not recorded


def test_a_seed_is_given_with_put_not_post(controlled: FakeServer, http: httpx.Client) -> None:
    response = http.post(f"{controlled.url}/_fake/faults?seed=1", content="503")
    assert response.status_code == 400
    assert "PUT" in response.json()["message"]


def test_the_control_endpoint_answers_loopback_clients_only() -> None:
    fake = FakeAvatario(api_key=KEY, control=True)

    async def from_address(host: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=fake, client=(host, 5555))
        async with httpx.AsyncClient(transport=transport, base_url="http://fake") as client:
            return await client.put("/_fake/faults", content="503", headers={"x-api-key": KEY})

    for host in ("10.0.0.7", "192.168.1.2", "2001:db8::1", "testclient"):
        response = asyncio.run(from_address(host))
        assert response.status_code == 403, host
        validator("Error").validate(response.json())
    assert fake.faults == ""
    for host in ("127.0.0.1", "127.8.0.1", "::1", "::ffff:127.0.0.1"):
        assert asyncio.run(from_address(host)).status_code == 200, host


def test_without_control_the_endpoint_does_not_exist(http: httpx.Client) -> None:
    with run_fake_server(api_key=KEY) as server:
        response = http.put(f"{server.url}/_fake/faults", content="503")
        assert response.status_code == 404
        validator("Error").validate(response.json())
        assert http.get(f"{server.url}/_fake/sessions").status_code == 404
        assert server.faults == ""
        assert server.requests[0].status == 404
