"""The Celery app. Light on purpose: the producer imports it to send tasks by name."""

from __future__ import annotations

from celery import Celery

from celeryconfig import celery_conf
from models.settings import Settings, get_settings

EXTRACT_TASK = "triplets.extract"
TRAIN_TASK = "triplets.train.run"
# A training task's progress: Flower shows the task in state PROGRESS with the event's result line.
PROGRESS_EVENT = "task-progress"


def create_app(settings: Settings) -> Celery:
    celery = Celery("triplets", set_as_current=False)
    celery.conf.update(celery_conf(settings))
    return celery


app = create_app(get_settings())
# Tasks are registered only in processes that run them; senders use names.
app.conf.imports = ("worker.tasks",)
