"""The app factory: routes, templates, static files, and the read-only and auth guards around them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.orm import Session

from models.db import read_sessions
from models.errors import InputError, NotFoundError
from models.settings import Settings
from producer.web.guard import BasicAuth, ReadOnly

HERE = Path(__file__).parent


def create_app(settings: Settings) -> FastAPI:
    """The web view of the store at ``settings.database_url``, behind ``settings.web_basic_auth`` if set."""
    from producer.web import api, pages

    # Swagger UI and ReDoc load their JavaScript from a CDN, which these machines cannot reach:
    # they are off. The schema itself is served at /openapi.json.
    app = FastAPI(title="triplet-queue", summary="Read-only view of the triplet store.", docs_url=None,
                  redoc_url=None, openapi_url="/openapi.json")
    # readers that never take SQLite's write lock: the jobs page polls while workers write
    app.state.sessions = read_sessions(settings.database_url)
    app.state.templates = templates()
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(api.router)
    app.include_router(pages.router)
    app.add_exception_handler(NotFoundError, _error(404))
    app.add_exception_handler(InputError, _error(400))
    # The last added runs first: auth is checked before anything else, a write is refused next.
    app.add_middleware(ReadOnly)
    if settings.web_basic_auth is not None:
        app.add_middleware(BasicAuth, credentials=settings.web_basic_auth.get_secret_value())
    return app


def templates() -> Jinja2Templates:
    # Autoescape on every template: stored text (entities, documents, errors) is the model's and the corpus's.
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True))
    env.filters["rate"] = lambda value: "–" if value is None else f"{value:.2f}"
    env.filters["duration"] = duration
    return Jinja2Templates(env=env)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def session(request: Request) -> Iterator[Session]:
    """One read session per request (a dependency of every route); see ``models.db.read_sessions``
    for why it ends by committing."""
    with request.app.state.sessions.begin() as opened:
        yield opened


def _error(status: int):  # type: ignore[no-untyped-def]
    def handle(request: Request, exc: Exception) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": str(exc)}, status_code=status)
        return request.app.state.templates.TemplateResponse(
            request, "error.html", {"status": status, "message": str(exc)}, status_code=status)
    return handle
