"""The HTML pages: jobs, triplet search, one document, one entity. Server-rendered, escaped by Jinja."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from producer.web import data
from producer.web.app import session

router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)
DB = Annotated[Session, Depends(session)]
FORM_FIELDS = ("subject", "subject_type", "predicate", "object", "object_type", "job", "document", "contains")


def _render(request: Request, name: str, context: dict) -> HTMLResponse:
    return request.app.state.templates.TemplateResponse(request, name, context)


@router.get("/")
def jobs_page(request: Request, db: DB) -> HTMLResponse:
    return _render(request, "jobs.html", {"jobs": data.jobs(db)})


@router.get("/triplets")
def triplets_page(request: Request, db: DB, page: Annotated[int, Query(ge=1)] = 1,
                  limit: Annotated[int, Query(ge=1, le=data.MAX_PAGE_SIZE)] = data.PAGE_SIZE) -> HTMLResponse:
    # Form fields arrive as text (an empty box sends ""), so they are parsed here, not by FastAPI.
    form = {name: request.query_params.get(name, "") for name in FORM_FIELDS}
    query = data.parse_search(form, limit=limit, offset=(page - 1) * limit)
    found = data.search(db, query)
    pages = max(1, -(-found["total"] // limit))
    kept = {name: value for name, value in form.items() if value}
    if limit != data.PAGE_SIZE:
        kept["limit"] = str(limit)

    def link(number: int) -> str:
        return "/triplets?" + urlencode({**kept, "page": number})

    return _render(request, "triplets.html", {
        "form": form, "found": found, "page": page, "pages": pages,
        "previous": link(page - 1) if page > 1 else None, "next": link(page + 1) if page < pages else None,
    })


@router.get("/documents/{document_id}")
def document_page(request: Request, db: DB, document_id: int) -> HTMLResponse:
    return _render(request, "document.html", {"doc": data.document(db, document_id=document_id)})


@router.get("/entities/{name:path}")
def entity_page(request: Request, db: DB, name: str,
                depth: Annotated[int, Query(ge=1, le=2)] = 1) -> HTMLResponse:
    return _render(request, "entity.html", data.neighbours(db, entity=name, depth=depth, limit=200))
