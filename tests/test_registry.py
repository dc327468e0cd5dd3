"""Adapter registry and training jobs in the store; promotion followed by the pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from models import registry
from models.errors import ConfigError, NotFoundError
from models.settings import load_settings
from models.train_config import parse_train_config
from tests.fakes import ScriptedEngine
from worker.pipeline import follow_promoted_adapter


def test_versions_and_promotion(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    base = registry.model_key(tmp_path / "base")
    with sessions.begin() as session:
        first = registry.register_adapter(session, name="duie", path="duie/job-1", base_model=base, metrics={}, config={})
        second = registry.register_adapter(session, name="duie", path="duie/job-2", base_model=base, metrics={"f1": 0.9},
                                           config={})
        assert (first.version, second.version) == (1, 2)
        assert registry.promoted_adapter(session, base_model=base) is None
        registry.promote_adapter(session, ref="duie:1")
        assert registry.promoted_adapter(session, base_model=base).version == 1
        registry.promote_adapter(session, ref="duie")  # newest version
        assert registry.promoted_adapter(session, base_model=base).version == 2
        assert registry.promoted_adapter(session, base_model="/other/model") is None
        with pytest.raises(NotFoundError, match="adapter duie:7: not found"):
            registry.get_adapter(session, ref="duie:7")


@pytest.mark.parametrize("relative", ["../outside", "duie/../../etc", "/etc/passwd"])
def test_adapter_path_cannot_escape_the_registry(tmp_path: Path, relative: str) -> None:
    with pytest.raises(ConfigError, match="escapes the registry folder"):
        registry.resolve_adapter_path(tmp_path / "adapters", relative)
    assert registry.resolve_adapter_path(tmp_path / "adapters", "duie/job-1") == (tmp_path / "adapters/duie/job-1").resolve()


def test_pipeline_follows_the_promoted_adapter(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    engine = ScriptedEngine(lambda text: "[]")
    engine.model_id = registry.model_key(tmp_path / "base")
    settings = load_settings(adapter_registry=tmp_path / "adapters")
    follow_promoted_adapter(engine, sessions=sessions, settings=settings)
    assert engine.adapter_id == ""
    with sessions.begin() as session:
        registry.register_adapter(session, name="duie", path="duie/job-3", base_model=engine.model_id, metrics={},
                                  config={})
        registry.promote_adapter(session, ref="duie:1")
    follow_promoted_adapter(engine, sessions=sessions, settings=settings)
    assert engine.adapter_id == "duie:1"
    assert engine.adapter_path == (tmp_path / "adapters" / "duie" / "job-3").resolve()


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
