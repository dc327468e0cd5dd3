"""Tests for producer.readers and producer.submit.resolve_corpus: formats, ids, folders and links.
Hostile lines, encodings and sizes are in test_readers_hostile.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from models.errors import InputError
from producer.readers import RawDocument, iter_documents
from producer.submit import resolve_corpus
from tests.corpus_files import messages, read, write


@pytest.mark.parametrize(("name", "content", "expected"), [
    pytest.param("a.txt", "  周杰伦出生于台湾。 \n\n\r\n《七里香》是周杰伦的专辑。\r\n",
                 [("周杰伦出生于台湾。", "a.txt:1", 1), ("《七里香》是周杰伦的专辑。", "a.txt:4", 4)],
                 id="txt: a document a line, empty lines skipped silently"),
    pytest.param("c.jsonl", '{"text": "甲"}\n{"text": "乙", "id": "doc-7"}\n{"text": "丙", "id": 42}\n\n',
                 [("甲", "c.jsonl:1", 1), ("乙", "doc-7", 2), ("丙", "42", 3)], id="jsonl: text and ids"),
    pytest.param("d.csv", "id,text,extra\nx1,第一条,a\n,第二条,b\n",
                 [("第一条", "x1", 2), ("第二条", "d.csv:3", 3)], id="csv: text and id columns"),
])
def test_documents_with_their_ids_and_starting_lines(
    tmp_path: Path, name: str, content: str, expected: list[tuple[str, str, int]]
) -> None:
    path = write(tmp_path / name, content)
    documents, errors = read(path)
    assert errors == []
    assert documents == [RawDocument(text, external_id, f"{path}:{line}") for text, external_id, line in expected]


# --- .txt -------------------------------------------------------------------


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
