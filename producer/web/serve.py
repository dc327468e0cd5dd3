"""`triplets web`: the web view under uvicorn. Loads without the ``web`` extra, to say it is missing."""

from __future__ import annotations

import importlib.util
import ipaddress
import socket

from models.errors import ConfigError
from models.settings import Settings

EXTRA = "pip install 'triplet-queue[web]'"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere, so it counts as exposed


def check(settings: Settings, *, host: str) -> None:
    """ConfigError (one line) when the extra is missing, or when ``host`` is exposed without auth."""
    missing = [name for name in ("fastapi", "uvicorn", "jinja2") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"the web view needs {', '.join(missing)}: {EXTRA}")
    # Refused, not warned: a warning scrolls by, and the store would be readable by the whole network.
    if settings.web_basic_auth is None and not is_loopback(host):
        raise ConfigError(f"--host {host}: not a loopback address; set TRIPLETS_WEB_BASIC_AUTH=user:password "
                          "to serve the web view beyond this machine")


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a taken port is one line naming it, not uvicorn's log."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart may reuse a port in TIME_WAIT
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"--host {host} --port {port}: cannot listen there: {exc.strerror or exc}") from None
    return sock


def run_web(*, host: str, port: int) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM stop uvicorn cleanly)."""
    from models.migrate import require_head
    from models.settings import get_settings

    settings = get_settings()
    check(settings, host=host)
    require_head(settings.database_url)
    import uvicorn

    from producer.web.app import create_app

    sock = bind(host, port)
    # log_config=None: uvicorn's lines go through the CLI's logging, at TRIPLETS_LOG_LEVEL.
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_config=None, access_log=False,
                                           server_header=False))
    auth = "basic auth on" if settings.web_basic_auth else "no auth, loopback only"
    shown = f"[{host}]" if ":" in host else host
    print(f"web view on http://{shown}:{sock.getsockname()[1]}/ ({auth}); Ctrl-C stops it", flush=True)
    server.run(sockets=[sock])
