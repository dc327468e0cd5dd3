"""A training job from the store without Celery: one owner, and every way it can end is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from devkit.assets import demo_model_path
from models import claims, registry, workers
from models.settings import load_settings
from models.tables import Status, TrainingJob
from worker.training import TrainingFailed, run_training_job

pytest.importorskip("torch")


def _job(sessions: sessionmaker[Session], tmp_path: Path, train_data: Path) -> int:
    config = {"name": "duie", "base_model": str(demo_model_path()), "train_data": str(train_data), "device": "cpu",
              "precision": "fp32", "max_steps": 2, "batch_size": 2}
    with sessions.begin() as session:
        for owner in ("trainer-1", "trainer-2"):
            workers.register_worker(session, worker_id=owner, hostname="h", pid=1, queue="train", device="cpu")
        return registry.create_training_job(session, name="duie", config=config).id


def _run(job_id: int, sessions: sessionmaker[Session], tmp_path: Path, owner: str = "trainer-1") -> int | None:
    return run_training_job(job_id, sessions=sessions, settings=load_settings(adapter_registry=tmp_path / "adapters"),
                            owner=owner)


def test_a_job_whose_data_went_missing_ends_failed_with_the_reason(sessions: sessionmaker[Session],
                                                                   tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    train.write_text("", encoding="utf-8")  # emptied after it was checked and queued
    job_id = _job(sessions, tmp_path, train)
    with pytest.raises(TrainingFailed, match=f"training job {job_id}: {train}: no usable training examples"):
        _run(job_id, sessions, tmp_path)
    with sessions() as session:
        job = session.get(TrainingJob, job_id)
    assert job is not None and job.status == Status.failed and job.finished_at is not None
    assert job.error == f"{train}: no usable training examples"


def test_a_job_held_by_a_live_trainer_is_skipped_and_a_finished_one_never_runs_again(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    train = tmp_path / "train.jsonl"
    train.write_text((demo_model_path() / "heldout.jsonl").read_text(encoding="utf-8").splitlines()[0] + "\n",
                     encoding="utf-8")
    job_id = _job(sessions, tmp_path, train)
    with sessions.begin() as session:
        assert claims.claim_training_job(session, job_id=job_id, owner="trainer-2", lease_seconds=60,
                                         max_attempts=3) == claims.TrainingClaim.run
    assert _run(job_id, sessions, tmp_path) is None  # trainer-2 is alive and holds it
    with sessions.begin() as session:
        registry.finish_training_job(session, job_id=job_id, adapter_id=None)
    assert _run(job_id, sessions, tmp_path) is None
    with sessions() as session:
        job = session.get(TrainingJob, job_id)
    assert job is not None and (job.status, job.attempts, job.owner) == (Status.done, 1, "trainer-2")
