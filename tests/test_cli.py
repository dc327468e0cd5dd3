"""The CLI as a user runs it: light imports, clear errors, real exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from models.migrate import upgrade
from tests.workers import free_port, worker_env

HEAVY = ("torch", "transformers", "peft", "bitsandbytes", "accelerate")


def imported_modules(env: dict[str, str], *args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "producer", *args],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=120,
    )
    modules = {
        line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")
    }
    return result, modules


@pytest.mark.parametrize(
    "args",
    [("--help",), ("status",), ("query", "--limit", "5"), ("submit", "CORPUS")],
    ids=["help", "status", "query", "submit"],
)
def test_producer_side_never_imports_model_libraries(tmp_path: Path, broker_url: str, args: tuple[str, ...]) -> None:
    database_url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(database_url)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("《娘家的故事第二部》是张玲执导\n", encoding="utf-8")
    env = worker_env(broker_url=broker_url, database_url=database_url)
    if args == ("status",):
        subprocess.run([sys.executable, "-m", "producer", "submit", str(corpus)], env=env, check=True, capture_output=True)
    args = tuple(str(corpus) if a == "CORPUS" else a for a in args)
    result, modules = imported_modules(env, *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "producer.cli" in modules
    assert not {m.split(".")[0] for m in modules} & set(HEAVY)


def test_submit_to_uninitialised_store_names_the_fix(tmp_path: Path, broker_url: str) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("一句话\n", encoding="utf-8")
    env = worker_env(broker_url=broker_url, database_url=f"sqlite:///{tmp_path / 'new.db'}")
    result = subprocess.run(
        [sys.executable, "-m", "producer", "submit", str(corpus)], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "has no tables: run `triplets db upgrade`" in result.stderr


def test_unreachable_broker_is_a_clear_error(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(database_url)
    corpus = tmp_path / "c.txt"
    corpus.write_text("一句话\n", encoding="utf-8")
    env = worker_env(broker_url="redis://:hunter2@127.0.0.1:1/0", database_url=database_url)
    result = subprocess.run(
        [sys.executable, "-m", "producer", "submit", str(corpus)], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 3
    assert result.stderr == "error: broker redis://:***@127.0.0.1:1/0 unavailable: connection refused\n"
    assert "hunter2" not in result.stderr + result.stdout


@pytest.mark.parametrize("limit, rows", [("0", 3), ("2", 2)])
def test_query_limit_zero_is_all_rows(database_url: str, broker_url: str, tmp_path: Path, limit: str, rows: int) -> None:
    from models import store
    from models.db import make_session_factory
    from models.triplet import Triplet

    sessions = make_session_factory(database_url)
    text = "张玲执导，林在培、何赛飞主演"
    triplets = [Triplet("片", "导演", "张玲"), Triplet("片", "主演", "林在培"), Triplet("片", "主演", "何赛飞")]
    with sessions.begin() as session:
        job = store.create_job(session, name="q")
        (doc_id,) = store.add_documents(session, job_id=job.id, documents=[store.NewDocument(text, "d")])
        store.record_outcomes(session, [store.Outcome(doc_id, text, triplets)], model="m", adapter="", prompt_version="v1")
    env = worker_env(broker_url=broker_url, database_url=database_url)
    result = subprocess.run([sys.executable, "-m", "producer", "query", "--jsonl", "--limit", limit], env=env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == rows


def test_query_refuses_a_negative_limit(tmp_path: Path) -> None:
    """PostgreSQL fails a negative LIMIT, SQLite ignores it: it is refused before either sees it."""
    env = worker_env(database_url=f"sqlite:///{tmp_path / 'none.db'}")
    result = subprocess.run([sys.executable, "-m", "producer", "query", "--limit", "-1"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--limit" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "none.db").exists()


def test_flower_never_starts_without_auth(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "producer", "monitor"], env=worker_env(), cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "TRIPLETS_FLOWER_BASIC_AUTH: not set; Flower never runs without auth" in result.stderr


def test_flower_answers_only_with_credentials_and_stops_on_sigterm(tmp_path: Path, broker_url: str) -> None:
    import base64
    import time
    import urllib.error
    import urllib.request

    import psutil

    port = free_port()
    env = worker_env(broker_url=broker_url, flower_basic_auth="admin:s3cret")
    flower = subprocess.Popen([sys.executable, "-m", "producer", "monitor", "--port", str(port)], env=env,
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def status(headers: dict[str, str], path: str = "/workers") -> int | None:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code
        except OSError:
            return None

    started: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 60
        while (anonymous := status({})) is None:
            assert flower.poll() is None and time.monotonic() < deadline, "Flower did not start"
            time.sleep(0.2)
        # Every process serving Flower: the one started here and anything it started.
        started = [psutil.Process(flower.pid), *psutil.Process(flower.pid).children(recursive=True)]
        token = base64.b64encode(b"admin:s3cret").decode()
        assert anonymous == 401
        assert status({"Authorization": f"Basic {token}"}) == 200
        # Flower's own /metrics and /healthcheck too: Flower leaves them open, producer/flower_app.py does not.
        wrong = base64.b64encode(b"admin:wrong").decode()
        for path in ("/metrics", "/healthcheck"):
            assert status({}, path) == 401, path
            assert status({"Authorization": f"Basic {wrong}"}, path) == 401, path
            assert status({"Authorization": f"Basic {token}"}, path) == 200, path
        assert not any("s3cret" in " ".join(p.cmdline()) for p in started), "the password is in a command line"
    finally:
        flower.terminate()  # SIGTERM, as a supervisor or `docker stop` sends it
        try:
            flower.wait(timeout=30)
        finally:
            _, left = psutil.wait_procs(started, timeout=30)
            for process in left:
                process.kill()
    assert not left, f"still running after SIGTERM: {[p.pid for p in left]}"
    assert status({}) is None
