"""Flower with every page behind its basic auth: ``python -m producer.flower_app --app worker.app flower …``.

Flower (2.x) checks ``--basic-auth`` on its pages and API, but serves ``/metrics`` and
``/healthcheck`` to anyone: their handlers (``flower/views/monitor.py``) lack tornado's
``@authenticated``, and no option adds it. ``triplets monitor`` runs Flower through this
module, which adds it before Flower builds its app: those two then answer 401 without the
credentials, exactly as Flower's own pages do (Flower's ``get_current_user`` checks them).
"""

from __future__ import annotations


def protect_open_handlers() -> None:
    """Put Flower's /metrics and /healthcheck behind the auth its other pages have."""
    from flower.views import monitor
    from tornado.web import authenticated

    for handler in (monitor.Metrics, monitor.Healthcheck):
        handler.get = authenticated(handler.get)  # type: ignore[method-assign]


def main() -> None:
    protect_open_handlers()
    from celery.__main__ import main as celery_main

    celery_main()  # reads sys.argv: the `celery` command line this module was given


if __name__ == "__main__":
    main()
