"""The one place where a store or broker failure becomes a one-line error a person can act on.

``describe`` maps SQLAlchemy, kombu/redis and OS errors to this project's hierarchy with a
message naming the service and its URL, password masked:
``database postgresql+psycopg://app:***@db:5432/x unavailable: connection refused``.
Library messages are long (psycopg's carry hints on a second line, SQLAlchemy's the SQL and
its parameters), so only their first meaningful line is kept.
"""

from __future__ import annotations

import re
from types import TracebackType

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from models.errors import (
    BrokerUnavailableError,
    ConfigError,
    InputError,
    StoreUnavailableError,
    TripletsError,
)
from models.settings import Settings

# scheme://user:password@ → scheme://user:***@, for URLs inside any message.
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*):[^@\s]*@", re.IGNORECASE)
# psycopg: 'connection failed: connection to server at "h" (addr), port 1 failed: Connection refused'
_PG_PREFIX = re.compile(r"^(connection failed: )?(connection to server (at|on) .*? failed: )?")
# redis-py: 'Error 111 connecting to 127.0.0.1:1. Connection refused.'
_REDIS_PREFIX = re.compile(r"^Error -?\d+ connecting to \S+?\. ")
_MISSING_TABLE = re.compile(r'no such table: (\S+)|relation "([^"]+)" does not exist')
_MISSING_COLUMN = re.compile(r'no such column: (\S+)|column "?([^" ]+)"? does not exist|has no column named (\S+)')
_BROKER_MODULES = ("kombu.", "redis.", "amqp.", "valkey.")
_DATABASE_MODULES = ("sqlalchemy.", "psycopg", "sqlite3")
MAX_REASON = 300


def mask_password(url: str) -> str:
    """A URL safe to print: a database URL through SQLAlchemy, anything else by pattern."""
    try:
        if "://" in url and not url.startswith(("redis", "amqp", "valkey")):
            return make_url(url).render_as_string(hide_password=True)
    except sa_exc.ArgumentError:
        pass
    return mask_urls(url)


def mask_urls(text: str) -> str:
    """Every ``scheme://user:password@`` in ``text`` with its password replaced by ***."""
    return _URL_PASSWORD.sub(r"\g<head>:***@", text)


def one_line(text: str) -> str:
    """The first non-empty line of ``text``, passwords masked, cut to a readable length."""
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    first = mask_urls(first)
    return first if len(first) <= MAX_REASON else first[: MAX_REASON - 1] + "…"


def describe(exc: BaseException, *, settings: Settings | None) -> TripletsError | None:
    """This project's error for ``exc``, or None when it is not a known kind (a bug)."""
    cause = exc.__cause__
    if isinstance(exc, (StoreUnavailableError, BrokerUnavailableError)) and cause is not None and not isinstance(
            cause, TripletsError):
        # Translated where the library error entered, in that code's words: worded here like every
        # other outage. A wrapper that adds advice (its cause is ours) keeps its message.
        return describe(cause, settings=settings) or exc
    if isinstance(exc, TripletsError):
        return exc
    if isinstance(exc, sa_exc.SQLAlchemyError):
        return _database_error(exc, settings)
    service = _service_of(exc)
    if service == "broker":
        return _broker_error(exc, settings)
    if service == "database":
        return StoreUnavailableError(f"database {_database_url(settings)} unavailable: {_reason(exc)}")
    if isinstance(exc, OSError) and exc.filename is not None:
        return InputError(str(exc.filename), _lower_first(exc.strerror or type(exc).__name__))
    return None


def _database_error(exc: sa_exc.SQLAlchemyError, settings: Settings | None) -> TripletsError | None:
    url = _database_url(settings)
    if isinstance(exc, (sa_exc.ArgumentError, sa_exc.NoSuchModuleError)):
        return ConfigError(f"TRIPLETS_DATABASE_URL {url}: {one_line(str(exc))}")
    detail = str(getattr(exc, "orig", None) or exc)
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.ProgrammingError)):
        if match := _MISSING_TABLE.search(detail):
            table = match.group(1) or match.group(2)
            return ConfigError(f"database {url} has no table {table}: run `triplets db upgrade`")
        if match := _MISSING_COLUMN.search(detail):
            column = next(group for group in match.groups() if group)
            return ConfigError(f"database {url} has no column {column}: run `triplets db upgrade`")
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)):
        return StoreUnavailableError(f"database {url} unavailable: {_reason(detail)}")
    # Any other refusal (a constraint, bad data) is a bug here, not an outage or the user's input.
    return None


def _broker_error(exc: BaseException, settings: Settings | None) -> BrokerUnavailableError:
    url = mask_password(settings.broker_url) if settings is not None else "(TRIPLETS_BROKER_URL)"
    return BrokerUnavailableError(f"broker {url} unavailable: {_reason(exc)}")


def _database_url(settings: Settings | None) -> str:
    return mask_password(settings.database_url) if settings is not None else "(TRIPLETS_DATABASE_URL)"


def _reason(exc: BaseException | str) -> str:
    text = one_line(str(exc)) if str(exc).strip() else type(exc).__name__
    text = _REDIS_PREFIX.sub("", _PG_PREFIX.sub("", text)).rstrip(".")
    return _lower_first(text) or type(exc).__name__


def _lower_first(text: str) -> str:
    # "Connection refused" reads as a clause after the colon; "FATAL" and "SSL" stay as they are.
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def _service_of(exc: BaseException) -> str | None:
    """broker or database, from the library that defined the error or, for an OSError, raised it."""
    names = [type(exc).__module__ + "."]
    if isinstance(exc, OSError):
        names += _frame_modules(exc.__traceback__)
    for name in names:
        if name.startswith(_BROKER_MODULES):
            return "broker"
        if name.startswith(_DATABASE_MODULES):
            return "database"
    return None


def _frame_modules(tb: TracebackType | None) -> list[str]:
    names = []
    while tb is not None:
        names.append(str(tb.tb_frame.f_globals.get("__name__", "")) + ".")
        tb = tb.tb_next
    # The innermost frame raised it: look there first.
    return names[::-1]
