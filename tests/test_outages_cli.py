"""Every command against a stopped database or broker: one line on stderr, exit 3, no traceback, no password."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from sqlalchemy import text

from devkit.services import postgres_database
from models import store
from models.db import make_session_factory
from models.errors import ConfigError, StoreUnavailableError
from models.migrate import upgrade
from models.service_errors import describe, mask_password
from models.settings import load_settings
from producer import cli
from tests.workers import worker_env

PASSWORD = "pw-9f3k2q"
# Commands run by a long-lived process (`worker`) or tested on their own (`demo`, `monitor`).
NOT_HERE = {"worker", "monitor", "demo"}
DATABASE_COMMANDS = {
    "status": ["status"],
    "submit": ["submit", "CORPUS"],
    "submit-wait": ["submit", "CORPUS", "--wait"],
    "query": ["query"],
    "stats": ["stats"],
    "neighbors": ["neighbors", "张玲"],
    "export": ["export", "--format", "csv"],
    "web": ["web", "--port", "0"],
    "requeue": ["requeue", "1"],
    "requeue-failed": ["requeue", "1", "--failed"],
    "jobs": ["jobs"],
    "cancel": ["cancel", "1"],
    "show": ["show", "1"],
    "adapters-list": ["adapters", "list"],
    "adapters-show": ["adapters", "show", "x"],
    "adapters-promote": ["adapters", "promote", "x:1"],
    "adapters-demote": ["adapters", "demote", "x:1"],
    "train-status": ["train", "status"],
    "train-submit": ["train", "submit", "--name", "x", "--base-model", "MODEL", "--train-data", "CORPUS"],
    "db-upgrade": ["db", "upgrade"],
    "db-compact": ["db", "compact"],
    "eval": ["eval", "--adapter", "x:1", "--data", "CORPUS"],
}
BROKER_COMMANDS = {
    name: DATABASE_COMMANDS[name] for name in ("submit", "submit-wait", "requeue", "requeue-failed", "train-submit")
}


def closed_port() -> int:
    """A loopback port nothing listens on: bound once by the OS, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "producer", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=180)


def assert_one_line(result: subprocess.CompletedProcess[str], service: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 3, output[-3000:]
    assert "Traceback" not in output
    assert PASSWORD not in output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"error: {service} "), result.stderr
    assert "***@127.0.0.1" in result.stderr and "unavailable: connection refused" in result.stderr


@pytest.fixture
def corpus_args(tmp_path: Path):  # type: ignore[no-untyped-def]
    # Valid for every command that reads it (submit, train, eval): the outage is the only fault.
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"text": "《娘家的故事第二部》是张玲执导", "spo_list": [{
        "subject": "娘家的故事第二部", "subject_type": "影视作品", "predicate": "导演",
        "object": {"@value": "张玲"}, "object_type": {"@value": "人物"}}]}, ensure_ascii=False) + "\n",
        encoding="utf-8")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}", encoding="utf-8")

    def fill(args: list[str]) -> list[str]:
        return [{"CORPUS": str(corpus), "MODEL": str(tmp_path / "model")}.get(a, a) for a in args]

    return fill


def test_every_command_has_an_outage_case() -> None:
    """A command added later fails here until it is given a case above (or a reason in NOT_HERE)."""
    group = typer.main.get_command(cli.app)

    def leaves(command, prefix: str = "") -> list[str]:  # type: ignore[no-untyped-def]
        subs = getattr(command, "commands", None)
        if subs is None:
            return [prefix.strip()]
        return [leaf for name, sub in subs.items() for leaf in leaves(sub, f"{prefix} {name}")]

    def path(args: list[str]) -> str:
        command, words = group, []
        while args and args[0] in getattr(command, "commands", {}):
            command = command.commands[args[0]]
            words.append(args[0])
            args = args[1:]
        return " ".join(words)

    assert set(leaves(group)) - NOT_HERE == {path(args) for args in DATABASE_COMMANDS.values()}


