"""Claims against real SQLite and PostgreSQL: one live owner per document and training job, takeover, charging."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from models import claims, registry, store, workers
from models.tables import Document, Job, Status, TrainingJob, Worker

LEASE = 60.0


def _documents(sessions: sessionmaker[Session], count: int) -> tuple[int, list[int]]:
    with sessions.begin() as session:
        job = store.create_job(session, name="t")
        ids = store.add_documents(session, job_id=job.id,
                                  documents=[store.NewDocument(f"文本{i}", f"d{i}") for i in range(count)])
        return job.id, ids


def _worker(sessions: sessionmaker[Session], worker_id: str) -> str:
    with sessions.begin() as session:
        workers.register_worker(session, worker_id=worker_id, hostname="h", pid=1, queue="extract", device="cpu")
    return worker_id


def _silence(sessions: sessionmaker[Session], worker_id: str) -> None:
    """The worker's last heartbeat is older than the lease: it is dead."""
    with sessions.begin() as session:
        now = workers.database_now(session)
        session.execute(update(Worker).where(Worker.id == worker_id)
                        .values(heartbeat_at=now - timedelta(seconds=LEASE + 5)))


def _claim(sessions: sessionmaker[Session], ids: list[int], owner: str, max_attempts: int = 3) -> claims.Claim:
    with sessions.begin() as session:
        return claims.claim_documents(session, document_ids=ids, owner=owner, lease_seconds=LEASE,
                                      max_attempts=max_attempts)


def _rows(sessions: sessionmaker[Session], ids: list[int]) -> list[Document]:
    with sessions() as session:
        return list(session.scalars(select(Document).where(Document.id.in_(ids)).order_by(Document.id)))


def test_work_held_by_a_live_worker_is_skipped_by_another_delivery(sessions: sessionmaker[Session]) -> None:
    _, ids = _documents(sessions, 3)
    first, second = _worker(sessions, "w1"), _worker(sessions, "w2")
    assert [d.id for d in _claim(sessions, ids, first).documents] == ids
    again = _claim(sessions, ids, second)
    assert again.documents == [] and again.held_elsewhere == 3 and again.resend == []
    assert {(d.status, d.owner, d.attempts, d.claim_size) for d in _rows(sessions, ids)} == {
        (Status.running, first, 1, 3)}


def test_a_dead_workers_claim_is_split_and_charges_nobody(sessions: sessionmaker[Session]) -> None:
    _, ids = _documents(sessions, 8)
    dead, heir = _worker(sessions, "dead"), _worker(sessions, "heir")
    _claim(sessions, ids, dead)
    _silence(sessions, dead)
    taken = _claim(sessions, ids, heir)
    assert taken.documents == [] and taken.held_elsewhere == 0
    assert taken.resend == [ids[0:2], ids[2:4], ids[4:6], ids[6:8]]
    assert {(d.status, d.owner, d.claim_size, d.crashes_alone) for d in _rows(sessions, ids)} == {
        (Status.pending, None, None, 0)}
    # each smaller group then runs as a fresh claim
    assert [d.id for d in _claim(sessions, ids[0:2], heir).documents] == ids[0:2]


def test_split_parts_lost_together_are_split_smaller_not_merged_back(sessions: sessionmaker[Session]) -> None:
    _, ids = _documents(sessions, 9)
    owner = _worker(sessions, "w1")
    for part in (ids[0:3], ids[3:6], ids[6:9]):  # three parts of a split claim, side by side in one worker
        _claim(sessions, part, owner)
    _silence(sessions, owner)
    with sessions.begin() as session:
        assert claims.take_over_lost_documents(session, lease_seconds=LEASE) == [ids]  # lost together
    again = _claim(sessions, ids, _worker(sessions, "heir"))
    # a quarter of the claims they were lost in (3 documents): each document alone next time
    assert again.documents == [] and again.resend == [[doc] for doc in ids]


def test_a_document_that_kills_its_worker_alone_is_failed_after_max_attempts(sessions: sessionmaker[Session]) -> None:
    _, (poison,) = _documents(sessions, 1)
    for attempt in range(1, 3):
        owner = _worker(sessions, f"w{attempt}")
        assert [d.id for d in _claim(sessions, [poison], owner, max_attempts=2).documents] == [poison]
        _silence(sessions, owner)
    final = _claim(sessions, [poison], _worker(sessions, "w3"), max_attempts=2)
    assert final.documents == [] and final.failed == 1
    (row,) = _rows(sessions, [poison])
    assert row.status == Status.failed and row.crashes_alone == 2
    assert row.error == ("its worker died 2 times while extracting it alone "
                         "(it crashes the engine; see the worker log)")


