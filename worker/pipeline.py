"""Extraction of one message's documents: claim, extract, store; each fault charged to whoever caused it.

Plain functions over a session factory and an engine, callable without Celery. Whose fault:
- a document's own text or output (unparseable, too long, refused by the store, an engine
  error on it alone while the engine still reads a canary sentence): that document fails;
- the worker's (model, device or adapter broken, the canary fails too): ``WorkerFault``, the
  claimed documents go back uncharged;
- the database's (unreachable): wait for it, holding the work (``worker.store_retry``);
- the worker dying: its claim is taken over and split (``models.claims``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from models import claims, registry, store
from models.errors import ConfigError, ModelError, WorkerFault
from models.extraction import Extraction
from models.settings import Settings
from worker.engine import CANARY_TEXT, ExtractionEngine, Finished
from worker.store_retry import StoreRetry

log = logging.getLogger(__name__)

Resend = Callable[[list[int]], None]
Stored = Callable[[Sequence[store.Outcome], int], None]  # outcomes just stored, and their triplets
RELEASE_PATIENCE_S = 10.0


@dataclass(frozen=True, slots=True)
class GroupReport:
    claimed: int
    done: int
    failed: int
    triplets: int
    resent: int = 0  # lost documents queued again in smaller groups
    skipped: int = 0  # held by a live worker, or no longer held by this one when storing
    failed_at_claim: int = 0  # of ``failed``: cancelled, or killed their worker alone too often
    warnings: int = 0  # done documents stored with a warning


class AdapterFollower:
    """Keeps an engine on the adapter promoted for its base model, unless the worker's adapter is fixed.

    A promoted adapter that cannot be loaded is not the documents' fault: the engine keeps its
    last good adapter (each triplet records which one made it) and the failure is logged once.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.refused: set[str] = set()

    def follow(self, engine: ExtractionEngine, sessions: sessionmaker[Session], *, strict: bool = False,
               retry: StoreRetry | None = None) -> None:
        """Switch ``engine`` to the promoted adapter if it changed; ``strict``: a bad one raises (start-up)."""
        if self.settings.adapter is not None:
            return
        retry = retry or StoreRetry(sessions, patience_s=self.settings.store_retry_seconds)
        # Read in a short transaction; the adapter loads after it (SQLite would hold its write lock).
        promoted = retry.run(lambda session: self._promoted(session, engine.model_id))
        if promoted is None:
            return
        adapter_id, relative = promoted
        if adapter_id == engine.adapter_id or (adapter_id in self.refused and not strict):
            return
        try:
            engine.use_adapter(adapter_id, registry.registered_adapter_folder(self.settings.adapter_registry, relative))
        except (ModelError, ConfigError) as exc:
            if strict:
                raise
            self.refused.add(adapter_id)
            log.error("promoted adapter %s cannot be used, keeping %s: %s", adapter_id,
                      engine.adapter_id or "no adapter", exc)

    @staticmethod
    def _promoted(session: Session, model_id: str) -> tuple[str, str] | None:
        promoted = registry.promoted_adapter(session, base_model=model_id)
        return None if promoted is None else (f"{promoted.name}:{promoted.version}", promoted.path)


def process_documents(
    document_ids: Sequence[int],
    *,
    engine: ExtractionEngine,
    sessions: sessionmaker[Session],
    settings: Settings,
    owner: str,
    resend: Resend,
    retry: StoreRetry | None = None,
    progress: Callable[[], None] = lambda: None,
    stored: Stored = lambda outcomes, triplets: None,
) -> GroupReport:
    """Claim, extract and store one message's documents; ``stored`` hears of each write as it lands."""
    retry = retry or StoreRetry(sessions, patience_s=settings.store_retry_seconds)
    claim = retry.run(lambda session: claims.claim_documents(
        session, document_ids=document_ids, owner=owner, lease_seconds=settings.lease_seconds,
        max_attempts=settings.max_attempts))
    _resend(claim.resend, resend)
    claimed = claim.documents
    if not claimed:
        return GroupReport(0, 0, claim.failed, 0, sum(map(len, claim.resend)), claim.held_elsewhere, claim.failed)
    recorder = _Recorder(retry, claimed, engine, owner, stored)
    try:
        progress()
        extractions = extract_isolating(engine, [doc.text for doc in claimed], progress, finished=recorder.early)
        recorder.record([(index, extraction) for index, extraction in enumerate(extractions)
                         if claimed[index].id not in recorder.stored])
    except BaseException:
        # Nobody's documents stay held by a worker that is not working on them: given back
        # uncharged (and, with no message left, queued again once the queue is idle). If the
        # database is what failed, the lease runs out and the takeover does it instead.
        try:
            StoreRetry(sessions, patience_s=RELEASE_PATIENCE_S).run(lambda session: claims.release_documents(
                session, document_ids=[d.id for d in claimed], owner=owner))
        except WorkerFault:
            log.warning("could not give back %d documents; their lease will run out", len(claimed))
        raise
    outcomes, fenced = list(recorder.stored.values()), recorder.fenced
    if fenced:
        log.warning("%d documents were taken over by another worker meanwhile; their results were dropped", fenced)
    done = sum(outcome.error is None for outcome in outcomes)
    return GroupReport(len(claimed), done, len(outcomes) - done + claim.failed, recorder.triplets,
                       sum(map(len, claim.resend)), claim.held_elsewhere + fenced, claim.failed,
                       sum(outcome.error is None and bool(outcome.warning) for outcome in outcomes))


