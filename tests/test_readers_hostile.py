"""Tests for producer.readers against hostile input: invisible text, NUL bytes, UTF-16/32, binary files,
records over the limit, huge files. The same cases through the CLI are in test_hostile_input.py."""

from __future__ import annotations

import json
import random
import tracemalloc
from pathlib import Path

import pytest

from models.errors import InputError
from producer.readers import iter_documents
from tests.corpus_files import messages, read, tiny_png, write

# --- hostile lines ----------------------------------------------------------

INVISIBLE = [" \t ", "\u3000", "\u200b", "\u200b\u200c\u200d", "\u2060", "\ufeff", "\x01\x02", "\x7f\u200b"]


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".csv"])
def test_lines_without_visible_text_are_reported_line_by_line(tmp_path: Path, suffix: str) -> None:
    values = ["前", *INVISIBLE, "后"]
    if suffix == ".txt":
        body, first, label = "\n".join(values), 1, ""
    elif suffix == ".jsonl":
        body, first, label = "\n".join(json.dumps({"text": v}) for v in values), 1, "'text': "
    else:
        body, first, label = "text\n" + "\n".join(f'"{v}"' for v in values), 2, "'text': "
    path = write(tmp_path / f"v{suffix}", body + "\n")
    documents, errors = read(path)
    assert [d.text for d in documents] == ["前", "后"]
    lines = range(first + 1, first + 1 + len(INVISIBLE))
    assert messages(errors) == [f"{path}:{n}: {label}no visible text" for n in lines]


def test_nul_bytes_cost_their_line_only(tmp_path: Path) -> None:
    txt = write(tmp_path / "n.txt", "好\na\x00b\n也好\n")
    jsonl = write(tmp_path / "n.jsonl", '{"text": "a\\u0000b"}\n{"text": "ok", "id": "x\\u0000"}\n{"text": "甲"}\n')
    csv_file = write(tmp_path / "n.csv", "id,text\n1,a\x00b\n2\x00,c\n3,乙\n")
    documents, errors = read(txt, jsonl, csv_file)
    assert [d.text for d in documents] == ["好", "也好", "甲", "乙"]
    assert messages(errors) == [
        f"{txt}:2: contains NUL bytes",
        f"{jsonl}:1: 'text': contains NUL bytes",
        f"{jsonl}:2: 'id': contains NUL bytes",
        f"{csv_file}:2: 'text': contains NUL bytes",
        f"{csv_file}:3: 'id': contains NUL bytes",
    ]


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_files_with_a_bom_are_decoded(tmp_path: Path, codec: str) -> None:
    bom = {"utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff"}.get(codec, b"")
    def encode(text: str) -> bytes:
        return bom + text.encode(codec)
    txt = write(tmp_path / "w.txt", encode("第一行\r\n\r\n第二行 \r\n"))
    jsonl = write(tmp_path / "w.jsonl", encode('{"text": "甲", "id": "j1"}\r\n{"text": "乙"}\r\n'))
    csv_file = write(tmp_path / "w.csv", encode('id,text\r\nc1,"多\r\n行"\r\nc2,丙\r\n'))
    documents, errors = read(txt, jsonl, csv_file)
    assert errors == []
    assert [(d.text, d.external_id) for d in documents] == [
        ("第一行", "w.txt:1"), ("第二行", "w.txt:3"), ("甲", "j1"), ("乙", "w.jsonl:2"), ("多\r\n行", "c1"),
        ("丙", "c2"),
    ]


def test_broken_utf16_costs_a_line_or_the_cut_off_end(tmp_path: Path) -> None:
    lone_surrogate = b"\x00\xd8"  # UTF-16-LE of U+D800 alone
    content = b"\xff\xfe" + "好\n".encode("utf-16-le") + lone_surrogate + "\n也好\n末".encode("utf-16-le") + b"\x00"
    path = write(tmp_path / "u.txt", content)
    documents, errors = read(path)
    assert [d.text for d in documents] == ["好", "也好"]
    assert messages(errors) == [f"{path}:2: not valid UTF-16", f"{path}:4: not valid UTF-16"]


