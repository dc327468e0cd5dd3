"""`triplets query`, `stats` and `neighbors` as a user runs them, against a store on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import pytest

from models import store
from models.db import make_session_factory
from models.triplet import Triplet
from models.triplet_query import DistinctTriplet, TripletRecord
from tests.workers import triplets, worker_env

Run = Callable[..., subprocess.CompletedProcess[str]]  # `triplets ARGS` against this test's store
TEXT = "《娘家的故事第二部》是张玲执导，林在培、何赛飞等主演的电视剧"
DIRECTOR = Triplet("娘家的故事第二部", "导演", "张玲", "影视作品", "人物")
ACTOR = Triplet("娘家的故事第二部", "主演", "林在培", "影视作品", "人物")


def add(database_url: str, triplet_list: list[Triplet], *, text: str = TEXT, external_id: str = "doc") -> int:
    """A job with one done document holding ``triplet_list``; the job's id."""
    with make_session_factory(database_url).begin() as session:
        job = store.create_job(session, name="q")
        (doc_id,) = store.add_documents(session, job_id=job.id, documents=[store.NewDocument(text, external_id)])
        store.record_outcomes(session, [store.Outcome(doc_id, text, triplet_list)], model="m", adapter="",
                              prompt_version="v1")
        return job.id


@pytest.fixture
def run(database_url: str, tmp_path: Path) -> Run:
    env = worker_env(database_url=database_url)
    return lambda *args: triplets(env, *args, cwd=tmp_path)


def test_the_table_gives_the_total_and_limit_zero_returns_every_row(database_url: str, run: Run) -> None:
    add(database_url, [Triplet(f"实体{i:03}", "是", "数") for i in range(201)], text="实体")
    first, last = run("query"), run("query", "--offset", "200")
    assert first.returncode == last.returncode == 0, first.stderr + last.stderr
    assert first.stdout.splitlines()[-1] == "showing 1–100 of 201 triplets (next page: --offset 100)"
    assert "实体099" in first.stdout and "实体100" not in first.stdout
    assert last.stdout.splitlines()[-1] == "showing 201–201 of 201 triplets"
    every = run("query", "--jsonl", "--limit", "0")
    assert [json.loads(line)["subject"] for line in every.stdout.splitlines()] == [f"实体{i:03}" for i in range(201)]
    document = json.loads(run("query", "--json", "--limit", "0").stdout)
    assert (document["total"], document["offset"], document["limit"], len(document["items"])) == (201, 0, None, 201)
    page = json.loads(run("query", "--json", "--limit", "5", "--offset", "198").stdout)
    assert (page["total"], page["offset"], page["limit"]) == (201, 198, 5)
    assert [item["subject"] for item in page["items"]] == ["实体198", "实体199", "实体200"]
    assert set(page["items"][0]) == {field.name for field in fields(TripletRecord)}


@pytest.mark.parametrize("distinct", [(), ("--distinct",)], ids=["rows", "distinct"])
def test_csv_with_no_match_still_prints_the_full_header(database_url: str, run: Run, distinct: tuple[str, ...]) -> None:
    add(database_url, [DIRECTOR])
    result = run("query", "--csv", "--subject", "无此实体", *distinct)
    assert result.returncode == 0, result.stderr
    kind = DistinctTriplet if distinct else TripletRecord
    assert result.stdout.splitlines() == [",".join(field.name for field in fields(kind))]
    table = run("query", "--subject", "无此实体", *distinct)
    assert table.stdout.splitlines()[-1] == ("no distinct triplets match" if distinct else "no triplets match")


