"""A training job's typed, validated configuration (the origin project's defaults)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from models.errors import ConfigError

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Adapter name in the registry (lower-case letters, digits, . _ -).")
    base_model: Path
    train_data: Path
    dev_data: Path | None = None
    schema_path: Path | None = None
    prompt_version: str = "v1"
    lora_r: int = Field(8, gt=0)
    lora_alpha: int = Field(32, gt=0)
    lora_dropout: float = Field(0.1, ge=0, lt=1)
    # "auto": the attention and MLP projections of the architecture; or explicit module names.
    target_modules: Literal["auto", "all-linear"] | list[str] = "auto"
    learning_rate: float = Field(2e-4, gt=0)
    epochs: float = Field(3.0, gt=0)
    max_steps: int | None = Field(None, gt=0, description="Stop after this many optimizer steps.")
    batch_size: int = Field(8, gt=0, description="Samples per optimizer step (the origin's 1 x 8).")
    micro_batch_size: int | None = Field(
        None, gt=0, description="Samples per forward pass; must divide batch_size. Unset: the most that fits "
        "gpu_memory_budget_gib on CUDA, batch_size on the CPU.")
    # "auto": as few checkpointed layers as the memory budget allows (recomputation costs time).
    gradient_checkpointing: Literal["auto", "all", "none"] = "auto"
    gpu_memory_budget_gib: float = Field(18.6, gt=0)  # 20 GB
    max_length: int = Field(1024, gt=16)
    warmup_steps: int = Field(0, ge=0)
    precision: Literal["auto", "4bit", "bf16", "fp32"] = "auto"
    device: str = "auto"
    checkpoint_every: int = Field(50, gt=0, description="Optimizer steps between checkpoints.")
    eval_max_examples: int = Field(500, gt=0)
    seed: int = 0

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("use lower-case letters, digits, '.', '_' or '-' (at most 100)")
        return value

    @field_validator("micro_batch_size")
    @classmethod
    def _check_micro_batch(cls, value: int | None, info: ValidationInfo) -> int | None:
        batch_size = info.data.get("batch_size")
        if value and batch_size and batch_size % value:
            raise ValueError(f"{value} does not divide batch_size {batch_size}")
        return value


def parse_train_config(data: dict) -> TrainConfig:
    """A TrainConfig, or a ConfigError naming the first bad field and why."""
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "config"
        raise ConfigError(f"training config {field}: {first['msg'].removeprefix('Value error, ')}") from None
