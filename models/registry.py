"""The adapter registry and training jobs: keyword-only store functions over a Session.

Adapter folders live under one registry folder; a stored path is relative to it and is
resolved so that it can never point outside it (``models.adapter_files``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from models.adapter_files import (  # noqa: F401 - the registry's API includes its folder rules
    ADAPTER_CONFIG, ADAPTER_WEIGHTS, PICKLED_WEIGHTS, check_adapter_folder, model_key, registered_adapter_folder,
    resolve_adapter_path,
)
from models.errors import NotFoundError
from models.tables import Adapter, Status, TrainingJob, utcnow


def register_adapter(
    session: Session, *, name: str, path: str, base_model: str, metrics: dict[str, Any], config: dict[str, Any]
) -> Adapter:
    """A new version of ``name``: one more than the highest registered."""
    version = next_adapter_version(session, name=name)
    adapter = Adapter(name=name, version=version, path=path, base_model=base_model, metrics=metrics, config=config)
    session.add(adapter)
    session.flush()
    return adapter


def next_adapter_version(session: Session, *, name: str) -> int:
    return (session.scalar(select(func.max(Adapter.version)).where(Adapter.name == name)) or 0) + 1


def list_adapters(session: Session) -> list[Adapter]:
    return list(session.scalars(select(Adapter).order_by(Adapter.name, Adapter.version)))


def get_adapter(session: Session, *, ref: str) -> Adapter:
    """``name`` (its newest version) or ``name:version``."""
    name, _, version = ref.partition(":")
    statement = select(Adapter).where(Adapter.name == name)
    if version:
        if not version.isdigit():
            raise NotFoundError(f"adapter {ref}: version must be a number")
        statement = statement.where(Adapter.version == int(version))
    adapter = session.scalars(statement.order_by(Adapter.version.desc()).limit(1)).first()
    if adapter is None:
        raise NotFoundError(f"adapter {ref}: not found")
    return adapter


def promote_adapter(session: Session, *, ref: str, adapter_registry: Path) -> Adapter:
    """Make ``ref`` the adapter of its base model, once its folder is checked: nothing changes otherwise."""
    adapter = get_adapter(session, ref=ref)
    registered_adapter_folder(adapter_registry, adapter.path)
    adapter.promoted_at = utcnow()
    session.flush()
    return adapter


def demote_adapter(session: Session, *, ref: str) -> Adapter | None:
    """Withdraw ``ref``'s promotion; the adapter of its base model promoted before it is current again.

    Returns the adapter now current for that base model (None: the bare base model).
    """
    adapter = get_adapter(session, ref=ref)
    if adapter.promoted_at is None:
        raise NotFoundError(f"adapter {adapter.name}:{adapter.version}: not promoted")
    adapter.promoted_at = None
    session.flush()
    return promoted_adapter(session, base_model=adapter.base_model)


def promoted_adapter(session: Session, *, base_model: str) -> Adapter | None:
    """The adapter extraction workers on ``base_model`` should use now."""
    return session.scalars(
        select(Adapter)
        .where(Adapter.base_model == base_model, Adapter.promoted_at.is_not(None))
        .order_by(Adapter.promoted_at.desc(), Adapter.id.desc())
        .limit(1)
    ).first()


def create_training_job(session: Session, *, name: str, config: dict[str, Any]) -> TrainingJob:
    job = TrainingJob(name=name, config=config, progress={})
    session.add(job)
    session.flush()
    return job


def get_training_job(session: Session, *, job_id: int | None = None) -> TrainingJob:
    statement = (
        select(TrainingJob).order_by(TrainingJob.id.desc()).limit(1)
        if job_id is None
        else select(TrainingJob).where(TrainingJob.id == job_id)
    )
    job = session.scalars(statement).first()
    if job is None:
        raise NotFoundError("no training jobs yet" if job_id is None else f"training job {job_id}: not found")
    return job


def record_training_progress(session: Session, *, job_id: int, progress: dict[str, Any]) -> None:
    session.execute(update(TrainingJob).where(TrainingJob.id == job_id).values(progress=progress))


def describe_progress(progress: dict[str, Any] | None) -> str:
    """One line for people: `triplets train status` and the task's result field in Flower."""
    progress = progress or {}
    line = (f"step {progress.get('step', 0)}/{progress.get('total_steps', '?')} · loss {progress.get('loss', '–')} · "
            f"{progress.get('samples_per_s', '–')} samples/s · ETA {progress.get('eta_s', '–')} s")
    if "micro_batch_size" in progress:
        line += (f" · {progress['micro_batch_size']} x {progress['grad_accum']}, "
                 f"{progress['checkpointed_layers']} layers checkpointed")
    if progress.get("resumed_from"):
        line += f" · resumed from step {progress['resumed_from']}"
    return line


def finish_training_job(
    session: Session, *, job_id: int, adapter_id: int | None = None, error: str | None = None
) -> None:
    session.execute(
        update(TrainingJob)
        .where(TrainingJob.id == job_id)
        .values(
            status=Status.failed if error else Status.done, error=error, adapter_id=adapter_id, finished_at=utcnow()
        )
    )
