from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from models.errors import ConfigError
from models.settings import DEFAULT_BROKER_URL, DEFAULT_DATABASE_URL, load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_are_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TRIPLETS_BROKER_URL", "TRIPLETS_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.broker_url == DEFAULT_BROKER_URL == "redis://127.0.0.1:6379/0"
    assert settings.database_url == DEFAULT_DATABASE_URL == "sqlite:///./triplets.db"
    assert settings.trust_remote_code is False


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("TRIPLETS_MAX_BATCH_SIZE", "0", "greater than 0"),
        ("TRIPLETS_MAX_BATCH_SIZE", "many", "valid integer"),
        ("TRIPLETS_DEVICE", "tpu", "expected auto, cpu, cuda or cuda:N"),
        ("TRIPLETS_BROKER_URL", "amqp://guest:secret@host//", "expected a redis:// URL"),
        ("TRIPLETS_DATABASE_URL", "mysql://x", "sqlite:// or postgresql://"),
        ("TRIPLETS_PRECISION", "8bit", "'auto', '4bit', 'bf16' or 'fp32'"),
    ],
)
def test_malformed_value_names_variable_and_reason(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, reason: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(f"{variable}: ")
    assert reason in message
    assert "secret" not in message


def test_cli_stops_with_one_line_on_bad_setting(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "producer", "status"],
        env={"PATH": "/usr/bin:/bin", "TRIPLETS_MAX_NEW_TOKENS": "-5"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["error: TRIPLETS_MAX_NEW_TOKENS: Input should be greater than 0"]
