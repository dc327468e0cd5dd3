"""Tests for producer.readers: formats, folders, bad input and streaming."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from models.errors import InputError
from producer.readers import RawDocument, iter_documents


def read(*paths: Path | str) -> tuple[list[RawDocument], list[InputError]]:
    errors: list[InputError] = []
    documents = list(iter_documents(paths, errors.append))
    return documents, errors


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


# --- .txt -------------------------------------------------------------------


def test_txt_one_document_per_line_blank_lines_skipped(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", "  周杰伦出生于台湾。 \n\n   \n《七里香》是周杰伦的专辑。\r\n")
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
        "'text' must be a non-empty string",
        "'text' must be a non-empty string",
        "'text' must be a non-empty string",
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
    assert [str(e) for e in errors] == [f"{path}:1: not valid UTF-8"]


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


def test_csv_malformed_row_is_reported_and_rest_read(tmp_path: Path) -> None:
    huge = "x" * 200_000  # over csv.field_size_limit(), so the csv module raises csv.Error
    path = write(tmp_path / "big.csv", f'text\nfirst\n"{huge}"\nlast\n')
    documents, errors = read(path)
    assert [d.text for d in documents] == ["first", "last"]
    assert documents[1].source == f"{path}:4"
    assert len(errors) == 1
    assert errors[0].source == f"{path}:3"
    assert "field larger than field limit" in errors[0].reason


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


def test_explicit_unsupported_suffix_is_reported(tmp_path: Path) -> None:
    bad = write(tmp_path / "data.xyz", "text\n")
    good = write(tmp_path / "ok.txt", "fine\n")
    documents, errors = read(bad, good)
    assert [d.text for d in documents] == ["fine"]
    assert [str(e) for e in errors] == [f"{bad}: unsupported file type '.xyz' (expected .txt, .jsonl or .csv)"]


def test_missing_path_is_reported_and_others_still_read(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    good = write(tmp_path / "ok.txt", "fine\n")
    documents, errors = read(missing, good)
    assert [d.text for d in documents] == ["fine"]
    assert [str(e) for e in errors] == [f"{missing}: no such file or directory"]
    assert isinstance(errors[0], InputError)


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
