"""Submission: check a corpus's paths, then stream it into the store and onto the queue, in bounded memory."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TypeVar

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from models import store
from models.errors import InputError, StoreUnavailableError
from models.tables import Job
from producer.readers import (
    DEFAULT_MAX_CHARS, EXPECTED, SUFFIXES, ErrorHandler, RawDocument, iter_documents, os_reason, shown,
)

T = TypeVar("T")
INSERT_CHUNK = 2000
_NAME_CHARS: int = Job.__table__.c.name.type.length  # a file name may be longer (255 bytes)

SendGroup = Callable[[list[int]], None]


@dataclass
class SubmitReport:
    job_id: int
    read: int = 0
    queued: int = 0
    skipped_records: int = 0  # lines and rows, each reported
    skipped_files: int = 0  # whole files (binary, unreadable) and links, each reported
    resumed: bool = False  # this job's earlier submit was interrupted; this one finished it
    requeued: int = 0  # its documents stored before the interruption and not finished, queued again

    @property
    def duplicates(self) -> int:
        return self.read - self.queued

    def count_skipped(self, error: InputError, file_names: set[str]) -> None:
        # A file's own problems name the file alone; a record's name its line.
        if error.source in file_names:
            self.skipped_files += 1
        else:
            self.skipped_records += 1


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def resolve_corpus(paths: Iterable[Path | str], on_error: ErrorHandler = lambda error: None) -> list[Path]:
    """The files to read: the given files in order, folders walked and sorted.

    Raises InputError for a path that is missing, of an unsupported type, or a folder without a
    supported file, so that nothing is stored for a command line naming one. A looping or broken
    link inside a folder is handed to ``on_error`` and skipped.
    """
    files: list[Path] = []
    for given in paths:
        path = Path(given)
        try:
            mode = path.stat().st_mode
        except OSError as err:
            raise InputError(shown(path), os_reason(err)) from None
        if stat.S_ISDIR(mode):
            found = _walk(path, on_error)
            if not found:
                raise InputError(shown(path), "no .txt, .jsonl or .csv file in this folder")
            files.extend(found)
        elif not stat.S_ISREG(mode):
            raise InputError(shown(path), f"not a regular file or a folder ({EXPECTED})")
        elif path.suffix.lower() not in SUFFIXES:
            raise InputError(shown(path), f"unsupported file type '{path.suffix}' ({EXPECTED})")
        else:
            files.append(path)
    return files


def _walk(folder: Path, on_error: ErrorHandler) -> list[Path]:
    # Linked folders are followed, each real folder once: a link back to an ancestor
    # (dir/link -> dir) would otherwise be walked forever.
    found: list[Path] = []
    entered: set[tuple[int, int]] = set()
    pending = [folder]
    while pending:
        current = pending.pop()
        try:
            info = current.stat()
            if (info.st_dev, info.st_ino) in entered:
                on_error(InputError(shown(current), "link to a folder already read (a loop?), skipped"))
                continue
            entered.add((info.st_dev, info.st_ino))
            entries = list(os.scandir(current))
        except OSError as err:
            on_error(InputError(shown(current), os_reason(err)))
            continue
        for entry in entries:
            supported = Path(entry.name).suffix.lower() in SUFFIXES
            try:
                if entry.is_dir():
                    pending.append(Path(entry.path))
                elif entry.is_file():
                    found += [Path(entry.path)] if supported else []
                elif supported and entry.is_symlink():
                    on_error(InputError(shown(entry.path), "broken symbolic link"))
            except OSError as err:  # a -> a: following the link fails
                on_error(InputError(shown(entry.path), os_reason(err)))
    return sorted(found)


def submit_corpus(
    paths: Sequence[Path | str],
    *,
    name: str,
    sessions: sessionmaker[Session],
    send_group: SendGroup,
    group_size: int,
    max_chars: int = DEFAULT_MAX_CHARS,
    on_error: Callable[[InputError], None] = lambda error: None,
    on_progress: Callable[[SubmitReport], None] = lambda report: None,
    on_job: Callable[[int], None] = lambda job_id: None,
) -> SubmitReport:
    """Check the paths, create a job, insert its documents chunk by chunk, and queue their ids in groups.

    A bad path raises InputError before the job exists. Each chunk is committed before its ids
    are sent, so a worker never sees an id the database does not have yet. Texts already in
    the job are not queued twice. A job of the same name whose submit never finished (the
    producer was killed, the broker lost) is resumed instead of duplicated: its pending
    documents are queued again (a copy of a message already queued is skipped by the workers).
    """
    skipped_links: list[InputError] = []

    def link_error(error: InputError) -> None:
        skipped_links.append(error)
        on_error(error)

    files = resolve_corpus(paths, link_error)
    file_names = {shown(file) for file in files}
    try:
        report = _open_job(sessions, shown(name)[:_NAME_CHARS], send_group, group_size)
        report.skipped_files = len(skipped_links)
        on_job(report.job_id)

        def record_error(error: InputError) -> None:
            report.count_skipped(error, file_names)
            on_error(error)

        for chunk in chunked(iter_documents(files, record_error, max_chars=max_chars), INSERT_CHUNK):
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


def _open_job(sessions: sessionmaker[Session], name: str, send_group: SendGroup, group_size: int) -> SubmitReport:
    """A new job, or the interrupted one of this name with its unfinished documents queued again."""
    with sessions.begin() as session:
        interrupted = store.interrupted_job(session, name=name)
        job_id = interrupted.id if interrupted else store.create_job(session, name=name).id
        pending = store.unfinished_document_ids(session, job_id=job_id) if interrupted else []
    for group in chunked(pending, group_size):
        send_group(group)
    return SubmitReport(job_id=job_id, resumed=interrupted is not None, requeued=len(pending))


def _as_new(chunk: list[RawDocument]) -> list[store.NewDocument]:
    return [store.NewDocument(text=doc.text, external_id=doc.external_id) for doc in chunk]
