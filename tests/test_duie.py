"""models.duie: the one DuIE 2.0 record reader and writer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.duie import format_record, parse_record, parse_spo, read_jsonl, write_jsonl
from models.errors import InputError
from models.triplet import Triplet

TEXT = "周星驰在《大话西游》中饰演至尊宝，该片由刘镇伟执导"
ROLE = Triplet("周星驰", "饰演", "至尊宝", "娱乐人物", "角色")
DIRECTOR = Triplet("大话西游", "导演", "刘镇伟", "影视作品", "人物")


def test_plain_and_complex_values_are_read() -> None:
    record = {"text": TEXT, "spo_list": [
        {"predicate": "饰演", "subject": "周星驰", "subject_type": "娱乐人物",
         "object": {"@value": "至尊宝", "inWork": "大话西游"}, "object_type": {"@value": "角色", "inWork": "影视作品"}},
        {"predicate": "导演", "subject": "大话西游", "subject_type": "影视作品", "object": "刘镇伟", "object_type": "人物"},
    ]}
    assert parse_record(record) == (TEXT, (ROLE, DIRECTOR))


def test_a_record_without_spo_list_states_nothing() -> None:
    assert parse_record({"text": "无关系"}) == ("无关系", ())


def test_values_are_stripped_numbers_become_text_and_duplicates_go() -> None:
    spo = {"subject": " 三体 ", "predicate": "字数", "object": 200000}
    assert parse_spo(spo) == Triplet("三体", "字数", "200000")
    assert parse_record({"text": "x", "spo_list": [spo, spo]})[1] == (Triplet("三体", "字数", "200000"),)


@pytest.mark.parametrize(("record", "reason"), [
    (["not", "a", "dict"], "expected a JSON object"),
    ({"spo_list": []}, "missing 'text'"),
    ({"text": " ", "spo_list": []}, "'text' must be a non-empty string"),
    ({"text": TEXT, "spo_list": {}}, "'spo_list' must be a list"),
    ({"text": TEXT, "spo_list": ["x"]}, "spo_list[0]: not an object"),
    ({"text": TEXT, "spo_list": [{"subject": "a", "predicate": "b"}]}, "spo_list[0]: 'object' is missing"),
    ({"text": TEXT, "spo_list": [{"subject": "a", "predicate": " ", "object": "c"}]}, "spo_list[0]: empty 'predicate'"),
    ({"text": TEXT, "spo_list": [{"subject": "a", "predicate": "b", "object": {"inWork": "c"}}]},
     "spo_list[0]: 'object' is missing"),
    ({"text": TEXT, "spo_list": [{"subject": ["a"], "predicate": "b", "object": "c"}]},
     "spo_list[0]: 'subject' is not a string"),
])
def test_a_bad_record_names_what_is_wrong(record: object, reason: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_record(record, source="dev.jsonl:7")
    assert (caught.value.source, caught.value.reason) == ("dev.jsonl:7", reason)


def test_written_records_read_back(tmp_path: Path) -> None:
    examples = [(TEXT, (ROLE, DIRECTOR)), ("今天天气很好。", ())]
    path = tmp_path / "d.jsonl"
    write_jsonl(path, examples)
    assert json.loads(path.read_text(encoding="utf-8").splitlines()[0]) == format_record(TEXT, (ROLE, DIRECTOR))
    assert format_record(TEXT, (ROLE,))["spo_list"][0]["object"] == {"@value": "至尊宝"}
    assert read_jsonl(path) == examples


def test_a_bad_line_of_a_file_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": TEXT, "spo_list": []}) + "\n{broken\n", encoding="utf-8")
    with pytest.raises(InputError, match=rf"{path}:2: invalid JSON"):
        read_jsonl(path)
