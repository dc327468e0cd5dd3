"""Stream (text, gold triplets) training examples out of JSONL files of several shapes.

Each line's shape is detected on its own, so files may even mix them:

* DuIE 2.0: ``{"text", "spo_list": [...]}``, read by ``models.duie`` (``object``/``object_type``
  may be strings or ``{"@value": ...}`` dicts);
* the origin project's instruction format: ``{"instruction", "input", "output"}`` with the
  text in ``input`` and a (possibly ```json fenced) JSON list string in ``output``;
* ``{"context", "target"}``: ``target`` as ``output`` above; ``context`` may be a whole
  prompt, so when it contains "文本：" the text is what follows its last occurrence, less
  surrounding whitespace and a trailing answer cue ("答案：") of a known prompt template;
* ``{"text", "triplets": [{...}, ...]}``, its items read as DuIE spo items.

An unusable line is handed to ``on_error`` as ``InputError("path:line", reason)`` and
reading goes on, as in producer.readers; both open a user's text file through
``models.textfile``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path

from models.duie import parse_record, parse_spo_list, require_text
from models.errors import InputError, ParseError
from models.parser import parse_triplets
from models.prompt import TEMPLATES
from models.textfile import INVALID_TEXT, SNIFF_BYTES, bounded_lines, parse_lines, sniff_encoding, text_stream
from models.triplet import Triplet

TEXT_MARKER = "文本："
# A training example is cut to max_length tokens anyway: a longer line is skipped, never held whole.
MAX_LINE_CHARS = 4_000_000
CHECK_LINES = 300
_ANSWER_CUES = tuple(dict.fromkeys(template.answer_cue for template in TEMPLATES.values()))
ErrorHandler = Callable[[InputError], None]


@dataclass(frozen=True, slots=True)
class TrainingExample:
    text: str
    triplets: tuple[Triplet, ...]
    source: str  # "path:line"


def iter_training_examples(
    path: Path, on_error: ErrorHandler, *, max_lines: int | None = None
) -> Iterator[TrainingExample]:
    """Yield the examples of the JSONL file at ``path`` (of its first ``max_lines`` lines when given);
    report each unusable line via on_error and go on."""
    path = Path(path)
    try:
        binary = path.open("rb")
    except FileNotFoundError:
        on_error(InputError(str(path), "no such file"))
        return
    except OSError as err:
        on_error(InputError(str(path), f"cannot read: {err.strerror or err}"))
        return
    with binary:
        try:
            codec, encoding = sniff_encoding(binary.read(SNIFF_BYTES))
            binary.seek(0)
            lines = bounded_lines(text_stream(binary, codec, newline="\n"), MAX_LINE_CHARS)
            parse = partial(_example, path=str(path), encoding=encoding)
            yield from parse_lines(islice(lines, max_lines), parse, on_error, name=str(path),
                                   invalid=f"not valid {encoding}")
        except OSError as err:
            on_error(InputError(str(path), f"cannot read: {err.strerror or err}"))


def _example(line: str | int, number: int, *, path: str, encoding: str) -> TrainingExample | None:
    source = f"{path}:{number}"
    if isinstance(line, int):
        raise InputError(source, f"line of {line:,} characters, longer than {MAX_LINE_CHARS:,}")
    if not line.strip():
        return None
    if INVALID_TEXT.search(line):
        # Undecodable bytes anywhere in the line, or JSON's escaped lone surrogates below.
        raise InputError(source, f"not valid {encoding}")
    text, triplets = _parse_line(line, source)
    return TrainingExample(text, triplets, source)


def require_examples(path: Path, *, option: str, where: str = "") -> None:
    """Raise InputError unless ``path`` is a file with a usable example among its first CHECK_LINES lines.

    ``where`` is added to path errors, e.g. that the path is as a worker elsewhere sees it."""
    label = f"{option} {path}"
    if not path.exists():
        raise InputError(label, f"no such file{where}")
    if not path.is_file():
        raise InputError(label, f"not a file{where}")
    problems: list[InputError] = []
    if next(iter_training_examples(path, problems.append, max_lines=CHECK_LINES), None) is not None:
        return
    first = f" ({problems[0]})" if problems else " (the file is empty)"
    raise InputError(label, f"no usable training example in its first {CHECK_LINES} lines{first}")


def require_model_folder(path: Path, *, option: str, where: str = "") -> None:
    """Raise InputError unless ``path`` is a model folder (one holding config.json)."""
    label = f"{option} {path}"
    if not path.exists():
        raise InputError(label, f"no such folder{where}")
    if not path.is_dir():
        raise InputError(label, f"not a folder{where}")
    if not (path / "config.json").is_file():
        raise InputError(label, f"no config.json: not a model folder{where}")


def _parse_line(line: str, source: str) -> tuple[str, tuple[Triplet, ...]]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise InputError(source, f"invalid JSON: {err.msg} at column {err.colno}") from err
    if not isinstance(record, dict):
        raise InputError(source, "expected a JSON object")
    if "spo_list" in record:
        text, triplets = parse_record(record, source=source)
    elif "output" in record and ("input" in record or "instruction" in record):
        text, triplets = require_text(record, "input", source), _answer(record["output"], "output", source)
    elif "context" in record and "target" in record:
        context = require_text(record, "context", source)
        text, triplets = _context_text(context, source), _answer(record["target"], "target", source)
    elif "triplets" in record:
        text = require_text(record, "text", source)
        triplets = parse_spo_list(record["triplets"], source=source, key="triplets")
    else:
        keys = ", ".join(sorted(record)) or "none"
        raise InputError(source, f"unknown record shape (keys: {keys})")
    # JSON may escape lone surrogates ("\ud800"); such strings cannot be stored as UTF-8 later.
    if any(INVALID_TEXT.search(value) for value in (text, *(v for t in triplets for v in t.key))):
        raise InputError(source, "not valid UTF-8")
    return text, triplets


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
