"""`triplets jobs`, `cancel`, `requeue [--failed]`, `status` and `show` on SQLite and PostgreSQL, with real Redis."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from celeryconfig import EXTRACT_QUEUE
from models import recovery, store
from models.claims import CANCELLED
from models.settings import get_settings
from models.tables import Document, Job, Status
from models.triplet import Triplet
from producer import cli

TEXT = "《娘家的故事第二部》是张玲执导，林在培、何赛飞等主演的电视剧"
DIRECTOR = Triplet("娘家的故事第二部", "导演", "张玲", "影视作品", "人物")
EXTRACTOR = {"model": "tiny-glm", "adapter": "", "prompt_version": "v1"}
GROUP_SIZE = 2


@pytest.fixture
def invoke(database_url: str, broker_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator:  # type: ignore[type-arg]
    """Run a `triplets` command in this process against the test store and broker; (exit code, stdout)."""
    import os

    for name in [name for name in os.environ if name.startswith("TRIPLETS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TRIPLETS_DATABASE_URL", database_url)
    monkeypatch.setenv("TRIPLETS_BROKER_URL", broker_url)
    monkeypatch.setenv("TRIPLETS_TASK_GROUP_SIZE", str(GROUP_SIZE))
    monkeypatch.setenv("COLUMNS", "200")  # rich's tables, as on a wide terminal
    get_settings.cache_clear()
    queue = redis.Redis.from_url(broker_url)
    queue.delete(EXTRACT_QUEUE)
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(cli.app, list(args))
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, result.stdout

    yield run
    queue.close()
    get_settings.cache_clear()


def sent_groups(broker_url: str) -> list[list[int]]:
    """The document ids of every extraction message waiting on the queue, in the order sent."""
    client = redis.Redis.from_url(broker_url)
    try:
        raw = client.lrange(EXTRACT_QUEUE, 0, -1)
    finally:
        client.close()
    # kombu's Redis transport pushes on the left; the body is base64 JSON [args, kwargs, embed].
    return [json.loads(base64.b64decode(json.loads(m)["body"]))[0][0] for m in reversed(raw)]


def new_job(sessions: sessionmaker[Session], count: int, name: str = "news") -> tuple[int, list[int]]:
    with sessions.begin() as session:
        job = store.create_job(session, name=name)
        ids = store.add_documents(session, job_id=job.id, documents=[
            store.NewDocument(f"{TEXT} {name} {i}", f"{name}-{i}") for i in range(count)])
    return job.id, ids


def set_running(sessions: sessionmaker[Session], *ids: int, **values: object) -> None:
    with sessions.begin() as session:
        session.execute(update(Document).where(Document.id.in_(ids)).values(status=Status.running, **values))


def finish(sessions: sessionmaker[Session], doc_id: int, *, warning: str | None = None,
           rejected: tuple[dict[str, str], ...] = ()) -> None:
    set_running(sessions, doc_id)
    with sessions.begin() as session:
        text = session.get(Document, doc_id).text  # type: ignore[union-attr]
        store.record_outcomes(session, [store.Outcome(doc_id, text, [DIRECTOR], rejected=rejected, warning=warning)],
                              **EXTRACTOR)


def fail(sessions: sessionmaker[Session], doc_id: int, reason: str = "boom", raw: str | None = None) -> None:
    with sessions.begin() as session:
        store.record_failure(session, document_id=doc_id, reason=reason, raw_output=raw)


def document(sessions: sessionmaker[Session], doc_id: int) -> Document:
    with sessions() as session:
        return session.get(Document, doc_id)  # type: ignore[return-value]


def test_jobs_lists_counts_per_status_warnings_and_cancelled(sessions: sessionmaker[Session], invoke) -> None:  # type: ignore[no-untyped-def]
    first, (pending, running, failed, warned, clean) = new_job(sessions, 5, "first")
    set_running(sessions, running)
    fail(sessions, failed)
    finish(sessions, warned, warning="window 2/3: unparseable output")
    finish(sessions, clean)
    second, _ = new_job(sessions, 2, "second")
    code, _ = invoke("cancel", str(second))
    assert code == 0

    code, out = invoke("jobs", "--json")
    assert code == 0
    listed = {job["job"]: job for job in json.loads(out)}
    assert listed[first]["counts"] == {"pending": 1, "running": 1, "done": 2, "failed": 1}
    assert listed[first]["warnings"] == 1 and listed[first]["cancelled_at"] is None
    assert listed[second]["counts"] == {"pending": 0, "running": 0, "done": 0, "failed": 2}
    assert listed[second]["warnings"] == 0 and listed[second]["cancelled_at"] is not None
    code, table = invoke("jobs")
    assert "second" in table and "cancelled" in table


def test_cancel_fails_pending_documents_lets_running_ones_finish_and_repeats_safely(
        sessions: sessionmaker[Session], invoke) -> None:  # type: ignore[no-untyped-def]
    job_id, (a, b, running, done) = new_job(sessions, 4)
    set_running(sessions, running, owner="worker-1")
    finish(sessions, done)

    code, out = invoke("cancel", str(job_id))
    assert code == 0 and "2 pending documents cancelled, 1 running" in out
    assert [document(sessions, i).status for i in (a, b, running, done)] == [
        Status.failed, Status.failed, Status.running, Status.done]
    assert document(sessions, a).error == CANCELLED
    with sessions() as session:
        cancelled_at = session.get(Job, job_id).cancelled_at  # type: ignore[union-attr]
    assert cancelled_at is not None

    code, out = invoke("cancel", str(job_id))
    assert code == 0 and "0 pending documents cancelled" in out
    with sessions() as session:
        assert session.get(Job, job_id).cancelled_at == cancelled_at  # type: ignore[union-attr]
    # The running document's worker writes its result as usual.
    with sessions.begin() as session:
        store.record_outcomes(session, [store.Outcome(running, document(sessions, running).text, [DIRECTOR])],
                              owner="worker-1", **EXTRACTOR)
    assert document(sessions, running).status == Status.done


def test_requeue_failed_resets_documents_keeps_their_history_and_sends_groups(
        sessions: sessionmaker[Session], invoke, broker_url: str) -> None:  # type: ignore[no-untyped-def]
    job_id, (a, b, c, done) = new_job(sessions, 4)
    set_running(sessions, a, b, c, attempts=2, crashes_alone=1, claim_size=3, owner="worker-1")
    for doc_id in (a, b, c):
        fail(sessions, doc_id, reason=f"boom {doc_id}", raw="[{oops")
    finish(sessions, done)

    code, out = invoke("requeue", str(job_id), "--failed")
    assert code == 0 and "3 failed documents queued again" in out
    assert sent_groups(broker_url) == [[a, b], [c]]
    for doc_id in (a, b, c):
        doc = document(sessions, doc_id)
        assert (doc.status, doc.attempts, doc.crashes_alone, doc.claim_size, doc.owner, doc.error, doc.raw_output) == (
            Status.pending, 0, 0, None, None, None, None)
        (ending,) = doc.history  # type: ignore[misc]
        assert {k: ending[k] for k in ("status", "error", "attempts")} == {
            "status": "failed", "error": f"boom {doc_id}", "attempts": 2}
        assert ending["at"].startswith(str(doc.created_at.year))
    assert document(sessions, done).status == Status.done and document(sessions, done).history is None

    # A second failure and re-queue appends to the history.
    fail(sessions, a, reason="boom again")
    invoke("requeue", str(job_id), "--failed")
    assert [h["error"] for h in document(sessions, a).history] == [f"boom {a}", "boom again"]  # type: ignore[union-attr]


def test_requeue_failed_of_a_cancelled_job_runs_it_again(sessions: sessionmaker[Session], invoke, broker_url: str) -> None:  # type: ignore[no-untyped-def]
    job_id, ids = new_job(sessions, 3)
    invoke("cancel", str(job_id))

    code, _ = invoke("requeue", str(job_id), "--failed")
    assert code == 0
    assert sent_groups(broker_url) == [ids[:2], ids[2:]]
    with sessions() as session:
        assert session.get(Job, job_id).cancelled_at is None  # type: ignore[union-attr]
    assert [document(sessions, i).status for i in ids] == [Status.pending] * 3
    assert document(sessions, ids[0]).history[0]["error"] == CANCELLED  # type: ignore[index]


def test_plain_requeue_resends_unfinished_documents_only_and_uncancels(
        sessions: sessionmaker[Session], invoke, broker_url: str) -> None:  # type: ignore[no-untyped-def]
    job_id, (pending, running, failed, done) = new_job(sessions, 4)
    set_running(sessions, running)
    fail(sessions, failed)
    finish(sessions, done)
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(cancelled_at=store.utcnow()))

    code, out = invoke("requeue", str(job_id))
    assert code == 0 and "2 unfinished documents queued again" in out
    assert sent_groups(broker_url) == [[pending, running]]
    assert document(sessions, failed).status == Status.failed and document(sessions, failed).history is None
    with sessions() as session:
        assert session.get(Job, job_id).cancelled_at is None  # type: ignore[union-attr]


def test_status_counts_done_documents_with_a_warning(sessions: sessionmaker[Session], invoke) -> None:  # type: ignore[no-untyped-def]
    job_id, (warned, clean, failed, _) = new_job(sessions, 4)
    finish(sessions, warned, warning="window 2/3: answer hit TRIPLETS_MAX_NEW_TOKENS")
    finish(sessions, clean)
    fail(sessions, failed)

    code, out = invoke("status", str(job_id), "--json")
    assert code == 0
    state = json.loads(out)
    assert state["warnings"] == 1
    assert state["counts"] == {"pending": 1, "running": 0, "done": 2, "failed": 1}
    code, table = invoke("status", str(job_id))
    assert "warnings" in table


def test_show_prints_a_document_with_its_triplets_rejections_and_history(
        sessions: sessionmaker[Session], invoke) -> None:  # type: ignore[no-untyped-def]
    job_id, (doc_id, failed) = new_job(sessions, 2)
    fail(sessions, doc_id, reason="worker lost")
    with sessions.begin() as session:
        recovery.requeue_failed(session, job_id=job_id)
    rejected = {**Triplet("娘家的故事第二部", "作者", "张玲", "图书作品", "人物").as_dict(),
                "reason": "predicate '作者' not in schema duie"}
    finish(sessions, doc_id, warning="window 2/3: unparseable output", rejected=(rejected,))
    fail(sessions, failed, reason="unparseable output", raw="[{\"subject\": ")

    code, out = invoke("show", str(doc_id), "--json")
    assert code == 0
    shown = json.loads(out)
    assert (shown["id"], shown["job"], shown["status"], shown["warning"]) == (
        doc_id, job_id, "done", "window 2/3: unparseable output")
    assert shown["text"].startswith(TEXT) and shown["raw_output"] is None
    (triplet,) = shown["triplets"]
    assert (triplet["subject"], triplet["predicate"], triplet["object"]) == (DIRECTOR.subject, "导演", "张玲")
    assert (triplet["subject_type"], triplet["object_type"]) == ("影视作品", "人物")
    assert shown["text"][triplet["object_start"]:triplet["object_end"]] == "张玲"
    assert shown["rejected"] == [rejected]
    assert [h["error"] for h in shown["history"]] == ["worker lost"]

    code, out = invoke("show", str(failed), "--json")
    assert json.loads(out)["raw_output"] == "[{\"subject\": " and json.loads(out)["error"] == "unparseable output"
    code, text = invoke("show", str(doc_id))
    assert "张玲" in text and "not in schema" in text and "worker lost" in text
