"""The web view in a real browser: a real pipeline stores a triplet, `triplets web` serves it behind basic auth,
headless Chromium searches for it and opens its document.

Playwright drives Debian's Chromium (/usr/bin/chromium) and never downloads a browser of its own.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from devkit.assets import demo_corpus_path, demo_schema_path
from models.db import make_session_factory
from models.migrate import upgrade
from models.tables import TripletRow
from producer.local_worker import local_worker
from tests.workers import free_port, triplets, worker_env

pytestmark = pytest.mark.slow  # trains the demo model, runs a worker, a server and a browser (~40 s)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REPO = Path(__file__).resolve().parent.parent
SERVER_READY_S = 60


def _chromium_or_skip() -> None:
    if CHROMIUM.exists():
        return
    message = f"no {CHROMIUM}: install Debian's chromium (apt-get install chromium) to run the browser test"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _artifacts() -> Path:
    folder = Path(os.environ.get("TRIPLETS_TEST_ARTIFACTS") or REPO / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _wait_until_serving(url: str, auth: tuple[str, str], process: subprocess.Popen, log: Path) -> None:
    """Return once the server answers an authenticated request; fail with its log if it exits or never does."""
    deadline = time.monotonic() + SERVER_READY_S
    while True:
        try:
            if httpx.get(url + "api/jobs", auth=auth, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        if time.monotonic() > deadline:
            pytest.fail(f"`triplets web` not serving after {SERVER_READY_S} s; its log:\n{log.read_text()}")
        try:
            # Paces the poll on the server itself: returns at once if it dies.
            process.wait(timeout=0.1)
            pytest.fail(f"`triplets web` exited with {process.returncode}; its log:\n{log.read_text()}")
        except subprocess.TimeoutExpired:
            pass


@contextmanager
def web_server(env: dict[str, str], auth: tuple[str, str], log: Path) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "producer", "web", "--port", str(port)], env=env, cwd=REPO,
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_until_serving(url, auth, process, log)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _produce_triplets(tmp_path: Path, broker_url: str, database_url: str, model_dir: Path) -> TripletRow:
    """Run the demo model over a few demo documents, as tests/test_end_to_end.py does; a triplet it stored."""
    env = worker_env(broker_url=broker_url, database_url=database_url, base_model=model_dir,
                     schema_path=demo_schema_path(), max_new_tokens=256, max_batch_size=4, task_group_size=5)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(demo_corpus_path().read_text(encoding="utf-8").splitlines()[:3]) + "\n",
                      encoding="utf-8")
    with local_worker(env, tmp_path / "worker.log"):
        submitted = triplets(env, "submit", str(corpus), "--name", "browser", "--wait", cwd=tmp_path, timeout=300)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    with make_session_factory(database_url)() as session:
        located = select(TripletRow).where(TripletRow.subject_start.is_not(None), TripletRow.object_start.is_not(None))
        triplet = session.scalars(located.order_by(TripletRow.id).limit(1)).first()
    assert triplet is not None, "the demo model stored no located triplet"
    return triplet


# Each <mark> of the document text as [start, end, classes], offsets in characters of the text.
MARKS_JS = """() => { const marks = []; let at = 0;
  for (const node of document.getElementById("text").childNodes) {
    const length = node.textContent.length;
    if (node.nodeName === "MARK") marks.push([at, at + length, node.className]);
    at += length;
  }
  return marks; }"""


def _covered(marks: list[list], start: int, end: int, role: str) -> bool:
    """Every character of [start, end) lies in a mark of this role."""
    return all(any(a <= i < b and role in classes.split() for a, b, classes in marks) for i in range(start, end))


def test_search_a_produced_triplet_and_open_its_document(tmp_path: Path, broker_url: str, demo_model) -> None:
    _chromium_or_skip()
    from playwright.sync_api import expect, sync_playwright

    database_url = f"sqlite:///{tmp_path / 'triplets.db'}"
    upgrade(database_url)
    triplet = _produce_triplets(tmp_path, broker_url, database_url, demo_model[0])
    auth = ("viewer", secrets.token_urlsafe(12))
    env = worker_env(database_url=database_url, web_basic_auth=":".join(auth))
    with web_server(env, auth, tmp_path / "web.log") as url, sync_playwright() as playwright:
        assert httpx.get(url).status_code == 401  # the server really asks for the credentials
        browser = playwright.chromium.launch_persistent_context(
            tmp_path / "chromium-profile", executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            http_credentials={"username": auth[0], "password": auth[1]}, viewport={"width": 1280, "height": 800})
        try:
            page = browser.new_page()
            page.goto(url + "triplets")
            page.locator('#search input[name="subject"]').fill(triplet.subject)
            page.locator("#search button[type=submit]").click()
            page.wait_for_url("**/triplets?subject=*")
            row = page.locator("#results tbody tr").filter(has_text=triplet.predicate).filter(has_text=triplet.object)
            expect(row.first).to_be_visible()
            expect(page.locator("#total")).to_contain_text("match")
            page.screenshot(path=_artifacts() / "web-search.png", full_page=True)

            row.first.locator("a.document").click()
            page.wait_for_url(f"**/documents/{triplet.document_id}")
            expect(page.locator("h1")).to_contain_text(f"Document {triplet.document_id}")
            marks = page.evaluate(MARKS_JS)
            page.screenshot(path=_artifacts() / "web-document.png", full_page=True)

            page.goto(url)  # the jobs page rebuilds its rows from /api/jobs every 2 s
            expect(page.locator("#updated")).to_contain_text("refreshed", timeout=10_000)
            expect(page.locator("#jobs tbody tr").filter(has_text="browser")).to_contain_text("3/3")
        finally:
            browser.close()
    assert _covered(marks, triplet.subject_start, triplet.subject_end, "subject"), json.dumps(marks)
    assert _covered(marks, triplet.object_start, triplet.object_end, "object"), json.dumps(marks)
