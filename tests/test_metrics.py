"""Workers' Prometheus /metrics: basic auth like Flower's, never open, and numbers that move during a job."""

from __future__ import annotations

import base64
import json
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from devkit.assets import demo_model_path
from models import store
from models.db import make_session_factory
from models.migrate import upgrade
from models.settings import load_settings
from models.tables import TripletRow
from producer.local_worker import local_worker
from worker import metrics
from worker.metrics_server import authorized, start_metrics, worker_port
from worker.pipeline import GroupReport
from worker.runtime import Runtime
from tests.workers import free_port, triplets, worker_env

CREDENTIALS = "admin:s3cret"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"


def basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


def scrape(port: int, credentials: str | None = CREDENTIALS, path: str = "/metrics") -> tuple[int, dict, str]:
    """(status, headers, body) of a GET on a worker's metrics server."""
    headers = {"Authorization": basic(credentials)} if credentials else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


def sample(body: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name{labels}`` in a scrape, None when absent."""
    for family in text_string_to_metric_families(body):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return found.value
    return None


class LoopStub:
    """The GPU loop's face to the metrics (stats, pending, ids), without a model: the model is beside the point."""

    model_id, adapter_id, prompt_version = "demo-glm", "duie:3", "v1"

    def stats(self) -> dict[str, float]:
        return {"runs": 2, "prompts": 10, "answer_tokens": 500, "decode_seconds": 4.0, "rows": 8}

    def pending(self) -> tuple[int, int]:
        return 1, 0


@contextmanager
def metrics_server(sessions: sessionmaker[Session], *, database_url: str, broker_url: str) -> Iterator[int]:
    settings = load_settings(broker_url=broker_url, database_url=database_url, flower_basic_auth=CREDENTIALS,
                             metrics_port=free_port(), device="cpu")
    runtime = Runtime(settings=settings, worker_id="extract-cpu@host:1", queue="extract", sessions=sessions,
                      engine=LoopStub())
    server = start_metrics(runtime)
    assert server is not None
    try:
        yield server.port
    finally:
        server.stop()


@pytest.mark.parametrize("header, ok", [
    (basic(CREDENTIALS), True),
    (None, False),
    ("", False),
    (basic("admin:wrong"), False),
    (basic("admin:s3cret2"), False),
    (basic("admin"), False),
    ("Bearer " + base64.b64encode(CREDENTIALS.encode()).decode(), False),
    ("Basic not*base64", False),
])
def test_authorized_accepts_exactly_the_credentials(header: str | None, ok: bool) -> None:
    assert authorized(header, CREDENTIALS) is ok


def test_each_gpu_worker_of_a_host_has_its_own_port() -> None:
    assert [worker_port(9808, device) for device in ("cpu", "auto", "cuda", "cuda:0", "cuda:3")] == [
        9808, 9808, 9808, 9808, 9811]


def test_metrics_answer_401_without_the_credentials_and_the_numbers_with_them(
        sessions: sessionmaker[Session], database_url: str, broker_url: str) -> None:
    with sessions.begin() as session:
        old = store.create_job(session, name="old").id
        [finished] = store.add_documents(session, job_id=old, documents=[store.NewDocument("旧句", "o1")])
        store.record_failure(session, document_id=finished, reason="test")
        job_id = store.create_job(session, name="news").id
        store.add_documents(session, job_id=job_id, documents=[
            store.NewDocument(f"第{i}句", f"d{i}") for i in range(3)])
    redis.Redis.from_url(broker_url).rpush("extract", "a message")
    with metrics_server(sessions, database_url=database_url, broker_url=broker_url) as port:
        _, _, before = scrape(port)
        metrics.record_stored([store.Outcome(1, "甲", []), store.Outcome(2, "乙", [], warning="window 2/2: cut"),
                               store.Outcome(3, "丙", error="unparseable")], triplets=7)
        metrics.record_group(GroupReport(claimed=5, done=2, failed=3, triplets=7, failed_at_claim=2))
        status, _, body = scrape(port)
        anonymous = scrape(port, credentials=None)
        wrong = scrape(port, credentials="admin:wrong")
        elsewhere = scrape(port, path="/")
    assert status == 200
    for name, labels, step in (("triplets_documents_total", {"outcome": "done"}, 2),
                               ("triplets_documents_total", {"outcome": "failed"}, 3),
                               ("triplets_documents_warned_total", {}, 1),
                               ("triplets_stored_total", {}, 7), ("triplets_group_documents_count", {}, 1)):
        assert sample(body, name, **labels) == sample(before, name, **labels) + step, name
    job = {"job_id": str(job_id), "job_name": "news"}
    assert sample(body, "triplets_job_documents", **job, status="pending") == 3
    assert sample(body, "triplets_job_eta_seconds", **job) is None  # nothing finished yet: no rate, no ETA
    assert sample(body, "triplets_job_documents", job_name="old") is None  # finished jobs are not exported
    assert sample(body, "triplets_queue_messages", queue="extract") == 1
    assert sample(body, "triplets_store_up") == sample(body, "triplets_broker_up") == 1
    assert sample(body, "triplets_decode_answer_tokens_total") == 500
    assert sample(body, "triplets_decode_tokens_per_second") == 125
    assert sample(body, "triplets_adapter_info", adapter="duie:3") == 1
    assert sample(body, "triplets_worker_busy_tasks") == 0
    assert sample(body, "triplets_gpu_memory_allocated_bytes") is None  # on the CPU: absent, not 0
    assert anonymous[0] == wrong[0] == 401
    assert anonymous[1]["WWW-Authenticate"].startswith("Basic ")
    assert "triplets" not in anonymous[2] + wrong[2]
    assert elsewhere[0] == 404
    exported = {found.name for family in text_string_to_metric_families(body) for found in family.samples}
    assert not {name for name in exported if name.startswith("triplets_") and not documented(name)}


def documented(name: str) -> bool:
    """Whether docs/metrics.md names this metric (a histogram's _bucket, _count, _sum under its own name)."""
    names = set(re.findall(r"`(triplets_\w+)`", DOCS.read_text(encoding="utf-8")))
    return any(name == known or name.startswith(known + "_") for known in names)


def test_the_grafana_dashboard_uses_documented_metrics_only() -> None:
    dashboard = json.loads((DOCS.parent / "grafana-dashboard.json").read_text(encoding="utf-8"))
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    used = {name for expr in expressions for name in re.findall(r"triplets_\w+", expr)}
    assert used and not {name for name in used if not documented(name)}


def test_a_broker_outage_is_a_zero_not_a_failed_scrape(sessions: sessionmaker[Session], database_url: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    with metrics_server(sessions, database_url=database_url, broker_url=f"redis://127.0.0.1:{free_port()}/0") as port:
        with caplog.at_level(logging.WARNING, logger="worker.metrics"):
            first, second = scrape(port), scrape(port)
    assert first[0] == second[0] == 200
    assert sample(second[2], "triplets_broker_up") == 0 and sample(second[2], "triplets_store_up") == 1
    assert sample(second[2], "triplets_queue_messages", queue="extract") is None
    assert len([r for r in caplog.records if "broker did not answer" in r.getMessage()]) == 1  # once per outage


def test_metrics_are_never_served_without_credentials(sessions: sessionmaker[Session], database_url: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    settings = load_settings(database_url=database_url, metrics_port=port)
    assert settings.flower_basic_auth is None
    runtime = Runtime(settings=settings, worker_id="w", queue="extract", sessions=sessions)
    with caplog.at_level(logging.INFO, logger="worker.metrics_server"):
        assert start_metrics(runtime) is None
        assert start_metrics(Runtime(settings=settings.model_copy(update={"metrics_port": 0}), worker_id="w",
                                     queue="extract", sessions=sessions)) is None
    assert [r.getMessage() for r in caplog.records] == [
        "metrics not served: TRIPLETS_FLOWER_BASIC_AUTH is not set, and /metrics never runs without auth",
        "metrics off (TRIPLETS_METRICS_PORT=0)"]
    with pytest.raises(OSError):
        scrape(port)  # nothing listens


def test_a_port_in_use_costs_the_metrics_not_the_worker(sessions: sessionmaker[Session], database_url: str,
                                                        broker_url: str) -> None:
    with metrics_server(sessions, database_url=database_url, broker_url=broker_url) as port:
        settings = load_settings(database_url=database_url, flower_basic_auth=CREDENTIALS, metrics_port=port)
        assert start_metrics(Runtime(settings=settings, worker_id="w2", queue="extract", sessions=sessions)) is None


@pytest.mark.slow  # a real worker on the CPU through a whole job: a minute or more
def test_a_running_workers_documents_counter_moves_during_a_job(tmp_path: Path, broker_url: str) -> None:
    database_url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(database_url)
    port = free_port()
    env = worker_env(broker_url=broker_url, database_url=database_url, base_model=demo_model_path(),
                     flower_basic_auth=CREDENTIALS, metrics_port=port, task_group_size=2, max_batch_size=2,
                     max_new_tokens=128)
    lines = (demo_model_path() / "heldout.jsonl").read_text(encoding="utf-8").splitlines()[:12]  # 6 messages
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def documents(body: str) -> float:
        return sum(sample(body, "triplets_documents_total", outcome=o) or 0 for o in ("done", "failed"))

    with local_worker(env, tmp_path / "worker.log"):
        assert scrape(port, credentials=None)[0] == 401
        assert triplets(env, "submit", str(corpus), "--name", "metrics", cwd=tmp_path).returncode == 0
        seen: list[tuple[float, bool]] = []  # (documents counted, the job unfinished at that scrape)
        deadline = time.monotonic() + 300
        while not seen or seen[-1][1] or seen[-1][0] < len(lines):
            assert time.monotonic() < deadline, f"no end of the job in 300 s: {seen[-5:]}"
            status, _, body = scrape(port)
            assert status == 200
            # A job's series are exported while it is unfinished only.
            seen.append((documents(body), sample(body, "triplets_job_documents", job_name="metrics") is not None))
            time.sleep(0.5)  # pacing only (a scrape takes the worker's CPU): the loop ends on what scrapes say
        end = body
    during = [counted for counted, unfinished in seen if unfinished]
    # Two scrapes during the job, the later one counting more documents than the earlier one.
    assert any(later > earlier for earlier, later in zip(during, during[1:])), seen
    assert documents(end) == len(lines)
    with make_session_factory(database_url)() as session:
        assert sample(end, "triplets_stored_total") == session.scalar(select(func.count()).select_from(TripletRow))
    assert sample(end, "triplets_decode_answer_tokens_total") > 0
    assert sample(end, "triplets_store_up") == sample(end, "triplets_broker_up") == 1
