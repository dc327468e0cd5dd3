from __future__ import annotations

import json

import pytest

from models.errors import ParseError
from models.parser import parse_triplets
from models.prompt import format_answer
from models.triplet import Triplet

MOVIE = Triplet(subject="娘家的故事第二部", subject_type="影视作品", predicate="导演", object="张玲", object_type="人物")
SINGER = Triplet(subject="周杰伦", subject_type="人物", predicate="国籍", object="中国", object_type="国家")
BOOK = Triplet(subject="红楼梦", subject_type="图书作品", predicate="作者", object="曹雪芹", object_type="人物")
ANSWER = format_answer([MOVIE, SINGER])
ITEM = '{"subject":"a","predicate":"b","object":"c"}'
ABC = Triplet(subject="a", predicate="b", object="c")


def reject(raw: str) -> str:
    """The reason parse_triplets gives for rejecting ``raw``; its .raw must be ``raw`` unchanged."""
    with pytest.raises(ParseError) as info:
        parse_triplets(raw)
    assert info.value.raw is raw
    return info.value.reason


def test_round_trip_of_format_answer_drops_duplicates_and_keeps_order() -> None:
    triplets = [MOVIE, SINGER, MOVIE, BOOK, SINGER]
    assert parse_triplets(format_answer(triplets)) == [MOVIE, SINGER, BOOK]


@pytest.mark.parametrize("raw", ["[]", "  []\n", "答案：[]", "```json\n[]\n```"])
def test_empty_list_is_the_empty_answer(raw: str) -> None:
    assert parse_triplets(raw) == []


def test_types_are_optional() -> None:
    expected = Triplet(subject="a", predicate="b", object="c", subject_type="", object_type="")
    assert parse_triplets(f"[{ITEM}]") == [expected]
    assert parse_triplets('[{"subject":"a","predicate":"b","object":"c","subject_type":null}]') == [ABC]


@pytest.mark.parametrize(
    "raw",
    [
        f"```json\n{ANSWER}\n```",
        f"```\n{ANSWER}\n```",
        f"```JSON {ANSWER}```",
        f"好的，结果如下：\n```json\n{ANSWER}\n```\n以上。",
        f"```json\n{ANSWER}\n",  # the closing fence never came
        # An example object in the prose before the fence must not win over the fenced answer.
        f'格式示例：{{"subject":"甲","predicate":"乙","object":"丙"}}\n```json\n{ANSWER}\n```',
    ],
)
def test_markdown_fences(raw: str) -> None:
    assert parse_triplets(raw) == [MOVIE, SINGER]


@pytest.mark.parametrize(
    "raw",
    [
        f"答案：{ANSWER}",
        f"Here are the triplets: {ANSWER} Hope this helps",
        f"{ANSWER}\n注：[1] 见原文 {{略}}",
        f"Note [draft]: {ANSWER}",
        f"See {{this}} and [that, too]:\n{ANSWER}",
        json.dumps([MOVIE.as_dict(), SINGER.as_dict()], ensure_ascii=False, indent=2),
    ],
)
def test_prose_around_the_json(raw: str) -> None:
    assert parse_triplets(raw) == [MOVIE, SINGER]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("《红楼梦》]", "《红楼梦》]"),
        ("a]}b{[c", "a]}b{[c"),
        ('say \\"]\\" loud', 'say "]" loud'),
        ("back\\\\", "back\\"),
    ],
)
def test_brackets_and_escapes_inside_strings_do_not_end_the_scan(value: str, expected: str) -> None:
    raw = f'答案：[{{"subject":"{value}","predicate":"p","object":"o"}}] 完 [x]'
    assert parse_triplets(raw) == [Triplet(subject=expected, predicate="p", object="o")]


@pytest.mark.parametrize(
    "raw",
    [
        f'{{"triplets": {ANSWER}}}',
        f'结果：{{"spo_list": {ANSWER}}}',
        f'{{"text": "...", "spo_list": {ANSWER}}}',
    ],
)
def test_wrapped_lists(raw: str) -> None:
    assert parse_triplets(raw) == [MOVIE, SINGER]


def test_single_object_is_one_triplet() -> None:
    assert parse_triplets(json.dumps(MOVIE.as_dict(), ensure_ascii=False)) == [MOVIE]


def test_wrapper_that_is_not_a_list_is_rejected() -> None:
    assert reject('{"triplets": "none"}') == "'triplets' is not a list"


def test_duie_complex_values_use_at_value() -> None:
    raw = json.dumps(
        [
            {
                "subject": "娘家的故事第二部",
                "subject_type": "影视作品",
                "predicate": "导演",
                "object": {"@value": "张玲", "inWork": "X"},
                "object_type": {"@value": "人物", "inWork": "影视作品"},
            }
        ],
        ensure_ascii=False,
    )
    assert parse_triplets(raw) == [MOVIE]


