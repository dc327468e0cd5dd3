"""Store functions: keyword-only, over a Session, idempotent where work may repeat.

Callers own the transaction (``with sessions.begin() as session``); nothing here commits.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from models.db import one_of
from models.errors import NotFoundError
from models.tables import FINISHED, Document, Job, Status, as_utc, utcnow
from models import segments, triplet_rows
from models.triplet import Span, Triplet


@dataclass(frozen=True, slots=True)
class NewDocument:
    text: str
    external_id: str


@dataclass(frozen=True, slots=True)
class JobProgress:
    job_id: int
    name: str
    counts: dict[str, int]
    docs_per_second: float | None
    eta_seconds: float | None
    warnings: int = 0  # done documents missing something (a failed window, a truncated answer)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def unfinished(self) -> int:
        return self.counts.get(Status.pending.value, 0) + self.counts.get(Status.running.value, 0)


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def create_job(session: Session, *, name: str) -> Job:
    job = Job(name=name)
    session.add(job)
    session.flush()
    return job


def interrupted_job(session: Session, *, name: str) -> Job | None:
    """The newest job of this name whose submit never finished, unless cancelled."""
    return session.scalars(
        select(Job).where(Job.name == name, Job.submitted_at.is_(None), Job.cancelled_at.is_(None))
        .order_by(Job.id.desc()).limit(1)
    ).first()


def mark_job_submitted(session: Session, *, job_id: int) -> None:
    session.execute(update(Job).where(Job.id == job_id).values(submitted_at=utcnow()))


def add_documents(session: Session, *, job_id: int, documents: Sequence[NewDocument]) -> list[int]:
    """Insert documents as pending; a text already in the job (or earlier in ``documents``) is skipped.
    Returns the new ids, in order (both databases number new rows in the order they are inserted)."""
    firsts: dict[str, NewDocument] = {}
    for doc in documents:
        firsts.setdefault(text_sha256(doc.text), doc)
    if not firsts:
        return []
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        result = connection.exec_driver_sql(_ADD_DOCUMENTS_POSTGRES, {
            "job_id": job_id, "created_at": utcnow(), "sha256": list(firsts),
            "external_id": [doc.external_id[:500] for doc in firsts.values()],
            "text": [doc.text for doc in firsts.values()]})
        return sorted(result.scalars())
    # The session holds SQLite's one write lock from its BEGIN (``db._begin_immediate``): the texts
    # found missing stay missing until it commits. Plain tuples: sqlite3 loops over them in C.
    known = set(connection.exec_driver_sql(_KNOWN_TEXTS_SQLITE, (job_id, json.dumps(list(firsts)))).scalars())
    new = [(sha256, doc) for sha256, doc in firsts.items() if sha256 not in known]
    if not new:
        return []
    connection.exec_driver_sql("INSERT INTO job_texts (job_id, sha256) VALUES (?, ?)",
                               [(job_id, sha256) for sha256, _ in new])
    rows = [{"job_id": job_id, "external_id": doc.external_id[:500], "sha256": sha256, "text": doc.text}
            for sha256, doc in new]
    return sorted(session.scalars(sqlite.insert(Document.__table__).returning(Document.__table__.c.id), rows))


_KNOWN_TEXTS_SQLITE = "SELECT sha256 FROM job_texts WHERE job_id = ? AND sha256 IN (SELECT value FROM json_each(?))"
# One statement of array parameters for the whole chunk. SQLAlchemy's multi-row INSERT renders
# four parameters a document, which psycopg re-parses on every call (2,000-document chunks). The
# defaults SQLAlchemy would apply (status, attempts, created_at) are written out. The job's texts
# take the new hashes first, in hash order: a text another producer is adding waits there for its
# commit, and two producers adding overlapping chunks take the same order, so neither deadlocks.
_ADD_DOCUMENTS_POSTGRES = """
WITH d AS (
    SELECT * FROM unnest(%(external_id)s::varchar[], %(sha256)s::varchar[], %(text)s::text[])
        WITH ORDINALITY AS d(external_id, sha256, text, n)
), new AS (
    INSERT INTO job_texts (job_id, sha256) SELECT %(job_id)s, sha256 FROM d ORDER BY sha256
    ON CONFLICT DO NOTHING RETURNING sha256
)
INSERT INTO documents (job_id, external_id, sha256, text, status, attempts, created_at)
SELECT %(job_id)s, d.external_id, d.sha256, d.text, 'pending', 0, %(created_at)s
FROM d JOIN new USING (sha256) ORDER BY d.n
RETURNING id
"""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What extraction made of one document: triplets (done), or an error (failed)."""

    document_id: int
    text: str
    triplets: Sequence[Triplet] = ()
    # each triplet's subject and object offsets where the engine knows them (windows);
    # otherwise the first occurrence in ``text`` is used
    spans: Sequence[tuple[Span | None, Span | None]] | None = None
    rejected: Sequence[dict[str, str]] = ()
    warning: str | None = None  # what a done document is missing, e.g. a window that failed
    error: str | None = None
    raw_output: str | None = None


