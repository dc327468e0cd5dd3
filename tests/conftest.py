"""Shared fixtures: real Redis and PostgreSQL, SQLite files, tiny models built here."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from devkit.services import postgres_database, redis_server
from models.db import make_session_factory
from models.migrate import upgrade
from tests.services import redis_test_db


@pytest.fixture(scope="session")
def redis_base_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture
def broker_url(redis_base_url: str) -> Iterator[str]:
    """A Redis database of this test's own, empty, flushed afterwards."""
    with redis_test_db(redis_base_url) as url:
        yield url


def _postgres_or_skip() -> Iterator[str]:
    with postgres_database() as url:
        if url is None:
            message = "no PostgreSQL at 127.0.0.1:5432 (set TRIPLETS_TEST_POSTGRES_URL)"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A migrated, empty store: once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'triplets.db'}"
        upgrade(url)
        yield url
    else:
        for url in _postgres_or_skip():
            upgrade(url)
            yield url


@pytest.fixture
def sessions(database_url: str) -> sessionmaker[Session]:
    return make_session_factory(database_url)


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The demo GLM, trained here on the demo corpus (~16 s on 2 cores): (folder, stats)."""
    from devkit.assets import load_demo_examples, load_demo_schema
    from devkit.tiny import train_to_extract

    out = tmp_path_factory.mktemp("demo-model")
    stats = train_to_extract(out, load_demo_examples(), load_demo_schema(), seed=0)
    return out, stats


FAULT_TABLE = pytest.StashKey[list]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[FAULT_TABLE] = []


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:  # type: ignore[no-untyped-def]
    """The fault suite's table (tests/faults), printed with the test results."""
    rows = config.stash.get(FAULT_TABLE, [])
    if rows:
        from tests.faults.stack import write_report

        path = Path(str(config.rootpath)) / ".triplets" / "faults.json"
        path.parent.mkdir(exist_ok=True)
        terminalreporter.write_sep("=", "fault injection: documents per scenario")
        terminalreporter.write_line(write_report(rows, path))
        terminalreporter.write_line(f"(JSON: {path})")
