"""Test access to the ledger services (PostgreSQL, MariaDB, Redis) and a fixture over all stores.

A service that does not answer skips the tests that need it, so a laptop without MariaDB
still runs the rest; with ``FOURWS_PAY_REQUIRE_SERVICES=1`` (CI) the same tests *fail*, so a
missing service can never turn a red run green by skipping.

Use from any test directory (``tests/conftest.py`` imports the fixtures)::

    def test_something(store_factory):      # runs once per store kind
        store = store_factory()              # a fresh, empty store (unique prefix)
        again = store_factory()              # another handle on the same data
        ...

Every store a factory opened is closed, and its tables/keys dropped, at teardown. The URLs
come from ``FOURWS_PAY_TEST_POSTGRES_URL``, ``FOURWS_PAY_TEST_MYSQL_URL`` and
``FOURWS_PAY_TEST_REDIS_URL`` when set.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any, NoReturn

import pytest

from fourws_pay.ledger import LedgerStore, open_store

POSTGRES_URL = os.environ.get(
    "FOURWS_PAY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get("FOURWS_PAY_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
REDIS_URL = os.environ.get("FOURWS_PAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

STORE_KINDS = ("sqlite", "postgres", "mysql", "redis")
_SERVICES = {
    "postgres": ("PostgreSQL", POSTGRES_URL),
    "mysql": ("MariaDB", MYSQL_URL),
    "redis": ("Redis", REDIS_URL),
}
_probed: dict[str, str | None] = {}


def services_required() -> bool:
    return os.environ.get("FOURWS_PAY_REQUIRE_SERVICES", "") not in ("", "0")


def _where(url: str) -> str:
    rest = url.partition("://")[2]
    return rest.rpartition("@")[2].partition("/")[0] or rest  # never echo a password


def unavailable(service: str, url: str, error: object) -> NoReturn:
    """Skip (or, when services are required, fail) because ``service`` did not answer."""
    message = f"{service} not reachable on {_where(url)}: {error}"
    if services_required():
        pytest.fail(message + " (FOURWS_PAY_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(message)


def _probe(kind: str) -> str | None:
    """Connect once with a short timeout; the error text, or None when the service answers."""
    try:
        if kind == "postgres":
            import psycopg

            psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
        elif kind == "mysql":
            import pymysql

            from fourws_pay.ledger.mysql import _connect_args

            pymysql.connect(**_connect_args(MYSQL_URL), connect_timeout=3).close()
        elif kind == "redis":
            import redis

            client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
            try:
                client.ping()
            finally:
                client.close()
    except Exception as exc:  # any driver error means "not usable here"
        return f"{type(exc).__name__}: {exc}".strip()
    return None


def require(kind: str) -> None:
    """Make sure the service behind store ``kind`` answers (probed once per test session)."""
    if kind == "sqlite":
        return
    if kind not in _probed:
        _probed[kind] = _probe(kind)
    error = _probed[kind]
    if error is not None:
        service, url = _SERVICES[kind]
        unavailable(service, url, error)


class StoreFactory:
    """Opens stores of one kind on one throw-away location, and removes it afterwards.

    ``url`` and ``options`` open the same data from anywhere (another process included):
    ``open_store(factory.url, **factory.options)``.
    """

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        tag = uuid.uuid4().hex[:12]
        self.options: dict[str, Any] = {}
        if kind == "sqlite":
            self.url = f"sqlite:///{tmp_path / f'ledger-{tag}.db'}"
        elif kind == "postgres":
            self.url = POSTGRES_URL
            self.options["table_prefix"] = f"t{tag}_"
        elif kind == "mysql":
            self.url = MYSQL_URL
            self.options["table_prefix"] = f"t{tag}_"
        elif kind == "redis":
            self.url = REDIS_URL
            self.options["key_prefix"] = f"fourws-test:{tag}:"
        else:
            raise ValueError(f"unknown store kind {kind!r}")
        self._opened: list[LedgerStore] = []

    def __call__(self, **options: Any) -> LedgerStore:
        """A store on this factory's data; ``options`` add to or override the defaults."""
        store = open_store(self.url, **{**self.options, **options})
        self._opened.append(store)
        return store

    def cleanup(self) -> None:
        for store in self._opened:
            with suppress(Exception):
                store.close()
        if self.kind != "sqlite":
            dropper = open_store(self.url, **self.options)
            try:
                dropper.drop()  # type: ignore[attr-defined]
            finally:
                dropper.close()
        self._opened.clear()


def _kind_params() -> list[Any]:
    return [
        pytest.param(kind, id=kind, marks=() if kind == "sqlite" else pytest.mark.services)
        for kind in STORE_KINDS
    ]


@pytest.fixture(params=_kind_params())
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """A ``StoreFactory`` for each store kind (sqlite, postgres, mysql, redis)."""
    kind: str = request.param
    require(kind)
    factory = StoreFactory(kind, tmp_path)
    yield factory
    factory.cleanup()


@pytest.fixture
def any_store(store_factory: StoreFactory) -> LedgerStore:
    """A fresh, empty store of each kind."""
    return store_factory()


__all__ = [
    "MYSQL_URL",
    "POSTGRES_URL",
    "REDIS_URL",
    "STORE_KINDS",
    "StoreFactory",
    "any_store",
    "require",
    "services_required",
    "store_factory",
    "unavailable",
]
