"""Celery's settings, mapped from the one Settings object.

``celery -A worker.app`` reads these through ``worker.app.create_app``; the module-level
names also let ``celery --config celeryconfig`` and Flower read them directly.
"""

from __future__ import annotations

from typing import Any

from kombu import Queue

from models.settings import Settings, get_settings

EXTRACT_QUEUE = "extract"
TRAIN_QUEUE = "train"


def celery_conf(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": settings.broker_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            # Longer than the longest batch, or a slow batch is handed to a second worker.
            "visibility_timeout": settings.visibility_timeout,
            # Kombu's defaults restore a dead worker's unacked messages only every ~100 s.
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
        "task_default_queue": EXTRACT_QUEUE,
        "task_queues": (Queue(EXTRACT_QUEUE), Queue(TRAIN_QUEUE)),
        "task_routes": {"triplets.extract": {"queue": EXTRACT_QUEUE}, "triplets.train.*": {"queue": TRAIN_QUEUE}},
        # Flower and `celery events` see every task.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": False,
    }


globals().update(celery_conf(get_settings()))