def test_values_are_stripped_and_numbers_become_text() -> None:
    raw = (
        '[{"subject":"  周杰伦\\n","subject_type":" 人物 ","predicate":"出生年份","object":1979,"object_type":"Date"},'
        '{"subject":"某股","predicate":"股价","object":3.5}]'
    )
    assert parse_triplets(raw) == [
        Triplet(subject="周杰伦", subject_type="人物", predicate="出生年份", object="1979", object_type="Date"),
        Triplet(subject="某股", predicate="股价", object="3.5"),
    ]


def test_raw_newlines_inside_strings_are_tolerated() -> None:
    raw = '[{"subject":"娘家的\n故事","predicate":"导演","object":"张玲"}]'
    assert parse_triplets(raw) == [Triplet(subject="娘家的\n故事", predicate="导演", object="张玲")]


def test_duplicates_are_removed_but_type_differences_are_kept() -> None:
    retyped = Triplet(MOVIE.subject, MOVIE.predicate, MOVIE.object, subject_type="电视剧", object_type="人物")
    raw = format_answer([SINGER, MOVIE, SINGER, retyped, MOVIE])
    assert parse_triplets(raw) == [SINGER, MOVIE, retyped]


def test_nested_lists_are_flattened_one_level() -> None:
    raw = f"[{format_answer([MOVIE])}, {format_answer([SINGER, BOOK])}, []]"
    assert parse_triplets(raw) == [MOVIE, SINGER, BOOK]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (f'[{ITEM},{ITEM},{{"subject":"a","predicate":"b"}}]', "item 2: missing 'object'"),
        (f'[{ITEM},{{"subject":"a"}}]', "item 1: missing 'predicate', 'object'"),
        (f'[{ITEM},{{"subject":"a","predicate":"b","object":null}}]', "item 1: missing 'object'"),
        (f'[{ITEM},"a-b-c"]', "item 1: not an object (got str)"),
        ("[1]", "item 0: not an object (got int)"),
        (f'[[{ITEM}],[{ITEM},{{"predicate":"b","object":"c"}}]]', "item 1.1: missing 'subject'"),
        ('[{"subject":"   ","predicate":"b","object":"c"}]', "item 0: empty 'subject'"),
        ('[{"subject":"a","predicate":"","object":"c"}]', "item 0: empty 'predicate'"),
        ('[{"subject":"a","predicate":"b","object":true}]', "item 0: 'object' is not a string"),
        ('[{"subject":"a","predicate":"b","object":["c"]}]', "item 0: 'object' is not a string"),
        ('[{"subject":"a","predicate":"b","object":{"inWork":"X"}}]', "item 0: 'object' is not a string"),
        ('[{"subject":"a","predicate":"b","object":"c","object_type":[]}]', "item 0: 'object_type' is not a string"),
        ('{"subject":"a","object":"c"}', "item 0: missing 'predicate'"),
    ],
)
def test_one_invalid_item_rejects_the_whole_output(raw: str, reason: str) -> None:
    assert reject(raw) == reason


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        ('[{"subject":"a","predicate":"b","obj', "unterminated string starting at char 32"),
        ('[{"subject":"a","predicate":"b","object":"c"},{"subject":"d"', "unterminated array starting at char 0"),
        (f"答案：[{ITEM},", "unterminated array starting at char 3"),
        ('{"triplets": [{"subject":"a"', "unterminated object starting at char 0"),
        (f"```json\n[{ITEM},\n```", "unterminated array starting at char 8"),
    ],
)
def test_truncated_output_is_rejected_not_half_read(raw: str, detail: str) -> None:
    assert reject(raw) == f"truncated JSON: {detail}"


@pytest.mark.parametrize("raw", ["我不知道。", "No triplets found.", "```\nnothing\n```", "a } b ] c"])
def test_output_without_json_is_rejected(raw: str) -> None:
    assert reject(raw) == "no JSON list in output"


@pytest.mark.parametrize("raw", ["", "   ", "\n\t \n"])
def test_empty_output_is_rejected(raw: str) -> None:
    assert reject(raw) == "empty output"


@pytest.mark.parametrize(
    ("raw", "at"),
    [
        ('答案：[{"subject":"a",}]', "}"),  # trailing comma inside an object
        (f"[{ITEM},]", "]"),  # must not fall back to the complete inner item
        ('[{"subject":"a"]', "]"),  # mismatched closer
        ("[{'subject':'a'}]", "'"),
        ("Note [draft]: [{subject: a}]", "s"),  # the longest failed span is the one reported
    ],
)
def test_invalid_json_names_the_message_and_position_in_raw(raw: str, at: str) -> None:
    reason = reject(raw)
    assert reason.startswith("invalid JSON: ")
    position = int(reason.rsplit(" at char ", 1)[1])
    assert raw[position] == at
