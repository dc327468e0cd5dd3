"""Fixtures of the fault suite: its own Redis and PostgreSQL servers, a clean run to compare with."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import FAULT_TABLE
from tests.faults.services import PostgresCluster, RedisServer, postgres_bin_or_none
from tests.faults.stack import Row, Stack, Triplets, clean_triplets, corpus_lines


@pytest.fixture(scope="session")
def fault_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, PostgresCluster]]:
    missing = [name for name, found in (("redis-server", shutil.which("redis-server")),
                                        ("PostgreSQL's initdb", postgres_bin_or_none())) if not found]
    if missing:
        message = f"the fault suite starts its own servers: {', '.join(missing)} not installed"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    redis_server = RedisServer(tmp_path_factory.mktemp("faults-redis"))
    postgres = PostgresCluster()
    redis_server.start()
    try:
        postgres.create()
        yield redis_server, postgres
    finally:
        redis_server.stop()
        postgres.destroy()


@pytest.fixture
def stack(fault_servers: tuple[RedisServer, PostgresCluster], tmp_path: Path) -> Iterator[Stack]:
    redis_server, postgres = fault_servers
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()  # a scenario that killed it and failed before restarting it
    system = Stack(tmp_path, redis_server, postgres)
    try:
        yield system
    finally:
        system.close()


@pytest.fixture(scope="session")
def clean(fault_servers: tuple[RedisServer, PostgresCluster], tmp_path_factory: pytest.TempPathFactory,
          request: pytest.FixtureRequest) -> dict[str, Triplets]:
    """The corpus extracted once with nothing going wrong: what every scenario must end with."""
    system = Stack(tmp_path_factory.mktemp("faults-clean"), *fault_servers)
    try:
        system.worker("clean")
        system.submit(system.corpus(corpus_lines()), "clean")
        system.wait_finished()
        request.config.stash[FAULT_TABLE].append(system.row("clean run (no fault)", None))
        return clean_triplets(system)
    finally:
        system.close()


@pytest.fixture
def record(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    def add(row: Row) -> Row:
        request.config.stash[FAULT_TABLE].append(row)
        return row
    return add
