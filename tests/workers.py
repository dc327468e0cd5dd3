"""Environment for worker and CLI subprocesses in tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def worker_env(**settings: str | Path | int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPLETS_")}
    env.update({f"TRIPLETS_{name.upper()}": str(value) for name, value in settings.items()})
    return env


def triplets(env: dict[str, str], *args: str, cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    """``triplets ARGS`` run in ``cwd`` with ``env``, its output captured."""
    return subprocess.run([sys.executable, "-m", "producer", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def free_port() -> int:
    """A TCP port nobody listens on now on 127.0.0.1 (for a server a test starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
