"""The web view (producer/web/) through FastAPI's TestClient, on a real store: SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import html
import re
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from models import store
from models.migrate import upgrade
from models.settings import load_settings
from models.tables import Document
from models.triplet import Span, Triplet
from producer.web.app import create_app
from tests.workers import worker_env

FILM = "《娘家的故事第二部》是张玲执导，林在培、何赛飞等主演的电视剧"
DIRECTOR = Triplet("娘家的故事第二部", "导演", "张玲", "影视作品", "人物")
ACTOR = Triplet("娘家的故事第二部", "主演", "林在培", "影视作品", "人物")
SCRIPT = "<script>alert(1)</script>"
HOSTILE = Triplet(SCRIPT, "作者", "A&B", "图书作品", "人物")
PRESS = "北京大学出版社出版"
OVERLAP = Triplet("北京大学", "出版社", "大学出版社")
ASTRAY = Triplet("北大", "简称", "不在文中")
EXTRACTOR = {"model": "tiny", "adapter": "", "prompt_version": "v1"}


@pytest.fixture
def store_ids(sessions: sessionmaker[Session]) -> dict[str, int]:
    """Job 1: four documents done (one with a warning and a rejected triplet), one failed, one pending."""
    texts = {"film": FILM, "hostile": f"{SCRIPT}的作者是A&B", "press": PRESS, "failed": "坏", "pending": "等"}
    with sessions.begin() as session:
        job = store.create_job(session, name="网页")
        ids = dict(zip(texts, store.add_documents(
            session, job_id=job.id, documents=[store.NewDocument(t, f"c.txt:{i}") for i, t in enumerate(texts.values())])))
        other = store.create_job(session, name="other")
        store.add_documents(session, job_id=other.id, documents=[store.NewDocument("别的", "o.txt:1")])
        store.record_outcomes(session, [
            store.Outcome(ids["film"], FILM, [DIRECTOR, ACTOR], warning="window 2 of 3 failed",
                          rejected=[{"subject": "张玲", "predicate": "国籍", "object": "<i>中国</i>",
                                     "reason": "object not in the text"}]),
            store.Outcome(ids["hostile"], texts["hostile"], [HOSTILE]),
            # overlapping spans, one missing, one past the end of the text (stored by an older extractor)
            store.Outcome(ids["press"], PRESS, [OVERLAP, ASTRAY],
                          spans=[(Span(0, 4), Span(2, 7)), (None, Span(100, 104))]),
            store.Outcome(ids["failed"], "坏", error="model answered <b>nonsense</b>", raw_output="<b>?</b>"),
        ], **EXTRACTOR)
        # Ten seconds from the first start to the last finish: 4 finished → 0.4 docs/s, 1 pending → ETA 2.5 s.
        last = session.scalar(select(func.max(Document.finished_at)))
        session.execute(update(Document).where(Document.id == ids["film"]).values(started_at=last - timedelta(seconds=10)))
    return {"job": job.id, "other": other.id, **ids}


@pytest.fixture
def client(database_url: str) -> TestClient:
    with TestClient(create_app(load_settings(database_url=database_url))) as test_client:
        yield test_client


def _marks(page: str) -> list[tuple[int, int, str, str]]:
    """(start, end, classes, text) of each <mark> in the document text, offsets counted in unescaped characters."""
    body = re.search(r'<div class="text" id="text">(.*?)</div>', page, re.S).group(1)
    marks, position = [], 0
    for plain, classes, marked in re.findall(r'([^<]*)(?:<mark class="([^"]*)" data-triplets="[^"]*">([^<]*)</mark>)?',
                                             body):
        position += len(html.unescape(plain))
        if classes:
            text = html.unescape(marked)
            marks.append((position, position + len(text), classes, text))
            position += len(text)
    return marks


def test_every_page_and_api_answers(client: TestClient, store_ids: dict[str, int]) -> None:
    for path in ("/", "/triplets", f"/documents/{store_ids['film']}", "/entities/张玲", "/static/style.css",
                 "/api/jobs", f"/api/jobs/{store_ids['job']}", "/api/triplets", f"/api/documents/{store_ids['film']}",
                 "/api/entities/张玲/neighbors", "/openapi.json"):
        response = client.get(path)
        assert response.status_code == 200, (path, response.text)
    assert "网页" in client.get("/").text


def test_jobs_report_counts_rate_and_eta(client: TestClient, store_ids: dict[str, int]) -> None:
    jobs = client.get("/api/jobs").json()
    assert [job["id"] for job in jobs] == [store_ids["other"], store_ids["job"]]  # newest first
    job = client.get(f"/api/jobs/{store_ids['job']}").json()
    assert job["counts"] == {"pending": 1, "running": 0, "done": 3, "failed": 1}
    assert (job["total"], job["finished"], job["warnings"]) == (5, 4, 1)
    assert job["docs_per_second"] == pytest.approx(0.4)
    assert job["eta_seconds"] == pytest.approx(2.5)
    page = client.get("/").text
    assert '<progress max="5" value="4">' in page and "0.40" in page
    assert 'fetch("/api/jobs"' in page  # the live refresh


def test_repeated_searches_run_prepared_statements_on_postgresql(client: TestClient, store_ids: dict[str, int],
                                                                 database_url: str) -> None:
    """Each request's session ends by committing: a rollback would make psycopg forget the connection's
    prepared statements, and PostgreSQL would plan every search's union over the segments again."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite's driver keeps its statements whatever the session's end")
    for _ in range(6):  # psycopg prepares a statement on its fifth run
        assert client.get("/api/triplets", params={"subject": DIRECTOR.subject}).json()["total"] == 2
    with client.app.state.sessions.begin() as session:  # the one pooled connection the requests used
        statements = session.scalars(select(text("statement")).select_from(text("pg_prepared_statements"))).all()
    assert any("FROM triplets" in statement for statement in statements), statements


