from __future__ import annotations

import json

import pytest

from models.duie import parse_record
from models.scorer import Example, Scores, normalize, score
from models.triplet import Triplet

T = Triplet


def answer(*triplets: Triplet) -> str:
    """A model answer as the parser expects it."""
    return json.dumps([t.as_dict() for t in triplets], ensure_ascii=False)


MOVIE = "《大红灯笼高高挂》是张艺谋执导，巩俐主演的电影，由年代国际出品"
BOOK = "《三体》是刘慈欣创作的科幻小说"
SONG = "《离开》是由张宇谱曲，演唱"


def three_docs() -> list[Example]:
    return [
        # Perfect: 1 predicted, 1 gold, 1 correct.
        Example(BOOK, [T("三体", "作者", "刘慈欣", "图书作品", "人物")], answer(T("三体", "作者", "刘慈欣", "图书作品", "人物"))),
        # 2 predicted (one with the wrong object), 3 gold (导演 and 出品公司 missed), 1 correct.
        Example(
            MOVIE,
            [
                T("大红灯笼高高挂", "导演", "张艺谋", "影视作品", "人物"),
                T("大红灯笼高高挂", "主演", "巩俐", "影视作品", "人物"),
                T("大红灯笼高高挂", "出品公司", "年代国际", "影视作品", "企业"),
            ],
            answer(T("大红灯笼高高挂", "主演", "巩俐", "影视作品", "人物"), T("大红灯笼高高挂", "导演", "巩俐", "影视作品", "人物")),
        ),
        # Parse failure: 0 predicted, 2 gold.
        Example(SONG, [T("离开", "歌手", "张宇", "歌曲", "人物"), T("离开", "作曲", "张宇", "歌曲", "人物")], "抱歉，我无法回答。"),
    ]


