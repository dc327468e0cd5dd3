"""Schema and grounding checks on parsed triplets: only what the text and schema support is stored.

A triplet whose predicate is outside the schema, or whose subject or object does not occur
in the text, is rejected with its reason (kept on the document, never stored as a fact).
Entity types are taken from the schema, since the predicate fixes them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from models.schema import PredicateSchema
from models.triplet import Triplet

_BOOK_TITLE = "《》"
# the end of a rejection reason for a subject or object absent from the text (read by models/graph_stats.py)
NOT_IN_TEXT = "not in the text"


@dataclass(frozen=True, slots=True)
class Rejection:
    triplet: Triplet
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {**self.triplet.as_dict(), "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Checked:
    accepted: list[Triplet] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


def ground(phrase: str, text: str) -> str | None:
    """The phrase as it occurs in the text, without book-title marks (DuIE's convention)."""
    bare = phrase.strip(_BOOK_TITLE)
    if bare and bare in text:
        return bare
    return phrase if phrase and phrase in text else None


def check_triplets(triplets: Iterable[Triplet], text: str, schema: PredicateSchema) -> Checked:
    checked = Checked()
    for triplet in triplets:
        relation = schema.get(triplet.predicate)
        subject, obj = ground(triplet.subject, text), ground(triplet.object, text)
        if relation is None:
            checked.rejected.append(Rejection(triplet, f"predicate {triplet.predicate!r} not in schema {schema.name}"))
        elif subject is None:
            checked.rejected.append(Rejection(triplet, f"subject {triplet.subject!r} {NOT_IN_TEXT}"))
        elif obj is None:
            checked.rejected.append(Rejection(triplet, f"object {triplet.object!r} {NOT_IN_TEXT}"))
        else:
            checked.accepted.append(
                replace(
                    triplet,
                    subject=subject,
                    object=obj,
                    subject_type=relation.subject_type,
                    object_type=relation.object_type,
                )
            )
    return checked
