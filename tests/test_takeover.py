"""Takeover passes against real Redis and the store: dead workers' claims and lost messages are queued again."""

from __future__ import annotations

import base64
import json
import time
from datetime import timedelta

import redis
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from models import claims, store, workers
from models.settings import load_settings
from models.tables import Document, Worker
from worker.app import EXTRACT_TASK, create_app
from worker.store_retry import StoreRetry
from worker.takeover import UNACKED_INDEX_KEY, Takeover

# A long sweep: the pass lock outlives any test (a slow machine must not see it expire between two
# passes that assert it holds); the tests end it themselves (_next_pass).
FAST = {"heartbeat_seconds": 0.1, "lease_seconds": 0.5, "sweep_seconds": 60.0}


def _setup(sessions: sessionmaker[Session], broker_url: str, documents: int) -> tuple[Takeover, list[int]]:
    settings = load_settings(broker_url=broker_url, task_group_size=2, **FAST)
    with sessions.begin() as session:
        job = store.create_job(session, name="t")
        ids = store.add_documents(session, job_id=job.id,
                                  documents=[store.NewDocument(f"句子{i}", str(i)) for i in range(documents)])
        # stored long enough ago that no producer can still be on its way to queueing them
        session.execute(update(Document).values(created_at=workers.database_now(session) - timedelta(minutes=5)))
    app = create_app(settings)
    return Takeover(settings, StoreRetry(sessions, patience_s=5), app, redis.Redis.from_url(broker_url), "me"), ids


def _queued(broker_url: str) -> list[list[int]]:
    """The document ids of each message waiting in the extract queue."""
    client = redis.Redis.from_url(broker_url)
    messages = [json.loads(raw) for raw in client.lrange("extract", 0, -1)]
    assert all(message["headers"]["task"] == EXTRACT_TASK for message in messages)
    return sorted(json.loads(base64.b64decode(message["body"]))[0][0] for message in messages)


def _next_pass(takeover: Takeover) -> None:
    takeover.redis.delete("triplets:takeover-lock")


def test_pending_documents_without_a_message_are_queued_again_once_the_queue_is_idle(
    sessions: sessionmaker[Session], broker_url: str
) -> None:
    takeover, ids = _setup(sessions, broker_url, 3)
    report = takeover.run()
    assert report is not None and report.documents_requeued == 3
    assert _queued(broker_url) == [ids[:2], ids[2:]]
    assert takeover.run() is None  # another pass within the sweep interval: the lock holds
    _next_pass(takeover)
    assert takeover.run().documents_requeued == 0  # messages wait in the queue: nothing is lost
    assert len(_queued(broker_url)) == 2


def test_a_fresh_delivery_in_flight_is_not_doubled_but_a_stale_one_is(
    sessions: sessionmaker[Session], broker_url: str
) -> None:
    takeover, ids = _setup(sessions, broker_url, 2)
    takeover.app.send_task(EXTRACT_TASK, args=[ids], queue="extract")
    with takeover.app.connection_for_read() as connection:
        delivered = connection.SimpleQueue("extract").get(timeout=5)  # delivered, never acknowledged
        assert delivered.payload[0] == [ids]
        assert takeover.run().documents_requeued == 0
        client = redis.Redis.from_url(broker_url)
        (tag,) = client.zrange(UNACKED_INDEX_KEY, 0, -1)
        client.zadd(UNACKED_INDEX_KEY, {tag: time.time() - 60})  # its worker took it a minute ago and died
        _next_pass(takeover)
        assert takeover.run().documents_requeued == 2
        assert _queued(broker_url) == [ids]


def test_a_dead_workers_claim_is_released_and_queued_as_one_group(
    sessions: sessionmaker[Session], broker_url: str
) -> None:
    takeover, ids = _setup(sessions, broker_url, 3)
    with sessions.begin() as session:
        workers.register_worker(session, worker_id="gone", hostname="h", pid=1, queue="extract", device="cpu")
        claims.claim_documents(session, document_ids=ids, owner="gone", lease_seconds=60, max_attempts=3)
        session.execute(update(Worker).values(heartbeat_at=workers.database_now(session) - timedelta(seconds=5)))
    report = takeover.run()
    assert (report.dead_workers, report.documents_taken_over, report.documents_requeued) == (1, 3, 0)
    assert _queued(broker_url) == [ids]  # together: the next claim splits it
    with sessions() as session:
        assert {(d.status.value, d.owner, d.claim_size) for d in session.query(Document)} == {("pending", None, 3)}
