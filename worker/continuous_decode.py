"""Continuous batching: a fixed set of cache rows, each refilled with the next prompt as soon as its answer ends.

A static batch decodes until its longest answer ends, so with answers of 5 to 600 tokens most
rows sit finished while a few decode. Here every row has its own write position, position id
and mask row in one preallocated KV cache; every few steps the rows whose answers ended are
handed back and given the next waiting prompts (prefilled together, in chunks, by the one
prefill), so the batch stays full until the queue of prompts runs dry. Answers are the same,
token for token, as the static loop's (greedy; a CPU test compares them).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from worker.cuda_graphs import GraphedForward
from worker.decoding import DecodeRequest, prefill, until_end
from worker.shared_prefix import SharedPrefix
from worker.static_decode import LENGTH_BUCKET, CachedDecoder

# Host syncs (to hand back ended rows and refill them) only every this many steps: a row that
# ends between two looks idles at most this many steps minus one.
REFILL_EVERY = 4


@dataclass(frozen=True, slots=True)
class Job:
    """One prompt to answer, with its own answer-length limits (a benchmark can force a length)."""

    key: int
    ids: list[int]
    min_new_tokens: int
    max_new_tokens: int


class JobSource(Protocol):
    def take(self, count: int, *, length: int) -> list[Job]:
        """Up to ``count`` waiting jobs whose prompt and answer fit ``length`` cache slots, in order."""
        ...


class ListSource:
    """A fixed list of jobs, shortest prompt first (one refill's prompts have near widths)."""

    def __init__(self, jobs: Sequence[Job]) -> None:
        self.waiting = deque(sorted(jobs, key=lambda job: len(job.ids)))

    def take(self, count: int, *, length: int) -> list[Job]:
        taken = []
        while self.waiting and len(taken) < count and fits(self.waiting[0], length):
            taken.append(self.waiting.popleft())
        return taken


def fits(job: Job, length: int) -> bool:
    return len(job.ids) + job.max_new_tokens <= length


def cache_length(jobs: Sequence[Job], *, answer_tokens: int = 0) -> int:
    """Cache slots that hold any of ``jobs``: a prompt sits right-aligned at the width of the refill
    it came with, so the longest prompt and the longest answer (at least ``answer_tokens``), rounded
    up to a bucket."""
    answer = max(answer_tokens, *(job.max_new_tokens for job in jobs))
    longest = max(len(job.ids) for job in jobs) + answer
    return -(-longest // LENGTH_BUCKET) * LENGTH_BUCKET


class RowCache:
    """Per-layer KV tensors; each row is written at its own position (duck-typed to transformers' Cache)."""

    def __init__(self, layers: int, rows: int, kv_heads: int, length: int, head_dim: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        shape = (rows, kv_heads, length, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.rows = torch.arange(rows, device=device)
        self.write_at = torch.zeros(rows, dtype=torch.long, device=device)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
               *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        self.keys[layer_idx][self.rows, :, self.write_at] = key_states[:, :, 0]
        self.values[layer_idx][self.rows, :, self.write_at] = value_states[:, :, 0]
        return self.keys[layer_idx], self.values[layer_idx]

    def get_seq_length(self, layer_idx: int = 0) -> torch.Tensor:
        return self.write_at.max()


class ContinuousDecoder(CachedDecoder):
    @torch.inference_mode()
    def run(self, jobs: Sequence[Job], *, rows: int, eos_ids: Sequence[int], pad_id: int, prefill_tokens: int,
            device: torch.device) -> Iterator[tuple[int, list[int]]]:
        """(key, new tokens up to and including EOS) per job, as each answer ends."""
        if not jobs:
            return
        yield from self.stream(ListSource(jobs), rows=min(rows, len(jobs)), length=cache_length(jobs),
                               eos_ids=eos_ids, pad_id=pad_id, prefill_tokens=prefill_tokens, device=device)

    @torch.inference_mode()
    def stream(self, source: JobSource, *, rows: int, length: int, eos_ids: Sequence[int], pad_id: int,
               prefill_tokens: int, device: torch.device) -> Iterator[tuple[int, list[int]]]:
        """Like ``run``, taking jobs from ``source`` as rows free up, until no row is held and it gives none.

        Every ``length`` slots of a row hold its prompt and answer; a job that does not fit waits
        in its source for a run sized for it.
        """
        self.last_shared_prefix = 0
        state = _Rows(self, source, rows=rows, length=length, eos_ids=eos_ids, pad_id=pad_id,
                      prefill_tokens=prefill_tokens, device=device)
        try:
            yield from state.run()
        finally:
            self.last_slots = rows * state.steps  # rows x decode steps: what slot efficiency divides by
            if state.forward is not None:
                self.last_graph_recorded, self.last_graph_failure = state.forward.recorded, state.forward.failure



class _Rows:
    """The decoding state of one run: which job each row holds, and the tensors of the step."""

    def __init__(self, decoder: ContinuousDecoder, source: JobSource, *, rows: int, length: int,
                 eos_ids: Sequence[int], pad_id: int, prefill_tokens: int, device: torch.device) -> None:
        self.decoder, self.source, self.pad_id, self.prefill_tokens = decoder, source, pad_id, prefill_tokens
        self.held: list[Job | None] = [None] * rows
        self.length = self.max_new = length  # an answer never has more tokens than its row has slots
        self.eos_ids = list(eos_ids)
        self.eos = torch.tensor(self.eos_ids, device=device)
        self.device = device
        self.cache: RowCache | None = None
        self.prefix = SharedPrefix(decoder.model)  # the run's prompts' shared leading tokens, prefilled once
        self.forward: GraphedForward | None = None  # the step's forward, once the cache exists
        self.visible = torch.zeros(rows, 1, 1, self.length, dtype=torch.bool, device=device)
        self.visible[:, 0, 0, 0] = True  # a row never filled attends to one slot, not none (no NaN)
        self.token = torch.full((rows, 1), pad_id, dtype=torch.long, device=device)
        self.position = torch.zeros((rows, 1), dtype=torch.long, device=device)
        self.generated = torch.zeros(rows, dtype=torch.long, device=device)
        self.min_new = torch.zeros(rows, dtype=torch.long, device=device)
        self.max_new_row = torch.zeros(rows, dtype=torch.long, device=device)
        self.active = torch.zeros(rows, dtype=torch.bool, device=device)
        self.out = torch.full((rows, self.max_new), pad_id, dtype=torch.long, device=device)
        self.steps = 0

    def run(self) -> Iterator[tuple[int, list[int]]]:
        self._refill(list(range(len(self.held))))
        while any(job is not None for job in self.held):
            idle = [row for row, job in enumerate(self.held) if job is None]
            if idle:  # rows a dry source left empty: jobs may have arrived since
                self._refill(idle)
            for _ in range(REFILL_EVERY):
                self._step()
            ended = [row for row, running in enumerate(self.active.tolist()) if not running and self.held[row]]
            if ended:
                counts = self.generated.tolist()
                answers = self.out[ended].tolist()
                for row, answer in zip(ended, answers):
                    job = self.held[row]
                    yield job.key, until_end(answer[: counts[row]], self.eos_ids)
                    self.held[row] = None
                self._refill(ended)

    def _step(self) -> None:
        self.steps += 1
        cache = self.cache
        rows = cache.rows
        self.visible[rows, 0, 0, cache.write_at] |= self.active
        logits = self.forward()
        # an answer shorter than its minimum may not end yet (benchmarks force lengths this way)
        logits[:, self.eos] = torch.where((self.generated < self.min_new)[:, None], float("-inf"), logits[:, self.eos])
        chosen = torch.where(self.active, logits.argmax(-1), self.pad_id)
        self.out[rows, self.generated.clamp(max=self.max_new - 1)] = torch.where(
            self.active, chosen, self.out[rows, self.generated.clamp(max=self.max_new - 1)])
        self.generated += self.active
        ended = self.active & (torch.isin(chosen, self.eos) | (self.generated >= self.max_new_row))
        self.active &= ~ended
        # only a row that goes on moves to its next slot: an ended one stays inside its cache row
        cache.write_at += self.active
        self.position += self.active[:, None]
        self.token.copy_(chosen[:, None])

    def _refill(self, free: list[int]) -> None:
        """Give free rows the next waiting jobs: prefill them together, copy their keys into the rows.

        A newcomer's prompt sits in its row as in the left-padded prefill batch (right-aligned at
        ``width - 1``), so each layer's keys go in with one copy per prefill chunk; its position
        ids, not its cache slots, are what the model's rotary embedding reads.
        """
        jobs = self.source.take(len(free), length=self.length)
        if not jobs:
            return
        taken = list(zip(free, jobs))
        width = max(len(job.ids) for _, job in taken)
        ids = torch.full((len(taken), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(taken), width), dtype=torch.long)
        for index, (_, job) in enumerate(taken):
            ids[index, width - len(job.ids):] = torch.tensor(job.ids)
            mask[index, width - len(job.ids):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        rows = torch.tensor([row for row, _ in taken], device=self.device)
        request = DecodeRequest(ids, mask, 1, 0, self.eos_ids, self.pad_id,
                                max(1, self.prefill_tokens // width) if self.prefill_tokens else 0)
        if self.decoder.share_prefix:
            request = self.prefix.arrange(request)
            mask = request.attention_mask
        self.decoder.last_shared_prefix = max(self.decoder.last_shared_prefix, request.shared_prefix)
        for chunk, prefilled in prefill(self.decoder.model, request, self.prefix):
            if self.cache is None:  # the dtype the attention layers store, known once one has run
                self.cache = self._allocate(prefilled.layers[0].keys.dtype)
            for layer, cached in enumerate(prefilled.layers):
                self.cache.keys[layer][rows[chunk], :, : width - 1] = cached.keys
                self.cache.values[layer][rows[chunk], :, : width - 1] = cached.values
        if self.cache is None:  # prompts of one token: nothing was prefilled
            self.cache = self._allocate(self.decoder.model.get_input_embeddings().weight.dtype)
        self.visible[rows] = False
        self.visible[rows, 0, 0, : width - 1] = mask[:, :-1].bool()
        self.token[rows, 0] = ids[:, -1]
        self.position[rows, 0] = mask.sum(-1) - 1
        self.cache.write_at[rows] = width - 1
        self.generated[rows] = 0
        self.min_new[rows] = torch.tensor([job.min_new_tokens for _, job in taken], device=self.device)
        self.max_new_row[rows] = torch.tensor([job.max_new_tokens for _, job in taken], device=self.device)
        self.active[rows] = True
        for row, job in taken:
            self.held[row] = job

    def _allocate(self, dtype: torch.dtype) -> RowCache:
        cache = self.decoder.cache_of_shape(RowCache, len(self.held), self.length, dtype, self.device)
        cache.write_at.zero_()  # a reused cache: rows not yet refilled write harmlessly at slot 0
        # the cache position a model may ask for only shapes masks, and the mask here is given whole
        self.forward = self.decoder.step_forward(self.token, self.position, self.visible, cache, cache.write_at[:1])
        return cache
