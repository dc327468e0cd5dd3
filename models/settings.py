"""The one Settings object. Only this module reads the environment."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.errors import ConfigError

ENV_PREFIX = "TRIPLETS_"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
DEFAULT_DATABASE_URL = "sqlite:///./triplets.db"
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
# Variables of this prefix that are no settings: the test kit's own (devkit/services.py).
NOT_SETTINGS = ("TRIPLETS_TEST_",)
Seconds = Annotated[float, Field(gt=0)]


class Settings(BaseSettings):
    """Every knob of the system; each field is ``TRIPLETS_<NAME>`` in the environment."""

    # An empty variable (compose's `${ADAPTER:-}`) means unset, not an empty path.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True, env_ignore_empty=True)

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
    max_batch_size: int = Field(1024, gt=0, description="Documents (or windows) decoded together.")
    max_batch_tokens: int | None = Field(
        None, gt=0, description="KV-cache tokens (padded prompt + new) per decode batch; default: from the GPU "
        "budget on CUDA, 65536 on the CPU."
    )
    gpu_memory_budget_gib: float = Field(
        18.6, gt=0, description="GPU memory one worker may use, in GiB (18.6 GiB = the 20 GB promise)."
    )
    prefill_chunk_tokens: int = Field(
        8192, ge=0, description="Prompt tokens prefilled at once inside a larger decode batch (0: all at once); "
        "bounds the prefill's activation memory."
    )
    decode_loop: Literal["auto", "generate", "static", "continuous"] = Field(
        "auto", description="static: length-sorted batches over a preallocated KV cache written in place (worker/"
        "static_decode.py); continuous: one batch whose ended rows are refilled with the next prompts (worker/"
        "continuous_decode.py); generate: transformers' generate(). auto = continuous, generate for remote model code."
    )
    cuda_graphs: bool = Field(
        True, description="Record each decoding run's step as a CUDA graph and replay it (worker/cuda_graphs.py); "
        "a model whose step cannot be recorded decodes eagerly. Off: always eager."
    )
    share_prefix: bool = Field(
        True, description="Prefill the leading tokens all prompts of a batch share (the template's instruction and "
        "schema) once, not once per prompt (worker/shared_prefix.py). Off: every prompt is prefilled whole."
    )
    max_input_tokens: int = Field(2048, gt=0, description="Longest prompt; longer documents are read in windows.")
    max_document_tokens: int = Field(
        262_144, gt=0, description="A longer document fails alone (with this reason) instead of filling a batch."
    )
    max_document_chars: int = Field(
        1_000_000, gt=0, description="`submit` skips (and names) a longer record; the rest of the corpus goes in."
    )
    max_new_tokens: int = Field(512, gt=0, description="Tokens generated per document at most.")
    min_new_tokens: int = Field(0, ge=0, description="Tokens generated at least (benchmarks force full answers).")
    tasks_in_flight: int = Field(
        2, gt=0, description="Queue messages an extraction worker feeds to its one GPU loop at once, so the GPU "
        "decodes while the other tasks claim, tokenise, parse and store."
    )
    tasks_finishing: int = Field(
        4, ge=0, description="More queue messages an extraction worker holds while their documents' longest answers "
        "end, all their prompts already decoding: without them the loop runs dry while one long answer ends."
    )
    task_group_size: int = Field(
        1024, gt=0, description="Document ids per queue message; match max_batch_size to keep a GPU fed."
    )
    max_attempts: int = Field(
        3, gt=0, description="Times a document may kill its worker while extracted alone, and deliveries of a "
        "training job, before it is failed."
    )
    prompt_version: str = Field("v1", description="Prompt template version (models/prompt.py).")
    schema_path: Path | None = Field(None, description="Predicate schema JSON; DuIE 2.0 when unset.")
    visibility_timeout: int = Field(
        3600, gt=0, description="Seconds before an unacknowledged message is redelivered (a backstop: work of a "
        "dead worker is taken over by lease, and a redelivery of work held by a live worker is skipped)."
    )
    heartbeat_seconds: Seconds = Field(10.0, description="How often a worker proves it is alive.")
    lease_seconds: Seconds = Field(
        60.0, description="A worker silent this long is dead: its documents and training job are taken over."
    )
    sweep_seconds: Seconds = Field(
        15.0, description="How often workers look for the work of dead workers and for lost messages."
    )
    stall_seconds: Seconds = Field(
        900.0, description="A worker whose engine or trainer makes no progress this long exits (a hung GPU); "
        "its work is taken over. Kept below the visibility timeout."
    )
    store_retry_seconds: Seconds = Field(
        3600.0, description="How long a worker waits for an unreachable database before it gives its "
        "message back and exits."
    )
    flower_basic_auth: SecretStr | None = Field(None, description="user:password for Flower.")
    web_basic_auth: SecretStr | None = Field(
        None, description="user:password for `triplets web`; required to serve it beyond loopback."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level of workers and the CLI (`triplets worker --loglevel` overrides it)."
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

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

    @field_validator("flower_basic_auth", "web_basic_auth")
    @classmethod
    def _check_auth(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            user, _, password = value.get_secret_value().partition(":")
            if not user or not password:
                raise ValueError("expected user:password, both non-empty")
        return value

    @field_validator("lease_seconds")
    @classmethod
    def _check_lease(cls, value: float, info) -> float:  # type: ignore[no-untyped-def]
        heartbeat = info.data.get("heartbeat_seconds")
        if heartbeat is not None and value < 2 * heartbeat:
            raise ValueError(f"must be at least twice TRIPLETS_HEARTBEAT_SECONDS ({heartbeat})")
        return value

    @field_validator("schema_path", "base_model", "adapter", "adapter_registry")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    # --- metrics (worker/metrics_server.py, docs/metrics.md) ---
    metrics_port: int = Field(
        9808, ge=0, le=65535, description="Port of an extraction worker's Prometheus /metrics (behind "
        "TRIPLETS_FLOWER_BASIC_AUTH; not served without it); a worker on cuda:N listens on this port + N. 0: off."
    )
    metrics_address: str = Field("127.0.0.1", description="Address the workers' /metrics listens on.")


def load_settings(**overrides: object) -> Settings:
    """Build Settings, turning a validation failure into one line naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ENV_PREFIX + str(first["loc"][0]).upper() if first["loc"] else ENV_PREFIX
        reason = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{name}: {reason}") from None


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """A warning for each TRIPLETS_* variable that is no setting: a misspelt one would be ignored in silence."""
    environ = os.environ if environ is None else environ
    known = [name.upper() for name in Settings.model_fields]
    warnings = []
    for variable in sorted(environ):
        name = variable.upper()  # settings are read whatever the case
        if not name.startswith(ENV_PREFIX) or name.startswith(NOT_SETTINGS):
            continue
        field = name.removeprefix(ENV_PREFIX)  # compared without the prefix all share, which makes any two alike
        if field not in known:
            close = difflib.get_close_matches(field, known, n=1)
            hint = f" (did you mean {ENV_PREFIX}{close[0]}?)" if close else ""
            warnings.append(f"{variable} is not a setting{hint}")
    return warnings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide Settings, read once."""
    return load_settings()
