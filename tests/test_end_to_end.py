"""The whole path: CLI submit → Redis → a real Celery worker with the demo model → store → CLI query."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from devkit.assets import demo_corpus_path, demo_schema_path, load_demo_examples
from models.db import make_session_factory
from models.tables import Document, Status, TripletRow
from producer.local_worker import local_worker
from tests.workers import worker_env


pytestmark = pytest.mark.slow  # real worker processes on two stores: with the real-process suites


def triplets_cli(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "producer", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_corpus_to_queryable_triplets(tmp_path: Path, broker_url: str, database_url: str, demo_model) -> None:
    model_dir, _ = demo_model
    env = worker_env(
        broker_url=broker_url,
        database_url=database_url,
        base_model=model_dir,
        schema_path=demo_schema_path(),
        max_new_tokens=256,
        max_batch_size=4,
        task_group_size=5,
    )
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    demo_lines = demo_corpus_path().read_text(encoding="utf-8").splitlines()
    # a broken line and a repeated document among the good ones
    (corpus / "a.jsonl").write_text("\n".join([*demo_lines[:6], '{"text": "未闭合', demo_lines[0]]) + "\n", encoding="utf-8")
    (corpus / "b.txt").write_text("\n".join(json.loads(line)["text"] for line in demo_lines[6:]) + "\n", encoding="utf-8")

    with local_worker(env, tmp_path / "worker.log"):
        submitted = triplets_cli(env, "submit", str(corpus), "--name", "e2e", "--wait", cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert "a.jsonl:7: invalid JSON" in submitted.stderr
    assert "12 documents queued, 1 duplicates skipped, 1 unreadable records skipped" in submitted.stdout

    sessions = make_session_factory(database_url)
    with sessions() as session:
        documents = session.scalars(select(Document)).all()
        stored = {
            (doc_text, row.subject, row.predicate, row.object)
            for row, doc_text in session.execute(select(TripletRow, Document.text).join(Document))
        }
        stored_count = session.scalar(select(func.count()).select_from(TripletRow))
    assert len(documents) == 12
    assert all(doc.status in (Status.done, Status.failed) for doc in documents)
    assert all(doc.error for doc in documents if doc.status == Status.failed)
    gold = {(text, t.subject, t.predicate, t.object) for text, triplets in load_demo_examples() for t in triplets}
    assert stored == gold

    queried = triplets_cli(env, "query", "--limit", "0", "--jsonl", cwd=tmp_path)
    assert queried.returncode == 0, queried.stderr
    records = [json.loads(line) for line in queried.stdout.splitlines()]
    assert len(records) == stored_count == len(gold)
    directors = triplets_cli(env, "query", "--predicate", "导演", "--jsonl", cwd=tmp_path)
    assert {json.loads(line)["object"] for line in directors.stdout.splitlines()} == {"张玲", "张艺谋"}

    status = triplets_cli(env, "status", "--json", cwd=tmp_path)
    assert json.loads(status.stdout)["counts"] == {"pending": 0, "running": 0, "done": 12, "failed": 0}
