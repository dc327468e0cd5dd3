"""Run a `triplets worker` as a child process and wait until it answers on the broker."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from models.errors import TripletsError
from models.settings import load_settings

if TYPE_CHECKING:
    from celery import Celery

READY_TIMEOUT_S = 120


@contextmanager
def local_worker(
    env: dict[str, str], log_path: Path, *, queue: str = "extract", device: str = "cpu"
) -> Iterator[subprocess.Popen]:
    """A worker subprocess on ``device``, ready to take tasks when the body runs; stopped after it."""
    from worker.app import create_app

    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "producer", "worker", "--device", device, "--queue", queue],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    app = create_app(load_settings(broker_url=env["TRIPLETS_BROKER_URL"]))
    try:
        wait_until_ready(app, process, log_path, READY_TIMEOUT_S)
        yield process
    finally:
        stop_workers([process], timeout=30)
        app.close()


def stop_workers(processes: list[subprocess.Popen], *, timeout: float) -> None:
    """SIGTERM to each (a warm shutdown: running groups finish), SIGKILL to one still running after ``timeout``."""
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_ready(app: Celery, process: subprocess.Popen, log_path: Path, timeout: float) -> None:
    """Return once a worker answers a ping on ``app``'s broker; TripletsError, with the end of the
    worker's log, if ``process`` exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    # ping blocks up to its timeout waiting for replies, so the broker paces this loop.
    while not app.control.ping(timeout=1.0):
        if process.poll() is not None or time.monotonic() > deadline:
            raise TripletsError(f"worker did not start; its log {log_path} ends:\n{log_path.read_text()[-2000:]}")
