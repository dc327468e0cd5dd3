"""Each test's own Redis database on a server found or started by ``devkit.services``.

A test claims a free database (1-15) with a lock key, so two test runs on one server (CI and
a developer, or a run left over) never share one; it is flushed before and after the test.
Database 0, what a default configuration uses, is never touched.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis

LOCK_KEY = "triplets-test:claimed"
TEST_DATABASES = range(1, 16)
LOCK_SECONDS = 3600  # a run killed without cleaning up frees its databases after this


@contextmanager
def redis_test_db(base_url: str) -> Iterator[str]:
    token = uuid.uuid4().hex
    for number in TEST_DATABASES:
        client = redis.Redis.from_url(f"{base_url}/{number}")
        if client.set(LOCK_KEY, token, nx=True, ex=LOCK_SECONDS):
            break
        client.close()
    else:
        raise RuntimeError(f"every test database of {base_url} (1-15) is claimed by another test run")
    try:
        for key in client.scan_iter():
            if key != LOCK_KEY.encode():
                client.delete(key)
        yield f"{base_url}/{number}"
    finally:
        client.flushdb()
        client.close()
