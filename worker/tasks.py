"""Thin Celery tasks: receive ids, call the pipeline, declare the retry policy."""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from celery import Task
from sqlalchemy.orm import Session, sessionmaker

from models import registry, store
from models.db import make_session_factory
from models.errors import RetryableError
from models.settings import get_settings
from worker.app import EXTRACT_TASK, PROGRESS_EVENT, TRAIN_TASK, app
from worker.engine import get_engine
from worker.pipeline import follow_promoted_adapter, process_documents
from worker.training import run_training_job

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _sessions() -> sessionmaker[Session]:
    return make_session_factory(get_settings().database_url)


class ExtractTask(Task):
    def on_failure(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict, einfo: Any) -> None:
        # Retries are spent: no document may stay `running` with nobody working on it.
        document_ids = args[0] if args else kwargs.get("document_ids", [])
        try:
            with _sessions().begin() as session:
                for document_id in store.unfinished_among(session, document_ids=document_ids):
                    store.record_failure(session, document_id=document_id, reason=f"task failed: {exc}")
        except Exception:  # the store itself may be what failed; redelivery or `requeue` recovers
            log.exception("could not mark documents %s failed", document_ids)


@app.task(
    base=ExtractTask,
    name=EXTRACT_TASK,
    autoretry_for=(RetryableError,),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=5,
)
def extract(document_ids: list[int]) -> dict[str, int]:
    settings = get_settings()
    engine = get_engine(settings)
    follow_promoted_adapter(engine, sessions=_sessions(), settings=settings)
    report = process_documents(document_ids, engine=engine, sessions=_sessions(), max_attempts=settings.max_attempts)
    return report.as_dict()


@app.task(bind=True, name=TRAIN_TASK, autoretry_for=(RetryableError,), retry_backoff=True, max_retries=5)
def train(self: Task, job_id: int) -> dict[str, int | None]:
    # A worker killed mid-job gives the message back (acks late); the redelivered job
    # resumes from the checkpoint its first run left in the adapter folder.
    def publish(progress: dict[str, Any]) -> None:
        self.send_event(PROGRESS_EVENT, result=registry.describe_progress(progress), **progress)

    return {"adapter_id": run_training_job(job_id, sessions=_sessions(), settings=get_settings(), publish=publish)}
