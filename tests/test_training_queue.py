"""The train queue and the registry through real workers: SIGKILL mid-training, promotion hot swap."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from celery import Celery
from sqlalchemy import select

pytest.importorskip("torch")

from devkit.assets import demo_corpus_path, demo_schema_path, load_demo_examples  # noqa: E402
from models import registry  # noqa: E402
from models.db import make_session_factory  # noqa: E402
from models.tables import Document, Status, TrainingJob  # noqa: E402
from producer.local_worker import local_worker  # noqa: E402
from tests.lora import save_lora  # noqa: E402
from tests.workers import worker_env  # noqa: E402
from worker.app import PROGRESS_EVENT  # noqa: E402

pytestmark = pytest.mark.slow

DEADLINE_S = 300


def cli(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "producer", *args], env=env, cwd=cwd, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def wait_for(condition, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + DEADLINE_S
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


class EventLog:
    """Every Celery event on the broker, collected by a receiver thread, as Flower receives them."""

    def __init__(self, broker_url: str) -> None:
        self.app = Celery(broker=broker_url)
        self.seen: list[dict] = []
        self.ready = threading.Event()
        self.receiver = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.app.connection() as connection:
            self.receiver = self.app.events.Receiver(connection, handlers={"*": self.seen.append})
            self.receiver.capture(limit=None, timeout=None, wakeup=False)

    def __enter__(self) -> EventLog:
        self.thread.start()
        wait_for(lambda: self.receiver is not None and self.receiver.connection is not None, "the event receiver")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.receiver is not None:
            self.receiver.should_stop = True
        self.thread.join(timeout=10)


def test_training_job_killed_mid_run_resumes_from_its_checkpoint(
    tmp_path: Path, broker_url: str, database_url: str, demo_model
) -> None:
    env = worker_env(broker_url=broker_url, database_url=database_url, adapter_registry=tmp_path / "adapters")
    sessions = make_session_factory(database_url)
    with EventLog(broker_url) as events, local_worker(env, tmp_path / "train-worker.log", queue="train") as worker:
        cli(env, "train", "submit", "--name", "demo", "--base-model", str(demo_model[0]),
            "--train-data", str(demo_corpus_path()), "--set", f"schema_path={demo_schema_path()}",
            "--set", "device=cpu", "--set", "precision=fp32", "--set", "max_steps=40", "--set", "batch_size=4",
            "--set", "checkpoint_every=3", "--set", "lora_dropout=0", cwd=tmp_path)

        def step() -> int:
            with sessions() as session:
                job = session.scalars(select(TrainingJob)).one()
                return (job.progress or {}).get("step", 0)

        wait_for(lambda: step() >= 7, "training to pass its second checkpoint")
        (child,) = psutil.Process(worker.pid).children()
        child.send_signal(signal.SIGKILL)
        killed_at = step()
        assert killed_at < 40

        def finished() -> TrainingJob | None:
            with sessions() as session:
                job = session.scalars(select(TrainingJob)).one()
                return job if job.status in (Status.done, Status.failed) else None

        job = wait_for(finished, "the redelivered job to finish")
    assert job.status == Status.done, job.error
    assert job.attempts == 2
    assert 3 <= job.progress["resumed_from"] <= killed_at
    assert job.progress["step"] == 40
    with sessions() as session:
        adapter = registry.get_adapter(session, ref="demo")
    assert adapter.version == 1 and adapter.metrics["resumed_from"] == job.progress["resumed_from"]
    assert (tmp_path / "adapters" / adapter.path / "adapter_model.safetensors").is_file()
    status = json.loads(cli(env, "train", "status", "--json", cwd=tmp_path).stdout)
    assert status["status"] == "done" and status["adapter_id"] == adapter.id
    # Flower's view of the task: the same event state machine, fed by the worker's progress events
    progress_events = [event for event in events.seen if event["type"] == PROGRESS_EVENT]
    assert progress_events, [event["type"] for event in events.seen][:20]
    last = progress_events[-1]
    assert last["result"].startswith(f"step {last['step']}/40 · loss ")
    state = Celery(broker=broker_url).events.State()
    for event in events.seen:
        state.event(event)
        if event["type"] == PROGRESS_EVENT:
            assert state.tasks[event["uuid"]].state == "PROGRESS"
            assert state.tasks[event["uuid"]].result == event["result"]
    assert {task.state for task in state.tasks.values()} >= {"SUCCESS"}


def test_promoted_adapter_is_used_by_the_next_batch_without_restart(
    tmp_path: Path, broker_url: str, database_url: str, demo_model
) -> None:
    model_dir = demo_model[0]
    save_lora(model_dir, tmp_path / "adapters" / "demo" / "v1", b_std=0.0)  # B = 0: the base model's answers
    save_lora(model_dir, tmp_path / "adapters" / "demo" / "v2", b_std=0.5)  # answers of another model
    sessions = make_session_factory(database_url)
    with sessions.begin() as session:
        for version in ("v1", "v2"):
            registry.register_adapter(session, name="demo", path=f"demo/{version}",
                                      base_model=registry.model_key(model_dir), metrics={}, config={})
    env = worker_env(broker_url=broker_url, database_url=database_url, base_model=model_dir,
                     schema_path=demo_schema_path(), adapter_registry=tmp_path / "adapters", max_new_tokens=256)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(demo_corpus_path().read_text(encoding="utf-8").splitlines()[:3]) + "\n",
                      encoding="utf-8")
    with local_worker(env, tmp_path / "worker.log"):
        cli(env, "adapters", "promote", "demo:1", cwd=tmp_path)
        cli(env, "submit", str(corpus), "--name", "first", "--wait", cwd=tmp_path)
        cli(env, "adapters", "promote", "demo:2", cwd=tmp_path)
        # its answers may not parse: --wait then exits 1, which is not this test's concern
        subprocess.run([sys.executable, "-m", "producer", "submit", str(corpus), "--name", "second", "--wait"],
                       env=env, cwd=tmp_path, capture_output=True, timeout=300)
    with sessions() as session:
        outcomes = {
            job: [(doc.status, doc.raw_output, sorted((t.subject, t.predicate, t.object, t.adapter) for t in doc.triplets))
                  for doc in session.scalars(select(Document).where(Document.job_id == job).order_by(Document.id))]
            for job in (1, 2)
        }
    gold = {(t.subject, t.predicate, t.object) for _, triplets in load_demo_examples()[:3] for t in triplets}
    assert {(s, p, o) for _, _, rows in outcomes[1] for s, p, o, _ in rows} == gold
    assert {adapter for _, _, rows in outcomes[1] for *_, adapter in rows} == {"demo:1"}
    # the second job ran under the other adapter: its answers are not the first job's
    assert outcomes[2] != outcomes[1]
    assert {adapter for _, _, rows in outcomes[2] for *_, adapter in rows} <= {"demo:2"}
    assert "switched to adapter demo:2" in (tmp_path / "worker.log").read_text()
    listed = cli(env, "adapters", "list", cwd=tmp_path).stdout
    assert "demo:1" in listed and "demo:2" in listed
