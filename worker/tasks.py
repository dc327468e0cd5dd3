"""Thin Celery tasks: receive ids, call the pipeline, declare the retry policy."""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy.orm import Session, sessionmaker

from models.db import make_session_factory
from models.errors import RetryableError
from models.settings import get_settings
from worker.app import EXTRACT_TASK, app
from worker.engine import get_engine
from worker.pipeline import process_documents


@lru_cache(maxsize=1)
def _sessions() -> sessionmaker[Session]:
    return make_session_factory(get_settings().database_url)


@app.task(
    name=EXTRACT_TASK,
    autoretry_for=(RetryableError,),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=5,
)
def extract(document_ids: list[int]) -> dict[str, int]:
    settings = get_settings()
    report = process_documents(
        document_ids, engine=get_engine(settings), sessions=_sessions(), max_attempts=settings.max_attempts
    )
    return report.as_dict()