@pytest.mark.parametrize("options", [("--json", "--csv"), ("--jsonl", "--csv"), ("--json", "--jsonl")])
def test_two_output_formats_are_refused(tmp_path: Path, options: tuple[str, str]) -> None:
    env = worker_env(database_url=f"sqlite:///{tmp_path / 'none.db'}")
    result = triplets(env, "query", *options, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == f"error: {options[0]}: not with {options[1]}: choose one output format\n"


@pytest.mark.parametrize("args, message", [
    (("query", "--limit", "-1"), "--limit: must be 0 or more, got -1"),
    (("query", "--distinct", "--offset", "-5"), "--offset: must be 0 or more, got -5"),
    (("neighbors", "甲", "--depth", "0"), "--depth: must be 1 or more, got 0"),
    (("stats", "--top", "0"), "--top: must be 1 or more, got 0"),
])
def test_a_bound_below_its_minimum_is_one_line(database_url: str, run: Run, args: tuple[str, ...],
                                               message: str) -> None:
    add(database_url, [DIRECTOR])
    result = run(*args)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", f"error: {message}\n")


def test_distinct_merges_the_same_triplet_from_two_jobs(database_url: str, run: Run) -> None:
    add(database_url, [DIRECTOR, ACTOR])
    add(database_url, [DIRECTOR])
    rows = [json.loads(line) for line in run("query", "--distinct", "--jsonl").stdout.splitlines()]
    assert [(r["predicate"], r["count"], r["documents"], r["jobs"]) for r in rows] == [("导演", 2, 2, 2), ("主演", 1, 1, 1)]
    table = run("query", "--distinct", "--predicate", "导演")
    assert table.stdout.splitlines()[-1] == "showing 1–1 of 1 distinct triplets"
    plain = list(csv.DictReader(io.StringIO(run("query", "--csv", "--predicate", "导演").stdout)))
    assert [(r["object"], r["document"]) for r in plain] == [("张玲", "doc"), ("张玲", "doc")]


def test_filters_match_exactly_unless_contains(database_url: str, run: Run) -> None:
    job = add(database_url, [DIRECTOR, ACTOR], external_id="a.txt:1")
    add(database_url, [Triplet("张玲", "出生地", "上海", "人物", "地点")], text="张玲生于上海", external_id="b.txt:1")

    def objects(*args: str) -> list[str]:
        result = run("query", "--jsonl", *args)
        assert result.returncode == 0, result.stderr
        return sorted(json.loads(line)["object"] for line in result.stdout.splitlines())

    assert objects("--subject", "娘家") == []
    assert objects("--subject", "娘家", "--contains") == ["张玲", "林在培"]
    assert objects("--object-type", "人物", "--predicate", "主演") == ["林在培"]
    assert objects("--subject-type", "人物") == ["上海"]
    assert objects("--document", "b.txt:1") == ["上海"]
    assert objects("--job", str(job)) == ["张玲", "林在培"]
    assert objects("--model", "m", "--adapter", "") == ["上海", "张玲", "林在培"]
    assert objects("--model", "m2") == []


def test_neighbors_hop_by_hop(database_url: str, run: Run) -> None:
    add(database_url, [Triplet(a, "认识", b) for a, b in (("甲", "乙"), ("乙", "丙"), ("丙", "丁"))], text="甲乙丙丁")
    document = json.loads(run("neighbors", "甲", "--depth", "2", "--json").stdout)
    assert [(e["hop"], e["subject"], e["object"]) for e in document["edges"]] == [(1, "甲", "乙"), (2, "乙", "丙")]
    table = run("neighbors", "甲", "--depth", "2")
    assert table.returncode == 0, table.stderr
    assert "hop 1 · 1 edge" in table.stdout and "hop 2 · 1 edge" in table.stdout and "丁" not in table.stdout
    assert table.stdout.splitlines()[-1] == "2 edges within 2 hops of 甲"
    unknown = run("neighbors", "无名氏")
    assert (unknown.returncode, unknown.stdout) == (2, "")
    assert unknown.stderr == "error: entity '无名氏': in no stored triplet, as subject or object\n"


def test_stats_as_tables_and_json(database_url: str, run: Run) -> None:
    job = add(database_url, [DIRECTOR, ACTOR])
    add(database_url, [DIRECTOR])
    document = json.loads(run("stats", "--json").stdout)
    assert (document["triplets"], document["distinct_triplets"], document["documents_done"]) == (3, 2, 2)
    assert document["predicates"][0] == {"predicate": "导演", "count": 2}
    assert [(j["id"], j["triplets"]) for j in document["jobs"]] == [(job, 2), (job + 1, 1)]
    one = json.loads(run("stats", "--job", str(job), "--json").stdout)
    assert (one["job_id"], one["triplets"], len(one["jobs"])) == (job, 2, 1)
    table = run("stats", "--top", "1")
    assert table.returncode == 0, table.stderr
    assert "top 1 predicates" in table.stdout and "parse failures" in table.stdout
    missing = run("stats", "--job", str(job + 5))
    assert (missing.returncode, missing.stderr) == (2, f"error: job {job + 5}: not found\n")