class _Recorder:
    """Stores a group's outcomes: the documents an engine hands on early, then the rest, one transaction
    per hand-over and adapter (progress moves inside a group; writes stay batched)."""

    def __init__(self, retry: StoreRetry, claimed: Sequence[claims.ClaimedDocument], engine: ExtractionEngine,
                 owner: str, stored: Stored) -> None:
        self.retry, self.claimed, self.engine, self.owner, self.on_stored = retry, claimed, engine, owner, stored
        self.stored: dict[int, store.Outcome] = {}
        self.triplets = self.fenced = 0
        self.early_failed = False

    def early(self, finished: list[tuple[int, Extraction]]) -> None:
        """Best effort: a failure here leaves the documents to the final write, which decides whose fault it is."""
        if self.early_failed:
            return
        try:
            self.record(finished)
        except Exception as exc:  # noqa: BLE001 - nothing is lost: they are written with the rest
            self.early_failed = True
            log.warning("could not store %d finished documents early (%s); they are stored with the rest",
                        len(finished), type(exc).__name__)

    def record(self, extractions: list[tuple[int, Extraction]]) -> None:
        by_adapter: dict[str, list[store.Outcome]] = {}
        for index, extraction in extractions:
            outcome = _outcome(self.claimed[index], extraction)
            by_adapter.setdefault(extraction.adapter_id or self.engine.adapter_id, []).append(outcome)
        for adapter_id, outcomes in by_adapter.items():
            extractor = {"model": self.engine.model_id, "adapter": adapter_id,
                         "prompt_version": self.engine.prompt_version, "owner": self.owner}
            stored, triplets, fenced = _record(self.retry, outcomes, extractor)
            self.stored.update((outcome.document_id, outcome) for outcome in stored)
            self.triplets += triplets
            self.fenced += fenced
            self.on_stored(stored, triplets)


def _resend(groups: list[list[int]], resend: Resend) -> None:
    """Queue lost documents again in smaller groups; if the broker refuses, the takeover pass finds them."""
    try:
        for group in groups:
            resend(group)
    except Exception as exc:  # noqa: BLE001 - they are pending in the store, nothing is lost
        log.warning("could not queue %d lost documents again (%s); they wait for the next takeover pass",
                    sum(map(len, groups)), type(exc).__name__)
    else:
        if groups:
            log.warning("%d documents lost with a dead worker queued again in %d smaller groups",
                        sum(map(len, groups)), len(groups))


def extract_isolating(engine: ExtractionEngine, texts: Sequence[str], progress: Callable[[], None] = lambda: None,
                      finished: Finished | None = None) -> list[Extraction]:
    """The engine's extractions; an error the engine raises is pinned on one document, or on the engine.

    A batch that raises is split in halves until the document that raises is alone; it fails
    with the error while the rest go on. If the engine cannot read the canary sentence either,
    the engine is broken and nobody's document is charged.
    """
    try:
        return engine.extract(texts, progress=progress, finished=finished)
    except (ModelError, WorkerFault) as exc:
        raise WorkerFault(f"engine unusable: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - whose fault it is decides what happens next
        _require_healthy(engine, exc)
        if len(texts) == 1:
            log.warning("engine error on one document: %s: %s", type(exc).__name__, exc)
            reason = f"the engine failed on this document: {type(exc).__name__}: {exc}"
            return [Extraction(raw="", error=reason[:2000])]
        middle = len(texts) // 2
        return (extract_isolating(engine, texts[:middle], progress)
                + extract_isolating(engine, texts[middle:], progress))


def check_engine(engine: ExtractionEngine) -> None:
    """Raise WorkerFault unless the engine gets through the canary sentence."""
    _require_healthy(engine, None)


def _require_healthy(engine: ExtractionEngine, cause: BaseException | None) -> None:
    try:
        engine.extract([CANARY_TEXT])
    except Exception as exc:  # noqa: BLE001
        what = f"{type(cause).__name__}: {cause}; " if cause is not None else ""
        raise WorkerFault(f"engine broken ({what}the canary sentence fails too: {type(exc).__name__}: {exc})") from exc


def _outcome(doc: claims.ClaimedDocument, extraction: Extraction) -> store.Outcome:
    if not extraction.ok:
        return store.Outcome(doc.id, doc.text, error=extraction.error or "", raw_output=extraction.raw)
    return store.Outcome(doc.id, doc.text, extraction.triplets, extraction.spans,
                         [rejection.as_dict() for rejection in extraction.rejected], extraction.warning)


def _record(retry: StoreRetry, outcomes: list[store.Outcome],
            extractor: dict) -> tuple[list[store.Outcome], int, int]:
    """Store the outcomes together; if the store refuses the group, one by one. (stored, triplets, fenced)."""
    try:
        recorded = retry.run(lambda session: store.record_outcomes(session, outcomes, **extractor))
        fenced = set(recorded.fenced)
        return [o for o in outcomes if o.document_id not in fenced], recorded.triplets, len(fenced)
    except SQLAlchemyError as exc:
        # A result the store refuses (say a NUL byte on PostgreSQL) must not sink the others.
        log.warning("storing %d results together failed (%s); storing them one by one", len(outcomes), exc)
    stored, triplets, fenced = [], 0, 0
    for outcome in outcomes:
        try:
            recorded = retry.run(lambda session: store.record_outcomes(session, [outcome], **extractor))
        except SQLAlchemyError as exc:
            reason = f"the store refused the result: {getattr(exc, 'orig', None) or exc}"[:2000]
            outcome = store.Outcome(outcome.document_id, outcome.text, error=reason)
            recorded = retry.run(lambda session: store.record_outcomes(session, [outcome], **extractor))
        fenced += len(recorded.fenced)
        if not recorded.fenced:
            stored.append(outcome)
            triplets += recorded.triplets
    return stored, triplets, fenced
