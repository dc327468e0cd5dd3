"""What an extraction worker tells Prometheus (docs/metrics.md names and explains every metric).

Two kinds of numbers. Counters the tasks move as results land in the store (documents,
triplets, several times a group) and as each message's group ends (group sizes, hand-ons).
And values read only when Prometheus scrapes, so an idle worker pays nothing for them: the
GPU loop's counters, GPU memory, the adapter in use, busy tasks, and, from the store and the
broker, each unfinished job's documents, rate and ETA and the queue's length. Serving them over HTTP is ``worker.metrics_server``'s part.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

from celeryconfig import EXTRACT_QUEUE
from models import store

if TYPE_CHECKING:
    from redis import Redis

    from models.store import Outcome
    from worker.pipeline import GroupReport
    from worker.runtime import Runtime

log = logging.getLogger(__name__)
MAX_JOBS = 50  # unfinished jobs exported per scrape, newest first: bounds the store's work and the series
BROKER_TIMEOUT_S = 2.0  # a scrape must answer even when the broker does not

# Registered in each worker registry (not in prometheus_client's global one, which Flower and
# tests share): one set per process, counted from the worker's start.
DOCUMENTS = Counter("triplets_documents", "Documents this worker finished, by outcome (done, failed).",
                    ["outcome"], registry=None)
STORED = Counter("triplets_stored", "Triplets this worker stored.", registry=None)
WARNED = Counter("triplets_documents_warned", "Done documents this worker stored with a warning.", registry=None)
HANDED_ON = Counter("triplets_documents_handed_on", "Documents of this worker's messages it did not extract: "
                    "resent (lost with a dead worker, queued again) or skipped (held by another worker).",
                    ["reason"], registry=None)
GROUP_SIZE = Histogram("triplets_group_documents", "Documents claimed per queue message.",
                       buckets=(1, 4, 16, 64, 256, 512, 1024, 2048, 4096), registry=None)
for _label in ("done", "failed"):
    DOCUMENTS.labels(_label)  # present (at 0) from the first scrape, so rate() sees the first documents
for _label in ("resent", "skipped"):
    HANDED_ON.labels(_label)

# The GPU loop's counters (EngineLoop.stats()): metric name, stats key, help.
LOOP_COUNTERS = (
    ("triplets_decode_runs", "runs", "Decoding runs of the GPU loop."),
    ("triplets_decode_prompts", "prompts", "Prompts (documents or windows of long ones) answered."),
    ("triplets_decode_answer_tokens", "answer_tokens", "Answer tokens generated."),
    ("triplets_decode_seconds", "decode_seconds", "Seconds the GPU loop spent decoding."),
)


def record_stored(outcomes: Sequence[Outcome], triplets: int) -> None:
    """Count documents as their results land in the store (several times a group: progress moves)."""
    done = sum(outcome.error is None for outcome in outcomes)
    DOCUMENTS.labels("done").inc(done)
    DOCUMENTS.labels("failed").inc(len(outcomes) - done)
    WARNED.inc(sum(outcome.error is None and bool(outcome.warning) for outcome in outcomes))
    STORED.inc(triplets)


def record_group(report: GroupReport) -> None:
    """Count what one message's group ended with beyond its stored documents (called by ``tasks.extract``)."""
    DOCUMENTS.labels("failed").inc(report.failed_at_claim)
    HANDED_ON.labels("resent").inc(report.resent)
    HANDED_ON.labels("skipped").inc(report.skipped)
    if report.claimed:
        GROUP_SIZE.observe(report.claimed)


def worker_registry(runtime: Runtime) -> CollectorRegistry:
    """Everything one worker process exports: its counters, the scrape-time values, the process's own."""
    # A _created series per counter is noise on a dashboard; this is the worker process's one exporter.
    prometheus_client.disable_created_metrics()
    registry = CollectorRegistry()
    for collector in (DOCUMENTS, STORED, WARNED, HANDED_ON, GROUP_SIZE, ScrapeCollector(runtime)):
        registry.register(collector)
    ProcessCollector(registry=registry)
    return registry


