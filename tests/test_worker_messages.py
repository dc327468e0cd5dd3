"""Messages put on the queue by hand: malformed or pickled, each is logged and dropped, never run; the worker goes on."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import uuid
from pathlib import Path

import psutil
import pytest
from kombu import Connection, Exchange

from devkit.assets import demo_model_path
from models.migrate import upgrade
from producer.local_worker import local_worker
from tests.workers import worker_env

EXTRACT_TASK = "triplets.extract"


class WritesAFile:
    """Unpickling this runs code: it would create ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.path}",))


def _publish(broker_url: str, body: bytes, content_type: str, headers: dict | None = None) -> None:
    with Connection(broker_url) as connection:
        connection.Producer().publish(
            body, exchange=Exchange("extract", type="direct"), routing_key="extract", content_type=content_type,
            content_encoding="binary" if content_type == "application/x-python-serialize" else "utf-8",
            headers={"task": EXTRACT_TASK, "id": str(uuid.uuid4()), **(headers or {})}, serializer=None,
        )


def test_malformed_and_pickled_messages_are_dropped_and_the_worker_goes_on(
    tmp_path: Path, broker_url: str
) -> None:
    database_url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(database_url)
    env = worker_env(broker_url=broker_url, database_url=database_url, base_model=demo_model_path(),
                     max_new_tokens=128)
    marker = tmp_path / "pickle-ran"
    log = tmp_path / "worker.log"
    bodies = [
        (b'"just a string"', "application/json"),
        (b"not json", "application/json"),
        (b"[1, 2, 3]", "application/json"),
        (json.dumps([[["not", "ids"]], {}, {}]).encode(), "application/json"),
        (json.dumps([[], {"ids": [1]}, {}]).encode(), "application/json"),
        (pickle.dumps(([WritesAFile(marker)], {}, {})), "application/x-python-serialize"),
    ]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text((demo_model_path() / "heldout.jsonl").read_text(encoding="utf-8").splitlines()[0] + "\n",
                      encoding="utf-8")
    with local_worker(env, log) as worker:
        engine_processes = {child.pid for child in psutil.Process(worker.pid).children()}
        for body, content_type in bodies:
            _publish(broker_url, body, content_type)
        submitted = subprocess.run([sys.executable, "-m", "producer", "submit", str(corpus), "--wait"], env=env,
                                   capture_output=True, text=True, timeout=300)
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr  # extracted after all of them
        assert {child.pid for child in psutil.Process(worker.pid).children()} == engine_processes  # never restarted
    text = log.read_text()
    assert not marker.exists()
    assert text.count(f"dropped a malformed {EXTRACT_TASK} message") == len(bodies), text[-3000:]
    assert "content type application/x-python-serialize refused" in text
    assert "Traceback" not in text.split("ready.")[-1]


@pytest.mark.parametrize("value", [None, [], [0], [True], ["1"], list(range(1, 100_002))])
def test_document_ids_must_be_positive_integers(value: object) -> None:
    from models.errors import MalformedMessageError
    from worker.tasks import document_ids_from

    with pytest.raises(MalformedMessageError, match="expected a list of 1 to 100000 document ids"):
        document_ids_from(value)