def test_a_lone_document_is_not_charged_for_a_death_shared_with_another_task_of_its_worker(
    sessions: sessionmaker[Session]
) -> None:
    _, ids = _documents(sessions, 3)
    owner = _worker(sessions, "w1")
    _claim(sessions, ids[:1], owner)  # two tasks of one worker in flight: one document here,
    _claim(sessions, ids[1:], owner)  # two in the other
    _silence(sessions, owner)
    with sessions.begin() as session:
        assert sorted(claims.take_over_lost_documents(session, lease_seconds=LEASE)) == [ids]
    assert [d.crashes_alone for d in _rows(sessions, ids)] == [0, 0, 0]  # nothing proves it was the first
    # alone in its worker, a death is charged
    only = _worker(sessions, "w2")
    _claim(sessions, ids[:1], only)
    _silence(sessions, only)
    with sessions.begin() as session:
        claims.take_over_lost_documents(session, lease_seconds=LEASE)
    assert [d.crashes_alone for d in _rows(sessions, ids)] == [1, 0, 0]


def test_work_given_back_by_a_broken_worker_is_not_charged_and_runs_again_split(
    sessions: sessionmaker[Session]
) -> None:
    _, ids = _documents(sessions, 2)
    owner = _worker(sessions, "w1")
    _claim(sessions, ids, owner)
    with sessions.begin() as session:
        assert claims.release_documents(session, document_ids=ids, owner=owner) == 2
    assert {(d.status, d.owner, d.crashes_alone, d.claim_size) for d in _rows(sessions, ids)} == {
        (Status.pending, None, 0, 2)}
    again = _claim(sessions, ids, _worker(sessions, "w2"))
    assert again.documents == [] and again.resend == [[ids[0]], [ids[1]]]  # each alone next time


def test_a_presumed_dead_worker_cannot_overwrite_its_successor(sessions: sessionmaker[Session]) -> None:
    _, (doc_id,) = _documents(sessions, 1)
    slow, heir = _worker(sessions, "slow"), _worker(sessions, "heir")
    _claim(sessions, [doc_id], slow)
    _silence(sessions, slow)
    _claim(sessions, [doc_id], heir)
    late = store.Outcome(doc_id, "文本0", error="late")
    with sessions.begin() as session:
        recorded = store.record_outcomes(session, [late], model="m", adapter="", prompt_version="v1", owner=slow)
    assert recorded.fenced == (doc_id,)
    (row,) = _rows(sessions, [doc_id])
    assert (row.status, row.owner, row.error) == (Status.running, heir, None)


def test_takeover_releases_each_dead_claim_as_one_group(sessions: sessionmaker[Session]) -> None:
    _, ids = _documents(sessions, 5)
    stopped, silent, live = _worker(sessions, "stopped"), _worker(sessions, "silent"), _worker(sessions, "live")
    _claim(sessions, ids[:2], stopped)
    _claim(sessions, ids[2:3], silent)
    _claim(sessions, ids[3:], live)
    with sessions.begin() as session:
        workers.stop_worker(session, worker_id=stopped, reason="killed by SIGKILL")
    _silence(sessions, silent)
    with sessions.begin() as session:
        assert workers.declare_dead(session, lease_seconds=LEASE) == [silent]
        groups = claims.take_over_lost_documents(session, lease_seconds=LEASE)
    assert sorted(groups) == [ids[:2], ids[2:3]]
    rows = {d.id: d for d in _rows(sessions, ids)}
    assert rows[ids[2]].crashes_alone == 1 and rows[ids[0]].crashes_alone == 0  # only a lone claim is charged
    assert [rows[i].status for i in ids] == [Status.pending] * 3 + [Status.running] * 2


def test_a_cancelled_jobs_documents_fail_with_that_reason(sessions: sessionmaker[Session]) -> None:
    job_id, ids = _documents(sessions, 2)
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(cancelled_at=workers.database_now(session)))
    claim = _claim(sessions, ids, _worker(sessions, "w"))
    assert claim.documents == [] and claim.failed == 2
    assert {(d.status, d.error) for d in _rows(sessions, ids)} == {(Status.failed, claims.CANCELLED)}


def test_a_training_job_has_one_live_owner_and_limited_attempts(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        job_id = registry.create_training_job(session, name="duie", config={}).id
    first, second = _worker(sessions, "t1"), _worker(sessions, "t2")

    def claim(owner: str) -> claims.TrainingClaim:
        with sessions.begin() as session:
            return claims.claim_training_job(session, job_id=job_id, owner=owner, lease_seconds=LEASE, max_attempts=2)

    assert claim(first) == claims.TrainingClaim.run
    assert claim(second) == claims.TrainingClaim.skip  # a redelivery while the first trains
    _silence(sessions, first)
    with sessions.begin() as session:
        assert claims.take_over_lost_training_jobs(session, lease_seconds=LEASE) == [job_id]
    assert claim(second) == claims.TrainingClaim.run
    _silence(sessions, second)
    assert claim(_worker(sessions, "t3")) == claims.TrainingClaim.failed
    with sessions() as session:
        job = session.get(TrainingJob, job_id)
    assert job is not None and job.status == Status.failed and job.attempts == 2
    assert job.error == "gave up after 2 attempts: its worker died each time (see the worker logs)"
