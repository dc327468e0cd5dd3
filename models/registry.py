"""The adapter registry and training jobs: keyword-only store functions over a Session.

Adapter folders live under one registry folder; a stored path is relative to it and is
resolved so that it can never point outside it. ``check_adapter_folder`` is the one test of
what a loadable adapter folder holds, shared by promotion and the engine (no torch here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from models.errors import ConfigError, NotFoundError
from models.tables import Adapter, Status, TrainingJob, utcnow


def model_key(base_model: Path | str) -> str:
    """How adapters and triplets name a base model: its resolved folder."""
    return str(Path(base_model).expanduser().resolve())


# PEFT's file names. Only safetensors: adapter_model.bin is a pickle, and unpickling runs code.
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PICKLED_WEIGHTS = "adapter_model.bin"


def resolve_adapter_path(registry: Path, relative: str) -> Path:
    """The adapter folder inside ``registry``; anything that would leave it is refused.

    ``resolve`` follows symlinks, so a link inside the registry pointing elsewhere is refused too.
    """
    root = registry.resolve()
    path = (root / relative).resolve()
    if not _inside(root, path):
        raise ConfigError(f"adapter path {relative!r} escapes the registry folder {root}")
    return path


def check_adapter_folder(path: Path) -> Path:
    """``path`` if it is a folder holding a LoRA adapter's config and safetensors weights.

    Pure file checks, so the producer (promotion) and the engine (loading) refuse the same folders.
    """
    if not path.is_dir():
        raise ConfigError(f"adapter folder {path} does not exist")
    missing = [name for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS) if not (path / name).is_file()]
    if missing:
        pickled = ADAPTER_WEIGHTS in missing and (path / PICKLED_WEIGHTS).exists()
        reason = f" ({PICKLED_WEIGHTS} is a pickle and is never loaded: save with safetensors)" if pickled else ""
        raise ConfigError(f"adapter folder {path} lacks {' and '.join(missing)}{reason}")
    return path


def registered_adapter_folder(registry: Path, relative: str) -> Path:
    """A registered adapter's folder: inside the registry, files included, and loadable."""
    path = check_adapter_folder(resolve_adapter_path(registry, relative))
    root = registry.resolve()
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        # A file symlinked out of the registry would bypass the folder check above.
        if not _inside(root, (path / name).resolve()):
            raise ConfigError(f"adapter file {relative}/{name} escapes the registry folder {root}")
    return path


def _inside(root: Path, path: Path) -> bool:
    return path == root or root in path.parents


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


def start_training_job(session: Session, *, job_id: int) -> TrainingJob:
    job = get_training_job(session, job_id=job_id)
    job.status, job.attempts, job.started_at = Status.running, job.attempts + 1, utcnow()
    session.flush()
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