@dataclass(frozen=True, slots=True)
class Recorded:
    triplets: int  # triplet rows written
    fenced: tuple[int, ...] = ()  # documents no longer held by the writer: their outcomes were dropped


def record_outcomes(session: Session, outcomes: Sequence[Outcome], *, model: str, adapter: str,
                    prompt_version: str, owner: str | None = None) -> Recorded:
    """Replace this extractor's triplets of each document, mark each done or failed.

    With ``owner``, only documents that worker still holds (running, owned by it) are written:
    a worker presumed dead whose work was taken over cannot overwrite its successor's.
    A handful of statements for the whole group, whatever its size: a statement per document
    costs a worker more than the tail of a GPU batch.
    """
    if not outcomes:
        return Recorded(0)
    ids = sorted(outcome.document_id for outcome in outcomes)
    now = utcnow()
    created_at = triplet_rows.timestamp(session, now)

    def rows_of(outcome: Outcome) -> list[tuple]:
        return triplet_rows.document_rows(outcome.document_id, outcome.text, outcome.triplets, outcome.spans,
                                          model=model, adapter=adapter, prompt_version=prompt_version,
                                          created_at=created_at)

    # On SQLite the rows are made before the first statement, which takes the store's one write lock
    # that other workers' groups wait for. On PostgreSQL they are made while COPY sends them: the
    # server stores one chunk while the next is made, on the other core.
    postgres = session.get_bind().dialect.name == "postgresql"
    made = {} if postgres else {
        outcome.document_id: rows_of(outcome) for outcome in outcomes if outcome.error is None}
    # Locking the documents (in id order, so two workers cannot deadlock) serialises two
    # deliveries of one document: the later replaces the earlier's rows instead of interleaving.
    lock = (select(Document.id, Document.has_triplets).where(one_of(session, Document.id, ids))
            .order_by(Document.id).with_for_update())
    if owner is not None:
        lock = lock.where(Document.owner == owner, Document.status == Status.running)
    held = {document_id: stored for document_id, stored in session.execute(lock)}
    fenced = tuple(i for i in ids if i not in held)
    outcomes = [outcome for outcome in outcomes if outcome.document_id in held]
    if not outcomes:
        return Recorded(0, fenced)
    done = [outcome for outcome in outcomes if outcome.error is None]
    # Only a document stored before can have rows to replace; a first run skips the search.
    segments.delete_rows(session, [outcome.document_id for outcome in done if held[outcome.document_id]],
                         model=model, adapter=adapter, prompt_version=prompt_version)
    stored = triplet_rows.insert_triplets(session, (
        row for outcome in done for row in (rows_of(outcome) if postgres else made[outcome.document_id])))
    _finish_documents(session, now, [
        (outcome.document_id, Status.done, None, outcome.warning, None, list(outcome.rejected) or None)
        if outcome.error is None else
        (outcome.document_id, Status.failed, outcome.error, None, outcome.raw_output, None)
        for outcome in outcomes
    ])
    return Recorded(stored, fenced)


_FINISHED_COLUMNS = ("id", "status", "error", "warning", "raw_output", "rejected")
# SQLite: one executemany of plain tuples, which sqlite3 loops over in C. Through SQLAlchemy each
# document's parameters went through its type processors (~15 µs a document; the ORM's bulk update
# ~30 µs), 2-core machine, profiled.
_FINISH_DOCUMENT_SQLITE = (
    "UPDATE documents SET finished_at = ?, status = ?, error = ?, warning = ?, raw_output = ?, rejected = ?,"
    " has_triplets = has_triplets OR ? WHERE id = ?"
)
# One statement for the whole group: psycopg's executemany of the UPDATE above sends one per
# document (300 k triplets stored, 2-core machine, profiled: 3.2 s of the 14.5 s; this one 2.3 s).
_FINISH_DOCUMENTS_POSTGRES = """
UPDATE documents SET finished_at = %(finished_at)s, status = v.status, error = v.error, warning = v.warning,
    raw_output = v.raw_output, rejected = v.rejected::json, has_triplets = has_triplets OR v.status = 'done'
FROM unnest(%(id)s::integer[], %(status)s::varchar[], %(error)s::text[], %(warning)s::text[],
            %(raw_output)s::text[], %(rejected)s::text[]) AS v(id, status, error, warning, raw_output, rejected)
WHERE documents.id = v.id
"""


