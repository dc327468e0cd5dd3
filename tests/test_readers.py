"""Tests for producer.readers and producer.submit.resolve_corpus: formats, encodings, folders,
hostile input, streaming. The same cases through the CLI are in test_hostile_input.py."""

from __future__ import annotations

import json
import os
import random
import struct
import tracemalloc
import zlib
from pathlib import Path

import pytest

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


# --- .txt -------------------------------------------------------------------


def test_txt_one_document_per_line_empty_lines_skipped_silently(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", "  周杰伦出生于台湾。 \n\n\r\n《七里香》是周杰伦的专辑。\r\n")
    documents, errors = read(path)
    assert errors == []
    assert documents == [
        RawDocument("周杰伦出生于台湾。", "a.txt:1", f"{path}:1"),
        RawDocument("《七里香》是周杰伦的专辑。", "a.txt:4", f"{path}:4"),
    ]


def test_txt_accepts_utf8_bom(tmp_path: Path) -> None:
    path = write(tmp_path / "bom.txt", b"\xef\xbb\xbf" + "第一行\n第二行\n".encode())
    documents, errors = read(path)
    assert errors == []
    assert [d.text for d in documents] == ["第一行", "第二行"]


def test_txt_bad_utf8_line_is_reported_and_rest_is_read(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.txt", "好的\n".encode() + b"\xff\xfe broken\n" + "也好\n".encode())
    documents, errors = read(path)
    assert [d.text for d in documents] == ["好的", "也好"]
    assert [d.external_id for d in documents] == ["bad.txt:1", "bad.txt:3"]
    assert [str(e) for e in errors] == [f"{path}:2: not valid UTF-8"]
    assert errors[0].source == f"{path}:2"
    assert errors[0].reason == "not valid UTF-8"


# --- .jsonl -----------------------------------------------------------------


def test_jsonl_text_and_ids(tmp_path: Path) -> None:
    lines = [
        {"text": "甲"},
        {"text": "乙", "id": "doc-7"},
        {"text": "丙", "id": 42},
    ]
    path = write(tmp_path / "c.jsonl", "\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n\n")
    documents, errors = read(path)
    assert errors == []
    assert documents == [
        RawDocument("甲", "c.jsonl:1", f"{path}:1"),
        RawDocument("乙", "doc-7", f"{path}:2"),
        RawDocument("丙", "42", f"{path}:3"),
    ]


def test_jsonl_accepts_duie_line(tmp_path: Path) -> None:
    duie = {
        "text": "《邪少兵王》是冰火未央写的网络小说连载于旗峰天下",
        "postag": [{"word": "邪少兵王", "pos": "nw"}],
        "spo_list": [
            {
                "predicate": "作者",
                "object_type": {"@value": "人物"},
                "subject_type": "图书作品",
                "object": {"@value": "冰火未央"},
                "subject": "邪少兵王",
            }
        ],
    }
    path = write(tmp_path / "duie.jsonl", json.dumps(duie, ensure_ascii=False) + "\n")
    documents, errors = read(path)
    assert errors == []
    assert documents == [RawDocument(duie["text"], "duie.jsonl:1", f"{path}:1")]


def test_jsonl_bad_lines_are_reported_and_skipped(tmp_path: Path) -> None:
    lines = [
        '{"text": "好"}',
        '{"text": "oops"',
        "[1, 2]",
        '{"id": 3}',
        '{"text": ""}',
        '{"text": 5}',
        '{"text": "   "}',
        '{"text": "末"}',
    ]
    path = write(tmp_path / "e.jsonl", "\n".join(lines) + "\n")
    documents, errors = read(path)
    assert [d.text for d in documents] == ["好", "末"]
    assert [d.source for d in documents] == [f"{path}:1", f"{path}:8"]
    assert [e.source for e in errors] == [f"{path}:{n}" for n in range(2, 8)]
    reasons = [e.reason for e in errors]
    assert reasons[0].startswith("invalid JSON: ")
    assert reasons[1:] == [
        "expected a JSON object",
        "missing 'text'",
        "'text' is empty",
        "'text' must be a string",
        "'text': no visible text",
    ]


def test_jsonl_bad_utf8_line_in_the_middle(tmp_path: Path) -> None:
    path = write(
        tmp_path / "m.jsonl",
        '{"text": "一"}\n'.encode() + b'{"text": "\xe4\xb8"}\n' + '{"text": "三"}\n'.encode(),
    )
    documents, errors = read(path)
    assert [d.text for d in documents] == ["一", "三"]
    assert [str(e) for e in errors] == [f"{path}:2: not valid UTF-8"]


def test_jsonl_accepts_bom_and_rejects_bad_id(tmp_path: Path) -> None:
    path = write(tmp_path / "b.jsonl", b"\xef\xbb\xbf" + b'{"text": "x", "id": true}\n{"text": "y", "id": [1]}\n')
    documents, errors = read(path)
    assert documents == []
    assert [(e.source, e.reason) for e in errors] == [
        (f"{path}:1", "'id' must be a string or an integer"),
        (f"{path}:2", "'id' must be a string or an integer"),
    ]


def test_jsonl_rejects_lone_surrogate_escape(tmp_path: Path) -> None:
    path = write(tmp_path / "s.jsonl", '{"text": "a\\ud800b"}\n{"text": "ok"}\n')
    documents, errors = read(path)
    assert [d.text for d in documents] == ["ok"]
    assert [str(e) for e in errors] == [f"{path}:1: 'text': not valid UTF-8"]


# --- .csv -------------------------------------------------------------------


def test_csv_text_and_id_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "id,text,extra\nx1,第一条,a\n,第二条,b\n")
    documents, errors = read(path)
    assert errors == []
    assert documents == [
        RawDocument("第一条", "x1", f"{path}:2"),
        RawDocument("第二条", "d.csv:3", f"{path}:3"),
    ]


def test_csv_multiline_quoted_field_reports_starting_line(tmp_path: Path) -> None:
    path = write(tmp_path / "q.csv", 'text\n"第一段\n第二段\n第三段"\n\n单行\n"",\n')
    documents, errors = read(path)
    assert [(d.text, d.source) for d in documents] == [
        ("第一段\n第二段\n第三段", f"{path}:2"),
        ("单行", f"{path}:6"),
    ]
    assert documents[1].external_id == "q.csv:6"
    assert [str(e) for e in errors] == [f"{path}:7: 'text' is empty"]


def test_csv_without_text_column_is_skipped_with_one_error(tmp_path: Path) -> None:
    path = write(tmp_path / "n.csv", "a,b\n1,2\n3,4\n")
    documents, errors = read(path)
    assert documents == []
    assert [str(e) for e in errors] == [f"{path}: no 'text' column (columns: a, b)"]


def test_csv_bom_header_and_bad_utf8_row(tmp_path: Path) -> None:
    content = b"\xef\xbb\xbftext\n" + "好\n".encode() + b"\xff bad\n" + "坏了又好\n".encode()
    path = write(tmp_path / "u.csv", content)
    documents, errors = read(path)
    assert [d.text for d in documents] == ["好", "坏了又好"]
    assert [str(e) for e in errors] == [f"{path}:3: not valid UTF-8"]


def test_csv_field_longer_than_the_csv_modules_default_limit_is_read(tmp_path: Path) -> None:
    huge = "长" * 200_000  # over csv.field_size_limit()'s default, under TRIPLETS_MAX_DOCUMENT_CHARS
    path = write(tmp_path / "big.csv", f'text\nfirst\n"{huge}"\nlast\n')
    documents, errors = read(path)
    assert errors == []
    assert [d.text for d in documents] == ["first", huge, "last"]


# --- paths and folders ------------------------------------------------------


def test_folder_is_walked_recursively_sorted_and_filtered(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    write(root / "b.txt", "b\n")
    write(root / "a" / "z.JSONL", '{"text": "az"}\n')
    write(root / "a" / "y.csv", "text\nay\n")
    write(root / "c" / "deep" / "x.TXT", "cx\n")
    write(root / "notes.md", "ignored\n")
    write(root / "data.json", '{"text": "ignored"}\n')
    write(root / "README", "ignored\n")
    documents, errors = read(root)
    assert errors == []
    assert [d.text for d in documents] == ["ay", "az", "b", "cx"]
    assert documents[0].source == f"{root / 'a' / 'y.csv'}:2"


def test_explicit_paths_keep_given_order(tmp_path: Path) -> None:
    second = write(tmp_path / "a.txt", "from a\n")
    first = write(tmp_path / "z.txt", "from z\n")
    documents, errors = read(first, str(second))
    assert errors == []
    assert [d.text for d in documents] == ["from z", "from a"]


def test_bad_paths_are_refused_before_anything_is_read(tmp_path: Path) -> None:
    good = write(tmp_path / "ok.txt", "fine\n")
    write(tmp_path / "empty" / "notes.md", "no corpus here\n")
    bad = {
        tmp_path / "nope.txt": "no such file or directory",
        write(tmp_path / "data.xyz", "text\n"): "unsupported file type '.xyz' (expected .txt, .jsonl or .csv)",
        tmp_path / "empty": "no .txt, .jsonl or .csv file in this folder",
    }
    for path, reason in bad.items():
        with pytest.raises(InputError) as caught:
            resolve_corpus([good, path])
        assert str(caught.value) == f"{path}: {reason}"


def test_iter_documents_reports_an_unreadable_file_and_goes_on(tmp_path: Path) -> None:
    good = write(tmp_path / "ok.txt", "fine\n")
    errors: list[InputError] = []
    documents = list(iter_documents([tmp_path / "gone.txt", tmp_path / "x.xyz", good], errors.append))
    assert [d.text for d in documents] == ["fine"]
    assert messages(errors) == [
        f"{tmp_path / 'gone.txt'}: no such file or directory",
        f"{tmp_path / 'x.xyz'}: unsupported file type '.xyz' (expected .txt, .jsonl or .csv)",
    ]


def test_symlink_loops_are_reported_once_and_the_rest_is_read(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    write(root / "a.txt", "甲\n")
    write(root / "sub" / "b.txt", "乙\n")
    (root / "self").symlink_to("self")  # a -> a
    (root / "sub" / "up").symlink_to(root)  # dir/link -> an ancestor
    (root / "gone.txt").symlink_to(tmp_path / "missing.txt")
    documents, errors = read(root)
    assert [d.text for d in documents] == ["甲", "乙"]
    assert sorted(messages(errors)) == [
        f"{root / 'gone.txt'}: broken symbolic link",
        f"{root / 'self'}: symbolic link loop",
        f"{root / 'sub' / 'up'}: link to a folder already read (a loop?), skipped",
    ]


def test_linked_folders_and_files_are_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    write(elsewhere / "x.txt", "外\n")
    root = tmp_path / "corpus"
    write(root / "a.txt", "内\n")
    (root / "linked").symlink_to(elsewhere)
    (root / "z.txt").symlink_to(elsewhere / "x.txt")
    documents, errors = read(root)
    assert errors == []
    assert [d.text for d in documents] == ["内", "外", "外"]  # the store drops the repeat


def test_undecodable_file_name_is_shown_with_a_replacement_character(tmp_path: Path) -> None:
    path = write(tmp_path / os.fsdecode(b"bad\xff.txt"), "好\n \n")
    documents, errors = read(path)
    assert documents[0].external_id == "bad\ufffd.txt:1"
    assert messages(errors) == [f"{tmp_path}/bad\ufffd.txt:2: no visible text"]
    "".join(messages(errors)).encode("utf-8")  # printable and storable: no lone surrogates


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


def tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pixels = zlib.compress(b"".join(b"\x00" + bytes(range(48)) for _ in range(16)))
    header = struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


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
