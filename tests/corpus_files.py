"""Corpus files for the readers' tests: writing them, and reading them as `triplets submit` does."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from models.errors import InputError
from producer.readers import RawDocument, iter_documents
from producer.submit import resolve_corpus


def read(*paths: Path | str, max_chars: int = 1_000_000) -> tuple[list[RawDocument], list[InputError]]:
    """Documents and errors of the files and folders ``paths``, as `triplets submit` reads them."""
    errors: list[InputError] = []
    documents = list(iter_documents(resolve_corpus(paths, errors.append), errors.append, max_chars=max_chars))
    return documents, errors


def messages(errors: list[InputError]) -> list[str]:
    return [str(e) for e in errors]


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pixels = zlib.compress(b"".join(b"\x00" + bytes(range(48)) for _ in range(16)))
    header = struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
