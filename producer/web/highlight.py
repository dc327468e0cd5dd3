"""A document's text cut into segments, each marked with the triplet spans that cover it.

Spans may overlap (a subject inside another triplet's object) or be missing or stale (no
offset stored, or one past the text): the text is cut at every span boundary, so each
segment is either plain or covered by a known set of spans, and nothing is nested. The
template renders a covered segment as one ``<mark>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from models.triplet_query import TripletRecord


@dataclass(frozen=True, slots=True)
class Segment:
    text: str
    roles: frozenset[str] = frozenset()  # "subject" and/or "object"
    triplets: tuple[int, ...] = ()  # indexes into the document's triplet list
    overlap: bool = False  # covered by two different spans (not one span two triplets share)

    @property
    def css_class(self) -> str:
        classes = sorted(self.roles) + (["overlap"] if self.overlap else [])
        return " ".join(classes)


@dataclass(frozen=True, slots=True)
class Span:
    start: int
    end: int
    role: str
    triplet: int


def spans_of(triplets: Sequence[TripletRecord], text_length: int) -> tuple[list[Span], dict[int, list[str]]]:
    """Every usable span, and per triplet index the reasons its other spans are not shown."""
    spans: list[Span] = []
    problems: dict[int, list[str]] = {}
    for index, record in enumerate(triplets):
        for role, start, end in (("subject", record.subject_start, record.subject_end),
                                 ("object", record.object_start, record.object_end)):
            if start is None or end is None:
                problems.setdefault(index, []).append(f"{role} not located in the text")
            elif not 0 <= start < end <= text_length:
                problems.setdefault(index, []).append(f"{role} offsets {start}:{end} outside the text")
            else:
                spans.append(Span(start, end, role, index))
    return spans, problems


def segments(text: str, spans: Sequence[Span]) -> list[Segment]:
    """``text`` cut at every span boundary; concatenating the segments' text gives ``text`` back."""
    cuts = sorted({0, len(text), *(s.start for s in spans), *(s.end for s in spans)})
    out: list[Segment] = []
    for start, end in zip(cuts, cuts[1:]):
        covering = [s for s in spans if s.start <= start and end <= s.end]
        out.append(Segment(
            text[start:end],
            frozenset(s.role for s in covering),
            tuple(sorted({s.triplet for s in covering})),
            len({(s.start, s.end) for s in covering}) > 1,
        ))
    return out