@pytest.mark.parametrize(
    "content", [tiny_png(), b"\x00\x01" + random.Random(0).randbytes(50_000)], ids=["png", "random"]
)
def test_binary_file_renamed_txt_is_one_message(tmp_path: Path, content: bytes) -> None:
    binary = write(tmp_path / "image.txt", content)
    good = write(tmp_path / "good.txt", "正文\n")
    documents, errors = read(binary, good)
    assert [d.text for d in documents] == ["正文"]
    assert messages(errors) == [f"{binary}: binary file, not text"]


# --- records over TRIPLETS_MAX_DOCUMENT_CHARS -------------------------------


def test_record_at_the_limit_is_read_one_over_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path / "l.txt", f"{'a' * 100}\n  {'b' * 101}  \n{'c' * 5}\n")
    jsonl = write(tmp_path / "l.jsonl", json.dumps({"text": "中" * 101}) + "\n" + json.dumps({"text": "中" * 100}) + "\n")
    csv_file = write(tmp_path / "l.csv", f"text\n{'x' * 101}\nok\n")
    documents, errors = read(path, jsonl, csv_file, max_chars=100)
    assert [len(d.text) for d in documents] == [100, 5, 100, 2]
    over = "more than TRIPLETS_MAX_DOCUMENT_CHARS (100)"
    assert messages(errors) == [
        f"{path}:2: 101 characters, {over}",
        f"{jsonl}:1: 'text': 101 characters, {over}",
        f"{csv_file}:2: 'text': 101 characters, {over}",
    ]


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".csv"])
def test_5mb_line_is_skipped_without_holding_it(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"huge{suffix}"
    with path.open("w", encoding="utf-8") as out:
        out.write("text\n" if suffix == ".csv" else "")
        out.write(json.dumps({"text": "前"}, ensure_ascii=False) + "\n" if suffix == ".jsonl" else "前\n")
        out.write("x" * 5_000_000 + "\n")
        out.write(json.dumps({"text": "后"}, ensure_ascii=False) + "\n" if suffix == ".jsonl" else "后\n")
    errors: list[InputError] = []
    tracemalloc.start()
    try:
        documents = [d.text for d in iter_documents([path], errors.append, max_chars=1000)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert documents == ["前", "后"]
    line = 3 if suffix == ".csv" else 2
    length = "5,000,000 characters" if suffix == ".txt" else "line of 5,000,000 characters"
    assert messages(errors) == [f"{path}:{line}: {length}, more than TRIPLETS_MAX_DOCUMENT_CHARS (1,000)"]
    assert peak < 1_000_000


# --- streaming --------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".csv"])
def test_large_file_is_streamed_with_flat_memory(tmp_path: Path, suffix: str) -> None:
    line_count = 200_000
    body = "北京是中华人民共和国的首都，也是全国的政治、文化中心。" * 4  # ~100 chars, ~300 bytes
    path = tmp_path / f"large{suffix}"
    with path.open("w", encoding="utf-8") as out:
        if suffix == ".csv":
            out.write("id,text\n")
        for n in range(line_count):
            if suffix == ".txt":
                out.write(f"{n} {body}\n")
            elif suffix == ".jsonl":
                out.write(json.dumps({"id": n, "text": body}, ensure_ascii=False) + "\n")
            else:
                out.write(f"{n},{body}\n")
    assert path.stat().st_size > 50_000_000

    errors: list[InputError] = []
    tracemalloc.start()
    try:
        documents = iter_documents([path], errors.append)
        first = next(documents)
        first_peak = tracemalloc.get_traced_memory()[1]
        count = 1 + sum(1 for _ in documents)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert errors == []
    assert first.text.endswith(body)
    assert first_peak < 1_000_000
    assert count == line_count
    assert peak < 5_000_000
