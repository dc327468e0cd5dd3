"""Tests for models.training_data: each line format, and bad lines reported and skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.errors import InputError
from models.prompt import format_answer, get_template
from models.schema import load_schema
from models.training_data import TrainingExample, iter_training_examples
from models.triplet import Triplet

TEXT = "《七里香》是周杰伦演唱的歌曲，收录于专辑《七里香》。"
SINGER = Triplet("七里香", "歌手", "周杰伦", "歌曲", "人物")
ALBUM = Triplet("七里香", "所属专辑", "七里香", "歌曲", "音乐专辑")
ANSWER = format_answer([SINGER, ALBUM])


def line(record: object) -> str:
    return json.dumps(record, ensure_ascii=False)


def write(path: Path, *lines: str | bytes) -> Path:
    path.write_bytes(b"".join((item if isinstance(item, bytes) else item.encode()) + b"\n" for item in lines))
    return path


def read(path: Path) -> tuple[list[TrainingExample], list[InputError]]:
    errors: list[InputError] = []
    return list(iter_training_examples(path, errors.append)), errors


def duie_spo(t: Triplet, *, complex_values: bool) -> dict[str, object]:
    wrap = (lambda value: {"@value": value}) if complex_values else (lambda value: value)
    return {
        "predicate": t.predicate,
        "object_type": wrap(t.object_type),
        "subject_type": t.subject_type,
        "object": wrap(t.object),
        "subject": t.subject,
    }


@pytest.mark.parametrize("complex_values", [True, False])
def test_duie_lines(tmp_path: Path, complex_values: bool) -> None:
    spo_list = [duie_spo(t, complex_values=complex_values) for t in (SINGER, ALBUM)]
    path = write(tmp_path / "duie.jsonl", line({"text": TEXT, "spo_list": spo_list}))
    examples, errors = read(path)
    assert errors == []
    assert examples == [TrainingExample(TEXT, (SINGER, ALBUM), f"{path}:1")]


def test_duie_complex_object_slots_are_dropped(tmp_path: Path) -> None:
    spo = {
        "predicate": "饰演", "subject": "周星驰", "subject_type": "娱乐人物",
        "object": {"@value": "至尊宝", "inWork": "大话西游"},
        "object_type": {"@value": "人物", "inWork": "影视作品"},
    }
    path = write(tmp_path / "d.jsonl", line({"text": "周星驰在《大话西游》中饰演至尊宝。", "spo_list": [spo]}))
    examples, errors = read(path)
    assert errors == []
    assert examples[0].triplets == (Triplet("周星驰", "饰演", "至尊宝", "娱乐人物", "人物"),)


def test_duie_empty_spo_list_is_a_sentence_without_facts(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", line({"text": "今天天气很好。", "spo_list": []}))
    examples, errors = read(path)
    assert errors == [] and examples == [TrainingExample("今天天气很好。", (), f"{path}:1")]


@pytest.mark.parametrize("output", [ANSWER, f"```json\n{ANSWER}\n```", f"答案：\n```\n{ANSWER}\n```"])
def test_instruction_lines_with_plain_and_fenced_output(tmp_path: Path, output: str) -> None:
    record = {"instruction": "抽取三元组", "input": TEXT, "output": output}
    path = write(tmp_path / "inst.jsonl", line(record))
    examples, errors = read(path)
    assert errors == []
    assert examples == [TrainingExample(TEXT, (SINGER, ALBUM), f"{path}:1")]


def test_context_target_lines(tmp_path: Path) -> None:
    prompt = get_template("v1").plain(TEXT, load_schema())
    path = write(
        tmp_path / "ct.jsonl",
        line({"context": TEXT, "target": ANSWER}),
        line({"context": f"请抽取。\n文本：无关\n文本：{TEXT}\n", "target": f"```json\n{ANSWER}\n```"}),
        # A whole rendered prompt: the text ends where the answer cue begins.
        line({"context": prompt, "target": "[]"}),
    )
    examples, errors = read(path)
    assert errors == []
    assert [e.text for e in examples] == [TEXT, TEXT, TEXT]
    assert [e.triplets for e in examples] == [(SINGER, ALBUM), (SINGER, ALBUM), ()]
    assert [e.source for e in examples] == [f"{path}:1", f"{path}:2", f"{path}:3"]


def test_plain_text_triplets_lines(tmp_path: Path) -> None:
    triplets = [SINGER.as_dict(), ALBUM.as_dict(), SINGER.as_dict()]
    path = write(tmp_path / "p.jsonl", line({"text": TEXT, "triplets": triplets}))
    examples, errors = read(path)
    assert errors == []
    assert examples == [TrainingExample(TEXT, (SINGER, ALBUM), f"{path}:1")]


def test_types_are_optional(tmp_path: Path) -> None:
    untyped = {"subject": "a", "predicate": "b", "object": "c"}
    path = write(tmp_path / "p.jsonl", line({"text": TEXT, "triplets": [untyped]}))
    examples, errors = read(path)
    assert errors == [] and examples[0].triplets == (Triplet("a", "b", "c"),)


def test_formats_may_be_mixed_and_blank_lines_and_bom_are_skipped(tmp_path: Path) -> None:
    path = write(
        tmp_path / "mixed.jsonl",
        b"\xef\xbb\xbf" + line({"text": TEXT, "triplets": []}).encode(),
        "",
        "   ",
        line({"instruction": "x", "input": TEXT, "output": "[]"}),
    )
    examples, errors = read(path)
    assert errors == []
    assert [e.source for e in examples] == [f"{path}:1", f"{path}:4"]


BAD_LINES = [
    ("{not json", "invalid JSON"),
    ('["a list"]', "expected a JSON object"),
    (line({"foo": 1, "bar": 2}), "unknown record shape (keys: bar, foo)"),
    (line({"spo_list": []}), "missing 'text'"),
    (line({"text": "  ", "spo_list": []}), "'text' must be a non-empty string"),
    (line({"text": TEXT, "spo_list": {}}), "'spo_list' must be a list"),
    (line({"text": TEXT, "spo_list": ["x"]}), "spo_list[0]: not an object"),
    (line({"text": TEXT, "spo_list": [{"subject": "a", "predicate": "b"}]}), "spo_list[0]: 'object' is missing"),
    (line({"text": TEXT, "triplets": [{"subject": "a", "predicate": "", "object": "c"}]}),
     "triplets[0]: empty 'predicate'"),
    (line({"text": TEXT, "triplets": [{"subject": ["a"], "predicate": "b", "object": "c"}]}),
     "triplets[0]: 'subject' is not a string"),
    (line({"text": TEXT, "triplets": ANSWER}), "'triplets' must be a list"),
    (line({"instruction": "x", "input": TEXT, "output": "我不知道"}), "bad 'output': no JSON list in output"),
    (line({"instruction": "x", "input": TEXT, "output": '[{"subject": "a"'}), "bad 'output': truncated JSON"),
    (line({"instruction": "x", "input": TEXT, "output": []}), "'output' must be a string holding a JSON list"),
    (line({"instruction": "x", "output": "[]"}), "missing 'input'"),
    (line({"context": "文本：  \n", "target": "[]"}), "'context' has nothing after '文本：'"),
    (line({"context": TEXT, "target": '[{"subject": "a"}]'}), "bad 'target': item 0: missing 'predicate', 'object'"),
    ('{"text": "\\ud800", "triplets": []}', "not valid UTF-8"),
    (b"\xff\xfe broken", "not valid UTF-8"),
]


@pytest.mark.parametrize(("bad", "reason"), BAD_LINES, ids=[reason for _, reason in BAD_LINES])
def test_bad_line_is_reported_with_path_and_line_and_the_rest_is_read(
    tmp_path: Path, bad: str | bytes, reason: str
) -> None:
    good = line({"text": TEXT, "triplets": [SINGER.as_dict()]})
    path = write(tmp_path / "bad.jsonl", good, bad, good)
    examples, errors = read(path)
    assert [e.source for e in examples] == [f"{path}:1", f"{path}:3"]
    assert len(errors) == 1
    assert errors[0].source == f"{path}:2"
    assert errors[0].reason.startswith(reason), errors[0].reason


def test_missing_file_is_reported(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    examples, errors = read(missing)
    assert examples == []
    assert [(e.source, e.reason) for e in errors] == [(str(missing), "no such file")]


def test_reading_is_lazy(tmp_path: Path) -> None:
    path = write(tmp_path / "lazy.jsonl", line({"text": TEXT, "triplets": []}), "{broken")
    errors: list[InputError] = []
    stream = iter_training_examples(path, errors.append)
    assert next(stream).source == f"{path}:1"
    assert errors == []
    assert list(stream) == [] and len(errors) == 1
