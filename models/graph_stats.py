"""What the triplet store holds, in figures: sizes, the commonest predicates and entities, jobs and quality rates.

The quality rates read what the worker records: a document whose model output could not be parsed
fails with an error saying "unparseable output" (models/extraction.py), a done document missing a
window keeps a warning, and a triplet rejected for naming something absent from the text is kept in
the document's ``rejected`` list with a reason ending "not in the text" (models/validate.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sqlalchemy import Select, Subquery, func, select, union_all
from sqlalchemy.orm import Session

from models import store
from models.extraction import UNPARSEABLE
from models.tables import Document, Job, Status, TripletRow
from models.triplet_query import TripletFilter, apply_filter, count_triplets, find_distinct
from models.validate import NOT_IN_TEXT

REJECTED_BATCH = 1_000  # documents whose rejected lists are read at once


@dataclass(frozen=True, slots=True)
class Rate:
    count: int
    of: int

    @property
    def value(self) -> float | None:
        return self.count / self.of if self.of else None

    def as_dict(self) -> dict[str, object]:
        return {"count": self.count, "of": self.of, "rate": self.value}


@dataclass(frozen=True, slots=True)
class JobStats:
    id: int
    name: str
    documents: int
    done: int
    failed: int
    triplets: int


@dataclass(frozen=True, slots=True)
class StoreStats:
    job_id: int | None  # None: the whole store
    triplets: int  # stored rows
    distinct_triplets: int
    documents_done: int
    documents_failed: int
    predicates: list[tuple[str, int]]  # the commonest first
    entities: list[tuple[str, int]]  # subjects and objects, the commonest first
    jobs: list[JobStats]
    parse_failures: Rate  # failed documents whose output could not be parsed, of finished documents
    warnings: Rate  # done documents with a warning, of done documents
    ungrounded: Rate  # rejected triplets naming what the text lacks, of all triplets produced (stored + rejected)

    def as_dict(self) -> dict[str, object]:
        return {
            "job_id": self.job_id, "triplets": self.triplets, "distinct_triplets": self.distinct_triplets,
            "documents_done": self.documents_done, "documents_failed": self.documents_failed,
            "predicates": [{"predicate": name, "count": count} for name, count in self.predicates],
            "entities": [{"entity": name, "count": count} for name, count in self.entities],
            "jobs": [asdict(job) for job in self.jobs],
            "parse_failures": self.parse_failures.as_dict(), "warnings": self.warnings.as_dict(),
            "ungrounded": self.ungrounded.as_dict(),
        }


def store_stats(session: Session, *, job_id: int | None = None, top: int = 10) -> StoreStats:
    """Figures for the whole store, or for one job (NotFoundError if it does not exist)."""
    if job_id is not None:
        store.get_job(session, job_id=job_id)
    flt = TripletFilter(job_id=job_id)
    done, failed, warned, unparsed = _document_counts(session, job_id)
    triplets = count_triplets(session, flt)
    rejected, ungrounded = _rejections(session, job_id)
    return StoreStats(
        job_id=job_id,
        triplets=triplets,
        distinct_triplets=find_distinct(session, flt, limit=0).total,
        documents_done=done,
        documents_failed=failed,
        predicates=_top(session, apply_filter(_triplets(TripletRow.predicate.label("name")), flt).subquery(), top),
        entities=_top_entities(session, flt, top),
        jobs=_jobs(session, job_id),
        parse_failures=Rate(unparsed, done + failed),
        warnings=Rate(warned, done),
        ungrounded=Rate(ungrounded, triplets + rejected),
    )


def _triplets(*columns) -> Select:  # type: ignore[no-untyped-def]
    return select(*columns).select_from(TripletRow)


def _document_counts(session: Session, job_id: int | None) -> tuple[int, int, int, int]:
    is_done, is_failed = Document.status == Status.done, Document.status == Status.failed
    statement = select(
        func.count().filter(is_done), func.count().filter(is_failed),
        func.count(Document.warning).filter(is_done),
        func.count().filter(is_failed, Document.error.contains(UNPARSEABLE, autoescape=True)),
    )
    if job_id is not None:
        statement = statement.where(Document.job_id == job_id)
    done, failed, warned, unparsed = session.execute(statement).one()
    return done, failed, warned, unparsed


def _top(session: Session, counted: Subquery, top: int) -> list[tuple[str, int]]:
    """The ``top`` commonest values of ``counted``'s column "name", then by name."""
    count = func.count()
    statement = select(counted.c.name, count).group_by(counted.c.name).order_by(count.desc(), counted.c.name)
    return [(name, n) for name, n in session.execute(statement.limit(top))]


def _top_entities(session: Session, flt: TripletFilter, top: int) -> list[tuple[str, int]]:
    # A triplet counts once for its subject and once for its object.
    subjects = apply_filter(_triplets(TripletRow.subject.label("name")), flt)
    objects = apply_filter(_triplets(TripletRow.object.label("name")), flt)
    return _top(session, union_all(subjects, objects).subquery(), top)


def _jobs(session: Session, job_id: int | None) -> list[JobStats]:
    documents = (
        select(Job.id, Job.name, func.count(Document.id), func.count().filter(Document.status == Status.done),
               func.count().filter(Document.status == Status.failed))
        .outerjoin(Document, Document.job_id == Job.id).group_by(Job.id, Job.name).order_by(Job.id)
    )
    # rows per document first, from the triplets alone; then summed per job over the documents
    per_document = apply_filter(select(TripletRow.document_id, func.count().label("rows")),
                                TripletFilter(job_id=job_id)).group_by(TripletRow.document_id).subquery()
    triplets = (select(Document.job_id, func.sum(per_document.c.rows))
                .join(per_document, per_document.c.document_id == Document.id).group_by(Document.job_id))
    if job_id is not None:
        documents = documents.where(Job.id == job_id)
    per_job = {job: int(count) for job, count in session.execute(triplets)}  # PostgreSQL sums to a numeric
    return [JobStats(*row, per_job.get(row[0], 0)) for row in session.execute(documents)]


def _rejections(session: Session, job_id: int | None) -> tuple[int, int]:
    """(rejected triplets, of which ungrounded) over done documents, a batch of documents at a time."""
    rejected = ungrounded = 0
    after = 0
    while True:
        statement = select(Document.id, Document.rejected).where(Document.status == Status.done, Document.id > after)
        if job_id is not None:
            statement = statement.where(Document.job_id == job_id)
        rows = session.execute(statement.order_by(Document.id).limit(REJECTED_BATCH)).all()
        for _, reasons in rows:
            for item in reasons or ():
                rejected += 1
                ungrounded += str(item.get("reason", "")).endswith(NOT_IN_TEXT)
        if len(rows) < REJECTED_BATCH:
            return rejected, ungrounded
        after = rows[-1][0]
