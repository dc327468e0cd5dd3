"""Thin Celery tasks: check the message, call the pipeline or the trainer, decide whose fault a failure is."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from celery import Task
from celery.exceptions import Reject

from celeryconfig import EXTRACT_QUEUE
from models import registry
from models.errors import MalformedMessageError, WorkerFault
from worker import metrics
from worker import runtime as worker_runtime
from worker.app import EXTRACT_TASK, PROGRESS_EVENT, TRAIN_TASK, app
from worker.pipeline import process_documents
from worker.runtime import EXIT_WORKER_FAULT
from worker.training import TrainingFailed, run_training_job

log = logging.getLogger(__name__)
MAX_IDS_PER_MESSAGE = 100_000
# Protocol-level garbage (a body that is not [args, kwargs, embed]) is dropped before a task runs.
GUARDED_STRATEGY = "worker.message_guard:guarded_strategy"


def document_ids_from(value: object) -> list[int]:
    if (not isinstance(value, list) or not value or len(value) > MAX_IDS_PER_MESSAGE
            or not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in value)):
        raise MalformedMessageError(f"expected a list of 1 to {MAX_IDS_PER_MESSAGE} document ids, got {value!r:.200}")
    return value


@app.task(name=EXTRACT_TASK, Strategy=GUARDED_STRATEGY)
def extract(document_ids: object = None, *args: object, **kwargs: object) -> dict[str, int] | None:
    try:
        ids = document_ids_from(document_ids)
        if args or kwargs:
            raise MalformedMessageError(f"unexpected arguments {args!r:.100} {kwargs!r:.100}")
    except MalformedMessageError as exc:
        log.error("dropped a malformed %s message: %s", EXTRACT_TASK, exc)
        return None
    rt = worker_runtime.current()

    def resend(group: list[int]) -> None:
        extract.apply_async(args=[group], queue=EXTRACT_QUEUE)

    try:
        # One document (what a lost claim is split down to) runs alone in its worker: if it kills the
        # worker, no other task's documents died with it, and the death counts against it (models.claims).
        with rt.working(alone=len(ids) == 1):
            rt.follower.follow(rt.engine, rt.sessions, retry=rt.store)
            report = process_documents(ids, engine=rt.engine, sessions=rt.sessions, settings=rt.settings,
                                       owner=rt.worker_id, resend=resend, retry=rt.store, progress=rt.touch,
                                       stored=metrics.record_stored)
    except WorkerFault as exc:
        rt.stop(EXIT_WORKER_FAULT, str(exc))
        raise Reject(str(exc), requeue=True) from exc
    metrics.record_group(report)
    return asdict(report)


@app.task(bind=True, name=TRAIN_TASK, Strategy=GUARDED_STRATEGY, throws=(TrainingFailed,))
def train(self: Task, job_id: object = None, *args: object, **kwargs: object) -> dict[str, Any] | None:
    if not isinstance(job_id, int) or isinstance(job_id, bool) or job_id <= 0 or args or kwargs:
        log.error("dropped a malformed %s message: expected one training job id, got %r", TRAIN_TASK,
                  (job_id, args, kwargs))
        return None
    rt = worker_runtime.current()

    def publish(progress: dict[str, Any]) -> None:
        rt.touch()
        self.send_event(PROGRESS_EVENT, result=registry.describe_progress(progress), **progress)

    try:
        with rt.working():
            # Raises TrainingFailed when the job ends failed, so Celery and Flower show FAILURE.
            adapter_id = run_training_job(job_id, sessions=rt.sessions, settings=rt.settings, owner=rt.worker_id,
                                          store=rt.store, publish=publish)
    except WorkerFault as exc:
        rt.stop(EXIT_WORKER_FAULT, str(exc))
        raise Reject(str(exc), requeue=True) from exc
    return {"adapter_id": adapter_id}


