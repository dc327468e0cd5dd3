"""Environment for worker and CLI subprocesses in tests."""

from __future__ import annotations

import os
from pathlib import Path


def worker_env(**settings: str | Path | int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPLETS_")}
    env.update({f"TRIPLETS_{name.upper()}": str(value) for name, value in settings.items()})
    return env
