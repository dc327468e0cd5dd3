"""The system under fault: real `triplets worker` processes, the CLI, its own Redis and PostgreSQL.

A scenario submits a corpus, injects its fault, waits until every document has ended (bounded),
and reads the outcome from the database: done, failed (each with a reason), lost (never
ended), duplicated triplets, and documents whose triplets differ from a clean run's.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from devkit.assets import demo_model_path
from models.db import make_session_factory
from models.migrate import upgrade
from models.tables import Document, Status, TripletRow, Worker
from tests.faults.services import PostgresCluster, RedisServer, wait_until
from tests.workers import worker_env

CORPUS_SIZE = 24
FINISH_TIMEOUT_S = 240
# Fast failure detection for the suite; scenario (b) runs on the production defaults.
FAST_LEASES = {"heartbeat_seconds": 0.5, "lease_seconds": 3, "sweep_seconds": 1}
BASE_SETTINGS = {"base_model": demo_model_path(), "task_group_size": 4, "max_batch_size": 4,
                 "max_new_tokens": 128, "stall_seconds": 300}

Triplets = frozenset[tuple[str, str, str]]


@dataclass
class Row:
    scenario: str
    submitted: int
    done: int
    failed: int
    lost: int
    duplicated: int
    differ_from_clean: int
    seconds: float
    reasons: list[str] = field(default_factory=list)
    note: str = ""


def corpus_lines(count: int = CORPUS_SIZE) -> list[str]:
    return (demo_model_path() / "heldout.jsonl").read_text(encoding="utf-8").splitlines()[:count]


class WorkerProcess:
    def __init__(self, stack: Stack, name: str, queue: str, device: str, settings: dict) -> None:
        self.name = name
        self.log = stack.folder / f"{name}.log"
        env = stack.env(**settings)
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "producer", "worker", "--device", device, "--queue", queue, "--name", name],
                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=stack.folder)
        self.stack = stack

    def wait_ready(self, timeout: float = 120) -> None:
        wait_until(lambda: self.process.poll() is not None or self.live_id(), f"worker {self.name} to be ready",
                   timeout=timeout)
        assert self.process.poll() is None, self.log.read_text()[-3000:]

    def live_id(self) -> str | None:
        with self.stack.sessions() as session:
            return session.scalar(select(Worker.id).where(Worker.id.like(f"{self.name}@%"), Worker.stopped_at.is_(None))
                                  .order_by(Worker.started_at.desc()).limit(1))

    def engine_process(self) -> psutil.Process:
        (child,) = psutil.Process(self.process.pid).children()
        return child

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


class Stack:
    def __init__(self, folder: Path, redis_server: RedisServer, postgres: PostgresCluster) -> None:
        self.folder = folder
        self.redis = redis_server
        self.postgres = postgres
        self.database_url = postgres.new_database(f"faults_{uuid.uuid4().hex[:10]}")
        upgrade(self.database_url)
        self.broker_url = f"{redis_server.url}/0"
        redis.Redis.from_url(self.broker_url).flushdb()
        self.sessions: sessionmaker[Session] = make_session_factory(self.database_url)
        self.workers: list[WorkerProcess] = []
        self.started = time.monotonic()

    def env(self, **settings: object) -> dict[str, str]:
        merged = {**BASE_SETTINGS, **FAST_LEASES, **settings}
        return worker_env(broker_url=self.broker_url, database_url=self.database_url,
                          adapter_registry=self.folder / "adapters",
                          **{k: v for k, v in merged.items() if v is not None})

    def worker(self, name: str, *, queue: str = "extract", device: str = "cpu", ready: bool = True,
               **settings: object) -> WorkerProcess:
        process = WorkerProcess(self, name, queue, device, settings)
        self.workers.append(process)
        if ready:
            process.wait_ready()
        return process

    def cli(self, *args: str, timeout: float = 300, **settings: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "producer", *args], env=self.env(**settings), cwd=self.folder,
                              capture_output=True, text=True, timeout=timeout)

    def corpus(self, lines: list[str], name: str = "corpus.jsonl") -> Path:
        path = self.folder / name
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def submit(self, path: Path, name: str) -> int:
        result = self.cli("submit", str(path), "--name", name)
        assert result.returncode == 0, result.stdout + result.stderr
        return int(result.stdout.split("job ")[1].split(":")[0])

    def count(self, *statuses: Status) -> int:
        with self.sessions() as session:
            return session.scalar(select(func.count()).select_from(Document).where(Document.status.in_(statuses))) or 0

    def wait_for(self, condition, what: str, timeout: float = FINISH_TIMEOUT_S):  # type: ignore[no-untyped-def]
        return wait_until(condition, what, timeout=timeout, every=0.2)

    def wait_finished(self, timeout: float = FINISH_TIMEOUT_S) -> None:
        self.wait_for(lambda: self.count(Status.pending, Status.running) == 0 and self.count(
            Status.done, Status.failed) > 0, "every document to end", timeout)

    def row(self, scenario: str, clean: dict[str, Triplets] | None, note: str = "") -> Row:
        with self.sessions() as session:
            documents = list(session.scalars(select(Document)))
            duplicated = sum(count - 1 for (count,) in session.execute(
                select(func.count()).select_from(TripletRow).group_by(
                    TripletRow.document_id, TripletRow.subject, TripletRow.predicate, TripletRow.object,
                    TripletRow.model, TripletRow.adapter, TripletRow.prompt_version)))
            found = triplets_by_document(session)
        done = [d for d in documents if d.status == Status.done]
        failed = [d for d in documents if d.status == Status.failed]
        differ = 0 if clean is None else sum(found.get(d.id, frozenset()) != clean.get(d.text) for d in done)
        return Row(scenario, len(documents), len(done), len(failed), len(documents) - len(done) - len(failed),
                   duplicated, differ, round(time.monotonic() - self.started, 1),
                   sorted({d.error or "" for d in failed}), note)

    def close(self) -> None:
        for process in self.workers:
            process.stop()
        self.sessions.kw["bind"].dispose()


def triplets_by_document(session: Session) -> dict[int, Triplets]:
    found: dict[int, set[tuple[str, str, str]]] = {}
    for document_id, subject, predicate, obj in session.execute(
            select(TripletRow.document_id, TripletRow.subject, TripletRow.predicate, TripletRow.object)):
        found.setdefault(document_id, set()).add((subject, predicate, obj))
    return {key: frozenset(value) for key, value in found.items()}


def clean_triplets(stack: Stack) -> dict[str, Triplets]:
    with stack.sessions() as session:
        by_id = triplets_by_document(session)
        return {d.text: by_id.get(d.id, frozenset()) for d in session.scalars(select(Document))}


def write_report(rows: list[Row], path: Path) -> str:
    path.write_text(json.dumps([asdict(row) for row in rows], ensure_ascii=False, indent=2), encoding="utf-8")
    header = f"{'scenario':<64} {'submitted':>9} {'done':>5} {'failed':>6} {'lost':>5} {'dup':>4} {'differ':>6} {'s':>6}"
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(f"{row.scenario:<64} {row.submitted:>9} {row.done:>5} {row.failed:>6} {row.lost:>5} "
                     f"{row.duplicated:>4} {row.differ_from_clean:>6} {row.seconds:>6.1f}")
        lines.extend(f"{'':<4}failed: {reason}" for reason in row.reasons)
        if row.note:
            lines.append(f"{'':<4}{row.note}")
    return "\n".join(lines)
