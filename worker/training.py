"""A training job from the queue: train, evaluate, register. Plain functions, callable without Celery."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from models import registry
from models.errors import PermanentError
from models.settings import Settings
from models.train_config import parse_train_config

log = logging.getLogger(__name__)


def run_training_job(
    job_id: int, *, sessions: sessionmaker[Session], settings: Settings,
    publish: Callable[[dict[str, Any]], None] = lambda progress: None,
) -> int | None:
    """Train job ``job_id`` (resuming from its checkpoint), register the adapter; its id, or None if failed.

    Progress goes to the job's row after every optimizer step, and to ``publish`` (the task's events).
    """
    from worker.evaluation import evaluate_adapter
    from worker.trainer import train_adapter

    with sessions.begin() as session:
        job = registry.start_training_job(session, job_id=job_id)
        raw_config = dict(job.config)
    try:
        config = parse_train_config(raw_config)
        relative = f"{config.name}/job-{job_id}"  # stable across redeliveries, so the checkpoint is found
        out_dir = registry.resolve_adapter_path(settings.adapter_registry, relative)
        out_dir.mkdir(parents=True, exist_ok=True)

        def report(progress: dict) -> None:
            with sessions.begin() as session:
                registry.record_training_progress(session, job_id=job_id, progress=progress)
            publish(progress)

        result = train_adapter(config, out_dir, on_progress=report)
        metrics: dict = {"train_loss": result.loss, "steps": result.steps, "train_seconds": round(result.seconds, 2),
                         "examples": result.examples, "skipped": result.skipped, "resumed_from": result.resumed_from}
        if config.dev_data is not None:
            scores = evaluate_adapter(config.base_model, out_dir, config.dev_data, settings=settings,
                                      schema_path=config.schema_path, max_examples=config.eval_max_examples)
            metrics["eval"] = scores.as_dict()
        with sessions.begin() as session:
            adapter = registry.register_adapter(
                session, name=config.name, path=relative, base_model=registry.model_key(config.base_model),
                metrics=metrics, config=config.model_dump(mode="json"),
            )
            registry.finish_training_job(session, job_id=job_id, adapter_id=adapter.id)
            return adapter.id
    except PermanentError as exc:
        log.error("training job %d failed: %s", job_id, exc)
        with sessions.begin() as session:
            registry.finish_training_job(session, job_id=job_id, error=str(exc))
        return None
