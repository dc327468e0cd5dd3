"""The store read as a knowledge graph (models/triplet_query.py, models/graph_stats.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session, sessionmaker

from models import store
from models import triplet_query as tq
from models.errors import InputError, NotFoundError
from models.extraction import WindowOutput, assemble
from models.graph_stats import Rate, store_stats
from models.schema import PredicateSchema, Relation
from models.triplet import Triplet
from models.triplet_query import TripletFilter

TEXT = "《娘家的故事第二部》是张玲执导，林在培、何赛飞等主演的电视剧"
DIRECTOR = Triplet("娘家的故事第二部", "导演", "张玲", "影视作品", "人物")
ACTOR = Triplet("娘家的故事第二部", "主演", "林在培", "影视作品", "人物")
BORN = Triplet("张玲", "出生地", "上海", "人物", "地点")


def add(sessions: sessionmaker[Session], triplets: list[Triplet], *, job_id: int | None = None,
        external_id: str = "doc", text: str = TEXT, model: str = "m", adapter: str = "") -> tuple[int, int]:
    """One done document holding ``triplets``, in a new job unless ``job_id``: (job id, document id)."""
    with sessions.begin() as session:
        job_id = job_id or store.create_job(session, name="q").id
        (doc_id,) = store.add_documents(session, job_id=job_id, documents=[store.NewDocument(text, external_id)])
        store.record_outcomes(session, [store.Outcome(doc_id, text, triplets)], model=model, adapter=adapter,
                              prompt_version="v1")
    return job_id, doc_id


def chain(sessions: sessionmaker[Session], *names: str) -> None:
    """names[0] → names[1] → …: one triplet per link."""
    add(sessions, [Triplet(a, "认识", b, "人物", "人物") for a, b in zip(names, names[1:])], text="".join(names))


def test_the_same_triplet_from_two_jobs_is_one_distinct_row(sessions: sessionmaker[Session]) -> None:
    _, first = add(sessions, [DIRECTOR, ACTOR])
    add(sessions, [DIRECTOR])
    with sessions() as session:
        page = tq.find_distinct(session, TripletFilter())
        streamed = list(tq.iter_distinct(session, TripletFilter(), batch=1))
        plain = tq.find_triplets(session, TripletFilter())
    assert plain.total == 3
    assert page.total == 2
    assert page.items[0] == tq.DistinctTriplet(*DIRECTOR.key, count=2, documents=2, jobs=2, first_document_id=first)
    assert (page.items[1].predicate, page.items[1].count, page.items[1].jobs) == ("主演", 1, 1)
    assert streamed == page.items


def test_a_stream_abandoned_early_leaves_the_session_usable(sessions: sessionmaker[Session]) -> None:
    add(sessions, [DIRECTOR, ACTOR, BORN])
    with sessions() as session:
        stream = tq.iter_distinct(session, TripletFilter(), batch=1)
        next(stream)
        stream.close()
        assert tq.find_distinct(session, TripletFilter(), limit=0).total == 3


@pytest.mark.parametrize("filters, objects", [
    ({"subject": "娘家的故事第二部"}, {"张玲", "林在培"}),
    ({"subject_type": "人物"}, {"上海"}),
    ({"predicate": "主演"}, {"林在培"}),
    ({"object": "上海"}, {"上海"}),
    ({"object_type": "人物"}, {"张玲", "林在培"}),
    ({"document": "a.txt:1"}, {"张玲", "林在培"}),
    ({"adapter": "lora"}, {"林在培"}),
    ({"model": "m2"}, {"上海"}),
    ({"subject": "娘家的故事第二部", "predicate": "导演"}, {"张玲"}),
    ({"predicate": "主演", "adapter": ""}, set()),
], ids=lambda value: "-".join(value) if isinstance(value, dict) else None)
def test_each_filter_narrows(sessions: sessionmaker[Session], filters: dict[str, str], objects: set[str]) -> None:
    job_a, doc_a = add(sessions, [DIRECTOR], external_id="a.txt:1")
    with sessions.begin() as session:  # the same document read by an adapter
        store.record_outcomes(session, [store.Outcome(doc_a, TEXT, [ACTOR])], model="m", adapter="lora",
                              prompt_version="v1")
    job_b, doc_b = add(sessions, [BORN], external_id="b.txt:1", text="张玲生于上海", model="m2")
    with sessions() as session:
        def found(**more: object) -> set[str]:
            flt = TripletFilter(**filters, **more)  # type: ignore[arg-type]
            page = tq.find_triplets(session, flt)
            assert page.total == len(page.items)
            distinct = tq.find_distinct(session, flt)
            assert {item.object for item in distinct.items} == {item.object for item in page.items}
            return {item.object for item in page.items}

        assert found() == objects
        assert found(job_id=job_a) == objects - {"上海"}
        assert found(job_id=job_b) == objects & {"上海"}
        assert found(document_id=doc_b) == objects & {"上海"}


def test_text_filters_are_exact_unless_contains_and_wildcards_are_literal(sessions: sessionmaker[Session]) -> None:
    subjects = ["增长50%", "增长500", "a_b", "axb"]
    add(sessions, [Triplet(subject, "是", "数") for subject in subjects], text="".join(subjects))
    with sessions() as session:
        def subjects_of(value: str, contains: bool) -> list[str]:
            page = tq.find_triplets(session, TripletFilter(subject=value, contains=contains))
            return sorted(item.subject for item in page.items)

        assert subjects_of("增长", contains=False) == []
        assert subjects_of("增长", contains=True) == ["增长50%", "增长500"]
        assert subjects_of("50%", contains=True) == ["增长50%"]
        assert subjects_of("a_b", contains=True) == ["a_b"]
        assert subjects_of("a_b", contains=False) == ["a_b"]
        assert subjects_of("a%", contains=False) == []


def test_pages_carry_the_total_and_negative_bounds_are_refused(sessions: sessionmaker[Session]) -> None:
    add(sessions, [Triplet(f"实体{i}", "是", "数") for i in range(5)], text="实体")
    with sessions() as session:
        page = tq.find_triplets(session, TripletFilter(), limit=2, offset=2)
        everything = tq.find_triplets(session, TripletFilter(), limit=None)
        beyond = tq.find_distinct(session, TripletFilter(), offset=10)
        distinct_page = tq.find_distinct(session, TripletFilter(), limit=2, offset=2)
        for find in (tq.find_triplets, tq.find_distinct):
            with pytest.raises(InputError, match="^limit: must be 0 or more, got -1$"):
                find(session, TripletFilter(), limit=-1)
            with pytest.raises(InputError, match="^offset: must be 0 or more, got -3$"):
                find(session, TripletFilter(), offset=-3)
    assert [item.subject for item in page.items] == ["实体2", "实体3"] and page.total == 5
    assert len(everything.items) == everything.total == 5
    assert (beyond.items, beyond.total) == ([], 5)
    # the total counts every distinct triplet, not the page it comes with
    assert [item.subject for item in distinct_page.items] == ["实体2", "实体3"] and distinct_page.total == 5


def test_neighbors_reach_as_far_as_depth(sessions: sessionmaker[Session]) -> None:
    chain(sessions, "甲", "乙", "丙", "丁")
    with sessions() as session:
        one = tq.neighbors(session, "甲")
        two = tq.neighbors(session, "甲", depth=2)
        middle = tq.neighbors(session, "乙")
        unknown = tq.neighbors(session, "无名氏", depth=3)
    assert [(e.hop, e.subject, e.object, e.count) for e in one] == [(1, "甲", "乙", 1)]
    assert [(e.hop, e.subject, e.object) for e in two] == [(1, "甲", "乙"), (2, "乙", "丙")]
    assert "丁" not in {name for e in two for name in (e.subject, e.object)}
    assert {(e.subject, e.object) for e in middle} == {("甲", "乙"), ("乙", "丙")}  # as object and as subject
    assert unknown == []


def test_neighbors_list_each_edge_once_and_stop_at_the_limit(sessions: sessionmaker[Session],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # A triangle 甲乙丙 with 丁 off 丙, its hop-2 entities queried one per chunk: 乙—丙 is found from
    # 乙 and from 丙, and the hop-1 edges come back too; with a limit, those must not crowd out new ones.
    add(sessions, [Triplet(a, "认识", b) for a, b in (("甲", "乙"), ("甲", "丙"), ("乙", "丙"), ("丙", "丁"))],
        text="甲乙丙丁")
    add(sessions, [Triplet("甲", "认识", "乙"), Triplet("甲", "认识", "丙")], text="甲乙丙")  # hop 1 comes back first
    monkeypatch.setattr(tq, "FRONTIER_CHUNK", 1)
    with sessions() as session:
        edges = tq.neighbors(session, "甲", depth=3)
        capped = tq.neighbors(session, "甲", depth=3, limit=3)
        with pytest.raises(InputError, match="^depth: must be 1 or more"):
            tq.neighbors(session, "甲", depth=0)
    assert sorted((e.hop, e.subject, e.object, e.count) for e in edges[:2]) == [(1, "甲", "丙", 2), (1, "甲", "乙", 2)]
    assert sorted((e.hop, e.subject, e.object) for e in edges[2:]) == [(2, "丙", "丁"), (2, "乙", "丙")]
    assert capped[:2] == edges[:2] and len(capped) == 3 and capped[2] in edges[2:]


SCHEMA = PredicateSchema((Relation("导演", "影视作品", "人物"), Relation("主演", "影视作品", "人物")), name="t")
ANSWER = ('[{"subject": "娘家的故事第二部", "predicate": "导演", "object": "张玲"},'
          ' {"subject": "某人", "predicate": "主演", "object": "林在培"},'
          ' {"subject": "娘家的故事第二部", "predicate": "作者", "object": "张玲"}]')


def _outcome(doc_id: int, *windows: str) -> store.Outcome:
    """What the worker stores for a document whose windows the model answered so (models/extraction.py)."""
    extraction = assemble([WindowOutput(0, TEXT, raw) for raw in windows], SCHEMA, max_new_tokens=64)
    if extraction.error is not None:
        return store.Outcome(doc_id, TEXT, error=extraction.error, raw_output=extraction.raw)
    return store.Outcome(doc_id, TEXT, extraction.triplets, rejected=[r.as_dict() for r in extraction.rejected],
                         warning=extraction.warning)


def test_stats_rates_from_what_the_worker_records(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        job = store.create_job(session, name="rates")
        ids = store.add_documents(session, job_id=job.id,
                                  documents=[store.NewDocument(TEXT + str(i), f"d{i}") for i in range(4)])
        store.record_outcomes(session, [
            # one of two windows unparseable: done with a warning; one ungrounded and one off-schema rejection
            _outcome(ids[0], ANSWER, "抱歉，我不知道"),
            _outcome(ids[1], "抱歉，我不知道"),  # the parse failure
            store.Outcome(ids[2], TEXT, error="the engine failed on this document: RuntimeError: boom"),
            _outcome(ids[3], '[{"subject": "娘家的故事第二部", "predicate": "主演", "object": "林在培"}]'),
        ], model="m", adapter="", prompt_version="v1")
    other, _ = add(sessions, [DIRECTOR, BORN])
    with sessions() as session:
        stats = store_stats(session, job_id=job.id, top=1)
        whole = store_stats(session)
        with pytest.raises(NotFoundError):
            store_stats(session, job_id=other + 1)
    assert (stats.triplets, stats.distinct_triplets, stats.documents_done, stats.documents_failed) == (2, 2, 2, 2)
    assert stats.parse_failures == Rate(1, 4)
    assert stats.warnings == Rate(1, 2)
    assert stats.ungrounded == Rate(1, 4)  # 2 stored + 2 rejected produced
    assert stats.entities == [("娘家的故事第二部", 2)]
    assert len(stats.predicates) == 1
    assert [(j.id, j.documents, j.done, j.failed, j.triplets) for j in stats.jobs] == [(job.id, 4, 2, 2, 2)]
    assert (whole.triplets, whole.distinct_triplets) == (4, 3)
    assert dict(whole.predicates) == {"导演": 2, "主演": 1, "出生地": 1}
    assert dict(whole.entities) == {"娘家的故事第二部": 3, "张玲": 3, "林在培": 1, "上海": 1}
    assert whole.ungrounded == Rate(1, 6) and whole.parse_failures == Rate(1, 5)
    assert [(j.id, j.triplets) for j in whole.jobs] == [(job.id, 2), (other, 2)]
    assert whole.as_dict()["parse_failures"] == {"count": 1, "of": 5, "rate": 0.2}