class ScrapeCollector:
    """Values read when Prometheus scrapes; a part that cannot be read is left out, never the whole scrape."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._redis: Redis | None = None
        self._down: set[str] = set()  # services whose last read failed: logged once per outage
        self._lock = threading.Lock()

    def collect(self) -> list[Metric]:
        # One scrape at a time: two at once would only double the store's work.
        with self._lock:
            metrics = list(worker_metrics(self.runtime))
            engine = self.runtime.engine
            if engine is not None:
                metrics += [*loop_metrics(engine), *gpu_memory_metrics(engine)]
            return [*metrics, *self._service("store", self._jobs), *self._service("broker", self._queue)]

    def _service(self, name: str, read: Callable[[], Iterator[Metric]]) -> Iterator[Metric]:
        """``read()``'s metrics, and ``triplets_<name>_up`` saying whether it answered."""
        try:
            metrics = list(read())
        except Exception as exc:  # noqa: BLE001 - an outage is a 0 on the dashboard, not a failed scrape
            if name not in self._down:
                log.warning("metrics: the %s did not answer (%s); its metrics are left out", name,
                            type(exc).__name__)
            self._down.add(name)
            metrics = []
        else:
            self._down.discard(name)
        yield GaugeMetricFamily(f"triplets_{name}_up", f"1 if the {name} answered this scrape.",
                                value=0 if name in self._down else 1)
        yield from metrics

    def _jobs(self) -> Iterator[Metric]:
        with self.runtime.sessions.begin() as session:  # a commit keeps the prepared statements (read_sessions)
            jobs = [store.job_progress(session, job_id=job_id)
                    for job_id in store.unfinished_job_ids(session, limit=MAX_JOBS)]
        yield from job_metrics(jobs)

    def _queue(self) -> Iterator[Metric]:
        if self._redis is None:
            from redis import Redis

            self._redis = Redis.from_url(self.runtime.settings.broker_url, socket_timeout=BROKER_TIMEOUT_S,
                                         socket_connect_timeout=BROKER_TIMEOUT_S)
        depth = GaugeMetricFamily("triplets_queue_messages", "Messages waiting in a queue (each a group of up to "
                                  "TRIPLETS_TASK_GROUP_SIZE documents).", labels=["queue"])
        depth.add_metric([EXTRACT_QUEUE], self._redis.llen(EXTRACT_QUEUE))
        yield depth


def worker_metrics(runtime: Runtime) -> Iterator[Metric]:
    engine = runtime.engine
    device = engine_device(engine) if engine is not None else None
    identity = {"worker_id": runtime.worker_id, "queue": runtime.queue,
                "device": str(device) if device is not None else runtime.settings.device}
    if engine is not None:
        identity.update(model=engine.model_id, prompt_version=engine.prompt_version)
        yield InfoMetricFamily("triplets_adapter", "The LoRA adapter decoding now (empty: the base model alone).",
                               value={"adapter": engine.adapter_id})
    yield InfoMetricFamily("triplets_worker", "This worker: its id, queue, device, model and prompt version.",
                           value=identity)
    yield GaugeMetricFamily("triplets_worker_busy_tasks", "Tasks this worker is working on now (0: idle).",
                            value=runtime.busy)


def loop_metrics(engine: Any) -> Iterator[Metric]:
    """The GPU loop's counters; left out if this engine keeps none."""
    if not hasattr(engine, "stats"):
        return
    stats = engine.stats()
    for name, key, documentation in LOOP_COUNTERS:
        yield CounterMetricFamily(name, documentation, value=stats[key])
    yield GaugeMetricFamily("triplets_decode_rows", "Rows (sequences decoded together) of the last decoding run "
                            "or batch.", value=stats["rows"])
    if stats["decode_seconds"] > 0:
        yield GaugeMetricFamily("triplets_decode_tokens_per_second", "Answer tokens per second of decoding, since "
                                "the worker started.", value=stats["answer_tokens"] / stats["decode_seconds"])
    if hasattr(engine, "pending"):
        yield GaugeMetricFamily("triplets_loop_waiting_tasks", "Tasks whose prompts wait for the GPU loop.",
                                value=engine.pending()[0])


def gpu_memory_metrics(engine: Any) -> Iterator[Metric]:
    """CUDA memory of the worker's device; left out on the CPU."""
    device = engine_device(engine)
    if getattr(device, "type", None) != "cuda":
        return
    import torch

    for name, read, documentation in (
        ("allocated", torch.cuda.memory_allocated, "GPU memory held by tensors now."),
        ("peak", torch.cuda.max_memory_allocated, "Most GPU memory held by tensors since the worker started."),
        ("reserved", torch.cuda.memory_reserved, "GPU memory PyTorch's caching allocator holds from the driver."),
    ):
        gauge = GaugeMetricFamily(f"triplets_gpu_memory_{name}_bytes", documentation, labels=["device"])
        gauge.add_metric([str(device)], read(device))
        yield gauge


def engine_device(engine: Any) -> Any:
    """The torch device the model is on (the GPU loop's engine's), or None if it does not say."""
    return getattr(getattr(engine, "engine", engine), "device", None)


def job_metrics(jobs: list[store.JobProgress]) -> Iterator[Metric]:
    """Each unfinished job's documents per status, warnings, rate and ETA (``store.job_progress``'s)."""
    labels = ["job_id", "job_name"]
    documents = GaugeMetricFamily("triplets_job_documents", "Documents of an unfinished job, by status.",
                                  labels=[*labels, "status"])
    warnings = GaugeMetricFamily("triplets_job_warnings", "Done documents of an unfinished job stored with a "
                                 "warning.", labels=labels)
    rate = GaugeMetricFamily("triplets_job_documents_per_second", "An unfinished job's documents finished per "
                             "second, from its first start to its last finish.", labels=labels)
    eta = GaugeMetricFamily("triplets_job_eta_seconds", "Seconds until an unfinished job ends at its rate so far.",
                            labels=labels)
    for job in jobs:
        key = [str(job.job_id), job.name]
        for status, count in job.counts.items():
            documents.add_metric([*key, status], count)
        warnings.add_metric(key, job.warnings)
        if job.docs_per_second is not None:
            rate.add_metric(key, job.docs_per_second)
        if job.eta_seconds is not None:
            eta.add_metric(key, job.eta_seconds)
    yield from (documents, warnings, rate, eta)