@pytest.mark.parametrize("args", DATABASE_COMMANDS.values(), ids=DATABASE_COMMANDS.keys())
def test_stopped_database_is_one_line(args: list[str], tmp_path: Path, broker_url: str, corpus_args) -> None:  # type: ignore[no-untyped-def]
    database_url = f"postgresql+psycopg://app:{PASSWORD}@127.0.0.1:{closed_port()}/triplets"
    result = run_cli(corpus_args(args), worker_env(database_url=database_url, broker_url=broker_url), tmp_path)
    assert_one_line(result, "database")


@pytest.mark.parametrize("args", BROKER_COMMANDS.values(), ids=BROKER_COMMANDS.keys())
def test_stopped_broker_is_one_line(args: list[str], tmp_path: Path, corpus_args) -> None:  # type: ignore[no-untyped-def]
    database_url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(database_url)
    sessions = make_session_factory(database_url)
    with sessions.begin() as session:
        job = store.create_job(session, name="j")
        (doc_id,) = store.add_documents(session, job_id=job.id, documents=[store.NewDocument("一句话", "d")])
        store.record_failure(session, document_id=doc_id, reason="boom")
    broker = f"redis://:{PASSWORD}@127.0.0.1:{closed_port()}/0"
    result = run_cli(corpus_args(args), worker_env(database_url=database_url, broker_url=broker), tmp_path)
    assert_one_line(result, "broker")


def test_demo_with_a_stopped_broker_is_one_line(tmp_path: Path) -> None:
    broker = f"redis://:{PASSWORD}@127.0.0.1:{closed_port()}/0"
    result = run_cli(["demo"], worker_env(broker_url=broker), tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 3, output[-3000:]
    assert "Traceback" not in output and PASSWORD not in output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: broker redis://:***@127.0.0.1:{broker.rsplit(':', 1)[1]} unavailable: connection refused"]


def test_unexpected_error_is_one_line_and_debug_shows_the_traceback(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    def broken(**_: object) -> None:
        raise RuntimeError("a bug\nwith a second line")

    monkeypatch.setattr("producer.job_commands.run_jobs", broken)
    for argv, traceback_shown in ((["triplets", "jobs"], False), (["triplets", "--debug", "jobs"], True)):
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
        stderr = capsys.readouterr().err
        assert exit_info.value.code == 4
        assert ("Traceback" in stderr) is traceback_shown
        assert stderr.splitlines()[-1].startswith("error: internal error: RuntimeError: a bug")


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_missing_table_names_the_fix(kind: str, tmp_path: Path) -> None:
    """A store never migrated: the table's absence, not an outage (SQLite and PostgreSQL word it differently)."""
    def translated(url: str) -> Exception:
        with pytest.raises(Exception) as raised, make_session_factory(url)() as session:
            session.execute(text("SELECT id FROM jobs"))
        settings = load_settings(database_url=url)
        return describe(raised.value, settings=settings)  # type: ignore[return-value]

    if kind == "sqlite":
        error = translated(f"sqlite:///{tmp_path / 'empty.db'}")
    else:
        with postgres_database() as url:
            if url is None:
                pytest.skip("no PostgreSQL")
            error = translated(url)
    assert isinstance(error, ConfigError)
    assert str(error).endswith("has no table jobs: run `triplets db upgrade`")


def test_passwords_are_masked_in_both_url_kinds() -> None:
    assert mask_password("postgresql+psycopg://app:pw@db:5432/x") == "postgresql+psycopg://app:***@db:5432/x"
    assert mask_password("redis://:pw@cache:6379/0") == "redis://:***@cache:6379/0"
    assert mask_password("redis://user:pw@cache:6379/0") == "redis://user:***@cache:6379/0"
    assert mask_password("redis://cache:6379/0") == "redis://cache:6379/0"
    # An outage raised where the library error entered, without the URL, is worded here with it.
    settings = load_settings(database_url=f"postgresql+psycopg://app:pw@127.0.0.1:{closed_port()}/x")
    with pytest.raises(Exception) as raised, make_session_factory(settings.database_url)() as session:
        session.execute(text("SELECT 1"))
    wrapped = StoreUnavailableError("database unavailable")
    wrapped.__cause__ = raised.value
    assert str(describe(wrapped, settings=settings)).startswith("database postgresql+psycopg://app:***@127.0.0.1:")
