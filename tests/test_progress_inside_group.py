"""Progress moves inside a group: a worker stores the documents it has finished every few seconds."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from devkit.assets import demo_schema_path, load_demo_examples
from producer.local_worker import local_worker
from tests.workers import triplets, worker_env

pytestmark = pytest.mark.slow  # a real worker process on the CPU

GROUP = 1024


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_status_shows_documents_done_before_a_1024_document_group_ends(tmp_path: Path, broker_url: str,
                                                                     database_url: str, demo_model) -> None:
    env = worker_env(broker_url=broker_url, database_url=database_url, base_model=demo_model[0],
                     schema_path=demo_schema_path(), max_new_tokens=256, max_batch_size=32, task_group_size=GROUP)
    texts = [text for text, _ in load_demo_examples()]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"{texts[i % len(texts)]}（第{i}篇）" for i in range(GROUP)) + "\n", encoding="utf-8")
    submitted = triplets(env, "submit", str(corpus), "--name", "one-group", cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stderr
    assert f"{GROUP} documents queued" in submitted.stdout

    with local_worker(env, tmp_path / "worker.log") as worker:
        deadline = time.monotonic() + 300
        while True:
            counts = json.loads(triplets(env, "status", "--json", cwd=tmp_path).stdout)["counts"]
            if counts["done"] + counts["failed"] or time.monotonic() > deadline:
                break
        worker.kill()  # the rest of the group is not needed (and would take minutes on the CPU)
    # one message holds all 1,024 documents: some are stored while the rest of its group still runs
    assert 0 < counts["done"] < GROUP, counts
    assert counts["running"] > 0, counts
