"""A worker takes a queue message only when its GPU loop can feed it.

The thread pool holds ``TRIPLETS_TASKS_IN_FLIGHT + TRIPLETS_TASKS_FINISHING`` tasks: the finishing
ones have every prompt decoding and wait for their longest answers. Had the worker prefetched a
message for every thread, messages would sit here, waiting to be fed, while another worker idles:
at the end of a 12-message job on two GPUs one worker held 7 and the other 5 (1.72× one GPU
instead of 1.9×). So the worker fetches a message only while fewer than
``TRIPLETS_TASKS_IN_FLIGHT`` of the tasks it holds are still to be fed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import MethodType

from celery import Celery, bootsteps
from celery.worker import state

log = logging.getLogger(__name__)


def wants_message(held: int, finishing: int, feeding: int) -> bool:
    """Whether a worker holding ``held`` tasks, ``finishing`` of them all decoding, may take another."""
    return held - finishing < feeding


def install_feed_gate(app: Celery, finishing: Callable[[], int], feeding: int) -> None:
    """Make ``app``'s next worker fetch task messages only while ``wants_message`` (Redis brokers)."""

    class FeedGate(bootsteps.StartStopStep):
        requires = ("celery.worker.consumer.tasks:Tasks",)

        def start(self, c) -> None:  # type: ignore[no-untyped-def]
            qos = c.task_consumer.channel.qos  # anew after each reconnection: this step starts again then
            if c.connection.transport.driver_type != "redis":
                log.warning("the feed gate needs a Redis broker: this worker prefetches a message per thread")
                return
            may_consume = qos.can_consume

            def can_consume(_qos: object) -> bool:
                return wants_message(len(state.reserved_requests), finishing(), feeding) and may_consume()

            qos.can_consume = MethodType(can_consume, qos)

    app.steps["consumer"].add(FeedGate)
