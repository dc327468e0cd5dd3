"""A worker's background duty: heartbeats, the stall watchdog, and takeover passes."""

from __future__ import annotations

import logging
import os
import threading
import time

from models import workers
from worker.takeover import Takeover
from worker.runtime import EXIT_STALLED, Runtime

log = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    """Beats every ``heartbeat_seconds``; runs a takeover pass every ``sweep_seconds``; exits a stalled worker.

    A hung GPU kernel or a deadlock keeps a process alive, so a heartbeat alone would hold its
    work forever: while a task runs, the beat stops the process once the engine or trainer has
    made no progress for ``stall_seconds``, and the work is taken over.
    """

    def __init__(self, runtime: Runtime, takeover: Takeover) -> None:
        super().__init__(name="triplets-heartbeat", daemon=True)
        self.runtime = runtime
        self.takeover = takeover
        self.stopped = threading.Event()
        self._store_down = False

    def run(self) -> None:
        settings = self.runtime.settings
        next_takeover = time.monotonic()  # a new worker looks for lost work at once
        while not self.stopped.wait(settings.heartbeat_seconds):
            self._beat()
            stalled = self.runtime.stalled_for()
            if stalled > settings.stall_seconds:
                self._exit_stalled(stalled)
            if time.monotonic() >= next_takeover:
                next_takeover = time.monotonic() + settings.sweep_seconds
                self._take_over()

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=10)

    def _beat(self) -> None:
        try:
            with self.runtime.sessions.begin() as session:
                if not workers.beat(session, worker_id=self.runtime.worker_id):
                    log.warning("this worker had been declared dead (no heartbeat for the lease); "
                                "its work was taken over, and what it still writes is dropped")
        except Exception as exc:  # noqa: BLE001 - the next beat tries again
            if not self._store_down:
                log.warning("heartbeat not written (%s); retrying", type(exc).__name__)
            self._store_down = True
        else:
            self._store_down = False

    def _take_over(self) -> None:
        try:
            self.takeover.run()
        except Exception as exc:  # noqa: BLE001 - a broker or database outage: the next pass tries again
            log.warning("takeover pass skipped: %s: %s", type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")

    def _exit_stalled(self, stalled: float) -> None:
        reason = f"no progress for {stalled:.0f} s (TRIPLETS_STALL_SECONDS={self.runtime.settings.stall_seconds:g})"
        log.error("worker stalled: %s; exiting so its work is taken over", reason)
        try:
            with self.runtime.sessions.begin() as session:
                workers.stop_worker(session, worker_id=self.runtime.worker_id, reason=reason)
        finally:
            # A warm shutdown would wait for the stuck task forever.
            os._exit(EXIT_STALLED)
