"""The worker registry: who is alive, by heartbeats written and read on the database's clock.

Every host's worker writes ``heartbeat_at`` from the database server's clock and every
liveness check compares against it too, so clocks that disagree between hosts do not matter.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session

from models.tables import Worker, utcnow


def database_now(session: Session) -> datetime:
    """The database server's time (SQLite runs on this machine: its clock is ours)."""
    if session.get_bind().dialect.name == "postgresql":
        return session.scalar(select(func.now()))  # type: ignore[return-value]
    return utcnow()


def alive(now: datetime, lease_seconds: float) -> ColumnElement[bool]:
    """Workers that have not stopped and whose last heartbeat is within the lease."""
    return Worker.stopped_at.is_(None) & (Worker.heartbeat_at >= now - timedelta(seconds=lease_seconds))


def register_worker(session: Session, *, worker_id: str, hostname: str, pid: int, queue: str, device: str) -> None:
    now = database_now(session)
    session.add(Worker(id=worker_id, hostname=hostname[:255], pid=pid, queue=queue, device=device,
                       started_at=now, heartbeat_at=now))
    session.flush()


def beat(session: Session, *, worker_id: str) -> bool:
    """Prove ``worker_id`` alive; False if it had been declared dead meanwhile (its work was taken over)."""
    row = session.get(Worker, worker_id, with_for_update=True)
    if row is None:
        return False
    declared_dead = row.stopped_at is not None
    row.heartbeat_at, row.stopped_at, row.exit_reason = database_now(session), None, None
    session.flush()
    return not declared_dead


def stop_worker(session: Session, *, worker_id: str, reason: str) -> None:
    session.execute(
        update(Worker).where(Worker.id == worker_id, Worker.stopped_at.is_(None))
        .values(stopped_at=database_now(session), exit_reason=reason[:2000])
    )


def declare_dead(session: Session, *, lease_seconds: float) -> list[str]:
    """Mark every worker silent for longer than the lease as stopped; their ids."""
    now = database_now(session)
    silent = list(session.scalars(
        select(Worker.id).where(Worker.stopped_at.is_(None), Worker.heartbeat_at < now - timedelta(seconds=lease_seconds))
    ))
    if silent:
        session.execute(update(Worker).where(Worker.id.in_(silent), Worker.stopped_at.is_(None))
                        .values(stopped_at=now, exit_reason=f"no heartbeat for {lease_seconds:g} s"))
    return silent


def live_worker_ids(session: Session, *, candidates: Iterable[str], lease_seconds: float) -> set[str]:
    ids = set(candidates)
    if not ids:
        return set()
    now = database_now(session)
    return set(session.scalars(select(Worker.id).where(Worker.id.in_(ids), alive(now, lease_seconds))))


def online_workers(session: Session, *, lease_seconds: float, queue: str | None = None) -> list[Worker]:
    statement = select(Worker).where(alive(database_now(session), lease_seconds)).order_by(Worker.started_at)
    if queue is not None:
        statement = statement.where(Worker.queue == queue)
    return list(session.scalars(statement))
