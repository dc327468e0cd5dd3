"""Reading a user's text file: UTF-8, or UTF-16/32 by BOM; one bad byte or bad line costs one line; no line
held whole past a bound."""

from __future__ import annotations

import codecs
import io
import re
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO, TypeVar

from models.errors import InputError

Parsed = TypeVar("Parsed")
SNIFF_BYTES = 8192
INVALID_TEXT = re.compile("[\ud800-\udfff]")  # what undecodable bytes become, and JSON's lone "\ud800"
# UTF-32 first: its little-endian BOM begins with UTF-16's.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32", "UTF-32"),
    (codecs.BOM_UTF32_BE, "utf-32", "UTF-32"),
    (codecs.BOM_UTF16_LE, "utf-16", "UTF-16"),
    (codecs.BOM_UTF16_BE, "utf-16", "UTF-16"),
)


def sniff_encoding(head: bytes) -> tuple[str, str]:
    """(codec, name for messages) of a file starting with ``head``: UTF-16/32 by their BOM, else UTF-8."""
    for bom, codec, name in _BOMS:
        if head.startswith(bom):
            return codec, name
    return "utf-8-sig", "UTF-8"


def text_stream(binary: BinaryIO, codec: str, *, newline: str) -> io.TextIOWrapper:
    """Decode ``binary`` lazily. A bad UTF-8 byte or a lone UTF-16 surrogate becomes a lone surrogate
    in the text (find them with INVALID_TEXT), so it costs its own line, not the file."""
    errors = "surrogateescape" if codec == "utf-8-sig" else "surrogatepass"
    return io.TextIOWrapper(binary, encoding=codec, errors=errors, newline=newline)


def bounded_lines(stream: io.TextIOWrapper, limit: int, *, ends: str = "\n") -> Iterator[str | int]:
    """Each line of ``stream``; for a line longer than ``limit`` characters, its length instead:
    it is read past in chunks, so a 5 GB line never sits in memory. ``ends``: the line endings
    the stream was opened with ("\r\n" for newline="")."""
    while line := stream.readline(limit):
        if len(line) < limit or line[-1] in ends:
            yield line
            continue
        length = len(line)
        while (chunk := stream.readline(65536)) and chunk[-1] not in ends:
            length += len(chunk)
        yield length + len(chunk.rstrip("\r\n"))


def parse_lines(
    lines: Iterable[str | int], parse: Callable[[str | int, int], Parsed | None],
    on_error: Callable[[InputError], None], *, name: str, invalid: str,
) -> Iterator[Parsed]:
    """``parse(line, number)`` of each of ``lines`` (as bounded_lines gives them, numbered from 1) that
    is not None. An InputError it raises costs its line only: it goes to ``on_error`` and reading goes
    on. A decoding error ends the file there, reported as ``f"{name}:{line}: {invalid}"``."""
    number = 0
    try:
        for number, line in enumerate(lines, start=1):
            try:
                parsed = parse(line, number)
            except InputError as err:
                on_error(err)
                continue
            if parsed is not None:
                yield parsed
    except UnicodeDecodeError:  # only UTF-16/32 can fail (a cut-off last character): the file ends there
        on_error(InputError(f"{name}:{number + 1}", invalid))
