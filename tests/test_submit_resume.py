"""A submit interrupted (producer killed, broker lost) is finished by submitting again, without copies."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from models import store
from models.tables import Document, Job
from producer.submit import submit_corpus


def test_submitting_again_resumes_an_interrupted_job(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("第一句。\n第二句。\n第三句。\n", encoding="utf-8")
    with sessions.begin() as session:  # what a killed producer leaves: a job, some documents, no end mark
        job_id = store.create_job(session, name="news").id
        stored = store.add_documents(session, job_id=job_id, documents=[store.NewDocument("第一句。", "c.txt:1")])
    sent: list[list[int]] = []
    report = submit_corpus([corpus], name="news", sessions=sessions, send_group=sent.append, group_size=10)
    assert (report.job_id, report.resumed, report.requeued, report.queued) == (job_id, True, 1, 2)
    assert sent[0] == stored and sorted(sum(sent, [])) == sorted(stored + sent[1])
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Document)) == 3
        assert session.get(Job, job_id).submitted_at is not None
    again = submit_corpus([corpus], name="news", sessions=sessions, send_group=sent.append, group_size=10)
    assert again.job_id != job_id and not again.resumed  # a finished submit is never reopened
