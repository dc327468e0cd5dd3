"""Store functions behind the recovery commands: list jobs, cancel, run failed documents again, inspect one.

Keyword-only functions over a Session, like ``models.store``; callers own the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from models.claims import CANCELLED
from models.errors import NotFoundError
from models.store import get_job, unfinished_document_ids
from models.tables import Document, Job, Status, TripletRow, as_utc
from models.workers import database_now


@dataclass(frozen=True, slots=True)
class JobSummary:
    id: int
    name: str
    created_at: datetime
    counts: dict[str, int]  # documents per status, every status present
    warnings: int  # done documents with a warning
    cancelled_at: datetime | None


def job_summaries(session: Session) -> list[JobSummary]:
    """Every job, oldest first, with its documents counted per status in one grouped query."""
    counts: dict[int, dict[str, int]] = {}
    warnings: dict[int, int] = {}
    rows = session.execute(
        select(Document.job_id, Document.status, func.count(), func.count(Document.warning))
        .group_by(Document.job_id, Document.status)
    )
    for job_id, status, count, warned in rows:
        counts.setdefault(job_id, {})[Status(status).value] = count
        if Status(status) == Status.done:
            warnings[job_id] = warned
    return [
        JobSummary(job.id, job.name, job.created_at,
                   {status.value: counts.get(job.id, {}).get(status.value, 0) for status in Status},
                   warnings.get(job.id, 0), job.cancelled_at)
        for job in session.scalars(select(Job).order_by(Job.id))
    ]


@dataclass(frozen=True, slots=True)
class Cancelled:
    failed: int  # pending documents failed by this cancel (0 when repeated)
    running: int  # documents a worker holds: they finish normally


def cancel_job(session: Session, *, job_id: int) -> Cancelled:
    """Mark the job cancelled and fail its pending documents.

    Documents a worker is running finish normally. A document that becomes pending again
    later (its worker died) is failed by the next claim, which checks ``cancelled_at``.
    """
    job = get_job(session, job_id=job_id)
    now = database_now(session)
    if job.cancelled_at is None:  # a second cancel keeps the first time
        job.cancelled_at = now
    # On PostgreSQL a row a claim is taking right now is re-checked after its lock is released,
    # so a document that just became running is left to finish.
    result = session.execute(
        update(Document).where(Document.job_id == job_id, Document.status == Status.pending)
        .values(status=Status.failed, error=CANCELLED, owner=None, finished_at=now)
    )
    running = session.scalar(
        select(func.count()).where(Document.job_id == job_id, Document.status == Status.running))
    return Cancelled(result.rowcount or 0, running or 0)


def requeue_unfinished(session: Session, *, job_id: int) -> list[int]:
    """Un-cancel the job; the ids of its pending and running documents, to send again."""
    get_job(session, job_id=job_id).cancelled_at = None
    return unfinished_document_ids(session, job_id=job_id)


def requeue_failed(session: Session, *, job_id: int) -> list[int]:
    """Make the job's failed documents pending as new, their ending kept in ``history``; their ids.

    Attempts and crash counts start again at zero: the reason they failed (a lost worker, a
    cancel, an outage) is what the user has fixed before asking for this.
    """
    get_job(session, job_id=job_id).cancelled_at = None
    failed = session.execute(
        select(Document.id, Document.error, Document.attempts, Document.finished_at, Document.history)
        .where(Document.job_id == job_id, Document.status == Status.failed)
        .order_by(Document.id)
        .with_for_update()
    ).all()
    if not failed:
        return []
    now = database_now(session)
    session.execute(update(Document), [
        {"id": row.id, "status": Status.pending, "attempts": 0, "crashes_alone": 0, "claim_size": None,
         "owner": None, "error": None, "raw_output": None, "started_at": None, "finished_at": None,
         "history": [*(row.history or []), {"status": Status.failed.value, "error": row.error,
                                            "attempts": row.attempts, "at": as_utc(row.finished_at or now).isoformat()}]}
        for row in failed
    ])
    return [row.id for row in failed]


def get_document(session: Session, *, document_id: int) -> tuple[Document, list[TripletRow]]:
    """One document and its stored triplets, in the order they were written."""
    document = session.get(Document, document_id)
    if document is None:
        raise NotFoundError(f"document {document_id}: not found")
    triplets = list(session.scalars(
        select(TripletRow).where(TripletRow.document_id == document_id).order_by(TripletRow.id)))
    return document, triplets
