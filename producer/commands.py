"""What the CLI commands do, kept apart from argument parsing."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import NoReturn

from rich.console import Console
from rich.table import Table

from models import store, workers
from models.db import make_session_factory
from models.errors import BrokerUnavailableError, ConfigError, InputError
from models.migrate import require_head
from models.settings import get_settings
from models.tables import Status
from producer.progress import progress_bar
from producer.submit import SubmitReport

console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)
POLL_SECONDS = 1.0


def run_submit(paths: list[Path], *, name: str, wait: bool) -> int:
    from rich.markup import escape

    from producer.queue import extract_sender
    from producer.submit import resolve_corpus, submit_corpus

    def report_error(error: InputError) -> None:
        # escape: a file name such as "[/x].txt" is text, not rich markup
        errors.print(f"[yellow]skipped[/] {escape(str(error))}", highlight=False)
    skipped_links: list[InputError] = []

    def report_link(error: InputError) -> None:
        skipped_links.append(error)
        report_error(error)

    # Before the store or the broker is touched: a mistyped path costs nothing and leaves no job.
    files = resolve_corpus(paths, report_link)
    settings = get_settings()
    require_head(settings.database_url)
    sessions = make_session_factory(settings.database_url)
    job_ids: list[int] = []
    try:
        with progress_bar(errors) as progress, extract_sender(settings) as send_group:
            task = progress.add_task("reading", total=None)
            report = submit_corpus(
                files, name=name, sessions=sessions, send_group=send_group, group_size=settings.task_group_size,
                max_chars=settings.max_document_chars, on_error=report_error, on_job=job_ids.append,
                on_progress=lambda r: progress.update(task, completed=r.read, description=f"queued {r.queued}"),
            )
    except BrokerUnavailableError as exc:
        if job_ids:
            raise BrokerUnavailableError(
                f"{exc}; job {job_ids[0]}'s stored documents are kept: run the same `triplets submit` "
                "again to resume it"
            ) from exc
        raise
    console.print(_summary(report, skipped_files=report.skipped_files + len(skipped_links)))
    if not wait:
        return 0
    return follow_job(report.job_id)


def _summary(report: SubmitReport, *, skipped_files: int) -> str:
    return (
        f"job {report.job_id}: "
        + (f"resumed after an interrupted submit ({report.requeued} stored documents queued again), "
           if report.resumed else "")
        + f"{report.queued} documents queued, {report.duplicates} duplicates skipped, "
        f"{report.skipped_records} unreadable records skipped"
        + (f", {skipped_files} files or links skipped" if skipped_files else "")
    )


def follow_job(job_id: int) -> int:
    """Show progress until no document is pending or running; 1 if any failed."""
    sessions = make_session_factory(get_settings().database_url)
    with progress_bar(errors) as progress:
        task = progress.add_task("extracting", total=None)
        while True:
            with sessions() as session:
                state = store.job_progress(session, job_id=job_id)
            progress.update(task, total=state.total, completed=state.total - state.unfinished)
            if state.unfinished == 0:
                break
            time.sleep(POLL_SECONDS)
    print_status(state)
    if state.counts[Status.failed.value]:
        with sessions() as session:
            for doc in store.document_failures(session, job_id=job_id, limit=10):
                errors.print(f"[red]failed[/] {doc.external_id}: {doc.error}", highlight=False)
        return 1
    return 0


def run_status(job_id: int | None, *, as_json: bool) -> None:
    settings = get_settings()
    require_head(settings.database_url)
    with make_session_factory(settings.database_url)() as session:
        state = store.job_progress(session, job_id=store.get_job(session, job_id=job_id).id)
        online = len(workers.online_workers(session, lease_seconds=settings.lease_seconds, queue="extract"))
    if as_json:
        payload = {
            "job": state.job_id, "name": state.name, "counts": state.counts, "warnings": state.warnings,
            "docs_per_second": state.docs_per_second, "eta_seconds": state.eta_seconds, "workers_online": online,
        }
        print(json.dumps(payload, ensure_ascii=False))
        return
    print_status(state)
    if state.unfinished and not online:
        # The ETA assumes someone is working; say plainly when nobody is.
        errors.print(f"[yellow]warning[/] {state.unfinished} documents wait and no extraction worker is online "
                     "(start one: `triplets worker`)", highlight=False)


def print_status(state: store.JobProgress) -> None:
    table = Table(title=f"job {state.job_id} · {state.name}")
    for status in Status:
        table.add_column(status.value, justify="right")
    table.add_column("warnings", justify="right")
    table.add_column("docs/s", justify="right")
    table.add_column("ETA", justify="right")
    rate = f"{state.docs_per_second:.2f}" if state.docs_per_second else "–"
    eta = f"{state.eta_seconds:.0f} s" if state.eta_seconds is not None and state.unfinished else "–"
    table.add_row(*(str(state.counts[s.value]) for s in Status), str(state.warnings), rate, eta)
    console.print(table)


def run_worker(*, device: str, gpus: str, queue: str, name: str, loglevel: str) -> int:
    """Supervise one worker process on ``device``, or one per GPU of ``gpus``; the supervisor's exit code."""
    import socket

    from producer.logs import configure_supervisor_logging, log_level
    from worker.gpus import select_gpus
    from worker.supervisor import Member, supervise

    if queue not in ("extract", "train"):
        raise InputError("--queue", f"expected extract or train, got {queue!r}")
    if gpus and device:
        raise InputError("--gpus", "not with --device: --gpus runs one worker per GPU, each on its own cuda:N")
    level = log_level(loglevel)
    settings = get_settings()
    host = socket.gethostname()
    if gpus:
        members = [Member(f"{name or queue}-cuda{gpu.index}@{host}", gpu.device) for gpu in select_gpus(gpus)]
    else:
        device = device or settings.device
        node = name or f"{queue}-{device.replace(':', '')}"
        members = [Member(f"{node}@{host}", device)]
    configure_supervisor_logging(level)
    return supervise(settings, queue=queue, members=members, loglevel=level)


def run_monitor(*, port: int, address: str) -> NoReturn:
    """Become Flower: exec'd in place, so the signals a supervisor sends (SIGTERM) reach it and no child is left."""
    if importlib.util.find_spec("flower") is None:  # else Celery's own words: "No such command 'flower'"
        raise ConfigError("Flower is not installed: pip install 'triplet-queue[monitor]'")
    settings = get_settings()
    if settings.flower_basic_auth is None:
        raise ConfigError("TRIPLETS_FLOWER_BASIC_AUTH: not set; Flower never runs without auth (user:password)")
    # Through the environment, not argv: a password on the command line shows in `ps`.
    env = {**os.environ, "FLOWER_BASIC_AUTH": settings.flower_basic_auth.get_secret_value()}
    # Celery's command line, through our module: it puts Flower's /metrics and /healthcheck behind the auth too.
    command = [sys.executable, "-m", "producer.flower_app", "--app", "worker.app", "flower", f"--port={port}",
               f"--address={address}"]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(command[0], command, env)
