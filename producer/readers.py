"""Stream documents out of .txt, .jsonl and .csv files.

Every file is read incrementally, and no line longer than a bound is ever held whole, so
corpus size never shows up in memory use. UTF-8 (with or without BOM) is the default;
UTF-16 and UTF-32 files are recognised by their BOM. An unusable line, row or file is
handed to ``on_error`` and reading goes on. Which files make a corpus is producer.submit's
``resolve_corpus``.
"""

from __future__ import annotations

import csv
import errno
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

from models.errors import InputError
from models.settings import Settings
from models.textfile import INVALID_TEXT, SNIFF_BYTES, bounded_lines, parse_lines, sniff_encoding, text_stream

SUFFIXES = (".txt", ".jsonl", ".csv")
EXPECTED = "expected .txt, .jsonl or .csv"
DEFAULT_MAX_CHARS: int = Settings.model_fields["max_document_chars"].default
# Control characters that do not occur in text; a head with many of them (or of undecodable
# bytes, shown as U+FFFD) is binary. A stray NUL in a text file stays a per-line problem.
_BINARY_CHAR = re.compile("[\x00-\x08\x0e-\x1a\x1c-\x1f\ufffd]")
_BINARY_SHARE = 0.3
# Whitespace, control and zero-width characters do not make a document.
_VISIBLE = re.compile("[^\\s\x00-\x1f\x7f-\x9f\u200b-\u200d\u2060\ufeff]")
_SUSPECT = re.compile("[\x00\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class RawDocument:
    text: str
    external_id: str  # the record's own "id" when given, else f"{path.name}:{line}"
    source: str  # f"{path}:{line}" where the record starts, for error messages


ErrorHandler = Callable[[InputError], None]


def shown(path: Path | str) -> str:
    """``path`` as text that can be printed and stored: undecodable bytes of a file name become U+FFFD."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def os_reason(err: OSError) -> str:
    if err.errno == errno.ENOENT:
        return "no such file or directory"
    if err.errno == errno.ELOOP:
        return "symbolic link loop"
    return f"cannot read: {err.strerror or err}"


def iter_documents(
    files: Iterable[Path | str], on_error: ErrorHandler, *, max_chars: int = DEFAULT_MAX_CHARS
) -> Iterator[RawDocument]:
    """Stream the documents of ``files``; report each unusable file, line or record via on_error and go on.

    A record of more than ``max_chars`` characters is one of them.
    """
    for given in files:
        file = Path(given)
        if file.suffix.lower() in SUFFIXES:
            yield from _read_file(file, max_chars, on_error)
        else:
            on_error(InputError(shown(file), f"unsupported file type '{file.suffix}' ({EXPECTED})"))


def _read_file(path: Path, max_chars: int, on_error: ErrorHandler) -> Iterator[RawDocument]:
    try:
        binary = path.open("rb")
    except OSError as err:
        on_error(InputError(shown(path), os_reason(err)))
        return
    with binary:
        try:
            head = binary.read(SNIFF_BYTES)
            codec, encoding = sniff_encoding(head)
            if _looks_binary(head, codec):
                on_error(InputError(shown(path), "binary file, not text"))
                return
            binary.seek(0)
            suffix = path.suffix.lower()
            file = _File(shown(path), shown(path.name), f"not valid {encoding}", max_chars, suffix == ".txt")
            if suffix == ".csv":
                stream = text_stream(binary, codec, newline="")
                yield from _read_csv(bounded_lines(stream, file.line_limit, ends="\r\n"), file, on_error)
            else:
                parse = partial(_line_document, file=file, parse=_parse_txt if file.line_is_record else _parse_jsonl)
                stream = text_stream(binary, codec, newline="\n")
                lines = bounded_lines(stream, file.line_limit)
                yield from parse_lines(lines, parse, on_error, name=file.name, invalid=file.invalid)
        except OSError as err:
            on_error(InputError(shown(path), os_reason(err)))


def _looks_binary(head: bytes, codec: str) -> bool:
    text = head.decode(codec, errors="replace")
    return len(_BINARY_CHAR.findall(text)) > _BINARY_SHARE * len(text)


@dataclass(frozen=True, slots=True)
class _File:
    name: str  # the path, printable
    base: str  # its last part, for default ids
    invalid: str  # "not valid UTF-8" (or UTF-16 …)
    max_chars: int
    line_is_record: bool  # .txt; a JSON or CSV line may hold several times its text (escapes, other fields)

    @property
    def line_limit(self) -> int:
        return self.max_chars + 4096 if self.line_is_record else 8 * self.max_chars + 4096

    def too_long(self, length: int, what: str = "") -> str:
        return f"{what}{length:,} characters, more than TRIPLETS_MAX_DOCUMENT_CHARS ({self.max_chars:,})"

    def too_long_line(self, length: int) -> str:
        return self.too_long(length, "" if self.line_is_record else "line of ")


Parser = Callable[[str, _File, int], RawDocument]


def _line_document(line: str | int, number: int, *, file: _File, parse: Parser) -> RawDocument | None:
    source = f"{file.name}:{number}"
    if isinstance(line, int):
        raise InputError(source, file.too_long_line(line))
    if not line.rstrip("\r\n"):  # an empty line separates documents: no message
        return None
    _check_raw(line, source, file)
    return parse(line, file, number)


def _check_raw(line: str, source: str, file: _File, label: str = "") -> None:
    if _SUSPECT.search(line) is None:  # one pass for the common case
        return
    if INVALID_TEXT.search(line):
        raise InputError(source, f"{label}{file.invalid}")
    if "\x00" in line:  # PostgreSQL cannot store NUL in text
        raise InputError(source, f"{label}contains NUL bytes")


def _check_text(text: str, source: str, file: _File, field: str = "") -> None:
    """Reject text that would be stored as garbage, or could fail the whole insert later."""
    label = f"{field}: " if field else ""
    if field and not text:
        raise InputError(source, f"{field} is empty")
    if _VISIBLE.search(text) is None:
        raise InputError(source, f"{label}no visible text")
    if field:  # JSON may escape NUL and lone surrogates
        _check_raw(text, source, file, label)
    if len(text) > file.max_chars:
        raise InputError(source, file.too_long(len(text), label))


def _parse_txt(line: str, file: _File, number: int) -> RawDocument:
    text = line.strip()
    _check_text(text, f"{file.name}:{number}", file)
    return RawDocument(text, f"{file.base}:{number}", f"{file.name}:{number}")


def _parse_jsonl(line: str, file: _File, number: int) -> RawDocument:
    source = f"{file.name}:{number}"
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
    if not isinstance(text, str):
        raise InputError(source, "'text' must be a string")
    # Text is kept verbatim (not stripped): DuIE annotations may refer to character offsets.
    _check_text(text, source, file, "'text'")
    return RawDocument(text, _external_id(record.get("id"), file, number), source)


def _external_id(value: object, file: _File, number: int) -> str:
    if value is None or value == "":
        return f"{file.base}:{number}"
    # bool is an int subclass, but true/false is surely not meant as an id.
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(f"{file.name}:{number}", "'id' must be a string or an integer")
    _check_raw(str(value), f"{file.name}:{number}", file, "'id': ")
    return str(value)


def _read_csv(lines: Iterator[str | int], file: _File, on_error: ErrorHandler) -> Iterator[RawDocument]:
    too_long: dict[int, int] = {}  # line number -> length of the lines left out below
    # Lines over the limit reach the csv module as empty lines; rows spanning them are dropped.
    reader = csv.reader(_placeholders(lines, too_long))
    if csv.field_size_limit() < file.line_limit:  # process-wide, so only ever raised
        csv.field_size_limit(file.line_limit)
    try:
        header = next(reader, None)
        if _dropped(too_long, 1, reader.line_num, file, on_error):
            return
        columns = _csv_columns(header, file)
    except (csv.Error, InputError) as err:
        on_error(err if isinstance(err, InputError) else InputError(f"{file.name}:1", f"malformed CSV header: {err}"))
        return
    except UnicodeDecodeError:
        on_error(InputError(f"{file.name}:{reader.line_num + 1}", file.invalid))
        return
    yield from _csv_rows(reader, columns, file, too_long, on_error)


def _placeholders(lines: Iterator[str | int], too_long: dict[int, int]) -> Iterator[str]:
    for number, line in enumerate(lines, start=1):
        if isinstance(line, int):
            too_long[number] = line
            yield "\n"
        else:
            yield line


def _dropped(too_long: dict[int, int], start: int, end: int, file: _File, on_error: ErrorHandler) -> bool:
    """Report the over-long lines among start..end; True if there were any (the row is not read)."""
    numbers = [n for n in too_long if start <= n <= end]
    for number in numbers:
        on_error(InputError(f"{file.name}:{number}", file.too_long_line(too_long.pop(number))))
    return bool(numbers)


def _csv_columns(header: list[str] | None, file: _File) -> tuple[int, int | None]:
    if header is not None and any(INVALID_TEXT.search(name) for name in header):
        raise InputError(f"{file.name}:1", file.invalid)
    columns = [name.strip() for name in header or []]
    if "text" not in columns:
        listed = ", ".join(columns) if columns else "file is empty"
        raise InputError(file.name, f"no 'text' column (columns: {listed})")
    return columns.index("text"), columns.index("id") if "id" in columns else None


class _CsvReader(Protocol):
    """What csv.reader returns, as far as it is used here (its class is private to the csv module)."""

    line_num: int

    def __next__(self) -> list[str]: ...


def _csv_rows(
    reader: _CsvReader, columns: tuple[int, int | None], file: _File, too_long: dict[int, int],
    on_error: ErrorHandler,
) -> Iterator[RawDocument]:
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError:
            on_error(InputError(f"{file.name}:{start}", file.invalid))
            return
        except csv.Error as err:
            on_error(InputError(f"{file.name}:{start}", f"malformed CSV row: {err}"))
            if reader.line_num < start:  # the reader made no progress: it cannot go on
                return
            continue
        if _dropped(too_long, start, reader.line_num, file, on_error) or not row:  # not row: a blank line
            continue
        try:
            yield _csv_document(row, columns, file, start)
        except InputError as err:
            on_error(err)


def _csv_document(row: list[str], columns: tuple[int, int | None], file: _File, start: int) -> RawDocument:
    source = f"{file.name}:{start}"
    text_at, id_at = columns
    if any(INVALID_TEXT.search(value) for value in row):
        raise InputError(source, file.invalid)
    text = row[text_at] if text_at < len(row) else ""
    _check_text(text, source, file, "'text'")
    row_id = row[id_at].strip() if id_at is not None and id_at < len(row) else ""
    if row_id:
        _check_raw(row_id, source, file, "'id': ")
    return RawDocument(text, row_id or f"{file.base}:{start}", source)
