"""The triplet record: the one data contract between parser, engine and store."""

from __future__ import annotations

from dataclasses import asdict, dataclass

FIELDS = ("subject", "subject_type", "predicate", "object", "object_type")


@dataclass(frozen=True, slots=True)
class Triplet:
    subject: str
    predicate: str
    object: str
    subject_type: str = ""
    object_type: str = ""

    def as_dict(self) -> dict[str, str]:
        """The origin project's output shape, key order included."""
        data = asdict(self)
        return {key: data[key] for key in FIELDS}

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.subject, self.subject_type, self.predicate, self.object, self.object_type)


@dataclass(frozen=True, slots=True)
class Span:
    start: int
    end: int


def locate(text: str, phrase: str) -> Span | None:
    """Character offsets of the first occurrence of ``phrase`` in ``text``."""
    if not phrase:
        return None
    start = text.find(phrase)
    return None if start < 0 else Span(start, start + len(phrase))
