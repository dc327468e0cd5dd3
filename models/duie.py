"""DuIE 2.0 records: the one reader and writer of ``{"text", "spo_list": [...]}`` lines.

An ``spo_list`` item's ``object`` and ``object_type`` are strings or, for DuIE's complex
objects, ``{"@value": ..., "inWork": ...}`` dicts; only ``@value`` is kept (the other slots
are absent from most predicates and from the triplet contract). Training data, the scorer's
gold, the demo corpus and the synthetic generator all go through here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from models.errors import InputError
from models.triplet import FIELDS, Triplet

RECORD = "DuIE record"
_REQUIRED = ("subject", "predicate", "object")


def parse_record(record: object, *, source: str = RECORD) -> tuple[str, tuple[Triplet, ...]]:
    """(text, triplets) of a DuIE 2.0 record; an InputError naming ``source`` and the bad field.

    A record without ``spo_list`` (DuIE's test split) states no triplets.
    """
    if not isinstance(record, dict):
        raise InputError(source, "expected a JSON object")
    return require_text(record, "text", source), parse_spo_list(record.get("spo_list", []), source=source)


def require_text(record: dict[str, object], key: str, source: str = RECORD) -> str:
    """``record[key]``, a non-empty string kept verbatim: annotations may refer to character offsets."""
    if key not in record:
        raise InputError(source, f"missing '{key}'")
    text = record[key]
    if not isinstance(text, str) or not text.strip():
        raise InputError(source, f"'{key}' must be a non-empty string")
    return text


def parse_spo_list(value: object, *, source: str = RECORD, key: str = "spo_list") -> tuple[Triplet, ...]:
    """The triplets of a list of spo items (``key`` names the list in errors); duplicates dropped."""
    if not isinstance(value, list):
        raise InputError(source, f"'{key}' must be a list")
    triplets = [parse_spo(item, label=f"{key}[{index}]", source=source) for index, item in enumerate(value)]
    return tuple(dict.fromkeys(triplets))


def parse_spo(item: object, *, label: str = "spo", source: str = RECORD) -> Triplet:
    """One spo item; subject, predicate and object must be non-empty, the types may be missing."""
    if not isinstance(item, dict):
        raise InputError(source, f"{label}: not an object")
    fields: dict[str, str] = {}
    for key in FIELDS:
        value = item.get(key)
        if isinstance(value, dict):  # a complex value: {"@value": ..., "inWork": ...}
            value = value.get("@value")
        if value is None and key not in _REQUIRED:
            value = ""
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            problem = "missing" if value is None else "not a string"
            raise InputError(source, f"{label}: '{key}' is {problem}")
        if key in _REQUIRED and not value.strip():
            raise InputError(source, f"{label}: empty '{key}'")
        fields[key] = value.strip()
    return Triplet(**fields)


def format_record(text: str, triplets: Iterable[Triplet]) -> dict[str, object]:
    """A DuIE 2.0 record; objects and object types in the complex ``{"@value": ...}`` shape."""
    spo_list = [
        {
            "subject": t.subject,
            "subject_type": t.subject_type,
            "predicate": t.predicate,
            "object": {"@value": t.object},
            "object_type": {"@value": t.object_type},
        }
        for t in triplets
    ]
    return {"text": text, "spo_list": spo_list}


def write_jsonl(path: Path, examples: Iterable[tuple[str, Iterable[Triplet]]]) -> None:
    """``examples`` as DuIE 2.0 lines, UTF-8."""
    with Path(path).open("w", encoding="utf-8") as out:
        out.writelines(
            json.dumps(format_record(text, triplets), ensure_ascii=False) + "\n" for text, triplets in examples
        )


def read_jsonl(path: Path) -> list[tuple[str, tuple[Triplet, ...]]]:
    """Every record of a DuIE 2.0 JSONL file we wrote ourselves; the first bad line raises.

    A user's files go through ``models.training_data``, which skips and reports bad lines.
    """
    examples = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            source = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(source, f"invalid JSON: {err.msg} at column {err.colno}") from err
            examples.append(parse_record(record, source=source))
    return examples
