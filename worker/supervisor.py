"""`triplets worker`: a light parent that runs the worker process and restarts it when it dies.

The parent imports no model code. It starts ``python -m worker.main`` (the process that holds
the engine), and when that process dies it records the death (so its work is taken over at
once instead of after the lease) and starts a new one, with backoff. A worker that is not
ready (its model, device or adapter cannot work) is not restarted: restarting cannot help.
SIGTERM/SIGINT ask the worker for a warm shutdown (the running group finishes); a second
one asks for a cold one. The worker dies with its parent (PR_SET_PDEATHSIG on Linux).
"""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
import sys
import threading
import time
import uuid

from models import workers
from models.db import make_session_factory
from models.settings import Settings
from worker.runtime import EXIT_NOT_READY, EXIT_OK

log = logging.getLogger("triplets.supervisor")
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
HEALTHY_AFTER_S = 60.0  # a worker that lived this long restarts without backoff
PR_SET_PDEATHSIG = 1


def supervise(settings: Settings, *, queue: str, device: str, name: str, loglevel: str) -> int:
    stop = threading.Event()
    signals = {"count": 0}
    child: subprocess.Popen | None = None

    def on_signal(signum: int, _frame: object) -> None:
        signals["count"] += 1
        stop.set()
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM if signals["count"] == 1 else signal.SIGQUIT)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    backoff = FIRST_BACKOFF_S
    while True:
        worker_id = f"{name}:{uuid.uuid4().hex[:8]}"
        started = time.monotonic()
        child = subprocess.Popen(
            [sys.executable, "-m", "worker.main", "--queue", queue, "--device", device, "--worker-id", worker_id,
             "--name", name, "--loglevel", loglevel],
            preexec_fn=_die_with_parent, process_group=0,  # its own group: a terminal's Ctrl+C reaches us only
        )
        code = child.wait()
        if stop.is_set():
            return EXIT_OK if code in (EXIT_OK, -signal.SIGTERM) else code
        if code in (EXIT_OK, EXIT_NOT_READY):
            return code
        _record_death(settings, worker_id, code)
        if time.monotonic() - started > HEALTHY_AFTER_S:
            backoff = FIRST_BACKOFF_S
        log.error("worker process %s; restarting in %.1f s", _describe(code), backoff)
        if stop.wait(backoff):
            return EXIT_OK
        backoff = min(backoff * 2, MAX_BACKOFF_S)


def _describe(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exited with {code}"


def _record_death(settings: Settings, worker_id: str, code: int) -> None:
    try:
        with make_session_factory(settings.database_url).begin() as session:
            workers.stop_worker(session, worker_id=worker_id, reason=_describe(code))
    except Exception as exc:  # noqa: BLE001 - its lease runs out by itself
        log.warning("could not record the worker's death (%s); its lease will expire", type(exc).__name__)


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
