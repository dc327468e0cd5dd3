"""Who works on what: claims of documents and training jobs, held by a live worker, taken over from a dead one.

A claim writes the owner (a worker of ``models.workers``) into the rows it takes. Another
delivery of the same work finds it held by a live owner and skips it; work whose owner's
heartbeat stopped is released and runs again.

Fault accounting: a document is charged only for its own faults. A worker that dies while
holding a claim of many documents charges none of them: the lost documents are split into
smaller claims before they run again, until a document that kills workers runs alone; only
deaths while it is all its worker holds count (``crashes_alone``: a claim of one document and no
other task's claim beside it), and at ``max_attempts`` it is failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from sqlalchemy import Row, exists, func, select, update
from sqlalchemy.orm import Session

from models.db import one_of
from models.tables import FINISHED, Document, Job, Status, TrainingJob, Worker
from models.workers import alive, database_now, live_worker_ids

# Lost documents run again in claims this many times smaller: a document that kills its worker
# is alone after log4(group size) deaths.
SPLIT_WAYS = 4
CANCELLED = "job cancelled"


@dataclass(frozen=True, slots=True)
class ClaimedDocument:
    id: int
    text: str
    attempts: int


@dataclass
class Claim:
    documents: list[ClaimedDocument] = field(default_factory=list)  # held by the claimant now
    resend: list[list[int]] = field(default_factory=list)  # lost documents, to queue again in smaller groups
    held_elsewhere: int = 0  # documents a live worker is working on
    failed: int = 0  # failed by the claim: cancelled, or killed their worker alone too often


def claim_documents(session: Session, *, document_ids: Sequence[int], owner: str, lease_seconds: float,
                    max_attempts: int) -> Claim:
    """Take the unfinished documents among ``document_ids`` that no live worker holds."""
    rows = session.execute(
        select(Document.id, Document.text, Document.status, Document.owner, Document.claim_size,
               Document.crashes_alone, Document.attempts, Job.cancelled_at)
        .join(Job, Job.id == Document.job_id)
        .where(one_of(session, Document.id, document_ids), Document.status.not_in(FINISHED))
        .order_by(Document.id)
        .with_for_update(of=Document)
    ).all()
    claim = Claim()
    running = [row for row in rows if row.status == Status.running]
    live = live_worker_ids(session, candidates={row.owner for row in running if row.owner}, lease_seconds=lease_seconds)
    lost_now = [row for row in running if row.owner not in live]
    charged = _release_lost(session, [row.id for row in lost_now])
    crashes = {row.id: row.crashes_alone + (row.id in charged) for row in lost_now}
    claim.held_elsewhere = len(running) - len(lost_now)
    free = [row for row in rows if not (row.status == Status.running and row.owner in live)]

    cancelled = [row.id for row in free if row.cancelled_at is not None]
    killers = [row.id for row in free if row.cancelled_at is None and crashes.get(row.id, row.crashes_alone) >= max_attempts]
    _fail(session, cancelled, CANCELLED)
    _fail(session, killers, f"its worker died {max_attempts} times while extracting it alone "
                            "(it crashes the engine; see the worker log)")
    claim.failed = len(cancelled) + len(killers)
    finished_now = set(cancelled) | set(killers)
    rest = [row for row in free if row.id not in finished_now]
    lost = [row for row in rest if row.claim_size is not None or row.id in crashes]
    lost_ids = {row.id for row in lost}
    take = rest if len(rest) == 1 else [row for row in rest if row.id not in lost_ids]
    if len(rest) > 1 and lost:
        claim.resend = split_lost(lost)
        # Each smaller claim starts afresh; a document that is alone in one is charged if it kills again.
        _set(session, sorted(lost_ids), status=Status.pending, owner=None, claim_size=None)
    if take:
        _set(session, [row.id for row in take], status=Status.running, owner=owner, claim_size=len(take),
             attempts=Document.attempts + 1, started_at=database_now(session))
    claim.documents = [ClaimedDocument(row.id, row.text, row.attempts + 1) for row in take]
    return claim


def release_documents(session: Session, *, document_ids: Sequence[int], owner: str) -> int:
    """Give back documents a worker could not finish (its engine broke, it stops): pending again, as if lost.

    A broken GPU and a document that breaks the engine look alike, so they are treated as a lost
    claim: its documents run again in smaller claims, and only a claim of one document counts
    against it. A document that breaks the engine every time ends alone and failed; no other
    document is charged.
    """
    ids = list(session.scalars(
        select(Document.id).where(one_of(session, Document.id, document_ids), Document.owner == owner,
                                  Document.status == Status.running).with_for_update()))
    _release_lost(session, ids)
    return len(ids)


def take_over_lost_documents(session: Session, *, lease_seconds: float) -> list[list[int]]:
    """Release the documents of dead owners; one id list per lost claim, to queue again."""
    now = database_now(session)
    owner_alive = exists().where(Worker.id == Document.owner, alive(now, lease_seconds))
    rows = session.execute(
        select(Document.id, Document.owner).where(Document.status == Status.running, ~owner_alive)
        .order_by(Document.owner, Document.id).with_for_update(of=Document)
    ).all()
    _release_lost(session, [row.id for row in rows])
    claims: dict[str | None, list[int]] = {}
    for row in rows:
        claims.setdefault(row.owner, []).append(row.id)
    return list(claims.values())


def pending_document_ids(session: Session, *, created_before: object) -> list[int]:
    return list(session.scalars(
        select(Document.id).where(Document.status == Status.pending, Document.created_at < created_before)
        .order_by(Document.id)
    ))


def split_lost(rows: Sequence[Row]) -> list[list[int]]:
    """Lost documents in claims a ``SPLIT_WAYS``-th the size of the claim each was lost in (one at least).

    Sized by the claims they were lost in, not by how many were lost together: a worker that runs
    the parts of a split claim side by side and dies loses them all at once, and splitting those
    by their number would give back parts of the same size, again and again.
    """
    by_claim_size: dict[int, list[int]] = {}
    for row in rows:
        by_claim_size.setdefault(row.claim_size or 1, []).append(row.id)
    parts = []
    for claim_size, ids in sorted(by_claim_size.items()):
        size = -(-claim_size // SPLIT_WAYS)
        parts += [ids[start:start + size] for start in range(0, len(ids), size)]
    return parts


def _release_lost(session: Session, ids: Sequence[int]) -> set[int]:
    """Lost with their worker: pending again. A death counts against a document (the ids returned) only
    if it was all its worker held: a claim of one document, and no other claim running beside it
    (a worker runs several tasks at once)."""
    if not ids:
        return set()
    rows = session.execute(select(Document.id, Document.owner, Document.claim_size)
                           .where(one_of(session, Document.id, ids))).all()
    held = dict(session.execute(
        select(Document.owner, func.count()).where(Document.owner.in_({row.owner for row in rows}),
                                                   Document.status == Status.running)
        .group_by(Document.owner)).all())
    charged = {row.id for row in rows if row.claim_size == 1 and held.get(row.owner) == 1}
    _set(session, ids, status=Status.pending, owner=None)
    if charged:
        _set(session, sorted(charged), crashes_alone=Document.crashes_alone + 1)
    return charged


def _fail(session: Session, ids: Sequence[int], reason: str) -> None:
    if ids:
        _set(session, ids, status=Status.failed, owner=None, error=reason, finished_at=database_now(session))


def _set(session: Session, ids: Sequence[int], **values: object) -> None:
    """Update documents by id. These functions load no Document objects, so the session has none to
    synchronise: left on, the ORM looked each updated id up in it (a claim of 1,024 documents on
    PostgreSQL: 40.6 µs a document with, 35.3 without; 2-core machine)."""
    session.execute(update(Document).where(one_of(session, Document.id, ids)).values(**values),
                    execution_options={"synchronize_session": False})


class TrainingClaim(Enum):
    run = "run"  # the claimant holds the job now
    skip = "skip"  # finished, or a live worker holds it
    failed = "failed"  # out of attempts: failed now


def claim_training_job(session: Session, *, job_id: int, owner: str, lease_seconds: float,
                       max_attempts: int) -> TrainingClaim:
    job = session.get(TrainingJob, job_id, with_for_update=True)
    if job is None or job.status in FINISHED:
        return TrainingClaim.skip
    if job.status == Status.running and job.owner and job.owner in live_worker_ids(
            session, candidates=[job.owner], lease_seconds=lease_seconds):
        return TrainingClaim.skip
    now = database_now(session)
    if job.attempts >= max_attempts:
        job.status, job.owner, job.finished_at = Status.failed, None, now
        job.error = f"gave up after {job.attempts} attempts: its worker died each time (see the worker logs)"
        return TrainingClaim.failed
    job.status, job.owner, job.attempts, job.started_at = Status.running, owner, job.attempts + 1, now
    return TrainingClaim.run


def release_training_job(session: Session, *, job_id: int, owner: str) -> None:
    session.execute(
        update(TrainingJob).where(TrainingJob.id == job_id, TrainingJob.owner == owner,
                                  TrainingJob.status == Status.running)
        .values(status=Status.pending, owner=None, attempts=TrainingJob.attempts - 1)
    )


def take_over_lost_training_jobs(session: Session, *, lease_seconds: float) -> list[int]:
    now = database_now(session)
    owner_alive = exists().where(Worker.id == TrainingJob.owner, alive(now, lease_seconds))
    ids = list(session.scalars(
        select(TrainingJob.id).where(TrainingJob.status == Status.running, ~owner_alive).with_for_update()))
    if ids:
        session.execute(update(TrainingJob).where(TrainingJob.id.in_(ids)).values(status=Status.pending, owner=None))
    return ids


def pending_training_job_ids(session: Session, *, created_before: object) -> list[int]:
    return list(session.scalars(
        select(TrainingJob.id).where(TrainingJob.status == Status.pending, TrainingJob.created_at < created_before)))