def test_triplet_filters_totals_and_pages(client: TestClient, store_ids: dict[str, int]) -> None:
    def total(**params: object) -> int:
        return client.get("/api/triplets", params=params).json()["total"]

    assert total() == 5
    assert total(subject=DIRECTOR.subject) == 2
    assert total(predicate="导演", object="张玲", subject_type="影视作品", object_type="人物") == 1
    assert total(subject="娘家") == 0
    assert total(subject="娘家", contains=True) == 2
    assert total(job=store_ids["other"]) == 0
    assert total(document="c.txt:1") == 1
    second = client.get("/api/triplets", params={"subject": DIRECTOR.subject, "limit": 1, "offset": 1}).json()
    assert (second["total"], [t["predicate"] for t in second["items"]]) == (2, ["主演"])
    # The form sends every box, empty ones as "": they mean no filter.
    page = client.get("/triplets", params={"subject": "娘家", "contains": "1", "predicate": "", "job": "",
                                           "limit": 1, "page": 2}).text
    assert "2 triplets match" in page and "page 2 of 2" in page
    assert "主演" in page and "导演" not in page
    assert 'href="/triplets?subject=%E5%A8%98%E5%AE%B6&amp;contains=1&amp;limit=1&amp;page=1"' in page
    bad = client.get("/triplets", params={"job": "one"})
    assert bad.status_code == 400 and "job: expected a job id (a number), got &#39;one&#39;" in bad.text


def test_document_marks_subject_and_object_at_their_offsets(client: TestClient, store_ids: dict[str, int]) -> None:
    stored = client.get(f"/api/documents/{store_ids['film']}").json()
    expected = {(t[f"{role}_start"], t[f"{role}_end"], role, t[role]) for t in stored["triplets"]
                for role in ("subject", "object")}
    assert {(1, 9, "subject", "娘家的故事第二部"), (11, 13, "object", "张玲")} <= expected
    assert set(_marks(client.get(f"/documents/{store_ids['film']}").text)) == expected


def test_overlapping_missing_and_stale_offsets(client: TestClient, store_ids: dict[str, int]) -> None:
    page = client.get(f"/documents/{store_ids['press']}").text
    assert _marks(page) == [(0, 2, "subject", "北京"), (2, 4, "object subject overlap", "大学"),
                            (4, 7, "object", "出版社")]
    assert "subject not located in the text" in page
    assert "object offsets 100:104 outside the text" in page
    assert re.search(r'<div class="text" id="text">.*出版社</mark>出版</div>', page, re.S)  # the tail, unmarked


def test_status_error_warning_and_rejected(client: TestClient, store_ids: dict[str, int]) -> None:
    film = client.get(f"/documents/{store_ids['film']}").text
    assert "warning: window 2 of 3 failed" in film
    assert "object not in the text" in film and "&lt;i&gt;中国&lt;/i&gt;" in film
    failed = client.get(f"/documents/{store_ids['failed']}").text
    assert '<span class="status failed">failed</span>' in failed
    assert "error: model answered &lt;b&gt;nonsense&lt;/b&gt;" in failed and "&lt;b&gt;?&lt;/b&gt;" in failed
    assert client.get(f"/api/documents/{store_ids['failed']}").json()["raw_output"] == "<b>?</b>"


