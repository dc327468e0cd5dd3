"""Security promises of the services: broker auth and TLS, passwords in URLs, Flower. Servers configured
differently from the shared ones (a password, TLS) are started here, on free loopback ports, and stopped afterwards.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from devkit.assets import demo_corpus_path, demo_schema_path
from devkit.services import port_open
from models.errors import ConfigError
from models.migrate import upgrade
from models.settings import load_settings
from tests.workers import free_port, triplets, worker_env

PASSWORD = "Pw-d0nt-print-me"  # no URL-special characters, so the URL carries it verbatim
needs_redis_server = pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server binary")


@contextmanager
def own_redis(folder: Path, *options: str, port: int) -> Iterator[None]:
    """A redis-server of this test's own on ``port``, no persistence; its log is ``folder/redis.log``."""
    folder.mkdir(parents=True, exist_ok=True)
    command = ["redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder),
               "--logfile", str(folder / "redis.log"), *options]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not port_open("127.0.0.1", port):
            assert process.poll() is None and time.monotonic() < deadline, (folder / "redis.log").read_text()
            time.sleep(0.05)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def make_certificates(folder: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)

    folder.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
            "-subj", "/CN=triplets-test-ca")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj",
            "/CN=127.0.0.1")
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n", encoding="utf-8")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out",
            "server.crt", "-days", "1", "-extfile", "san.cnf")
    return {"ca": folder / "ca.crt", "cert": folder / "server.crt", "key": folder / "server.key"}


def sqlite_store(folder: Path) -> str:
    url = f"sqlite:///{folder / 'store.db'}"
    upgrade(url)
    return url


def one_document(folder: Path) -> Path:
    corpus = folder / "corpus.txt"
    corpus.write_text("《娘家的故事第二部》是张玲执导\n", encoding="utf-8")
    return corpus


