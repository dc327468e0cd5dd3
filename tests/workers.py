"""Start a real `triplets worker` process and wait until it answers on the broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from models.settings import load_settings
from worker.app import create_app

READY_TIMEOUT_S = 90


def worker_env(**settings: str | Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPLETS_")}
    env.update({f"TRIPLETS_{name.upper()}": str(value) for name, value in settings.items()})
    return env


@contextmanager
def running_worker(env: dict[str, str], log_path: Path, *, queue: str = "extract") -> Iterator[subprocess.Popen]:
    """A worker subprocess, ready to take tasks when the body runs; stopped after it."""
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "producer", "worker", "--device", "cpu", "--queue", queue, "--loglevel", "INFO"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    app = create_app(load_settings(broker_url=env["TRIPLETS_BROKER_URL"]))
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        # ping blocks up to its timeout waiting for replies, so this loop is paced by the broker.
        while not app.control.ping(timeout=1.0):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{log_path.read_text()[-3000:]}")
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        app.close()
