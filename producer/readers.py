"""Stream documents out of .txt, .jsonl and .csv files and folders of them.

Every file is read incrementally, so corpus size never shows up in memory use.
An unusable line, row or file is handed to ``on_error`` and reading goes on.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from models.errors import InputError

SUFFIXES = (".txt", ".jsonl", ".csv")
_SURROGATE = re.compile("[\ud800-\udfff]")
_NOT_UTF8 = "not valid UTF-8"


@dataclass(frozen=True, slots=True)
class RawDocument:
    text: str
    external_id: str  # the record's own "id" when given, else f"{path.name}:{line}"
    source: str  # f"{path}:{line}" where the record starts, for error messages


ErrorHandler = Callable[[InputError], None]


def iter_documents(paths: Iterable[Path | str], on_error: ErrorHandler) -> Iterator[RawDocument]:
    """Stream documents from files and folders; report each unusable line/file via on_error and go on."""
    for given in paths:
        path = Path(given)
        if path.is_dir():
            for file in _walk(path):
                yield from _read_file(file, on_error)
        elif not path.exists():
            on_error(InputError(str(path), "no such file or directory"))
        elif path.suffix.lower() not in SUFFIXES:
            on_error(InputError(str(path), f"unsupported file type '{path.suffix}' (expected .txt, .jsonl or .csv)"))
        else:
            yield from _read_file(path, on_error)


def _walk(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())


def _read_file(path: Path, on_error: ErrorHandler) -> Iterator[RawDocument]:
    try:
        stream = path.open("rb")
    except OSError as err:
        on_error(InputError(str(path), f"cannot read: {err.strerror or err}"))
        return
    with stream:
        suffix = path.suffix.lower()
        if suffix == ".csv":
            yield from _read_csv(stream, path, on_error)
        else:
            yield from _read_lines(stream, path, _parse_txt if suffix == ".txt" else _parse_jsonl, on_error)


def _read_lines(
    stream: BinaryIO, path: Path, parse: Callable[[str, Path, int], RawDocument | None], on_error: ErrorHandler
) -> Iterator[RawDocument]:
    # Binary mode with per-line decoding: one bad byte costs one line, not the file.
    for number, raw in enumerate(stream, start=1):
        if number == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        try:
            document = parse(raw.decode("utf-8"), path, number)
        except UnicodeDecodeError:
            on_error(InputError(f"{path}:{number}", _NOT_UTF8))
            continue
        except InputError as err:
            on_error(err)
            continue
        if document is not None:
            yield document


def _parse_txt(line: str, path: Path, number: int) -> RawDocument | None:
    text = line.strip()
    if not text:
        return None
    return RawDocument(text, f"{path.name}:{number}", f"{path}:{number}")


def _parse_jsonl(line: str, path: Path, number: int) -> RawDocument | None:
    if not line.strip():
        return None
    source = f"{path}:{number}"
    try:
        record = json.loads(line)
    except ValueError as err:
        reason = f"{err.msg} at column {err.colno}" if isinstance(err, json.JSONDecodeError) else str(err)
        raise InputError(source, f"invalid JSON: {reason}") from err
    if not isinstance(record, dict):
        raise InputError(source, "expected a JSON object")
    if "text" not in record:
        raise InputError(source, "missing 'text'")
    text = record["text"]
    # Text is kept verbatim (not stripped): DuIE annotations may refer to character offsets.
    if not isinstance(text, str) or not text.strip():
        raise InputError(source, "'text' must be a non-empty string")
    # JSON may escape lone surrogates ("\ud800"); such text cannot be stored as UTF-8 later.
    if _SURROGATE.search(text):
        raise InputError(source, _NOT_UTF8)
    return RawDocument(text, _external_id(record.get("id"), path, number), source)


def _external_id(value: object, path: Path, number: int) -> str:
    if value is None or value == "":
        return f"{path.name}:{number}"
    # bool is an int subclass, but true/false is surely not meant as an id.
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(f"{path}:{number}", "'id' must be a string or an integer")
    return str(value)


def _read_csv(binary: BinaryIO, path: Path, on_error: ErrorHandler) -> Iterator[RawDocument]:
    # csv needs decoded text with newline="" so quoted fields may span lines;
    # surrogateescape defers bad bytes to a per-row check instead of killing the file.
    with io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape", newline="") as stream:
        reader = csv.reader(stream)
        try:
            header = next(reader, None)
        except csv.Error as err:
            on_error(InputError(f"{path}:1", f"malformed CSV header: {err}"))
            return
        if header is not None and _has_surrogates(header):
            on_error(InputError(f"{path}:{reader.line_num}", _NOT_UTF8))
            return
        columns = [name.strip() for name in header or []]
        if "text" not in columns:
            listed = ", ".join(columns) if columns else "file is empty"
            on_error(InputError(str(path), f"no 'text' column (columns: {listed})"))
            return
        text_at = columns.index("text")
        id_at = columns.index("id") if "id" in columns else None
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                on_error(InputError(f"{path}:{start}", f"malformed CSV row: {err}"))
                if reader.line_num < start:  # the reader made no progress: it cannot go on
                    return
                continue
            if not row:  # blank line; DictReader skips these too
                continue
            try:
                document = _csv_document(row, text_at, id_at, path, start)
            except InputError as err:
                on_error(err)
                continue
            yield document


def _csv_document(row: list[str], text_at: int, id_at: int | None, path: Path, start: int) -> RawDocument:
    source = f"{path}:{start}"
    if _has_surrogates(row):
        raise InputError(source, _NOT_UTF8)
    text = row[text_at] if text_at < len(row) else ""
    if not text.strip():
        raise InputError(source, "'text' is empty")
    row_id = row[id_at].strip() if id_at is not None and id_at < len(row) else ""
    return RawDocument(text, row_id or f"{path.name}:{start}", source)


def _has_surrogates(values: list[str]) -> bool:
    return any(_SURROGATE.search(value) for value in values)
