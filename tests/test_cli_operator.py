"""The CLI explains itself to an operator: its version, a missing extra, misspelt settings, --set keys, log levels."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from models.migrate import upgrade
from models.settings import unknown_variables
from models.train_config import TrainConfig
from producer.cli_training import OWN_OPTIONS
from tests.workers import triplets, worker_env


def test_version_is_the_package_version(tmp_path: Path) -> None:
    result = triplets(worker_env(), "--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"triplets {version('triplet-queue')}\n"


def test_monitor_without_flower_names_the_extra_to_install(tmp_path: Path) -> None:
    # A None in sys.modules is how Python says a package is absent: find_spec("flower") is None.
    without_flower = "import sys; sys.modules['flower'] = None; from producer.cli import main; main()"
    result = subprocess.run([sys.executable, "-c", without_flower, "monitor"], env=worker_env(), cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr == "error: Flower is not installed: pip install 'triplet-queue[monitor]'\n"


def test_unknown_variables_are_named_with_the_setting_meant() -> None:
    environ = {"TRIPLETS_MAX_BATCH_SIZ": "8", "triplets_device": "cpu", "TRIPLETS_TEST_POSTGRES_URL": "x",
               "TRIPLETS_COLOUR": "blue", "PATH": "/bin"}
    assert unknown_variables(environ) == [
        "TRIPLETS_COLOUR is not a setting",
        "TRIPLETS_MAX_BATCH_SIZ is not a setting (did you mean TRIPLETS_MAX_BATCH_SIZE?)",
    ]


def test_cli_warns_about_a_misspelt_setting_and_goes_on(tmp_path: Path) -> None:
    env = {**worker_env(database_url=f"sqlite:///{tmp_path / 'store.db'}"), "TRIPLETS_MAX_BATCH_SIZ": "8"}
    result = triplets(env, "db", "upgrade", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "warning: TRIPLETS_MAX_BATCH_SIZ is not a setting (did you mean TRIPLETS_MAX_BATCH_SIZE?)"]


def test_train_submit_help_lists_every_set_key(tmp_path: Path) -> None:
    result = triplets({**worker_env(), "COLUMNS": "200"}, "train", "submit", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    keys = [key for key in TrainConfig.model_fields if key not in OWN_OPTIONS]
    assert "lora_r=8" in result.stdout and "learning_rate=0.0002" in result.stdout
    assert [key for key in keys if f"{key}=" not in result.stdout] == []


def test_worker_logs_at_the_configured_level_and_loglevel_overrides_it(tmp_path: Path) -> None:
    """A worker that cannot be made ready (no base model) still logs on its way: INFO lines only when asked."""
    database_url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(database_url)
    env = worker_env(database_url=database_url, log_level="warning")
    quiet = triplets(env, "worker", "--device", "cpu", cwd=tmp_path, timeout=300)
    loud = triplets(env, "worker", "--device", "cpu", "--loglevel", "info", cwd=tmp_path, timeout=300)
    for result in (quiet, loud):
        assert result.returncode == 3, result.stderr[-3000:]
        assert "error: worker not ready: TRIPLETS_BASE_MODEL" in result.stderr
    assert "INFO" not in quiet.stderr, quiet.stderr[-3000:]
    assert "INFO/supervisor] worker extract-cpu@" in loud.stderr
    assert "INFO/extract-cpu@" in loud.stderr  # the worker's lines carry its node name


def test_a_bad_log_level_is_one_line(tmp_path: Path) -> None:
    result = triplets(worker_env(), "worker", "--loglevel", "loud", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "error: --loglevel: expected debug, info, warning or error, got 'loud'\n"


def test_status_warns_when_documents_wait_and_no_worker_is_online(tmp_path: Path) -> None:
    from models import store
    from models.db import make_session_factory

    url = f"sqlite:///{tmp_path / 'triplets.db'}"
    upgrade(url)
    with make_session_factory(url).begin() as session:
        job = store.create_job(session, name="waiting")
        store.add_documents(session, job_id=job.id, documents=[store.NewDocument(f"第{i}句", f"d{i}") for i in range(3)])
    result = triplets(worker_env(database_url=url), "status", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.replace("\n", " ").split() == (
        "warning 3 documents wait and no extraction worker is online (start one: `triplets worker`)".split())
