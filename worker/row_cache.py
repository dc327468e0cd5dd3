"""The continuous decoder's KV cache: one row per job, each written at its own position.

Decode steps write one slot per row (``RowCache.update``). A refill's prompts are prefilled
straight into their rows (``prefill_rows``): each layer's keys and values go into the cache as
the layer runs, so a chunk of newcomers never holds every layer's keys at once, and nothing is
copied afterwards. (A transformers ``DynamicCache`` would hold the chunk's whole cache, shared
prefix included in every row, until the forward pass ends: 0.8 GB at 91 rows of 306 tokens of a
6B GLM, which pushed a refill's peak past the 18.6 GiB budget on an H200.)
"""

from __future__ import annotations

from typing import Any

import torch

from worker.decoding import DecodeRequest, prompt_positions


class RowCache:
    """Per-layer KV tensors; each row is written at its own position (duck-typed to transformers' Cache)."""

    def __init__(self, layers: int, rows: int, kv_heads: int, length: int, head_dim: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        shape = (rows, kv_heads, length, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.rows = torch.arange(rows, device=device)
        self.write_at = torch.zeros(rows, dtype=torch.long, device=device)

    def first(self, rows: int) -> RowCache:
        """The first ``rows`` rows, sharing this cache's memory (a narrower batch's step reads only those)."""
        view = object.__new__(RowCache)
        view.keys = [keys[:rows] for keys in self.keys]
        view.values = [values[:rows] for values in self.values]
        view.rows, view.write_at = self.rows[:rows], self.write_at[:rows]
        return view

    def move(self, sources: torch.Tensor, targets: torch.Tensor) -> None:
        """Rows ``sources`` copied into rows ``targets`` (a draining batch compacted to its front)."""
        for tensors in (self.keys, self.values):
            for layer in tensors:
                layer[targets] = layer[sources]
        self.write_at[targets] = self.write_at[sources]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
               *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        self.keys[layer_idx][self.rows, :, self.write_at] = key_states[:, :, 0]
        self.values[layer_idx][self.rows, :, self.write_at] = value_states[:, :, 0]
        return self.keys[layer_idx], self.values[layer_idx]

    def get_seq_length(self, layer_idx: int = 0) -> torch.Tensor:
        return self.write_at.max()


class _RowWriter:
    """A prefill chunk's cache (duck-typed to transformers' Cache): each layer's keys and values of
    the chunk's own tokens written into its rows of a ``RowCache``; attention reads the rows' slots
    so far, gathered for that layer alone."""

    def __init__(self, cache: RowCache, rows: torch.Tensor, shared: int, end: int) -> None:
        self.cache, self.rows, self.shared, self.end = cache, rows, shared, end

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
               *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.cache.keys[layer_idx], self.cache.values[layer_idx]
        keys[self.rows, :, self.shared: self.end] = key_states.to(keys.dtype)
        values[self.rows, :, self.shared: self.end] = value_states.to(values.dtype)
        return keys[self.rows, :, : self.end], values[self.rows, :, : self.end]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.shared


def prefill_rows(forward: Any, request: DecodeRequest, prefix: Any, cache: RowCache, rows: torch.Tensor,
                 keyword: str, cache_position: bool) -> int:
    """Every prompt of ``request`` but its last token prefilled into ``cache``'s ``rows``, one row per
    prompt laid out as in the request (the shared prefix, then its own tokens right-aligned), in
    chunks of ``request.prefill_chunk`` prompts; ``prefix`` is the shared prefix's computed cache
    (None without one). How many forward passes ran."""
    batch, width = request.input_ids.shape
    shared, end = request.shared_prefix, width - 1
    for layer, computed in enumerate(prefix.layers if shared else []):
        cache.keys[layer][rows, :, :shared] = computed.keys
        cache.values[layer][rows, :, :shared] = computed.values
    if end <= shared:  # no prompt has tokens of its own before its last
        return 0
    positions = prompt_positions(request.attention_mask)
    slots = torch.arange(end, device=rows.device)
    causal = slots[None, :] <= slots[shared:end, None]  # (own tokens, slots): a token sees itself and before
    extra = {"cache_position": slots[shared:end]} if cache_position else {}
    chunk = request.prefill_chunk or batch
    forwards = 0
    for start in range(0, batch, chunk):
        part = slice(start, start + chunk)
        visible = request.attention_mask[part, None, None, :end].bool() & causal
        forward(input_ids=request.input_ids[part, shared:end], position_ids=positions[part, shared:end],
                attention_mask=visible, use_cache=True, logits_to_keep=1,
                **{keyword: _RowWriter(cache, rows[part], shared, end)}, **extra)
        forwards += 1
    return forwards