def submit_ok(env: dict[str, str], tmp_path: Path, queue_url: str) -> None:
    result = triplets(env, "submit", str(one_document(tmp_path)), cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "1 documents queued" in result.stdout
    assert PASSWORD not in output
    with redis.Redis.from_url(queue_url) as client:
        assert client.llen("extract") == 1  # the message is in this server, not the shared one


@needs_redis_server
def test_submit_through_a_password_protected_broker(tmp_path: Path) -> None:
    port = free_port()
    url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    with own_redis(tmp_path / "redis", "--port", str(port), "--requirepass", PASSWORD, port=port):
        database_url = sqlite_store(tmp_path)
        wrong = triplets(worker_env(broker_url=f"redis://:not-{PASSWORD}@127.0.0.1:{port}/0",
                                    database_url=database_url), "submit", str(one_document(tmp_path)), cwd=tmp_path)
        assert wrong.returncode != 0 and "broker" in wrong.stderr
        assert PASSWORD not in wrong.stdout + wrong.stderr
        submit_ok(worker_env(broker_url=url, database_url=database_url), tmp_path, url)


@needs_redis_server
def test_submit_through_a_tls_broker_verifies_its_certificate(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl binary")
    tls = make_certificates(tmp_path / "tls")
    port = free_port()
    base = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0"
    url = f"{base}?ssl_cert_reqs=required&ssl_ca_certs={tls['ca']}"
    options = ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(tls["cert"]), "--tls-key-file",
               str(tls["key"]), "--tls-ca-cert-file", str(tls["ca"]), "--tls-auth-clients", "no",
               "--requirepass", PASSWORD]
    with own_redis(tmp_path / "redis", *options, port=port):
        database_url = sqlite_store(tmp_path)
        # No CA named: the server's certificate cannot be verified, and that must stop the client.
        unverified = triplets(worker_env(broker_url=base, database_url=database_url), "submit",
                              str(one_document(tmp_path)), cwd=tmp_path)
        assert unverified.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in unverified.stderr
        assert PASSWORD not in unverified.stdout + unverified.stderr
        submit_ok(worker_env(broker_url=url, database_url=database_url), tmp_path, url)


@needs_redis_server
def test_worker_round_trip_through_a_password_protected_broker(tmp_path: Path, demo_model) -> None:
    from producer.local_worker import local_worker

    port = free_port()
    url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(demo_corpus_path().read_text(encoding="utf-8").splitlines()[:3]) + "\n",
                      encoding="utf-8")
    with own_redis(tmp_path / "redis", "--port", str(port), "--requirepass", PASSWORD, port=port):
        env = worker_env(broker_url=url, database_url=sqlite_store(tmp_path), base_model=demo_model[0],
                         schema_path=demo_schema_path(), max_new_tokens=256)
        with local_worker(env, tmp_path / "worker.log"):
            submitted = triplets(env, "submit", str(corpus), "--wait", cwd=tmp_path, timeout=300)
        queried = triplets(env, "query", "--jsonl", "--limit", "0", cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert queried.stdout.strip(), "no triplets came back through the worker"
    for output in (submitted.stdout, submitted.stderr, queried.stdout, (tmp_path / "worker.log").read_text()):
        assert PASSWORD not in output


def test_url_passwords_never_reach_output(tmp_path: Path) -> None:
    dead_database = f"postgresql+psycopg://triplets:{PASSWORD}@127.0.0.1:{free_port()}/triplets"
    dead_broker = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    corpus = str(one_document(tmp_path))
    runs = {
        "status": (worker_env(database_url=dead_database), ("status",), "database"),
        "debug status": (worker_env(database_url=dead_database), ("--debug", "status"), "database"),
        "submit, database down": (worker_env(database_url=dead_database, broker_url=dead_broker), ("submit", corpus),
                                  "database"),
        "submit, broker down": (worker_env(database_url=sqlite_store(tmp_path), broker_url=dead_broker),
                                ("submit", corpus), "broker"),
        "submit, debug logging": (worker_env(database_url=sqlite_store(tmp_path), broker_url=dead_broker,
                                             log_level="DEBUG"), ("--debug", "submit", corpus), "broker"),
    }
    for name, (env, args, service) in runs.items():
        result = triplets(env, *args, cwd=tmp_path)
        assert result.returncode != 0, name
        assert service in result.stderr, f"{name}: failed for another reason: {result.stderr[-500:]}"
        assert PASSWORD not in result.stdout + result.stderr, name


@pytest.mark.parametrize("auth", [":", "admin:", ":pw"])
def test_empty_flower_credentials_are_refused(tmp_path: Path, auth: str) -> None:
    with pytest.raises(ConfigError, match="TRIPLETS_FLOWER_BASIC_AUTH: expected user:password, both non-empty"):
        load_settings(flower_basic_auth=auth)
    result = triplets(worker_env(flower_basic_auth=auth), "monitor", "--port", str(free_port()), cwd=tmp_path)
    assert result.returncode == 2 and "TRIPLETS_FLOWER_BASIC_AUTH" in result.stderr


def fetch(url: str, token: str | None = None) -> tuple[int | None, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8", "replace")
    except OSError:
        return None, ""


@needs_redis_server
def test_flower_never_shows_the_broker_password(tmp_path: Path) -> None:
    redis_port, flower_port = free_port(), free_port()
    env = worker_env(broker_url=f"redis://:{PASSWORD}@127.0.0.1:{redis_port}/0", flower_basic_auth="admin:s3cret")
    token = base64.b64encode(b"admin:s3cret").decode()
    log = tmp_path / "flower.log"
    with own_redis(tmp_path / "redis", "--port", str(redis_port), "--requirepass", PASSWORD, port=redis_port), \
            log.open("w") as sink:
        # A session of its own: `monitor` runs Flower as a child, and both must stop with the test.
        flower = subprocess.Popen([sys.executable, "-m", "producer", "monitor", "--port", str(flower_port)], env=env,
                                  cwd=tmp_path, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            base = f"http://127.0.0.1:{flower_port}"
            deadline = time.monotonic() + 60
            while fetch(f"{base}/workers")[0] is None:
                assert flower.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            assert fetch(f"{base}/broker")[0] == 401
            pages = {path: fetch(base + path, token) for path in ("/", "/workers", "/broker", "/tasks", "/api/workers",
                                                                 "/api/tasks")}
        finally:
            os.killpg(flower.pid, signal.SIGTERM)
            flower.wait(timeout=30)
    for path, (status, body) in pages.items():
        assert status == 200, f"{path}: {status} {body[:300]}"
        assert PASSWORD not in body, path
    assert f"127.0.0.1:{redis_port}" in pages["/broker"][1]  # the page does name the broker it shows
    assert PASSWORD not in log.read_text()
