"""`triplets export`: every format streamed from a real store (SQLite and PostgreSQL) and read back."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

import pytest
import rdflib
from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from models.db import read_sessions
from models.graph_export import Entity, iter_entities
from models.migrate import upgrade
from models import triplet_rows
from models.tables import Document, Job, Status, utcnow
from models.triplet_query import TripletFilter, find_distinct, find_triplets, iter_triplets
from producer.export_commands import export_neo4j, export_stream
from producer.graph_formats import DEFAULT_BASE_IRI, NODE_HEADER, RELATIONSHIP_HEADER, entity_id, record_fields
from tests.workers import triplets, worker_env

# Names that break naive writers: quotes, backslashes, line ends, controls, IRI delimiters, CSV delimiters.
HOSTILE = ["张玲", 'say "hi"', "C:\\path\\", "两行\n文字", "cr\rlf", "with space", "<b>", "100%", "%41",
           "a/b?c#d", "逗号,分号;", "\x01bell\x7f", "{|}^`", "  padded  "]
TRIPLETS = [
    ("娘家的故事", "影视作品", "导演", "张玲", "人物"),
    ("娘家的故事", "影视作品", "主演", "林在培", "人物"),
    ("娘家的故事", "影视作品", "主演", "何赛飞", ""),
    ("张玲", "人物", "国籍", "中国", "国家"),
    ("张玲", "", "国籍", "中国", "国家"),  # a name given two types: two entities, two nodes
    *((name, "人物", "关联", HOSTILE[(i + 1) % len(HOSTILE)], "作品") for i, name in enumerate(HOSTILE)),
]


def seed(sessions: sessionmaker[Session], rows: list[tuple[str, ...]], *, job: str = "j", documents: int = 3) -> int:
    """A job whose ``documents`` documents each stored every one of ``rows``, written directly; the job id."""
    with sessions.begin() as session:
        job_id = session.scalars(insert(Job).returning(Job.id), [{"name": job}]).one()
        doc_ids = session.scalars(insert(Document).returning(Document.id), [
            {"job_id": job_id, "external_id": f"{job}:{n}", "sha256": f"{job}-{n}", "text": "…", "status": Status.done}
            for n in range(documents)
        ]).all()
        now = triplet_rows.timestamp(session, utcnow())
        triplet_rows.insert_triplets(session, [
            (doc, s, st, p, o, ot, None, None, None, None, "m", "", "v1", now)
            for doc in doc_ids for s, st, p, o, ot in rows
        ])
    return job_id


def stored_entities(rows: list[tuple[str, ...]]) -> set[tuple[str, str]]:
    return {(s, st) for s, st, *_ in rows} | {(o, ot) for *_, o, ot in rows}


@pytest.mark.parametrize("distinct", [False, True], ids=["records", "distinct"])
def test_jsonl_and_csv_stream_every_record_in_order_across_batches(sessions: sessionmaker[Session],
                                                                   distinct: bool) -> None:
    job = seed(sessions, TRIPLETS)
    seed(sessions, TRIPLETS[:2], job="other", documents=1)  # outside --job: must not appear
    flt = TripletFilter(job_id=job)
    with sessions() as session:
        page = find_distinct(session, flt, limit=None) if distinct else find_triplets(session, flt, limit=None)
        expected = [record.as_dict() for record in page.items]
        out = io.StringIO()
        assert export_stream(session, flt, "jsonl", out, distinct=distinct, base="", batch=4) == len(expected)
        table = io.StringIO()
        assert export_stream(session, flt, "csv", table, distinct=distinct, base="", batch=4) == len(expected)
    assert len(expected) == (len(TRIPLETS) if distinct else 3 * len(TRIPLETS))  # several batches of 4
    assert [json.loads(line) for line in out.getvalue().splitlines()] == expected
    table.seek(0)
    reader = csv.reader(table)
    assert tuple(next(reader)) == record_fields(distinct=distinct)
    rows = list(reader)
    assert [row[list(expected[0]).index("subject")] for row in rows] == [record["subject"] for record in expected]
    assert [row[-1] for row in rows] == [str(record[list(record)[-1]]) for record in expected]


def test_csv_of_nothing_still_has_its_header(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        out = io.StringIO()
        assert export_stream(session, TripletFilter(), "csv", out, distinct=False, base="") == 0
    assert out.getvalue().strip() == ",".join(record_fields(distinct=False))


def test_entities_are_deduplicated_by_the_database_in_batches(sessions: sessionmaker[Session]) -> None:
    seed(sessions, TRIPLETS)
    with sessions() as session:
        entities = list(iter_entities(session, TripletFilter(), batch=3))
    assert Counter(entities).most_common(1)[0][1] == 1
    assert {(e.name, e.type) for e in entities} == stored_entities(TRIPLETS)
    assert Entity("张玲", "") in entities and Entity("张玲", "人物") in entities
    names = [e.name for e in entities]
    assert sorted(set(names), key=names.index) == list(dict.fromkeys(names))  # a name's types are adjacent


def test_ntriples_parse_and_round_trip_every_name(sessions: sessionmaker[Session]) -> None:
    seed(sessions, TRIPLETS)
    base = "https://example.org/kg/"
    with sessions() as session:
        out = io.StringIO()
        written = export_stream(session, TripletFilter(), "ntriples", out, distinct=False, base=base, batch=3)
    text = out.getvalue()
    assert written == len(text.splitlines())
    graph = rdflib.Graph()
    graph.parse(data=text, format="nt")
    labels = {str(s): str(o) for s, _, o in graph.triples((None, rdflib.RDFS.label, None))}
    names = {name for name, _ in stored_entities(TRIPLETS)}
    assert sorted(labels.values()) == sorted(names)  # one label per name, every name exact
    assert all(unquote(iri.removeprefix(f"{base}entity/")) == label for iri, label in labels.items())
    iri = {label: rdflib.URIRef(i) for i, label in labels.items()}
    types = {(str(s), str(o)) for s, _, o in graph.triples((None, rdflib.RDF.type, None))}
    assert types == {(str(iri[n]), f"{base}type/{t}") for n, t in stored_entities(TRIPLETS) if t}
    for s, _, p, o, _ in TRIPLETS:
        assert (iri[s], rdflib.URIRef(f"{base}predicate/{p}"), iri[o]) in graph
    assert "张玲" in text and "%E5" not in text  # Chinese stays readable


def test_neo4j_files_agree_with_each_other_and_the_store(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    seed(sessions, TRIPLETS)
    with sessions() as session:
        nodes, relationships = export_neo4j(session, TripletFilter(), tmp_path / "graph", batch=2)
    with open(tmp_path / "graph" / "nodes.csv", encoding="utf-8", newline="") as f:
        node_rows = list(csv.reader(f))
    with open(tmp_path / "graph" / "relationships.csv", encoding="utf-8", newline="") as f:
        edge_rows = list(csv.reader(f))
    assert tuple(node_rows[0]) == NODE_HEADER and tuple(edge_rows[0]) == RELATIONSHIP_HEADER
    node_rows, edge_rows = node_rows[1:], edge_rows[1:]
    assert (nodes, relationships) == (len(node_rows), len(edge_rows)) == (len(stored_entities(TRIPLETS)), len(TRIPLETS))
    ids = [row[0] for row in node_rows]
    assert len(set(ids)) == len(ids)
    assert {(name, kind) for _, name, kind, _ in node_rows} == stored_entities(TRIPLETS)  # quoting round-trips
    assert {row[3] for row in node_rows if row[2] == ""} == {"Entity"}
    assert {row[3] for row in node_rows if row[2] == "人物"} == {"Entity;人物"}
    assert all(row[0] in ids and row[1] in ids for row in edge_rows)
    edges = {(row[0], row[2], row[1]) for row in edge_rows}
    for s, st, p, o, ot in TRIPLETS:
        assert (entity_id(s, st), p, entity_id(o, ot)) in edges
    assert sum(int(row[4]) for row in edge_rows) == 3 * len(TRIPLETS)


def test_a_sqlite_export_never_blocks_a_writer(tmp_path: Path) -> None:
    """The store's own sessions take SQLite's write lock; an export reading for minutes must not."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    sessions = read_sessions(url)
    seed(sessions, TRIPLETS)
    with sessions() as session:
        stream = iter_triplets(session, TripletFilter(), batch=2)
        next(stream)  # mid-export, a page read
        writer = sqlite3.connect(tmp_path / "store.db", timeout=0.5)
        writer.execute("INSERT INTO jobs (name, created_at) VALUES ('new', '2026-01-01')")
        writer.commit()
        writer.close()
        assert len(list(stream)) == 3 * len(TRIPLETS) - 1


