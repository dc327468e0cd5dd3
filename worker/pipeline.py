"""Extraction of a group of documents: claim, run the engine, write each outcome.

Plain functions over a session factory and an engine, callable without Celery.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from models import registry, store
from models.errors import PermanentError, StoreUnavailableError
from models.extraction import Extraction
from models.settings import Settings
from worker.engine import ExtractionEngine

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GroupReport:
    claimed: int
    done: int
    failed: int
    triplets: int

    def as_dict(self) -> dict[str, int]:
        return {"claimed": self.claimed, "done": self.done, "failed": self.failed, "triplets": self.triplets}


def follow_promoted_adapter(engine: ExtractionEngine, *, sessions: sessionmaker[Session], settings: Settings) -> None:
    """Use the adapter promoted for this engine's base model, unless the worker's adapter is fixed."""
    if settings.adapter is not None:
        return
    try:
        with sessions() as session:
            promoted = registry.promoted_adapter(session, base_model=engine.model_id)
            found = None if promoted is None else (f"{promoted.name}:{promoted.version}", promoted.path)
    except OperationalError as exc:
        raise StoreUnavailableError(f"database unavailable: {exc.orig}") from exc
    if found is not None:
        adapter_id, relative = found
        engine.use_adapter(adapter_id, registry.resolve_adapter_path(settings.adapter_registry, relative))


def process_documents(
    document_ids: Sequence[int],
    *,
    engine: ExtractionEngine,
    sessions: sessionmaker[Session],
    max_attempts: int,
) -> GroupReport:
    try:
        with sessions.begin() as session:
            claimed = store.claim_documents(session, document_ids=document_ids, max_attempts=max_attempts)
        if not claimed:
            return GroupReport(0, 0, 0, 0)
        try:
            extractions = engine.extract([doc.text for doc in claimed])
        except PermanentError as exc:
            # The whole group fails with the reason; nothing is left running.
            log.error("extraction failed for documents %s: %s", [doc.id for doc in claimed], exc)
            with sessions.begin() as session:
                for doc in claimed:
                    store.record_failure(session, document_id=doc.id, reason=str(exc))
            return GroupReport(len(claimed), 0, len(claimed), 0)
        outcomes = [_outcome(doc, extraction) for doc, extraction in zip(claimed, extractions, strict=True)]
        extractor = {"model": engine.model_id, "adapter": engine.adapter_id, "prompt_version": engine.prompt_version}
        try:
            with sessions.begin() as session:
                triplets = store.record_outcomes(session, outcomes, **extractor)
        except OperationalError:
            raise
        except SQLAlchemyError as exc:
            # A result the store refuses (say a NUL byte on PostgreSQL) must not sink the others.
            log.warning("storing %d results together failed (%s); storing them one by one", len(outcomes), exc)
            stored = [_record_alone(sessions, outcome, extractor) for outcome in outcomes]
            outcomes, triplets = [outcome for outcome, _ in stored], sum(count for _, count in stored)
        failed = sum(outcome.error is not None for outcome in outcomes)
        return GroupReport(len(claimed), len(outcomes) - failed, failed, triplets)
    except OperationalError as exc:
        raise StoreUnavailableError(f"database unavailable: {exc.orig}") from exc


def _outcome(doc: store.ClaimedDocument, extraction: Extraction) -> store.Outcome:
    if not extraction.ok:
        return store.Outcome(doc.id, doc.text, error=extraction.error or "", raw_output=extraction.raw)
    return store.Outcome(doc.id, doc.text, extraction.triplets, extraction.spans,
                         [rejection.as_dict() for rejection in extraction.rejected], extraction.note)


def _record_alone(sessions: sessionmaker[Session], outcome: store.Outcome,
                  extractor: dict[str, str]) -> tuple[store.Outcome, int]:
    """Store one outcome in its own transaction (one the store refuses becomes a failure): what was stored."""
    try:
        with sessions.begin() as session:
            return outcome, store.record_outcomes(session, [outcome], **extractor)
    except OperationalError:
        raise
    except SQLAlchemyError as exc:
        reason = f"the store refused the result: {getattr(exc, 'orig', None) or exc}"[:2000]
        with sessions.begin() as session:
            store.record_failure(session, document_id=outcome.document_id, reason=reason)
        return store.Outcome(outcome.document_id, outcome.text, error=reason), 0
