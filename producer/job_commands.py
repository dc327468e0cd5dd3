"""Recovery commands: `triplets jobs`, `cancel`, `requeue` and `show`."""

from __future__ import annotations

import json
from datetime import datetime

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy.orm import Session, sessionmaker

from models import recovery
from models.db import make_session_factory
from models.errors import BrokerUnavailableError
from models.migrate import require_head
from models.settings import Settings, get_settings
from models.store import get_job
from models.tables import Status

console = Console(soft_wrap=True)
TRIPLET_FIELDS = ("subject", "subject_type", "predicate", "object", "object_type",
                  "subject_start", "subject_end", "object_start", "object_end", "model", "adapter", "prompt_version")


def _sessions(settings: Settings) -> sessionmaker[Session]:
    require_head(settings.database_url)
    return make_session_factory(settings.database_url)


def run_jobs(*, as_json: bool) -> None:
    with _sessions(get_settings())() as session:
        summaries = recovery.job_summaries(session)
    if as_json:
        print(json.dumps([
            {"job": s.id, "name": s.name, "created_at": _time(s.created_at), "counts": s.counts,
             "warnings": s.warnings, "cancelled_at": _time(s.cancelled_at)}
            for s in summaries
        ], ensure_ascii=False))
        return
    table = Table()
    for column in ("job", "name", "created", *(status.value for status in Status), "warnings", "cancelled"):
        table.add_column(column, justify="right" if column not in ("name", "created") else "left")
    for s in summaries:
        table.add_row(str(s.id), escape(s.name), _time(s.created_at, seconds=False),
                      *(str(s.counts[status.value]) for status in Status), str(s.warnings),
                      "cancelled" if s.cancelled_at else "")
    console.print(table)


def run_cancel(job_id: int) -> None:
    with _sessions(get_settings()).begin() as session:
        cancelled = recovery.cancel_job(session, job_id=job_id)
    console.print(f"job {job_id} cancelled: {cancelled.failed} pending documents cancelled, "
                  f"{cancelled.running} running ones finish; `triplets requeue {job_id} --failed` undoes it",
                  highlight=False)


def run_requeue(job_id: int, *, failed: bool) -> None:
    """Send again a job's unfinished documents, or (``failed``) run its failed ones anew."""
    from producer.queue import extract_sender
    from producer.submit import chunked

    settings = get_settings()
    sessions = _sessions(settings)
    with sessions() as session:
        get_job(session, job_id=job_id)  # an unknown job is named before the broker is tried
    # The broker answers before anything changes: a failed document is not left pending unsent.
    with extract_sender(settings) as send_group:
        with sessions.begin() as session:
            take = recovery.requeue_failed if failed else recovery.requeue_unfinished
            ids = take(session, job_id=job_id)
        try:
            for group in chunked(ids, settings.task_group_size):
                send_group(group)
        except BrokerUnavailableError as exc:
            raise BrokerUnavailableError(f"{exc}; job {job_id}'s documents are pending: "
                                         f"run `triplets requeue {job_id}` to send them") from exc
    which = "failed" if failed else "unfinished"
    console.print(f"job {job_id}: {len(ids)} {which} documents queued again", highlight=False)


def run_show(document_id: int, *, as_json: bool) -> None:
    with _sessions(get_settings())() as session:
        document, triplets = recovery.get_document(session, document_id=document_id)
    payload = {
        "id": document.id, "job": document.job_id, "external_id": document.external_id,
        "status": document.status.value, "attempts": document.attempts, "error": document.error,
        "warning": document.warning, "history": document.history or [], "text": document.text,
        "triplets": [{name: getattr(row, name) for name in TRIPLET_FIELDS} for row in triplets],
        "rejected": document.rejected or [],
        # What the model said is kept for a failed document only: it is why it failed.
        "raw_output": document.raw_output if document.status == Status.failed else None,
    }
    if as_json:
        print(json.dumps(payload, ensure_ascii=False))
    else:
        _print_document(payload)


def _print_document(doc: dict) -> None:  # type: ignore[type-arg]
    lines = [f"document {doc['id']} · job {doc['job']} · {doc['external_id']}",
             f"status {doc['status']} · attempts {doc['attempts']}"]
    lines += [f"{label}: {doc[label]}" for label in ("error", "warning") if doc[label]]
    lines += [f"earlier: {h.get('status')} at {h.get('at')} after {h.get('attempts')} attempts: {h.get('error')}"
              for h in doc["history"]]
    lines += ["", doc["text"], ""]
    console.print("\n".join(escape(line) for line in lines), highlight=False)
    table = Table(title=f"{len(doc['triplets'])} triplets")
    for column in ("subject", "predicate", "object", "types", "offsets"):
        table.add_column(column)
    for t in doc["triplets"]:
        table.add_row(escape(t["subject"]), escape(t["predicate"]), escape(t["object"]),
                      escape(f"{t['subject_type']} → {t['object_type']}"),
                      f"{_span(t['subject_start'], t['subject_end'])} → {_span(t['object_start'], t['object_end'])}")
    console.print(table)
    if doc["rejected"]:
        rejected = Table(title=f"{len(doc['rejected'])} rejected")
        for column in ("subject", "predicate", "object", "reason"):
            rejected.add_column(column)
        for r in doc["rejected"]:
            rejected.add_row(*(escape(str(r.get(c, ""))) for c in ("subject", "predicate", "object", "reason")))
        console.print(rejected)
    if doc["raw_output"] is not None:
        console.print("raw output:\n" + escape(doc["raw_output"]), highlight=False)


def _span(start: int | None, end: int | None) -> str:
    return "–" if start is None else f"{start}:{end}"


def _time(moment: datetime | None, *, seconds: bool = True) -> str | None:
    if moment is None:
        return None
    return moment.isoformat(timespec="seconds") if seconds else moment.strftime("%Y-%m-%d %H:%M")
