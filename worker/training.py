"""A training job from the queue: claim, train, evaluate, register. Plain functions, callable without Celery.

One owner at a time: a delivery of a job that is finished or held by a live worker is skipped
(a visibility timeout shorter than the job cannot start a second trainer on its folder); a
job whose worker died is taken over and resumes from its checkpoint; after ``max_attempts``
deliveries it is failed. Every way a job can end is written: done with its adapter, or
failed with a one-line reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from models import claims, registry
from models.errors import PermanentError, TripletsError, WorkerFault
from models.settings import Settings
from models.train_config import parse_train_config
from worker.store_retry import StoreRetry, is_unavailable

log = logging.getLogger(__name__)


class TrainingFailed(TripletsError):
    """The job ended failed (its reason is stored); raised so Celery and Flower show FAILURE."""


def run_training_job(
    job_id: int, *, sessions: sessionmaker[Session], settings: Settings, owner: str, store: StoreRetry | None = None,
    publish: Callable[[dict[str, Any]], None] = lambda progress: None,
) -> int | None:
    """Train job ``job_id`` if this worker may own it; the new adapter's id, None if skipped.

    Raises TrainingFailed when the job ends failed, WorkerFault when the worker cannot go on.
    """
    store = store or StoreRetry(sessions, patience_s=settings.store_retry_seconds)
    claim = store.run(lambda session: claims.claim_training_job(
        session, job_id=job_id, owner=owner, lease_seconds=settings.lease_seconds, max_attempts=settings.max_attempts))
    if claim == claims.TrainingClaim.skip:
        log.info("training job %d skipped: finished, or held by a live worker", job_id)
        return None
    if claim == claims.TrainingClaim.failed:
        raise TrainingFailed(f"training job {job_id}: out of attempts")
    try:
        return _train_and_register(job_id, store=store, settings=settings, publish=publish)
    except WorkerFault:
        store.run(lambda session: claims.release_training_job(session, job_id=job_id, owner=owner))
        raise
    except Exception as exc:  # noqa: BLE001 - every ending is written, whatever it was
        reason = _reason(exc)
        log.error("training job %d failed: %s", job_id, reason, exc_info=not isinstance(exc, PermanentError))
        store.run(lambda session: registry.finish_training_job(session, job_id=job_id, error=reason))
        raise TrainingFailed(f"training job {job_id}: {reason}") from None


def _train_and_register(job_id: int, *, store: StoreRetry, settings: Settings,
                        publish: Callable[[dict[str, Any]], None]) -> int:
    from worker.evaluation import evaluate_adapter
    from worker.trainer import train_adapter

    raw_config = store.run(lambda session: dict(registry.get_training_job(session, job_id=job_id).config))
    config = parse_train_config(raw_config)
    relative = f"{config.name}/job-{job_id}"  # stable across redeliveries, so the checkpoint is found
    out_dir = registry.resolve_adapter_path(settings.adapter_registry, relative)
    out_dir.mkdir(parents=True, exist_ok=True)
    progress_lost = {"logged": False}

    def report(progress: dict) -> None:
        publish(progress)
        try:  # progress is a view; a database blip must not end a job of hours
            with store.sessions.begin() as session:
                registry.record_training_progress(session, job_id=job_id, progress=progress)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            if not progress_lost["logged"]:
                log.warning("training job %d: progress not written (database unreachable); training goes on", job_id)
            progress_lost["logged"] = True

    result = train_adapter(config, out_dir, on_progress=report, trust_remote_code=settings.trust_remote_code)
    metrics: dict = {"train_loss": result.loss, "steps": result.steps, "train_seconds": round(result.seconds, 2),
                     "examples": result.examples, "skipped": result.skipped, "resumed_from": result.resumed_from}
    if config.dev_data is not None:
        scores = evaluate_adapter(config.base_model, out_dir, config.dev_data, settings=settings,
                                  schema_path=config.schema_path, max_examples=config.eval_max_examples)
        metrics["eval"] = scores.as_dict()

    def register(session: Session) -> int:
        adapter = registry.register_adapter(
            session, name=config.name, path=relative, base_model=registry.model_key(config.base_model),
            metrics=metrics, config=config.model_dump(mode="json"),
        )
        registry.finish_training_job(session, job_id=job_id, adapter_id=adapter.id)
        return adapter.id

    return store.run(register)


def _reason(exc: BaseException) -> str:
    if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError, without importing torch here
        return ("out of GPU memory: lower micro_batch_size or max_length, or raise gpu_memory_budget_gib "
                f"({str(exc).splitlines()[0] if str(exc) else ''})")
    if isinstance(exc, TripletsError):
        return str(exc)
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first}"[:2000]
