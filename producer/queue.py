"""Sending extraction work to the broker, by task name, over one pooled connection."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from celery import Celery
from kombu.exceptions import OperationalError as KombuOperationalError

from celeryconfig import EXTRACT_QUEUE
from models.errors import BrokerUnavailableError
from models.settings import Settings
from producer.submit import SendGroup


@contextmanager
def broker_app(settings: Settings) -> Iterator[Celery]:
    """A Celery app whose broker answers; broker failures become BrokerUnavailableError."""
    from worker.app import create_app

    app = create_app(settings)
    try:
        # Fail before anything is stored when the broker is down, not halfway through.
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=2, interval_start=0.2)
        yield app
    except (KombuOperationalError, ConnectionError, OSError) as exc:
        raise BrokerUnavailableError(f"broker {_redacted(settings.broker_url)} unavailable: {exc}") from exc
    finally:
        app.close()


@contextmanager
def extract_sender(settings: Settings) -> Iterator[SendGroup]:
    """A function that queues one group of document ids per call."""
    from worker.app import EXTRACT_TASK

    with broker_app(settings) as app, app.producer_or_acquire() as producer:

        def send_group(document_ids: list[int]) -> None:
            app.send_task(EXTRACT_TASK, args=[document_ids], queue=EXTRACT_QUEUE, producer=producer)

        yield send_group


def _redacted(url: str) -> str:
    # Never echo a password from the URL into logs or terminals.
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rsplit('@', 1)[-1]}"
