"""Adapter registry and training jobs in the store; promotion checks, demotion, and the pipeline following it."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from models import registry
from models.errors import ConfigError, NotFoundError
from models.train_config import parse_train_config
from tests.workers import worker_env


def make_adapter(folder: Path, *, weights: str = registry.ADAPTER_WEIGHTS, config: bool = True) -> Path:
    """An adapter folder as PEFT saves one; the checks read names, not tensors, so the bytes are stand-ins."""
    folder.mkdir(parents=True, exist_ok=True)
    if config:
        (folder / registry.ADAPTER_CONFIG).write_text('{"peft_type": "LORA"}', encoding="utf-8")
    (folder / weights).write_bytes(b"stand-in weights")
    return folder


def test_versions_and_promotion(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    base = registry.model_key(tmp_path / "base")
    adapters = tmp_path / "adapters"
    for job in ("job-1", "job-2"):
        make_adapter(adapters / "duie" / job)
    with sessions.begin() as session:
        first = registry.register_adapter(session, name="duie", path="duie/job-1", base_model=base, metrics={}, config={})
        second = registry.register_adapter(session, name="duie", path="duie/job-2", base_model=base, metrics={"f1": 0.9},
                                           config={})
        assert (first.version, second.version) == (1, 2)
        assert registry.promoted_adapter(session, base_model=base) is None
        registry.promote_adapter(session, ref="duie:1", adapter_registry=adapters)
        assert registry.promoted_adapter(session, base_model=base).version == 1
        registry.promote_adapter(session, ref="duie", adapter_registry=adapters)  # newest version
        assert registry.promoted_adapter(session, base_model=base).version == 2
        assert registry.promoted_adapter(session, base_model="/other/model") is None
        with pytest.raises(NotFoundError, match="adapter duie:7: not found"):
            registry.get_adapter(session, ref="duie:7")


def test_demotion_makes_the_previous_promotion_current(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    base = registry.model_key(tmp_path / "base")
    adapters = tmp_path / "adapters"
    with sessions.begin() as session:
        for version in (1, 2, 3):
            make_adapter(adapters / "duie" / f"v{version}")
            registry.register_adapter(session, name="duie", path=f"duie/v{version}", base_model=base, metrics={},
                                      config={})
        for ref in ("duie:1", "duie:3", "duie:2"):  # promotion order, not version order, decides
            registry.promote_adapter(session, ref=ref, adapter_registry=adapters)
        assert registry.promoted_adapter(session, base_model=base).version == 2
        assert registry.demote_adapter(session, ref="duie:2").version == 3
        assert registry.promoted_adapter(session, base_model=base).version == 3
        assert registry.demote_adapter(session, ref="duie:3").version == 1
        assert registry.demote_adapter(session, ref="duie:1") is None
        assert registry.promoted_adapter(session, base_model=base) is None
        with pytest.raises(NotFoundError, match="adapter duie:1: not promoted"):
            registry.demote_adapter(session, ref="duie:1")


@pytest.mark.parametrize("relative", ["../outside", "duie/../../etc", "/etc/passwd"])
def test_adapter_path_cannot_escape_the_registry(tmp_path: Path, relative: str) -> None:
    with pytest.raises(ConfigError, match="escapes the registry folder"):
        registry.resolve_adapter_path(tmp_path / "adapters", relative)
    assert registry.resolve_adapter_path(tmp_path / "adapters", "duie/job-1") == (tmp_path / "adapters/duie/job-1").resolve()


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (lambda d: None, "does not exist"),
        (lambda d: make_adapter(d, weights="adapter_model.bin"),
         "lacks adapter_model.safetensors (adapter_model.bin is a pickle and is never loaded"),
        (lambda d: make_adapter(d, config=False), "lacks adapter_config.json"),
        (lambda d: d.mkdir(), "lacks adapter_config.json and adapter_model.safetensors"),
    ],
    ids=["missing", "bin-only", "no-config", "empty"],
)
def test_adapter_folder_check_refuses_unloadable_folders(
    tmp_path: Path, build: Callable[[Path], object], reason: str
) -> None:
    folder = tmp_path / "adapter"
    build(folder)
    with pytest.raises(ConfigError, match=re.escape(f"adapter folder {folder} {reason}")):
        registry.check_adapter_folder(folder)
    make_adapter(folder)
    assert registry.check_adapter_folder(folder) == folder


def _outside_folder(adapters: Path, outside: Path) -> str:
    make_adapter(outside)
    return "../outside"


def _absolute(adapters: Path, outside: Path) -> str:
    return str(make_adapter(outside))


def _symlinked_folder(adapters: Path, outside: Path) -> str:
    make_adapter(outside)
    (adapters / "duie").mkdir(parents=True)
    (adapters / "duie" / "v1").symlink_to(outside, target_is_directory=True)
    return "duie/v1"


def _symlinked_weights(adapters: Path, outside: Path) -> str:
    make_adapter(outside)
    folder = adapters / "duie" / "v1"
    folder.mkdir(parents=True)
    (folder / registry.ADAPTER_CONFIG).write_text("{}", encoding="utf-8")
    (folder / registry.ADAPTER_WEIGHTS).symlink_to(outside / registry.ADAPTER_WEIGHTS)
    return "duie/v1"


def _missing(adapters: Path, outside: Path) -> str:
    return "duie/never-written"


def _bin_only(adapters: Path, outside: Path) -> str:
    make_adapter(adapters / "duie" / "v1", weights=registry.PICKLED_WEIGHTS)
    return "duie/v1"


@pytest.mark.parametrize(
    ("place", "reason"),
    [
        (_outside_folder, "escapes the registry folder"),
        (_absolute, "escapes the registry folder"),
        (_symlinked_folder, "escapes the registry folder"),
        (_symlinked_weights, "adapter_model.safetensors escapes the registry folder"),
        (_missing, "does not exist"),
        (_bin_only, "lacks adapter_model.safetensors"),
    ],
    ids=["dotdot", "absolute", "symlinked-folder", "symlinked-weights", "missing", "bin-only"],
)
def test_promote_refuses_unsafe_adapters_and_changes_nothing(
    sessions: sessionmaker[Session], database_url: str, tmp_path: Path, place: Callable[[Path, Path], str], reason: str
) -> None:
    base = registry.model_key(tmp_path / "base")
    adapters = tmp_path / "adapters"
    make_adapter(adapters / "good")
    relative = place(adapters, tmp_path / "outside")
    with sessions.begin() as session:
        registry.register_adapter(session, name="good", path="good", base_model=base, metrics={}, config={})
        registry.register_adapter(session, name="bad", path=relative, base_model=base, metrics={}, config={})
        registry.promote_adapter(session, ref="good:1", adapter_registry=adapters)
    env = worker_env(database_url=database_url, adapter_registry=adapters)
    result = subprocess.run([sys.executable, "-m", "producer", "adapters", "promote", "bad:1"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and reason in result.stderr, result.stderr
    with sessions() as session:
        assert registry.get_adapter(session, ref="bad:1").promoted_at is None
        assert registry.promoted_adapter(session, base_model=base).name == "good"


def test_demote_through_the_cli(sessions: sessionmaker[Session], database_url: str, tmp_path: Path) -> None:
    base = registry.model_key(tmp_path / "base")
    adapters = tmp_path / "adapters"
    with sessions.begin() as session:
        for version in (1, 2):
            make_adapter(adapters / "duie" / f"v{version}")
            registry.register_adapter(session, name="duie", path=f"duie/v{version}", base_model=base, metrics={},
                                      config={})
    env = worker_env(database_url=database_url, adapter_registry=adapters)

    def triplets(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "producer", "adapters", *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)

    for ref in ("duie:1", "duie:2"):
        assert triplets("promote", ref).returncode == 0
    demoted = triplets("demote", "duie:2")
    assert demoted.returncode == 0, demoted.stderr
    assert "duie:2 demoted" in demoted.stdout and "use duie:1 from their next batch" in demoted.stdout
    with sessions() as session:
        assert registry.promoted_adapter(session, base_model=base).version == 1
    again = triplets("demote", "duie:2")
    assert again.returncode == 2 and again.stderr.strip() == "error: adapter duie:2: not promoted"


def test_training_config_is_validated_before_queueing(tmp_path: Path) -> None:
    config = parse_train_config({"name": "duie-v1", "base_model": tmp_path, "train_data": tmp_path / "t.jsonl"})
    assert (config.lora_r, config.lora_alpha, config.lora_dropout, config.learning_rate, config.epochs) == (
        8, 32, 0.1, 2e-4, 3.0)
    assert (config.batch_size, config.micro_batch_size, config.max_length) == (8, None, 1024)
    with pytest.raises(ConfigError, match="training config micro_batch_size: 3 does not divide batch_size 8"):
        parse_train_config({"name": "x", "base_model": tmp_path, "train_data": tmp_path, "micro_batch_size": 3})
    with pytest.raises(ConfigError, match="training config lora_r: Input should be greater than 0"):
        parse_train_config({"name": "x", "base_model": tmp_path, "train_data": tmp_path, "lora_r": 0})
    with pytest.raises(ConfigError, match="training config name: use lower-case"):
        parse_train_config({"name": "../evil", "base_model": tmp_path, "train_data": tmp_path})
    with pytest.raises(ConfigError, match="training config learning_rat: Extra inputs are not permitted"):
        parse_train_config({"name": "x", "base_model": tmp_path, "train_data": tmp_path, "learning_rat": 1})
