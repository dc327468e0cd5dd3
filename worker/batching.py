"""Batch planning: which prompts are decoded together, inside a KV-cache token budget."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from models.errors import ConfigError
from models.windows import Window
from worker.static_decode import kv_shape

# Measured on an H100 with a 6B GLM at batch 1024: peak memory over weights was 1.12x the
# bf16 KV cache (bench/extract_gpu.py); 1.2 leaves room for other shapes.
KV_OVERHEAD = 1.2
GPU_HEADROOM_GIB = 1.0
# On the CPU, cached tokens per batch: a long document's windows must not take all memory (at
# 6B shape, fp32, this is ~3.7 GB of KV cache).
CPU_BATCH_TOKENS = 65_536


@dataclass(frozen=True, slots=True)
class Prompt:
    """One generation unit: a window of one document (the whole document when it fits)."""

    doc: int
    window: Window
    ids: list[int]


def kv_token_budget(config: Any, weight_bytes: int, budget_gib: float) -> int:
    """How many cached tokens (all sequences of a batch together) fit the GPU budget."""
    layers, kv_heads, head_dim = kv_shape(config)
    kv_bytes_per_token = 2 * layers * kv_heads * head_dim * 2  # keys + values, bf16
    free = (budget_gib - GPU_HEADROOM_GIB) * 2**30 - weight_bytes
    if free <= 0:
        raise ConfigError(
            f"TRIPLETS_GPU_MEMORY_BUDGET_GIB: {budget_gib} GiB does not hold the model "
            f"({weight_bytes / 2**30:.1f} GiB of weights)"
        )
    return int(free / (kv_bytes_per_token * KV_OVERHEAD))


def batch_token_limit(model: Any, *, configured: int | None, budget_gib: float) -> int:
    """Cached tokens per batch: as configured, else from the GPU budget (CUDA) or CPU_BATCH_TOKENS."""
    if configured:
        return configured
    if next(model.parameters()).device.type != "cuda":
        return CPU_BATCH_TOKENS
    return kv_token_budget(model.config, model.get_memory_footprint(), budget_gib)


def plan_batches(prompts: Sequence[Prompt], *, max_batch_size: int, batch_tokens: int,
                 max_new_tokens: int) -> list[list[Prompt]]:
    """Length-sorted batches bounded by count and by tokens the KV cache will hold.

    A batch's cost is its padded width (longest prompt plus the tokens to generate) times its
    size, so sorting by length keeps the padding, and the memory, low.
    """
    batches: list[list[Prompt]] = []
    current: list[Prompt] = []
    for prompt in sorted(prompts, key=lambda p: len(p.ids)):
        width = len(prompt.ids) + max_new_tokens  # sorted: the newest is the longest
        if current and (len(current) >= max_batch_size or width * (len(current) + 1) > batch_tokens):
            batches.append(current)
            current = []
        current.append(prompt)
    if current:
        batches.append(current)
    return batches
