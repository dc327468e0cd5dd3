"""Greedy decoding over a preallocated KV cache written in place.

transformers' ``generate`` with its dynamic cache re-concatenates every layer's keys and
values each step (at batch 1024 of a 6B GLM, ~12 GB copied per step) and runs its logits
processors and stopping checks, with a host sync, every step. Here the cache is allocated
once per batch shape, each step writes one slot, the attention mask is a fixed-shape 4-D
tensor updated in place, and the host checks for the end only every few steps. Prompts are
prefilled chunk by chunk straight into the cache. Measured on an H200 (bench/extract_gpu.py):
+12 % docs/s over ``generate`` at batch 1024, 4-bit + LoRA.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

# Host syncs (to stop once every row has ended) only every this many steps.
FINISHED_CHECK_EVERY = 8
# Cache lengths are rounded up to this, so batches of nearby lengths share one cache.
LENGTH_BUCKET = 16


class SlotCache:
    """The KV cache as fixed tensors per layer; ``update`` writes the current slot in place.

    Duck-typed to the part of transformers' Cache the attention layers call, which has
    been stable across 5.x (``update(keys, values, layer_idx, ...)``).
    """

    def __init__(self, layers: int, batch: int, kv_heads: int, length: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        shape = (batch, kv_heads, length, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.slot = torch.zeros(1, dtype=torch.long, device=device)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
               *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        self.keys[layer_idx].index_copy_(2, self.slot, key_states)
        self.values[layer_idx].index_copy_(2, self.slot, value_states)
        return self.keys[layer_idx], self.values[layer_idx]

    def get_seq_length(self, layer_idx: int = 0) -> torch.Tensor:
        return self.slot[0]

    def fill(self, rows: slice, layer_idx: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Prefilled keys/values of some prompts, written to the first slots."""
        self.keys[layer_idx][rows, :, : keys.shape[2]] = keys
        self.values[layer_idx][rows, :, : values.shape[2]] = values


def kv_shape(config: Any) -> tuple[int, int, int]:
    """(layers, key/value heads, head dimension) of a causal LM's config."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return config.num_hidden_layers, kv_heads, head_dim


def prompt_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded batch: each prompt's first real token is 0 (padding: 1)."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill_(attention_mask == 0, 1)


class StaticDecoder:
    """Greedy decoding of a left-padded batch over a :class:`SlotCache`."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self._forward: Callable[..., Any] = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._cache: SlotCache | None = None  # kept for the next batch of the same shape

    @torch.inference_mode()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, max_new_tokens: int,
                 min_new_tokens: int, eos_ids: Sequence[int], pad_id: int, prefill_chunk: int) -> torch.Tensor:
        """New tokens, (batch, max_new_tokens); after a row's end-of-sequence token, ``pad_id``."""
        batch, width = input_ids.shape
        device = input_ids.device
        length = -(-(width + max_new_tokens - 1) // LENGTH_BUCKET) * LENGTH_BUCKET
        positions = prompt_positions(attention_mask)
        cache = self._prefill(input_ids, attention_mask, positions, length, prefill_chunk)
        # 4-D boolean mask over cache slots: a prompt's real tokens, then each new slot as it is written
        visible = torch.zeros(batch, 1, 1, length, dtype=torch.bool, device=device)
        visible[:, 0, 0, : width - 1] = attention_mask[:, :-1].bool()
        token = input_ids[:, -1:].clone()
        position = positions[:, -1:].clone()
        cache.slot.fill_(width - 1)
        eos = torch.tensor(list(eos_ids), device=device)
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        out = torch.full((batch, max_new_tokens), pad_id, dtype=torch.long, device=device)
        for step in range(max_new_tokens):
            visible[:, 0, 0, width - 1 + step] = True
            logits = self._forward(input_ids=token, position_ids=position, attention_mask=visible,
                                   past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
            if step < min_new_tokens:
                logits = logits.clone()
                logits[:, eos] = float("-inf")
            chosen = logits.argmax(-1)
            chosen = torch.where(finished, pad_id, chosen)
            out[:, step] = chosen
            finished |= torch.isin(chosen, eos)
            token.copy_(chosen[:, None])
            position += 1
            cache.slot += 1
            if (step + 1) % FINISHED_CHECK_EVERY == 0 and bool(finished.all()):
                break
        return out

    def _cache_for(self, batch: int, length: int, dtype: torch.dtype, device: torch.device) -> SlotCache:
        cache = self._cache
        if cache is None or cache.keys[0].shape[0] != batch or cache.keys[0].shape[2] != length or \
                cache.keys[0].dtype != dtype:
            self._cache = cache = None  # the old cache goes before the new one is allocated
            layers, kv_heads, head_dim = kv_shape(self.model.config)
            cache = self._cache = SlotCache(layers, batch, kv_heads, length, head_dim, dtype, device)
        return cache

    def _prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor,
                 length: int, chunk: int) -> SlotCache:
        """The cache, holding every prompt token but the last, prefilled ``chunk`` prompts at a time."""
        from transformers import DynamicCache

        batch, width = input_ids.shape
        cache: SlotCache | None = None
        chunk = chunk or batch
        for start in range(0, batch if width > 1 else 0, chunk):
            rows = slice(start, start + chunk)
            prefix = DynamicCache(config=self.model.config)
            self.model(input_ids=input_ids[rows, :-1], attention_mask=attention_mask[rows, :-1],
                       position_ids=positions[rows, :-1], past_key_values=prefix, use_cache=True, logits_to_keep=1)
            if cache is None:  # the dtype the attention layers store, known once one has run
                cache = self._cache_for(batch, length, prefix.layers[0].keys.dtype, input_ids.device)
            for index, layer in enumerate(prefix.layers):
                cache.fill(rows, index, layer.keys, layer.values)
        if cache is None:
            cache = self._cache_for(batch, length, self.model.get_input_embeddings().weight.dtype, input_ids.device)
        return cache
