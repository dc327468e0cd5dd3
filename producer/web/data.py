"""What the pages and the API show, read from the store: plain dicts, the same for HTML and JSON."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.errors import InputError, NotFoundError
from models.recovery import job_summaries
from models.store import rate_and_eta
from models.tables import Document, Status, as_utc
from models.triplet_query import TripletFilter, find_triplets, neighbors
from producer.web.highlight import segments, spans_of

PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def _iso(moment: datetime | None) -> str | None:
    moment = as_utc(moment)
    return moment.isoformat(timespec="seconds") if moment else None


def jobs(session: Session, *, job_id: int | None = None) -> list[dict]:
    """Every job (newest first) with documents per status, docs/s and ETA, in two grouped queries.

    The rate is models.store.job_progress's (``rate_and_eta``), computed here for all jobs at once,
    as the jobs page polls it.
    """
    spans = {
        row[0]: (row[1], row[2]) for row in session.execute(
            select(Document.job_id, func.min(Document.started_at), func.max(Document.finished_at))
            .group_by(Document.job_id)
        )
    }
    out = []
    for summary in reversed(job_summaries(session)):
        if job_id is not None and summary.id != job_id:
            continue
        counts = summary.counts
        finished = counts[Status.done.value] + counts[Status.failed.value]
        unfinished = counts[Status.pending.value] + counts[Status.running.value]
        rate, eta = rate_and_eta(counts, *spans.get(summary.id, (None, None)))
        out.append({
            "id": summary.id, "name": summary.name, "created_at": _iso(summary.created_at),
            "cancelled_at": _iso(summary.cancelled_at), "counts": counts, "total": finished + unfinished,
            "finished": finished, "warnings": summary.warnings, "docs_per_second": rate, "eta_seconds": eta,
        })
    if job_id is not None and not out:
        raise NotFoundError(f"job {job_id}: not found")
    return out


@dataclass(frozen=True, slots=True)
class Search:
    """A triplet search as the form and the API give it: a filter and a page."""

    filter: TripletFilter
    offset: int = 0
    limit: int = PAGE_SIZE


def parse_search(params: dict[str, str | None], *, limit: int | None = None, offset: int = 0) -> Search:
    """The form's text fields as a TripletFilter: empty means unset; ``job`` must be a number."""
    values = {name: (params.get(name) or "").strip() or None for name in
              ("subject", "subject_type", "predicate", "object", "object_type", "document")}
    job = (params.get("job") or "").strip()
    if job and not job.isdigit():
        raise InputError("job", f"expected a job id (a number), got {job!r}")
    contains = (params.get("contains") or "").lower() in ("1", "true", "on", "yes")
    flt = TripletFilter(**values, job_id=int(job) if job else None, contains=contains)
    return Search(flt, max(offset, 0), min(max(limit or PAGE_SIZE, 1), MAX_PAGE_SIZE))


def search(session: Session, query: Search) -> dict:
    page = find_triplets(session, query.filter, limit=query.limit, offset=query.offset)
    return {"items": [record.as_dict() for record in page.items], "total": page.total,
            "offset": page.offset, "limit": page.limit}


def document(session: Session, *, document_id: int) -> dict:
    """One document with its triplets, rejected triplets and its text cut for highlighting."""
    row = session.get(Document, document_id)
    if row is None:
        raise NotFoundError(f"document {document_id}: not found")
    records = find_triplets(session, TripletFilter(document_id=document_id), limit=None).items
    spans, problems = spans_of(records, len(row.text))
    return {
        "id": row.id, "job": row.job_id, "external_id": row.external_id, "status": Status(row.status).value,
        "attempts": row.attempts, "error": row.error, "warning": row.warning, "history": row.history or [],
        "started_at": _iso(row.started_at), "finished_at": _iso(row.finished_at), "text": row.text,
        "triplets": [{**record.as_dict(), "problems": problems.get(index, [])}
                     for index, record in enumerate(records)],
        "rejected": row.rejected or [],
        # What the model said is kept for a failed document only: it is why it failed.
        "raw_output": row.raw_output if Status(row.status) == Status.failed else None,
        "segments": segments(row.text, spans),
    }


def neighbours(session: Session, *, entity: str, depth: int, limit: int) -> dict:
    if depth not in (1, 2):
        raise InputError("depth", f"expected 1 or 2, got {depth}")
    edges = neighbors(session, entity, depth=depth, limit=limit)
    return {"entity": entity, "depth": depth, "limit": limit, "edges": [edge.as_dict() for edge in edges]}
