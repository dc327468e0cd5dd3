"""A worker's ``/metrics`` over HTTP, behind the same basic auth as Flower, and never served without it.

prometheus_client's own ``start_http_server`` has no auth, so this is a small stdlib server
(one thread, a thread per request) over the worker's registry (``worker.metrics``). It binds
``TRIPLETS_METRICS_ADDRESS`` (127.0.0.1 by default) and ``TRIPLETS_METRICS_PORT`` + N for a
worker on ``cuda:N``, so the workers of one host (``--gpus``) do not collide.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

if TYPE_CHECKING:
    from worker.runtime import Runtime

log = logging.getLogger(__name__)
REALM = 'Basic realm="triplets metrics"'
_CUDA_INDEX = re.compile(r"^cuda:(\d+)$")


def authorized(header: str | None, credentials: str) -> bool:
    """Whether an ``Authorization`` header carries exactly ``credentials`` ("user:password")."""
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(given, credentials.encode("utf-8"))


def worker_port(base: int, device: str) -> int:
    """The port of a worker on ``device``: ``base`` + N on ``cuda:N``, ``base`` otherwise."""
    match = _CUDA_INDEX.match(device)
    return base + int(match.group(1)) if match else base


class MetricsServer:
    """Serves ``registry`` at /metrics to requests carrying ``credentials``; 401 to any other."""

    def __init__(self, registry: CollectorRegistry, *, credentials: str, address: str, port: int) -> None:
        self._server = ThreadingHTTPServer((address, port), _handler(registry, credentials))
        self._server.daemon_threads = True  # a slow scraper never holds the worker's exit
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


def _handler(registry: CollectorRegistry, credentials: str) -> type[BaseHTTPRequestHandler]:
    class MetricsHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            # Credentials first, whatever the path: nothing is told to an anonymous caller.
            if not authorized(self.headers.get("Authorization"), credentials):
                self._reply(401, b"credentials required\n", "text/plain; charset=utf-8", REALM)
            elif urlsplit(self.path).path != "/metrics":
                self._reply(404, b"not found: the metrics are at /metrics\n", "text/plain; charset=utf-8")
            else:
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)

        def _reply(self, status: int, body: bytes, content_type: str, challenge: str | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if challenge is not None:
                self.send_header("WWW-Authenticate", challenge)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
            # A scrape every few seconds would drown the worker's log; failures are logged where they happen.
            log.debug("metrics request: " + format, *args)

    return MetricsHandler


def start_metrics(runtime: Runtime) -> MetricsServer | None:
    """This worker's metrics server, started; None (and one line saying why) when it does not serve."""
    from worker.metrics import worker_registry

    settings = runtime.settings
    if settings.metrics_port == 0:
        log.info("metrics off (TRIPLETS_METRICS_PORT=0)")
        return None
    if settings.flower_basic_auth is None:
        log.warning("metrics not served: TRIPLETS_FLOWER_BASIC_AUTH is not set, and /metrics never runs "
                    "without auth")
        return None
    port = worker_port(settings.metrics_port, settings.device)
    try:
        server = MetricsServer(worker_registry(runtime), credentials=settings.flower_basic_auth.get_secret_value(),
                               address=settings.metrics_address, port=port)
    except (OSError, OverflowError) as exc:
        log.warning("metrics not served: cannot listen on %s:%d (%s); set TRIPLETS_METRICS_PORT",
                    settings.metrics_address, port, exc.strerror if isinstance(exc, OSError) else exc)
        return None
    log.info("metrics at http://%s:%d/metrics (basic auth)", settings.metrics_address, server.port)
    return server.start()
