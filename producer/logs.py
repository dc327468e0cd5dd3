"""Logging of the `triplets` command and of its worker supervisor, at the configured level.

The level is ``TRIPLETS_LOG_LEVEL`` unless ``--loglevel`` says otherwise. It applies to this
project's loggers; libraries (alembic, celery, httpx) keep to warnings in the CLI, where their
INFO lines would bury a command's output. Worker processes log at the same level (the
supervisor passes it on), libraries included.
"""

from __future__ import annotations

import logging
import sys

from models.errors import ConfigError, InputError

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
PROJECT_LOGGERS = ("triplets", "producer", "models", "worker", "devkit")
CLI_FORMAT = "%(levelname)s %(name)s: %(message)s"
SUPERVISOR_FORMAT = "[%(asctime)s: %(levelname)s/supervisor] %(message)s"


def log_level(option: str = "") -> str:
    """``--loglevel`` if given, else TRIPLETS_LOG_LEVEL; an InputError naming the option if it is no level."""
    from models.settings import get_settings

    level = (option or get_settings().log_level).upper()
    if level not in LEVELS:
        raise InputError("--loglevel", f"expected debug, info, warning or error, got {option!r}")
    return level


def configure_cli_logging() -> None:
    """Every command's logging; a bad setting is left for the command itself to report, in its one line."""
    try:
        level = log_level()
    except ConfigError:
        level = "INFO"
    _configure(level, CLI_FORMAT, replace=False)


def configure_supervisor_logging(level: str) -> None:
    # The supervisor's lines sit among its workers' in one log: the same time stamps, its own tag.
    _configure(level, SUPERVISOR_FORMAT, replace=True)


def _configure(level: str, format: str, *, replace: bool) -> None:
    # replace: a handler set up earlier in this process (by the CLI) gives way to this format.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format=format, force=replace)
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(level)