@pytest.fixture
def cli_store(tmp_path: Path) -> tuple[dict[str, str], int]:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    job = seed(read_sessions(url), TRIPLETS)
    return worker_env(database_url=url), job


def test_export_cli_writes_each_format(cli_store: tuple[dict[str, str], int], tmp_path: Path) -> None:
    env, job = cli_store
    result = triplets(env, "export", "--format", "csv", "--job", str(job), "--output", "out.csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"wrote {3 * len(TRIPLETS)} triplets to out.csv\n"
    with open(tmp_path / "out.csv", encoding="utf-8", newline="") as f:
        assert len(list(csv.DictReader(f))) == 3 * len(TRIPLETS)
    assert not list(tmp_path.glob("*.partial"))
    result = triplets(env, "export", "--distinct", cwd=tmp_path)  # jsonl to stdout by default
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["count"] for line in result.stdout.splitlines()] == [3] * len(TRIPLETS)
    result = triplets(env, "export", "--format", "neo4j", "--output", "graph", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "neo4j-admin database import full neo4j --multiline-fields=true --nodes=graph/nodes.csv" in result.stderr
    result = triplets(env, "export", "--format", "ntriples", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    graph = rdflib.Graph().parse(data=result.stdout, format="nt")
    assert rdflib.URIRef(f"{DEFAULT_BASE_IRI}entity/张玲") in set(graph.subjects())


@pytest.mark.parametrize("args, message", [
    (("--format", "xml"), "error: --format: unknown format 'xml': use jsonl, csv, ntriples, neo4j\n"),
    (("--format", "neo4j"), "error: --output: neo4j writes nodes.csv and relationships.csv: give a folder\n"),
    (("--format", "neo4j", "--output", "afile"), "error: --output: afile is a file; neo4j needs a folder\n"),
    (("--output", "."), "error: --output: . is a folder; jsonl needs a file name\n"),
    (("--format", "ntriples", "--base-iri", "kg/"), "error: --base-iri: 'kg/' is not an absolute IRI "
                                                    "(it needs a scheme, e.g. https:// or urn:)\n"),
    (("--base-iri", "urn:a b:"), "error: --base-iri: 'urn:a b:' contains ' ', which an IRI may not contain\n"),
    (("--job", "999"), "error: job 999: not found\n"),
], ids=["format", "neo4j-without-output", "neo4j-into-file", "file-into-folder", "relative-iri", "space-iri",
        "unknown-job"])
def test_export_usage_errors_are_one_line(cli_store: tuple[dict[str, str], int], tmp_path: Path,
                                          args: tuple[str, ...], message: str) -> None:
    (tmp_path / "afile").write_text("")
    result = triplets(cli_store[0], "export", *args, cwd=tmp_path)
    assert (result.returncode, result.stderr, result.stdout) == (2, message, "")


def test_export_to_a_reader_that_stops_early_is_quiet(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    seed(read_sessions(url), TRIPLETS * 40, documents=5)  # far more than a pipe buffer holds
    export = subprocess.Popen([sys.executable, "-m", "producer", "export"], env=worker_env(database_url=url),
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert export.stdout is not None and export.stderr is not None
    json.loads(export.stdout.readline())
    export.stdout.close()  # as `| head -1` does
    assert export.wait(timeout=60) == 0
    assert export.stderr.read() == b""
