"""The one Settings object. Only this module reads the environment."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.errors import ConfigError

ENV_PREFIX = "TRIPLETS_"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
DEFAULT_DATABASE_URL = "sqlite:///./triplets.db"
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class Settings(BaseSettings):
    """Every knob of the system; each field is ``TRIPLETS_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    broker_url: str = Field(DEFAULT_BROKER_URL, description="Celery broker (Redis) URL.")
    database_url: str = Field(DEFAULT_DATABASE_URL, description="SQLAlchemy URL of the triplet store.")
    base_model: Path | None = Field(None, description="Local folder of the base causal LM (safetensors).")
    adapter: Path | None = Field(
        None, description="A fixed LoRA adapter folder; unset, workers follow the registry's promoted adapter."
    )
    adapter_registry: Path = Field(Path("./adapters"), description="Folder holding every registered adapter.")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    precision: Literal["auto", "4bit", "bf16", "fp32"] = Field(
        "auto", description="auto = 4-bit NF4 on CUDA, float32 on CPU."
    )
    trust_remote_code: bool = Field(False, description="Run model code shipped with the weights.")
    max_batch_size: int = Field(1024, gt=0, description="Documents per generate() call.")
    max_batch_tokens: int | None = Field(
        None, gt=0, description="KV-cache tokens (padded prompt + new) per generate() call; default: from the GPU budget."
    )
    gpu_memory_budget_gib: float = Field(20.0, gt=0, description="GPU memory one worker may use.")
    prefill_chunk_tokens: int = Field(
        8192, ge=0, description="Prompt tokens prefilled at once inside a larger decode batch (0: all at once); "
        "bounds the prefill's activation memory."
    )
    decode_loop: Literal["auto", "generate", "static"] = Field(
        "auto", description="static: greedy decoding over a preallocated KV cache written in place (worker/"
        "static_decode.py); generate: transformers' generate(). auto = static, generate for remote model code."
    )
    max_input_tokens: int = Field(2048, gt=0, description="Longest prompt accepted, in tokens.")
    max_new_tokens: int = Field(512, gt=0, description="Tokens generated per document at most.")
    min_new_tokens: int = Field(0, ge=0, description="Tokens generated at least (benchmarks force full answers).")
    task_group_size: int = Field(
        1024, gt=0, description="Document ids per queue message; match max_batch_size to keep a GPU fed."
    )
    max_attempts: int = Field(3, gt=0, description="Deliveries of one document before it is failed.")
    prompt_version: str = Field("v1", description="Prompt template version (models/prompt.py).")
    schema_path: Path | None = Field(None, description="Predicate schema JSON; DuIE 2.0 when unset.")
    visibility_timeout: int = Field(
        3600, gt=0, description="Seconds before an unacknowledged message is redelivered."
    )
    flower_basic_auth: SecretStr | None = Field(None, description="user:password for Flower.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError(f"expected auto, cpu, cuda or cuda:N, got {value!r}")
        return value

    @field_validator("broker_url")
    @classmethod
    def _check_broker(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "redis+socket://")):
            raise ValueError(f"expected a redis:// URL, got {value.split('@')[-1]!r}")
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError("expected a sqlite:// or postgresql:// URL")
        return value

    @field_validator("flower_basic_auth")
    @classmethod
    def _check_auth(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and ":" not in value.get_secret_value():
            raise ValueError("expected user:password")
        return value

    @field_validator("schema_path", "base_model", "adapter", "adapter_registry")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None


def load_settings(**overrides: object) -> Settings:
    """Build Settings, turning a validation failure into one line naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ENV_PREFIX + str(first["loc"][0]).upper() if first["loc"] else ENV_PREFIX
        reason = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{name}: {reason}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide Settings, read once."""
    return load_settings()
