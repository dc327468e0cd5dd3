from __future__ import annotations

from models.schema import load_schema
from models.triplet import Triplet
from models.validate import check_triplets

TEXT = "《娘家的故事第二部》是张玲执导，林在培、何赛飞等主演的电视剧"
DUIE = load_schema()


def test_grounded_schema_triplet_is_kept_with_schema_types() -> None:
    checked = check_triplets([Triplet("娘家的故事第二部", "导演", "张玲", "电视剧", "")], TEXT, DUIE)
    assert checked.rejected == []
    assert checked.accepted == [Triplet("娘家的故事第二部", "导演", "张玲", "影视作品", "人物")]


def test_book_title_marks_are_dropped_to_ground() -> None:
    checked = check_triplets([Triplet("《娘家的故事第二部》", "主演", "何赛飞")], TEXT, DUIE)
    assert [t.subject for t in checked.accepted] == ["娘家的故事第二部"]
    checked = check_triplets([Triplet("《林在培》", "国籍", "张玲")], "林在培与张玲", DUIE)
    assert [t.subject for t in checked.accepted] == ["林在培"]


def test_ungrounded_and_off_schema_triplets_are_rejected_with_reasons() -> None:
    triplets = [
        Triplet("娘家的故事第二部", "导演", "张艺谋"),
        Triplet("娘家故事", "导演", "张玲"),
        Triplet("娘家的故事第二部", "拍摄地", "张玲"),
        Triplet("娘家的故事第二部", "主演", "林在培"),
    ]
    checked = check_triplets(triplets, TEXT, DUIE)
    assert [t.object for t in checked.accepted] == ["林在培"]
    assert [r.reason for r in checked.rejected] == [
        "object '张艺谋' not in the text",
        "subject '娘家故事' not in the text",
        "predicate '拍摄地' not in schema duie2",
    ]
    assert checked.rejected[0].as_dict()["reason"] == "object '张艺谋' not in the text"
