"""The prompts' shared leading tokens, prefilled once for a whole batch.

Every extraction prompt opens with the template's instruction and the schema's relations;
only the document differs. For a DuIE sentence of 80 characters that opening is 216 of the
prompt's 305 tokens, and the prefill (every prompt token through the whole model) was most of a
batch's time. Here the tokens every row of a batch starts with are run through the model once,
as one row, and their keys and values are broadcast to every row; the prefill then runs only
each prompt's own tail. On an H200 (docs/benchmarks.md, run E) a 1,024-document batch of
49-token answers went from 13.1 s to 6.9 s.

Rows are left-padded, so the shared tokens sit at a different column in each row. Moving each
row's padding from before them to after them changes no real token's position id (those come
from the mask) nor what it attends to (padding is masked out), so the answers stay the same.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from transformers import DynamicCache

# Fewer shared tokens than this are not worth one more forward pass.
MIN_SHARED_TOKENS = 8


class SharedPrefix:
    """One decoding run's shared prefix: its tokens and, once computed, their keys and values.

    A run keeps one while its batches (a continuous run's refills) start with the same tokens;
    the model's adapter must not change under it, so each run makes its own.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.ids: torch.Tensor | None = None  # (1, shared tokens)
        self._cache: DynamicCache | None = None

    @property
    def length(self) -> int:
        return 0 if self.ids is None else self.ids.shape[1]

    def arrange(self, request: Any) -> Any:
        """``request`` (a worker.decoding.DecodeRequest) with the tokens its prompts share moved to the
        front and ``shared_prefix`` set; unchanged when they share too little."""
        ids, mask = request.input_ids, request.attention_mask
        batch, width = ids.shape
        if width < 2 or not bool(mask[:, -1].all()):  # only a left-padded batch is laid out this way
            return request
        starts = width - mask.sum(-1)
        span = width - 1 - int(starts.max())  # each row keeps its last token out: it starts the decoding
        shared = self._reuse(ids, starts, span) or self._find(ids, starts, span, batch)
        if not shared:
            return request
        columns = torch.arange(width, device=ids.device)
        padding = (columns >= shared) & (columns < shared + starts[:, None])
        ids, mask = ids.clone(), mask.clone()
        ids[:, :shared] = self.ids
        mask[:, :shared] = 1
        ids.masked_fill_(padding, request.pad_id)
        mask.masked_fill_(padding, 0)
        # (prompts per prefill chunk stay as they were: each chunk's cache still holds every prompt's keys)
        return replace(request, input_ids=ids, attention_mask=mask, shared_prefix=shared)

    def computed(self, keyword: str) -> DynamicCache:
        """The shared prefix's keys and values, one row, computed on first use."""
        if self._cache is None:
            self._cache = DynamicCache(config=self.model.config)
            positions = torch.arange(self.length, device=self.ids.device)[None]
            self.model(input_ids=self.ids, attention_mask=torch.ones_like(self.ids), position_ids=positions,
                       use_cache=True, logits_to_keep=1, **{keyword: self._cache})
        return self._cache

    def cache_for(self, rows: int, keyword: str) -> DynamicCache:
        """A fresh prefill cache holding the shared prefix's keys and values for ``rows`` prompts."""
        cache = DynamicCache(config=self.model.config)
        for index, layer in enumerate(self.computed(keyword).layers):
            cache.update(layer.keys.expand(rows, -1, -1, -1), layer.values.expand(rows, -1, -1, -1), index)
        return cache

    def _reuse(self, ids: torch.Tensor, starts: torch.Tensor, span: int) -> int:
        """The known prefix's length, if every row starts with it."""
        if self.ids is None or self.length > span:
            return 0
        return self.length if bool((_leading(ids, starts, self.length) == self.ids).all()) else 0

    def _find(self, ids: torch.Tensor, starts: torch.Tensor, span: int, batch: int) -> int:
        """The length of the tokens all rows start with (kept as this run's prefix), or 0 if too few."""
        if batch < 2 or span < MIN_SHARED_TOKENS:
            return 0
        leading = _leading(ids, starts, span)
        shared = int((leading == leading[:1]).all(0).long().cumprod(0).sum())
        if shared < MIN_SHARED_TOKENS:
            return 0
        self.ids, self._cache = leading[:1, :shared].clone(), None
        return shared


def _leading(ids: torch.Tensor, starts: torch.Tensor, count: int) -> torch.Tensor:
    """Each left-padded row's first ``count`` real tokens."""
    return ids.gather(1, starts[:, None] + torch.arange(count, device=ids.device))
