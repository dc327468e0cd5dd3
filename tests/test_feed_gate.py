"""A worker takes a queue message only when its GPU loop can feed it (a real worker process on the CPU)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from redis import Redis
from sqlalchemy import func, select

from devkit.assets import demo_schema_path, load_demo_examples
from models.db import make_session_factory
from models.tables import Document
from producer.local_worker import local_worker
from tests.workers import triplets, worker_env
from worker.feed_gate import wants_message

GROUP = 6  # documents per message, on 2 rows: a ticket is fed once its 5th and 6th documents get rows


@pytest.mark.parametrize(("held", "finishing", "feeding", "wanted"), [
    (0, 0, 1, True), (1, 0, 1, False), (3, 2, 1, False), (3, 3, 1, True), (2, 0, 3, True), (3, 0, 3, False),
])
def test_a_message_is_wanted_while_fewer_than_feeding_held_tasks_are_still_to_be_fed(
        held: int, finishing: int, feeding: int, wanted: bool) -> None:
    assert wants_message(held, finishing, feeding) is wanted


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_worker_leaves_messages_queued_while_its_loop_is_fed(tmp_path: Path, broker_url: str, database_url: str,
                                                               demo_model) -> None:
    env = worker_env(broker_url=broker_url, database_url=database_url, base_model=demo_model[0],
                     schema_path=demo_schema_path(), max_new_tokens=256, max_batch_size=2, task_group_size=GROUP,
                     min_new_tokens=160,  # each answer decodes for a while: a group feeds for seconds
                     tasks_in_flight=1, tasks_finishing=2)
    texts = [text for text, _ in load_demo_examples()]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"{texts[i % len(texts)]}（第{i}篇）" for i in range(3 * GROUP)) + "\n",
                      encoding="utf-8")
    broker = Redis.from_url(broker_url)
    sessions = make_session_factory(database_url)
    samples: set[tuple[int, int]] = set()  # (messages in the broker, documents claimed or finished)
    with local_worker(env, tmp_path / "worker.log"):
        submitted = triplets(env, "submit", str(corpus), "--name", "three-groups", cwd=tmp_path)
        assert submitted.returncode == 0, submitted.stderr
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            with sessions() as session:
                counts = dict(session.execute(select(Document.status, func.count()).group_by(Document.status)).all())
            samples.add((broker.llen("extract"), sum(n for status, n in counts.items() if status != "pending")))
            if counts.get("done", 0) + counts.get("failed", 0) == 3 * GROUP:
                break
            time.sleep(0.01)  # polling the broker and the store; nothing waits on this
    assert counts.get("done", 0) + counts.get("failed", 0) == 3 * GROUP, counts
    # The pool had 3 threads, yet while the first group decoded the other two messages stayed in the broker
    # (free for another worker); a worker that prefetched one message per thread takes all 3 at once.
    assert (2, GROUP) in samples, sorted(samples)
