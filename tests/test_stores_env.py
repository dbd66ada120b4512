"""AVATARIO_RETRY_BUDGET_URL: which store it names, and errors that never repeat its value."""

from __future__ import annotations

from pathlib import Path

import pytest

from avatario_wrapper import _extras
from avatario_wrapper._stores import HostStore, ProcessStore, store_from_env, store_from_url
from avatario_wrapper._stores.folder import default_path
from avatario_wrapper._stores.redis import RedisStore
from avatario_wrapper.errors import AvatarioConfigError

VAR = "AVATARIO_RETRY_BUDGET_URL"
PASSWORD = "s3cr3t-REDIS-pass"


@pytest.mark.parametrize("value", [None, "", "   "])
def test_unset_or_empty_leaves_the_choice_to_the_caller(value: str | None) -> None:
    environ = {} if value is None else {VAR: value}
    assert store_from_env(environ) is None


def test_process_and_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert isinstance(store_from_env({VAR: "process"}), ProcessStore)
    for value in ("host", "HOST", "sqlite://"):
        store = store_from_env({VAR: value})
        assert isinstance(store, HostStore)
        assert store.path == default_path()
    given = tmp_path / "fleet" / "budget.sqlite3"
    for value in (f"sqlite://{given}", str(given)):
        store = store_from_env({VAR: value})
        assert isinstance(store, HostStore)
        assert store.path == given


def test_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VAR, "process")
    assert isinstance(store_from_env(), ProcessStore)
    monkeypatch.delenv(VAR)
    assert store_from_env() is None


@pytest.mark.parametrize(
    "url",
    [f"redis://:{PASSWORD}@127.0.0.1:6379/0", "rediss://redis.internal/1", "unix:///run/r.sock"],
)
def test_a_redis_url_names_a_redis_store_that_falls_back_to_the_host(url: str) -> None:
    store = store_from_env({VAR: url})
    assert isinstance(store, RedisStore)
    assert store._fallback.name == "host"
    assert PASSWORD not in repr(store)
    store.close()


def test_the_reserve_and_clock_reach_the_store() -> None:
    store = store_from_url("process", reserve=1.0)
    assert "reserve=1.0" in repr(store)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (f"http://user:{PASSWORD}@cache:6379", "got a http:// URL"),
        (f"memcached://{PASSWORD}@x", "got a memcached:// URL"),
        (f"relative/{PASSWORD}.sqlite3", "got something else"),
        (f"sqlite://relative/{PASSWORD}", "got a sqlite:// URL"),
        (f"redis://:{PASSWORD}@cache:notaport/0", "port"),
    ],
)
def test_a_bad_value_names_the_variable_and_never_repeats_the_value(value: str, says: str) -> None:
    with pytest.raises(AvatarioConfigError) as caught:
        store_from_env({VAR: value})
    assert caught.value.field == VAR
    assert str(caught.value).startswith(f"{VAR}: ")
    assert says in str(caught.value)
    assert PASSWORD not in str(caught.value)
    assert ":cache" not in str(caught.value)
    assert "@cache" not in str(caught.value)


def test_a_redis_url_without_the_redis_package_says_which_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_extras, "_absent", lambda module: module == "redis")
    with pytest.raises(AvatarioConfigError) as caught:
        store_from_env({VAR: f"redis://:{PASSWORD}@cache:6379/0"})
    assert "the redis extra" in str(caught.value)
    assert "pip install '.[redis]'" in str(caught.value)
    assert PASSWORD not in str(caught.value)
