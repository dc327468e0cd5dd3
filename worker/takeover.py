"""Takeover of the work of dead workers and of lost messages; run by every worker, one at a time.

Two ways work can stall with no one on it:
- its worker died (process killed, host lost): the worker's heartbeat stops, the lease runs
  out, and its documents and training job are released and queued again;
- its message was lost (a broker restarted without its last writes, a producer killed
  between storing documents and queueing them): when a queue is idle — nothing waiting, and
  no delivery younger than the lease in flight — its pending work is queued again.
A duplicate message costs nothing: a claim skips work that is finished or held by a live owner.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta

from celery import Celery
from redis import Redis

from celeryconfig import EXTRACT_QUEUE, TRAIN_QUEUE
from models import claims, workers
from models.settings import Settings
from worker.app import EXTRACT_TASK, TRAIN_TASK
from worker.store_retry import StoreRetry

log = logging.getLogger(__name__)
LOCK_KEY = "triplets:takeover-lock"
# kombu's Redis transport: messages delivered but not acknowledged, and when they were delivered.
UNACKED_KEY, UNACKED_INDEX_KEY = "unacked", "unacked_index"
PRIORITY_SEPARATOR, PRIORITY_STEPS = "\x06\x16", (3, 6, 9)
PendingIds = Callable[..., list[int]]  # (session, *, created_before) -> ids


@dataclass(frozen=True, slots=True)
class TakeoverReport:
    dead_workers: int = 0
    documents_taken_over: int = 0
    documents_requeued: int = 0  # pending with no message
    training_jobs_requeued: int = 0

    def __bool__(self) -> bool:
        return any((self.dead_workers, self.documents_taken_over, self.documents_requeued,
                    self.training_jobs_requeued))


class Takeover:
    def __init__(self, settings: Settings, store: StoreRetry, app: Celery, redis: Redis, worker_id: str) -> None:
        self.settings = settings
        self.store = store
        self.app = app
        self.redis = redis
        self.worker_id = worker_id

    def run(self) -> TakeoverReport | None:
        """One pass, unless another worker's pass holds the lock; None then."""
        lock_ms = int(self.settings.sweep_seconds * 900)
        if not self.redis.set(LOCK_KEY, self.worker_id, nx=True, px=max(lock_ms, 100)):
            return None
        lease = self.settings.lease_seconds
        dead = self.store.run(lambda session: workers.declare_dead(session, lease_seconds=lease))
        lost = self.store.run(lambda session: claims.take_over_lost_documents(session, lease_seconds=lease))
        for group in lost:
            self._send(EXTRACT_TASK, EXTRACT_QUEUE, group)
        lost_jobs = self.store.run(lambda session: claims.take_over_lost_training_jobs(session, lease_seconds=lease))
        for job_id in lost_jobs:
            self._send(TRAIN_TASK, TRAIN_QUEUE, job_id)
        requeued = self._requeue_unsent_documents()
        requeued_jobs = self._requeue_unsent_training_jobs()
        report = TakeoverReport(len(dead), sum(map(len, lost)), requeued, len(lost_jobs) + requeued_jobs)
        if report:
            log.warning("takeover: %s", report)
        return report

    def _requeue_unsent_documents(self) -> int:
        return self._requeue_unsent(EXTRACT_QUEUE, EXTRACT_TASK, claims.pending_document_ids,
                                    group=self.settings.task_group_size)

    def _requeue_unsent_training_jobs(self) -> int:
        return self._requeue_unsent(TRAIN_QUEUE, TRAIN_TASK, claims.pending_training_job_ids, group=None)

    def _requeue_unsent(self, queue: str, task: str, pending_ids: PendingIds, *, group: int | None) -> int:
        """Queue again pending work that no message waiting or in flight carries; how much."""
        in_flight = self._idle_queue_in_flight(queue)
        if in_flight is None:
            return 0
        cutoff = self._cutoff()
        pending = self.store.run(lambda session: pending_ids(
            session, created_before=workers.database_now(session) - cutoff))
        orphans = [item for item in pending if item not in in_flight]
        if group is None:  # one id per message
            for item in orphans:
                self._send(task, queue, item)
        else:
            for start in range(0, len(orphans), group):
                self._send(task, queue, orphans[start:start + group])
        return len(orphans)

    def _cutoff(self) -> timedelta:
        # Younger work may still be on its way to the queue (a producer between commit and send).
        return timedelta(seconds=max(self.settings.lease_seconds, 2 * self.settings.sweep_seconds))

    def _idle_queue_in_flight(self, queue: str) -> set[int] | None:
        """The ids in recent deliveries of ``queue`` if nothing waits in it; None while messages wait."""
        keys = [queue, *(f"{queue}{PRIORITY_SEPARATOR}{step}" for step in PRIORITY_STEPS)]
        if any(self.redis.llen(key) for key in keys):
            return None
        recent = time.time() - self.settings.lease_seconds
        in_flight: set[int] = set()
        for tag, raw in self.redis.hgetall(UNACKED_KEY).items():
            delivered = self.redis.zscore(UNACKED_INDEX_KEY, tag)
            if delivered is not None and delivered >= recent:
                in_flight.update(_message_ids(raw, queue))
        return in_flight

    def _send(self, task: str, queue: str, argument: object) -> None:
        self.app.send_task(task, args=[argument], queue=queue)


def _message_ids(raw: bytes, queue: str) -> Iterable[int]:
    """The document ids (or training job id) a kombu-stored message of ``queue`` carries."""
    try:
        payload, _exchange, routing_key = json.loads(raw)
        if routing_key != queue:
            return ()
        body = payload["body"]
        if payload.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        argument = json.loads(body)[0][0]
    except (ValueError, KeyError, IndexError, TypeError):
        return ()
    values = argument if isinstance(argument, list) else [argument]
    return (value for value in values if isinstance(value, int))