def test_stored_text_is_escaped_everywhere(client: TestClient, store_ids: dict[str, int]) -> None:
    escaped = html.escape(SCRIPT, quote=False)
    for path, params in (("/triplets", {"subject": SCRIPT}), (f"/documents/{store_ids['hostile']}", {}),
                         (f"/entities/{SCRIPT}", {}), ("/entities/A&B", {"depth": 2})):
        page = client.get(path, params=params).text
        assert SCRIPT not in page, path
        assert escaped in page, path
    assert "A&amp;B" in client.get(f"/documents/{store_ids['hostile']}").text
    assert client.get("/api/triplets", params={"subject": SCRIPT}).json()["items"][0]["object"] == "A&B"


def test_entity_neighbours_by_depth(client: TestClient, store_ids: dict[str, int]) -> None:
    def edges(depth: int) -> set[tuple[int, str]]:
        body = client.get("/api/entities/张玲/neighbors", params={"depth": depth}).json()
        return {(edge["hop"], edge["predicate"]) for edge in body["edges"]}

    assert edges(1) == {(1, "导演")}
    assert edges(2) == {(1, "导演"), (2, "主演")}  # through 娘家的故事第二部
    assert client.get("/api/entities/张玲/neighbors", params={"depth": 3}).status_code == 422
    page = client.get("/entities/张玲", params={"depth": 2}).text
    assert "林在培" in page and '<option value="2" selected>' in page
    assert "林在培" not in client.get("/entities/张玲").text


def test_unknown_ids_answer_404(client: TestClient, store_ids: dict[str, int]) -> None:
    assert client.get("/api/documents/999999").json() == {"detail": "document 999999: not found"}
    assert client.get("/api/jobs/999999").status_code == 404
    page = client.get("/documents/999999")
    assert page.status_code == 404 and "document 999999: not found" in page.text


def test_read_only_and_schema(client: TestClient) -> None:
    for path in ("/", "/triplets", "/api/jobs", "/api/triplets", "/api/documents/1", "/static/style.css"):
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            response = client.request(method, path)
            assert response.status_code == 405, (method, path)
            assert response.headers["allow"] == "GET, HEAD"
    head = client.head("/")
    assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) > 0
    schema = client.get("/openapi.json").json()
    assert {"/api/jobs", "/api/jobs/{job_id}", "/api/triplets", "/api/documents/{document_id}",
            "/api/entities/{name}/neighbors"} == set(schema["paths"])
    assert {method for operations in schema["paths"].values() for method in operations} == {"get"}
    assert client.get("/docs").status_code == 404  # Swagger UI loads its JS from a CDN: off


def test_basic_auth_guards_everything(database_url: str) -> None:
    settings = load_settings(database_url=database_url, web_basic_auth="ann:s3cret")
    with TestClient(create_app(settings)) as client:
        for path in ("/", "/api/jobs", "/openapi.json", "/static/style.css"):
            response = client.get(path)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"].startswith('Basic realm="triplets"')
        assert client.get("/", auth=("ann", "wrong")).status_code == 401
        assert client.get("/", headers={"Authorization": "Basic !!notbase64"}).status_code == 401
        assert client.get("/", auth=("ann", "s3cret")).status_code == 200
        token = base64.b64encode(b"ann:s3cret").decode()
        assert client.get("/api/jobs", headers={"Authorization": f"basic {token}"}).status_code == 200


def _web(env: dict[str, str], *args: str, prelude: str = "") -> subprocess.CompletedProcess[str]:
    code = f"import sys; {prelude}sys.argv = ['triplets', 'web', *sys.argv[1:]]; from producer.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).parent.parent)


def test_web_command_refuses_what_it_cannot_serve_safely(tmp_path: Path) -> None:
    env = worker_env(database_url=f"sqlite:///{tmp_path / 't.db'}")
    exposed = _web(env, "--host", "0.0.0.0", "--port", "1")
    assert exposed.returncode == 2
    assert exposed.stderr.strip() == ("error: --host 0.0.0.0: not a loopback address; set "
                                      "TRIPLETS_WEB_BASIC_AUTH=user:password to serve the web view beyond this machine")
    bad_auth = _web({**env, "TRIPLETS_WEB_BASIC_AUTH": "nopassword"})
    assert bad_auth.returncode == 2 and "TRIPLETS_WEB_BASIC_AUTH: expected user:password" in bad_auth.stderr
    # Without the extra (fastapi not importable), one line naming the install command.
    missing = _web(env, prelude="sys.modules['fastapi'] = None; ")
    assert missing.returncode == 2
    assert missing.stderr.strip() == "error: the web view needs fastapi: pip install 'triplet-queue[web]'"
    unmigrated = _web(env, "--port", "1")
    assert unmigrated.returncode == 2 and "run `triplets db upgrade`" in unmigrated.stderr
    upgrade(env["TRIPLETS_DATABASE_URL"])
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        busy = _web(env, "--port", str(port))
    assert busy.returncode == 2
    assert busy.stderr.strip().startswith(f"error: --host 127.0.0.1 --port {port}: cannot listen there: ")
