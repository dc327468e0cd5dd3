"""A task strategy that drops a malformed message instead of letting it stop the worker.

Celery's default strategy unpacks a body as ``[args, kwargs, embed]``: a JSON body of another
shape ("just a string", [1, 2, 3]) raises in the consumer, which Celery treats as
unrecoverable (the worker dies, the message is restored, and the next worker dies on it), or
reaches the pool as a call that can never run. A body that does not decode, or whose content
type is not accepted (a pickle), Celery logs with a traceback. Here each is one log line, and
the message is acknowledged (dropped); the worker goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery.exceptions import InvalidTaskError
from celery.worker.strategy import default
from kombu.exceptions import ContentDisallowed, DecodeError

log = logging.getLogger(__name__)


def shape_problem(payload: object) -> str | None:
    """Why a protocol-2 body is not ``[args: list, kwargs: dict, embed: dict]``, or None."""
    if not isinstance(payload, (list, tuple)) or len(payload) != 3:
        return f"body is not [args, kwargs, embed]: {payload!r:.100}"
    args, kwargs, embed = payload
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict) or not isinstance(embed, (dict, type(None))):
        return f"body is not [list, dict, dict]: {payload!r:.100}"
    return None


def guarded_strategy(task: Any, app: Any, consumer: Any, **kwargs: Any) -> Callable[..., Any]:
    handle = default(task, app, consumer, **kwargs)

    def drop(message: Any, problem: str) -> None:
        task_id = (getattr(message, "headers", None) or {}).get("id", "?")
        log.error("dropped a malformed %s message (id %s): %s", task.name, task_id, problem)
        message.ack()

    def task_message_handler(message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **options: Any) -> Any:
        try:
            problem = shape_problem(message.payload) if body is None else None
        except ContentDisallowed as exc:
            return drop(message, f"content type {message.content_type} refused, only JSON is accepted ({exc})")
        except DecodeError as exc:
            return drop(message, f"body is not valid {message.content_type}: {exc}")
        if problem:
            return drop(message, problem)
        try:
            return handle(message, body, ack, reject, callbacks, **options)
        except InvalidTaskError:
            raise  # Celery logs and drops these itself
        except Exception as exc:  # noqa: BLE001 - any other shape of garbage
            return drop(message, f"{type(exc).__name__}: {exc}")

    return task_message_handler
