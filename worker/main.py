"""One worker process: ready first (model, device, adapter, store), then consuming; started by the supervisor.

The engine lives in this process, loaded and checked before a single message is taken: a
worker that cannot work exits with ``EXIT_NOT_READY`` and one line, and no document is
charged. Celery runs its tasks on a thread pool beside it, so the broker connection, remote
control and heartbeats stay responsive while the engine works.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time

from models import workers
from models.db import make_session_factory
from models.errors import ConfigError, TripletsError
from models.migrate import require_head
from models.settings import Settings, get_settings
from worker.runtime import EXIT_NOT_READY, Runtime, install
from worker.store_retry import StoreRetry, is_unavailable, reason

log = logging.getLogger("triplets.worker")
QUEUES = ("extract", "train")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.main")
    parser.add_argument("--queue", choices=QUEUES, default="extract")
    parser.add_argument("--device", default="")
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--name", required=True, help="Celery node name, name@host")
    parser.add_argument("--loglevel", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.loglevel.upper(), stream=sys.stderr,
                        # the node name, not "MainProcess": a fleet's workers log to one terminal
                        format=f"[%(asctime)s: %(levelname)s/{args.name.replace('%', '%%')}] %(name)s: %(message)s")
    try:
        settings = get_settings()
        if args.device:
            settings = settings.model_copy(update={"device": args.device})
        runtime = prepare(settings, queue=args.queue, worker_id=args.worker_id)
    except Exception as exc:  # noqa: BLE001 - whatever stops it from working, one line and no work taken
        message = str(exc) if isinstance(exc, TripletsError) else f"{type(exc).__name__}: {exc}"
        print(f"error: worker not ready: {message}", file=sys.stderr, flush=True)
        return EXIT_NOT_READY
    install(runtime)
    return consume(runtime, name=args.name, loglevel=args.loglevel)


def prepare(settings: Settings, *, queue: str, worker_id: str) -> Runtime:
    """Everything a worker needs before it may take work; raises what stands in the way."""
    wait_for_database(settings)
    sessions = make_session_factory(settings.database_url)
    runtime = Runtime(settings=settings, worker_id=worker_id, queue=queue, sessions=sessions)
    if queue == "extract":
        from worker.gpu_loop import EngineLoop
        from worker.hf_engine import HuggingFaceEngine
        from worker.pipeline import AdapterFollower, check_engine

        runtime.engine = EngineLoop(HuggingFaceEngine.from_settings(settings), on_progress=runtime.touch,
                                    feeding=settings.tasks_in_flight)
        runtime.follower = AdapterFollower(settings)
        runtime.follower.follow(runtime.engine, sessions, strict=True, retry=runtime.store)
        check_engine(runtime.engine)
    else:
        from worker.loader import resolve_device

        resolve_device(settings.device)
    runtime.store.run(lambda session: workers.register_worker(
        session, worker_id=worker_id, hostname=socket.gethostname(), pid=os.getpid(), queue=queue,
        device=settings.device))
    return runtime


def wait_for_database(settings: Settings) -> None:
    """Block until the store answers with the schema this code expects (an outage is waited out)."""
    waiting_since = None
    while True:
        try:
            require_head(settings.database_url)
            return
        except ConfigError:
            raise
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            if waiting_since is None:
                waiting_since = time.monotonic()
                log.warning("waiting for the database: %s", reason(exc))
            time.sleep(2.0)


def consume(runtime: Runtime, *, name: str, loglevel: str) -> int:
    from redis import Redis

    from worker.app import app
    from worker.heartbeat import Heartbeat
    from worker.metrics_server import start_metrics
    from worker.takeover import Takeover

    takeover = Takeover(runtime.settings, StoreRetry(runtime.sessions, patience_s=30), app,
                        Redis.from_url(runtime.settings.broker_url), runtime.worker_id)
    heartbeat = Heartbeat(runtime, takeover)
    heartbeat.start()
    # Training workers serve none: their numbers are in `triplets train status`, and their port would be an
    # extraction worker's on the same GPU.
    metrics = start_metrics(runtime) if runtime.queue == "extract" else None
    # Extraction tasks share the process's one GPU loop, which bounds those it feeds at once; the others wait there
    # for their longest answers. Training runs one job at a time.
    settings = runtime.settings
    concurrency = 1
    if runtime.queue == "extract":
        from worker.feed_gate import install_feed_gate

        concurrency = settings.tasks_in_flight + settings.tasks_finishing
        install_feed_gate(app, runtime.engine.finishing, settings.tasks_in_flight)
    celery_worker = app.Worker(hostname=name, pool_cls="threads", concurrency=concurrency, queues=[runtime.queue],
                               loglevel=loglevel, task_events=True)
    try:
        celery_worker.start()
    finally:
        heartbeat.stop()
        if metrics is not None:
            metrics.stop()
        if runtime.engine is not None:
            runtime.engine.close()
        code = runtime.exit_code or celery_worker.exitcode or 0
        try:
            with runtime.sessions.begin() as session:
                workers.stop_worker(session, worker_id=runtime.worker_id, reason=f"exited with {code}")
        except Exception as exc:  # noqa: BLE001 - the lease runs out by itself
            log.warning("could not record the exit: %s", type(exc).__name__)
    return code


if __name__ == "__main__":
    sys.exit(main())
