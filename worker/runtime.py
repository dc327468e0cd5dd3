"""What a worker process holds while it runs: its identity, settings, store, engine, and liveness.

Tasks are thin: they read the process's Runtime (installed by ``worker.main`` before Celery
starts consuming) and call the plain pipeline or training functions with it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from models import workers
from models.settings import Settings
from worker.store_retry import StoreRetry

log = logging.getLogger(__name__)

# Exit codes of a worker process, read by its supervisor (worker.supervisor).
EXIT_OK = 0
EXIT_NOT_READY = 3  # its configuration cannot work (model, device, adapter): restarting cannot help
EXIT_WORKER_FAULT = 70  # it broke while working (device lost, database gone too long): restart it
EXIT_STALLED = 75  # its engine or trainer stopped making progress: restart it


@dataclass
class Runtime:
    settings: Settings
    worker_id: str
    queue: str
    sessions: sessionmaker[Session]
    engine: Any = None  # the extraction engine (extract workers only)
    follower: Any = None  # its AdapterFollower
    exit_code: int = EXIT_OK
    _busy: int = 0
    _alone: int = 0  # tasks waiting to run alone, or running alone
    _last_progress: float = field(default_factory=time.monotonic)
    _lock: threading.Condition = field(default_factory=threading.Condition)

    @property
    def store(self) -> StoreRetry:
        return StoreRetry(self.sessions, patience_s=self.settings.store_retry_seconds)

    def touch(self) -> None:
        """The engine or trainer moved forward."""
        self._last_progress = time.monotonic()

    @contextmanager
    def working(self, *, alone: bool = False) -> Iterator[None]:
        """A task at work; ``alone``: once no other task works, and none starts until it is done."""
        with self._lock:
            if alone:
                self._alone += 1
                self._lock.wait_for(lambda: not self._busy)
            else:
                self._lock.wait_for(lambda: not self._alone)
            self._busy += 1
        self.touch()
        try:
            yield
        finally:
            with self._lock:
                self._busy -= 1
                self._alone -= alone
                self._lock.notify_all()

    @property
    def busy(self) -> int:
        """Tasks working now."""
        return self._busy

    def stalled_for(self) -> float:
        """Seconds without progress while busy (0 while idle)."""
        return time.monotonic() - self._last_progress if self._busy else 0.0

    def stop(self, exit_code: int, reason: str) -> None:
        """Stop consuming and exit with ``exit_code`` once the running tasks return."""
        from celery.worker import state

        log.error("worker stopping: %s", reason)
        self.exit_code = exit_code
        try:
            with self.sessions.begin() as session:
                workers.stop_worker(session, worker_id=self.worker_id, reason=reason)
        except Exception as exc:  # noqa: BLE001 - the lease expires by itself
            log.warning("could not record the stop in the database: %s", type(exc).__name__)
        # The consumer loop checks this flag and shuts the worker down (a warm shutdown).
        state.should_stop = exit_code


_current: Runtime | None = None


def install(runtime: Runtime) -> None:
    global _current
    _current = runtime


def current() -> Runtime:
    if _current is None:
        raise RuntimeError("no worker runtime: start workers with `triplets worker`")
    return _current
