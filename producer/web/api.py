"""The JSON API under /api: the same data as the pages, GET only (schema at /openapi.json)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy.orm import Session

from producer.web import data
from producer.web.app import session

router = APIRouter(prefix="/api", tags=["api"])
DB = Annotated[Session, Depends(session)]


@router.get("/jobs", summary="Every job, newest first: documents per status, docs/s, ETA.")
def jobs(db: DB) -> list[dict]:
    return data.jobs(db)


@router.get("/jobs/{job_id}", summary="One job's progress.")
def job(db: DB, job_id: int) -> dict:
    return data.jobs(db, job_id=job_id)[0]


@router.get("/triplets", summary="Triplets matching every filter given, one page, with the total matching.")
def triplets(
    db: DB,
    subject: str | None = None,
    subject_type: str | None = None,
    predicate: str | None = None,
    object: str | None = None,
    object_type: str | None = None,
    job: Annotated[int | None, Query(ge=1, description="Job id.")] = None,
    document: Annotated[str | None, Query(description="A document's external id (file:line).")] = None,
    contains: Annotated[bool, Query(description="Text filters match as substrings, not exactly.")] = False,
    limit: Annotated[int, Query(ge=1, le=data.MAX_PAGE_SIZE)] = data.PAGE_SIZE,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict:
    params = {"subject": subject, "subject_type": subject_type, "predicate": predicate, "object": object,
              "object_type": object_type, "document": document, "job": str(job or ""),
              "contains": "1" if contains else ""}
    return data.search(db, data.parse_search(params, limit=limit, offset=offset))


@router.get("/documents/{document_id}", summary="One document: text, status, error, triplets, rejected triplets.")
def document(db: DB, document_id: int) -> dict:
    shown = data.document(db, document_id=document_id)
    del shown["segments"]  # the highlight is the page's business; offsets are in each triplet
    return shown


@router.get("/entities/{name:path}/neighbors", summary="Edges around an entity, up to two hops.")
def neighbors(
    db: DB,
    name: str,
    depth: Annotated[int, Query(ge=1, le=2)] = 1,
    limit: Annotated[int, Query(ge=1, le=data.MAX_PAGE_SIZE)] = 200,
) -> dict:
    return data.neighbours(db, entity=name, depth=depth, limit=limit)
