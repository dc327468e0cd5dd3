"""Greedy decoding of a left-padded batch: one interface, one prefill, two loops.

``StaticDecoder`` (worker.static_decode) writes an in-place KV cache and is the default;
``GenerateDecoder`` runs transformers' ``generate`` (model code shipped with the weights may
only work there). Both prefill the prompts the same way: in chunks of prompts, so a large
batch's prefill never holds every prompt's activations at once.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from transformers import DynamicCache, GenerationConfig

from worker.shared_prefix import SharedPrefix


@dataclass(frozen=True, slots=True)
class DecodeRequest:
    """A left-padded batch and how to decode it."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    max_new_tokens: int
    min_new_tokens: int
    eos_ids: Sequence[int]
    pad_id: int
    prefill_chunk: int  # prompts prefilled at once; 0: all
    # Benchmarks only: each row's answer forced to exactly this many tokens (None in production).
    forced_lengths: Sequence[int] | None = None
    # Leading tokens every prompt shares, moved to the front (worker.shared_prefix): prefilled once.
    shared_prefix: int = 0


class Decoder(Protocol):
    def decode(self, request: DecodeRequest) -> list[list[int]]:
        """Each row's new tokens, up to and including its end-of-sequence token."""
        ...


def cache_keyword(model: Any) -> str:
    """The name ``model.forward`` takes its KV cache by: ``cache`` in newer transformers, ``past_key_values`` before."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def prompt_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded batch: each prompt's first real token is 0 (padding: 1)."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill_(attention_mask == 0, 1)


def prefill(model: Any, request: DecodeRequest, prefix: SharedPrefix | None = None
            ) -> Iterator[tuple[slice, DynamicCache]]:
    """The KV cache of every prompt but its last token, ``request.prefill_chunk`` prompts at a time.

    A request with a shared prefix starts each chunk's cache from ``prefix`` (which arranged it)
    and runs only the tokens after it.

    A whole large batch's prefill holds each layer's MLP activations for every prompt token
    at once, which sets the peak memory; decoding needs only the cache. Prefilling in chunks
    lets the decode batch, and so throughput, grow inside the same GPU budget.
    """
    batch, width = request.input_ids.shape
    if width < 2:
        return
    chunk = request.prefill_chunk or batch
    positions = prompt_positions(request.attention_mask)
    keyword = cache_keyword(model)
    shared = request.shared_prefix
    for start in range(0, batch, chunk):
        rows = slice(start, start + chunk)
        count = min(batch, start + chunk) - start
        cache = prefix.cache_for(count, keyword) if shared else DynamicCache(config=model.config)
        if width - 1 > shared:
            model(input_ids=request.input_ids[rows, shared:-1], attention_mask=request.attention_mask[rows, :-1],
                  position_ids=positions[rows, shared:-1], use_cache=True, logits_to_keep=1, **{keyword: cache})
        yield rows, cache


def until_end(tokens: list[int], eos_ids: Sequence[int]) -> list[int]:
    """``tokens`` cut after the first end-of-sequence token."""
    for index, token in enumerate(tokens):
        if token in eos_ids:
            return tokens[: index + 1]
    return tokens


class GenerateDecoder:
    """transformers' ``generate``, after the chunked prefill."""

    def __init__(self, model: Any) -> None:
        self.model = model

    @torch.inference_mode()
    def decode(self, request: DecodeRequest) -> list[list[int]]:
        config = GenerationConfig(max_new_tokens=request.max_new_tokens, min_new_tokens=request.min_new_tokens or None,
                                  do_sample=False, num_beams=1, pad_token_id=request.pad_id,
                                  eos_token_id=list(request.eos_ids))
        extra: dict[str, Any] = {}
        if request.prefill_chunk and request.input_ids.shape[0] > request.prefill_chunk:
            extra[cache_keyword(self.model)] = _merged(self.model, prefill(self.model, request))
        output = self.model.generate(input_ids=request.input_ids, attention_mask=request.attention_mask,
                                     generation_config=config, **extra)
        new = output[:, request.input_ids.shape[1]:].tolist()
        return [until_end(row, request.eos_ids) for row in new]


def _merged(model: Any, chunks: Iterator[tuple[slice, DynamicCache]]) -> DynamicCache | None:
    parts = [cache for _, cache in chunks]
    if not parts:
        return None
    merged = DynamicCache(config=model.config)
    for index in range(len(parts[0].layers)):
        keys = torch.cat([part.layers[index].keys for part in parts])
        values = torch.cat([part.layers[index].values for part in parts])
        for part in parts:  # free each chunk's layer as soon as it is merged
            part.layers[index].keys = part.layers[index].values = None
        merged.update(keys, values, index)
    return merged
