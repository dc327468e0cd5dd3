"""Celery's settings, mapped from the one Settings object.

``celery -A worker.app`` reads these through ``worker.app.create_app``; the module-level
names also let ``celery --config celeryconfig`` and Flower read them directly.
"""

from __future__ import annotations

import ssl
from typing import Any

from kombu import Queue

from models.settings import Settings, get_settings

EXTRACT_QUEUE = "extract"
TRAIN_QUEUE = "train"


# Not named broker_use_ssl: the globals().update below would overwrite a function of that name.
def broker_tls_options(broker_url: str) -> dict[str, Any] | bool:
    """TLS options for a ``rediss://`` broker: verify the server's certificate unless the URL says otherwise.

    Kombu takes ``ssl_cert_reqs``, ``ssl_ca_certs``, ``ssl_certfile`` and ``ssl_keyfile`` from the
    URL's query, and those replace these options. A bare ``rediss://`` URL would otherwise connect
    with CERT_NONE (kombu's default: encrypted, but to whoever answers).
    """
    if not broker_url.startswith("rediss://"):
        return False
    return {"ssl_cert_reqs": ssl.CERT_REQUIRED}


def celery_conf(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": settings.broker_url,
        "broker_use_ssl": broker_tls_options(settings.broker_url),
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            # A backstop only: a dead worker's work is taken over by its database lease within
            # TRIPLETS_LEASE_SECONDS, and a redelivery of work a live worker holds is skipped, so
            # a job longer than this timeout (training) still runs once.
            "visibility_timeout": settings.visibility_timeout,
            # How often kombu looks for deliveries older than the visibility timeout (its
            # default, 10 s x every 10th look, would add up to ~100 s to the backstop).
            "unacked_restore_interval": 5,
            "unacked_restore_throttle": 1,
        },
        # JSON only: a pickle payload on a shared broker is remote code execution.
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # The database is the ledger of what is done; Celery results are not kept.
        "task_ignore_result": True,
        "task_track_started": True,
        # At-least-once: a message is acknowledged only after its work is written, and a
        # worker that dies mid-task gives it back. Writes are idempotent, so that is safe.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # Decided: a task keeps running when the broker connection drops. Its message may be
        # delivered again after the visibility timeout, and that delivery is skipped while the
        # database says this worker holds the work; cancelling would throw away a group's GPU
        # time (or hours of training) for nothing.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        # No wall-clock time limits: the threads pool cannot enforce them, and a training job
        # may rightly take hours. A worker whose engine or trainer stops making progress for
        # TRIPLETS_STALL_SECONDS (below the visibility timeout) exits instead (worker/heartbeat.py).
        "task_default_queue": EXTRACT_QUEUE,
        "task_queues": (Queue(EXTRACT_QUEUE), Queue(TRAIN_QUEUE)),
        "task_routes": {"triplets.extract": {"queue": EXTRACT_QUEUE}, "triplets.train.*": {"queue": TRAIN_QUEUE}},
        # Flower and `celery events` see every task.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": False,
    }


globals().update(celery_conf(get_settings()))
