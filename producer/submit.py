"""Submission: stream a corpus into the store and onto the queue, in bounded memory."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TypeVar

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from models import store
from models.errors import InputError, StoreUnavailableError
from producer.readers import RawDocument, iter_documents

T = TypeVar("T")
INSERT_CHUNK = 2000

SendGroup = Callable[[list[int]], None]


@dataclass
class SubmitReport:
    job_id: int
    read: int = 0
    queued: int = 0
    errors: list[InputError] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        return self.read - self.queued


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def submit_corpus(
    paths: Sequence[Path | str],
    *,
    name: str,
    sessions: sessionmaker[Session],
    send_group: SendGroup,
    group_size: int,
    on_error: Callable[[InputError], None] = lambda error: None,
    on_progress: Callable[[SubmitReport], None] = lambda report: None,
    on_job: Callable[[int], None] = lambda job_id: None,
) -> SubmitReport:
    """Create a job, insert its documents chunk by chunk, and queue their ids in groups.

    Each chunk is committed before its ids are sent, so a worker never sees an id the
    database does not have yet. Texts already in the job are not queued twice.
    """
    try:
        with sessions.begin() as session:
            report = SubmitReport(job_id=store.create_job(session, name=name).id)
        on_job(report.job_id)

        def record_error(error: InputError) -> None:
            report.errors.append(error)
            on_error(error)

        for chunk in chunked(iter_documents(paths, record_error), INSERT_CHUNK):
            with sessions.begin() as session:
                ids = store.add_documents(session, job_id=report.job_id, documents=_as_new(chunk))
            for group in chunked(ids, group_size):
                send_group(group)
            report.read += len(chunk)
            report.queued += len(ids)
            on_progress(report)
        with sessions.begin() as session:
            store.mark_job_submitted(session, job_id=report.job_id)
        return report
    except OperationalError as exc:
        raise StoreUnavailableError(f"database unavailable: {exc.orig}") from exc


def _as_new(chunk: list[RawDocument]) -> list[store.NewDocument]:
    return [store.NewDocument(text=doc.text, external_id=doc.external_id) for doc in chunk]
