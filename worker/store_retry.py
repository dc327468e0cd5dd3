"""Waiting out a database outage inside a worker, holding its work instead of failing it.

An unreachable database is nobody's document's fault: a transaction that fails to connect is
retried with backoff (one log line when the wait starts, one when it ends) for up to
``patience_s``; after that the worker's own fault is raised, which gives the message back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from models.errors import WorkerFault

log = logging.getLogger(__name__)
T = TypeVar("T")
FIRST_DELAY_S = 0.25
MAX_DELAY_S = 15.0
SQLITE_TRANSIENT = ("locked", "busy", "unable to open", "disk i/o")


def is_unavailable(exc: BaseException) -> bool:
    """Does this error mean the database could not be reached (rather than refused the statement)?"""
    if isinstance(exc, OperationalError) and type(exc.orig).__module__ == "sqlite3":
        # SQLite names schema mistakes OperationalError too ("no such table"): only these pass.
        return any(transient in str(exc.orig).lower() for transient in SQLITE_TRANSIENT)
    return isinstance(exc, (OperationalError, InterfaceError)) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated)


def reason(exc: BaseException) -> str:
    """The driver's first line: names the host and port, never the password."""
    original = getattr(exc, "orig", None) or exc
    return (str(original).strip().splitlines() or [type(original).__name__])[0]


class StoreRetry:
    def __init__(self, sessions: sessionmaker[Session], *, patience_s: float,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.sessions = sessions
        self.patience_s = patience_s
        self.sleep = sleep

    def run(self, work: Callable[[Session], T]) -> T:
        """``work`` in one transaction, committed; retried while the database is unreachable."""
        started = time.monotonic()
        delay = FIRST_DELAY_S
        waiting = False
        while True:
            try:
                with self.sessions.begin() as session:
                    result = work(session)
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                waited = time.monotonic() - started
                if waited > self.patience_s:
                    raise WorkerFault(f"database unreachable for {waited:.0f} s: {reason(exc)}") from exc
                if not waiting:
                    log.warning("database unreachable, holding the work and retrying: %s", reason(exc))
                    waiting = True
                self.sleep(delay)
                delay = min(delay * 2, MAX_DELAY_S)
                continue
            if waiting:
                log.warning("database reachable again after %.1f s", time.monotonic() - started)
            return result