def _finish_documents(session: Session, finished_at: datetime,
                      rows: Sequence[tuple[int, Status, str | None, str | None, str | None, list | None]]) -> None:
    """Write each document's ending: (id, status, error, warning, raw_output, rejected) per row."""
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        # the moment as SQLAlchemy's DateTime stores it on SQLite, made once for the group
        dialect = connection.dialect
        moment = Document.__table__.c.finished_at.type.dialect_impl(dialect).bind_processor(dialect)(finished_at)
        connection.exec_driver_sql(_FINISH_DOCUMENT_SQLITE, [
            (moment, status.value, error, warning, raw_output, None if rejected is None else json.dumps(rejected),
             status is Status.done, document_id)
            for document_id, status, error, warning, raw_output, rejected in rows])
        return
    columns = dict(zip(_FINISHED_COLUMNS, map(list, zip(*rows))))
    columns["status"] = [status.value for status in columns["status"]]
    # json.dumps is what SQLAlchemy's JSON type uses when the engine names no serialiser (ours do not)
    columns["rejected"] = [None if value is None else json.dumps(value) for value in columns["rejected"]]
    connection.exec_driver_sql(_FINISH_DOCUMENTS_POSTGRES, {"finished_at": finished_at, **columns})


def record_failure(session: Session, *, document_id: int, reason: str, raw_output: str | None = None) -> None:
    _finish(session, [document_id], Status.failed, error=reason, raw_output=raw_output)


def unfinished_document_ids(session: Session, *, job_id: int) -> list[int]:
    return list(
        session.scalars(
            select(Document.id).where(Document.job_id == job_id, Document.status.not_in(FINISHED)).order_by(Document.id)
        )
    )


def get_job(session: Session, *, job_id: int | None = None) -> Job:
    """The job with this id, or the newest job when ``job_id`` is None."""
    statement = select(Job).order_by(Job.id.desc()).limit(1) if job_id is None else select(Job).where(Job.id == job_id)
    job = session.scalars(statement).first()
    if job is None:
        raise NotFoundError("no jobs yet" if job_id is None else f"job {job_id}: not found")
    return job


def unfinished_job_ids(session: Session, *, limit: int) -> list[int]:
    """The newest ``limit`` jobs with documents pending or running.

    One probe of the (job_id, status) index per job, whatever the number of waiting documents:
    cheap enough for every metrics scrape.
    """
    waiting = select(Document.id).where(Document.job_id == Job.id, Document.status.not_in(FINISHED))
    return list(session.scalars(select(Job.id).where(waiting.exists()).order_by(Job.id.desc()).limit(limit)))


def job_progress(session: Session, *, job_id: int) -> JobProgress:
    job = get_job(session, job_id=job_id)
    counts = {status.value: 0 for status in Status}
    for status, count in session.execute(
        select(Document.status, func.count()).where(Document.job_id == job_id).group_by(Document.status)
    ):
        counts[Status(status).value] = count
    first_start, last_finish, warnings = session.execute(
        select(func.min(Document.started_at), func.max(Document.finished_at),
               func.count(Document.warning).filter(Document.status == Status.done))
        .where(Document.job_id == job_id)
    ).one()
    rate, eta = rate_and_eta(counts, first_start, last_finish)
    return JobProgress(job.id, job.name, counts, rate, eta, warnings)


def rate_and_eta(counts: dict[str, int], first_start: datetime | None,
                 last_finish: datetime | None) -> tuple[float | None, float | None]:
    """Documents finished per second from the first start to the last finish, and the seconds the
    unfinished ones need at that rate; (None, None) before anything finished."""
    finished = counts[Status.done.value] + counts[Status.failed.value]
    if not (finished and first_start and last_finish):
        return None, None
    elapsed = (as_utc(last_finish) - as_utc(first_start)).total_seconds()
    if elapsed <= 0:
        return None, None
    rate = finished / elapsed
    return rate, (counts[Status.pending.value] + counts[Status.running.value]) / rate


def document_failures(session: Session, *, job_id: int, limit: int = 20) -> list[Document]:
    return list(
        session.scalars(
            select(Document)
            .where(Document.job_id == job_id, Document.status == Status.failed)
            .order_by(Document.id)
            .limit(limit)
        )
    )


def _finish(
    session: Session,
    document_ids: Sequence[int],
    status: Status,
    *,
    error: str | None,
    raw_output: str | None = None,
    rejected: list[dict[str, str]] | None = None,
) -> None:
    session.execute(
        update(Document)
        .where(Document.id.in_(document_ids))
        .values(status=status, error=error, raw_output=raw_output, rejected=rejected, finished_at=utcnow())
    )
