"""One error hierarchy for the whole project.

Library errors are translated where they enter (``raise ... from``), so a Celery
task needs only ``autoretry_for=(RetryableError,)`` and everything else is final.
"""

from __future__ import annotations


class TripletsError(Exception):
    """Base of every error this project raises on purpose."""


class RetryableError(TripletsError):
    """A transient failure: the same work may succeed if tried again."""


class PermanentError(TripletsError):
    """Trying again cannot help; the input or configuration must change."""


class ConfigError(PermanentError):
    """A setting is malformed or missing."""


class InputError(PermanentError):
    """A line, file or document of the user's corpus is unusable."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class ParseError(PermanentError):
    """The model's output is not a valid triplet list; the raw output is kept."""

    def __init__(self, reason: str, raw: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw = raw


class ModelError(PermanentError):
    """The model or adapter cannot be loaded or run."""


class WorkerFault(TripletsError):
    """The worker, not the work, is broken (its model, device or adapter): the work goes back
    to the queue uncharged and the worker stops, so a healthy one takes it."""


class MalformedMessageError(PermanentError):
    """A queue message that no task of this project could have sent; it is logged and dropped."""


class DocumentTooLongError(PermanentError):
    """A document does not fit the model's input budget."""


class BrokerUnavailableError(RetryableError):
    """The message broker cannot be reached."""


class StoreUnavailableError(RetryableError):
    """The database cannot be reached or is busy."""


class NotFoundError(PermanentError):
    """A job, document or adapter named by the user does not exist."""
