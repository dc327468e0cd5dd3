"""Stream (text, gold triplets) training examples out of JSONL files of several shapes.

Each line's shape is detected on its own, so files may even mix them:

* DuIE 2.0: ``{"text", "spo_list": [...]}``; ``object``/``object_type`` may be strings or
  ``{"@value": ...}`` dicts (the extra slots such as ``inWork`` are dropped);
* the origin project's instruction format: ``{"instruction", "input", "output"}`` with the
  text in ``input`` and a (possibly ```json fenced) JSON list string in ``output``;
* ``{"context", "target"}``: ``target`` as ``output`` above; ``context`` may be a whole
  prompt, so when it contains "文本：" the text is what follows its last occurrence, less
  surrounding whitespace and a trailing answer cue ("答案：") of a known prompt template;
* ``{"text", "triplets": [{...}, ...]}``.

An unusable line is handed to ``on_error`` as ``InputError("path:line", reason)`` and
reading goes on, as in producer.readers.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from models.errors import InputError, ParseError
from models.parser import parse_triplets
from models.prompt import TEMPLATES
from models.triplet import FIELDS, Triplet

TEXT_MARKER = "文本："
_REQUIRED = ("subject", "predicate", "object")
_SURROGATE = re.compile("[\ud800-\udfff]")
_ANSWER_CUES = tuple(dict.fromkeys(template.answer_cue for template in TEMPLATES.values()))

ErrorHandler = Callable[[InputError], None]


@dataclass(frozen=True, slots=True)
class TrainingExample:
    text: str
    triplets: tuple[Triplet, ...]
    source: str  # "path:line"


def iter_training_examples(path: Path, on_error: ErrorHandler) -> Iterator[TrainingExample]:
    """Yield the examples of the JSONL file at ``path``; report each unusable line via on_error and go on."""
    path = Path(path)
    try:
        stream = path.open("rb")
    except FileNotFoundError:
        on_error(InputError(str(path), "no such file"))
        return
    except OSError as err:
        on_error(InputError(str(path), f"cannot read: {err.strerror or err}"))
        return
    with stream:
        # Binary mode with per-line decoding: one bad byte costs one line, not the file.
        for number, raw in enumerate(stream, start=1):
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            source = f"{path}:{number}"
            try:
                line = raw.decode("utf-8")
                if not line.strip():
                    continue
                text, triplets = _parse_line(line, source)
            except UnicodeDecodeError:
                on_error(InputError(source, "not valid UTF-8"))
                continue
            except InputError as err:
                on_error(err)
                continue
            yield TrainingExample(text, triplets, source)


def _parse_line(line: str, source: str) -> tuple[str, tuple[Triplet, ...]]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise InputError(source, f"invalid JSON: {err.msg} at column {err.colno}") from err
    if not isinstance(record, dict):
        raise InputError(source, "expected a JSON object")
    if "spo_list" in record:
        text, triplets = _text(record, "text", source), _triplet_list(record["spo_list"], "spo_list", source)
    elif "output" in record and ("input" in record or "instruction" in record):
        text, triplets = _text(record, "input", source), _answer(record["output"], "output", source)
    elif "context" in record and "target" in record:
        context = _text(record, "context", source)
        text, triplets = _context_text(context, source), _answer(record["target"], "target", source)
    elif "triplets" in record:
        text, triplets = _text(record, "text", source), _triplet_list(record["triplets"], "triplets", source)
    else:
        keys = ", ".join(sorted(record)) or "none"
        raise InputError(source, f"unknown record shape (keys: {keys})")
    # JSON may escape lone surrogates ("\ud800"); such strings cannot be stored as UTF-8 later.
    if any(_SURROGATE.search(value) for value in (text, *(v for t in triplets for v in t.key))):
        raise InputError(source, "not valid UTF-8")
    return text, triplets


def _text(record: dict[str, object], key: str, source: str) -> str:
    if key not in record:
        raise InputError(source, f"missing '{key}'")
    text = record[key]
    # Kept verbatim (not stripped): DuIE annotations may refer to character offsets.
    if not isinstance(text, str) or not text.strip():
        raise InputError(source, f"'{key}' must be a non-empty string")
    return text


def _context_text(context: str, source: str) -> str:
    if TEXT_MARKER not in context:
        return context
    text = context.rpartition(TEXT_MARKER)[2].strip()
    for cue in _ANSWER_CUES:
        text = text.removesuffix(cue).rstrip()
    if not text:
        raise InputError(source, f"'context' has nothing after '{TEXT_MARKER}'")
    return text


def _answer(value: object, key: str, source: str) -> tuple[Triplet, ...]:
    if not isinstance(value, str):
        raise InputError(source, f"'{key}' must be a string holding a JSON list")
    try:
        return tuple(parse_triplets(value))
    except ParseError as err:
        raise InputError(source, f"bad '{key}': {err.reason}") from err


def _triplet_list(value: object, key: str, source: str) -> tuple[Triplet, ...]:
    if not isinstance(value, list):
        raise InputError(source, f"'{key}' must be a list")
    triplets = [_triplet(item, f"{key}[{index}]", source) for index, item in enumerate(value)]
    return tuple(dict.fromkeys(triplets))


def _triplet(item: object, label: str, source: str) -> Triplet:
    if not isinstance(item, dict):
        raise InputError(source, f"{label}: not an object")
    fields: dict[str, str] = {}
    for key in FIELDS:
        value = item.get(key)
        if isinstance(value, dict):  # DuIE complex value: {"@value": ..., "inWork": ...}
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