def test_hand_computed_three_documents() -> None:
    scores = score(three_docs())
    # predicted = 1 + 2 + 0 = 3, gold = 1 + 3 + 2 = 6, correct = 1 + 1 + 0 = 2
    assert (scores.examples, scores.predicted, scores.gold, scores.correct) == (3, 3, 6, 2)
    # P = 2/3, R = 2/6 = 1/3, F1 = 2 * (2/3) * (1/3) / (2/3 + 1/3) = 4/9
    assert scores.precision == pytest.approx(2 / 3)
    assert scores.recall == pytest.approx(1 / 3)
    assert scores.f1 == pytest.approx(4 / 9)
    # Both correct triplets also carry the gold types.
    assert scores.strict_correct == 2
    assert scores.strict_f1 == pytest.approx(4 / 9)
    assert scores.parse_failure_rate == pytest.approx(1 / 3)
    assert scores.ungrounded_rate == 0.0
    # 导演: 1 predicted, 1 gold, 0 correct; 出品公司: 0 predicted, so 0/0 precision is 0.0.
    assert scores.per_predicate["作者"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert scores.per_predicate["导演"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert scores.per_predicate["出品公司"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert set(scores.per_predicate) == {"作者", "导演", "主演", "出品公司", "歌手", "作曲"}


def test_duplicates_in_predictions_do_not_inflate_precision() -> None:
    gold = [T("三体", "作者", "刘慈欣"), T("三体", "类型", "科幻小说")]
    raw = answer(T("三体", "作者", "刘慈欣"), T("《三体》", "作者", "刘慈欣"), T(" 三体 ", "作者", "刘慈欣"), T("三体", "作者", "大刘"))
    scores = score([Example(BOOK, gold, raw)])
    # Three spellings of one triplet count once: predicted = 2 (刘慈欣, 大刘), correct = 1.
    assert (scores.predicted, scores.correct) == (2, 1)
    assert scores.precision == pytest.approx(1 / 2)
    assert scores.recall == pytest.approx(1 / 2)


def test_duplicates_in_gold_count_once() -> None:
    gold = [T("三体", "作者", "刘慈欣"), T("《三体》", "作者", "刘慈欣")]
    scores = score([Example(BOOK, gold, answer(T("三体", "作者", "刘慈欣")))])
    assert (scores.gold, scores.recall) == (1, 1.0)


def test_normalize() -> None:
    assert normalize("  《三体》 ") == "三体"
    assert normalize("iPhone  X") == "iphone x"
    assert normalize("《 Apple 》") == "apple"


def test_book_title_case_and_whitespace_normalisation_make_a_match() -> None:
    text = "《iPhone》由Apple公司发布"
    gold = [T("iPhone", "出品公司", "Apple")]
    raw = answer(T("《iPhone》", "出品公司", "  APPLE "))
    scores = score([Example(text, gold, raw)])
    assert (scores.precision, scores.recall, scores.f1) == (1.0, 1.0, 1.0)


def test_strict_f1_is_lower_when_a_type_differs() -> None:
    gold = [T("三体", "作者", "刘慈欣", "图书作品", "人物"), T("三体", "出版社", "重庆出版社", "书籍", "出版社")]
    raw = answer(T("三体", "作者", "刘慈欣", "图书作品", "人物"), T("三体", "出版社", "重庆出版社", "小说", "出版社"))
    scores = score([Example(BOOK + "，由重庆出版社出版", gold, raw)])
    assert scores.f1 == 1.0
    # Strict: 1 of 2 correct on both sides -> P = R = F1 = 1/2.
    assert scores.strict_correct == 1
    assert scores.strict_precision == pytest.approx(0.5)
    assert scores.strict_recall == pytest.approx(0.5)
    assert scores.strict_f1 == pytest.approx(0.5)
    assert scores.strict_f1 < scores.f1


def test_strict_types_are_normalised_too() -> None:
    gold = [T("三体", "作者", "刘慈欣", " 图书作品 ", "Person")]
    scores = score([Example(BOOK, gold, answer(T("三体", "作者", "刘慈欣", "图书作品", "PERSON")))])
    assert scores.strict_f1 == 1.0


def test_complex_object_duie_record() -> None:
    record = {
        "text": "周星驰在《大话西游》中饰演至尊宝，该片由刘镇伟执导",
        "spo_list": [
            {
                "predicate": "饰演",
                "subject": "周星驰",
                "subject_type": "娱乐人物",
                "object": {"@value": "至尊宝", "inWork": "大话西游"},
                "object_type": {"@value": "角色", "inWork": "影视作品"},
            },
            {"predicate": "导演", "subject": "大话西游", "subject_type": "影视作品", "object": "刘镇伟", "object_type": "人物"},
        ],
    }
    text, gold = parse_record(record)
    assert gold == (T("周星驰", "饰演", "至尊宝", "娱乐人物", "角色"), T("大话西游", "导演", "刘镇伟", "影视作品", "人物"))
    # The model answering in DuIE's complex shape is reduced to @value by the parser, and matches.
    raw = json.dumps({"spo_list": record["spo_list"][:1]}, ensure_ascii=False)
    scores = score([Example(text, gold, raw)])
    assert (scores.predicted, scores.gold, scores.correct, scores.strict_correct) == (1, 2, 1, 1)
    assert scores.precision == 1.0
    assert scores.recall == pytest.approx(0.5)


def test_per_predicate_scores() -> None:
    gold = [T("大红灯笼高高挂", "主演", "巩俐"), T("大红灯笼高高挂", "主演", "何赛飞"), T("大红灯笼高高挂", "导演", "张艺谋")]
    raw = answer(T("大红灯笼高高挂", "主演", "巩俐"), T("大红灯笼高高挂", "主演", "张艺谋"), T("大红灯笼高高挂", "导演", "张艺谋"))
    scores = score([Example(MOVIE, gold, raw)])
    # 主演: 2 predicted, 2 gold, 1 correct -> P = R = F1 = 1/2; 导演: 1/1/1 -> 1.0.
    assert scores.per_predicate["主演"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert scores.per_predicate["导演"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    # Overall: 2 of 3 on both sides.
    assert scores.f1 == pytest.approx(2 / 3)


def test_ungrounded_rate_counts_subjects_missing_from_the_text() -> None:
    text = "刘慈欣创作了《三体》"
    raw = answer(T("《三体》", "作者", "刘慈欣"), T("地球往事", "作者", "刘慈欣"), T("《地球往事》", "作者", "刘慈欣"))
    scores = score([Example(text, [T("三体", "作者", "刘慈欣")], raw)])
    # After dedup 2 predicted triplets; 地球往事 is not in the text -> 1/2.
    assert scores.predicted == 2
    assert scores.ungrounded_rate == pytest.approx(0.5)


def test_ungrounded_rate_counts_objects_missing_from_the_text() -> None:
    raw = answer(T("三体", "作者", "大刘"))
    scores = score([Example(BOOK, [], raw)])
    assert scores.ungrounded_rate == 1.0


def test_no_gold_and_no_prediction_is_perfect() -> None:
    scores = score([Example("今天天气很好", [], "[]")])
    assert (scores.precision, scores.recall, scores.f1) == (1.0, 1.0, 1.0)
    assert (scores.strict_precision, scores.strict_recall, scores.strict_f1) == (1.0, 1.0, 1.0)
    assert (scores.parse_failure_rate, scores.ungrounded_rate) == (0.0, 0.0)
    assert scores.per_predicate == {}


def test_predictions_without_gold_score_zero() -> None:
    scores = score([Example(BOOK, [], answer(T("三体", "作者", "刘慈欣")))])
    assert (scores.precision, scores.recall, scores.f1) == (0.0, 0.0, 0.0)


def test_all_parse_failures_score_zero() -> None:
    examples = [
        Example(BOOK, [T("三体", "作者", "刘慈欣")], "我不知道"),
        Example(SONG, [T("离开", "歌手", "张宇")], '[{"subject": "离开", "predicate": "歌手"'),
    ]
    scores = score(examples)
    assert (scores.precision, scores.recall, scores.f1) == (0.0, 0.0, 0.0)
    assert (scores.strict_precision, scores.strict_recall, scores.strict_f1) == (0.0, 0.0, 0.0)
    assert scores.parse_failure_rate == 1.0
    assert (scores.predicted, scores.gold) == (0, 2)


def test_as_dict_is_json_serialisable() -> None:
    scores = score(three_docs())
    data = scores.as_dict()
    assert set(data) == set(Scores.__dataclass_fields__)
    assert json.loads(json.dumps(data, ensure_ascii=False))["f1"] == pytest.approx(4 / 9)


def test_accepts_a_generator() -> None:
    assert score(example for example in three_docs()).examples == 3
