"""Continuous batching: a fixed set of cache rows, each refilled with the next prompt as soon as its answer ends.

A static batch decodes until its longest answer ends, so with answers of 5 to 600 tokens most
rows sit finished while a few decode. Here every row has its own write position, position id
and mask row in one preallocated KV cache; every few steps the rows whose answers ended are
handed back and given the next waiting prompts (prefilled together, in chunks, straight into
their rows: worker.row_cache), so the batch stays full until the queue of prompts runs dry.
Answers are the same, token for token, as the static loop's (greedy; a CPU test compares them).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import torch

from worker.cuda_graphs import GraphedForward
from worker.decoding import DecodeRequest, until_end
from worker.row_cache import RowCache, prefill_rows
from worker.shared_prefix import SharedPrefix
from worker.static_decode import LENGTH_BUCKET, CachedDecoder

# Host syncs (to hand back ended rows and refill them) only every this many steps: a row that
# ends between two looks idles at most this many steps minus one.
REFILL_EVERY = 4
# A draining batch narrows no further than this many rows: below it a step costs about the same
# (reading the weights dominates), and each width is one more CUDA graph to record.
NARROWEST = 64


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


def narrower(width: int, held: int, smallest: int = NARROWEST) -> int:
    """The width a drained batch of ``width`` rows, ``held`` of them still answering, runs at next:
    halved while the held rows fit, not below ``smallest``."""
    while width // 2 >= max(held, smallest):
        width //= 2
    return width


class ContinuousDecoder(CachedDecoder):
    narrowest = NARROWEST  # rows a draining batch keeps at least
    # Free rows a refill waits for while others answer (1: every ended row at the next look).
    # Each refill is a prefill run op by op after a host sync; waiting for more rows makes fewer,
    # larger ones at the cost of idle slots. Run H (H200, 4,096 DuIE-like answers): 128 rows gave
    # +2 % docs/s at 0.82 slot efficiency instead of 0.88, inside the cards' spread: not adopted.
    refill_at_least = 1
    # A prefill chunk's tokens are those run through the model; True counts the shared prefix in
    # every prompt too (as before run H: ~3x as many, smaller chunks).
    prefill_counts_prefix = False
    # Benchmarks only: sync the GPU at each phase of the loop and time it (``last_profile``); slows the run.
    profile = False

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
            self.last_slots = state.slots  # rows run x decode steps: what slot efficiency divides by
            self.last_refills = state.refills  # prefill runs that gave rows new jobs
            self.last_widths = state.widths  # the batch's width, then each width it changed to
            self.last_prefill_forwards = state.prefill_forwards  # forward passes of the refills' prefills
            self.last_profile = state.profile()
            forwards = [forward for _, forward in state.batches.values()]
            self.last_graph_recorded = bool(forwards) and all(forward.recorded for forward in forwards)
            self.last_graph_failure = next((forward.failure for forward in forwards if forward.failure), None)


class _Rows:
    """The decoding state of one run: which job each row holds, and the tensors of the step.

    Each step runs the first ``width`` rows. Once the source runs dry and half of them or more sit
    idle, the answering rows move to the front and the width halves (the step at a narrower batch
    is cheaper; each width is recorded as its own CUDA graph); when jobs arrive again it is back
    to every row.
    """

    def __init__(self, decoder: ContinuousDecoder, source: JobSource, *, rows: int, length: int,
                 eos_ids: Sequence[int], pad_id: int, prefill_tokens: int, device: torch.device) -> None:
        self.decoder, self.source, self.pad_id, self.prefill_tokens = decoder, source, pad_id, prefill_tokens
        self.held: list[Job | None] = [None] * rows
        self.width = rows
        self.widths = [rows]
        self.length = self.max_new = length  # an answer never has more tokens than its row has slots
        self.eos_ids = list(eos_ids)
        self.eos = torch.tensor(self.eos_ids, device=device)
        self.device = device
        self.cache: RowCache | None = None
        self.batches: dict[int, tuple[RowCache, GraphedForward]] = {}  # per width: its cache view and step
        # one memory pool for every width's graph: a step's output is read before the next step runs
        self.graph_pool: Any = None
        self.prefix = SharedPrefix(decoder.model)  # the run's prompts' shared leading tokens, prefilled once
        self.visible = torch.zeros(rows, 1, 1, self.length, dtype=torch.bool, device=device)
        self.visible[:, 0, 0, 0] = True  # a row never filled attends to one slot, not none (no NaN)
        self.token = torch.full((rows, 1), pad_id, dtype=torch.long, device=device)
        self.position = torch.zeros((rows, 1), dtype=torch.long, device=device)
        self.generated = torch.zeros(rows, dtype=torch.long, device=device)
        self.min_new = torch.zeros(rows, dtype=torch.long, device=device)
        self.max_new_row = torch.zeros(rows, dtype=torch.long, device=device)
        self.active = torch.zeros(rows, dtype=torch.bool, device=device)
        self.out = torch.full((rows, self.max_new), pad_id, dtype=torch.long, device=device)
        self.steps = self.slots = self.refills = 0
        self.prefill_forwards = self.prefilled_tokens = 0
        self.spans: dict[str, float] | None = {} if decoder.profile else None
        self._clock = time.perf_counter()

    def run(self) -> Iterator[tuple[int, list[int]]]:
        self._refill(list(range(self.width)))
        while any(job is not None for job in self.held):
            self._refill_idle()
            for _ in range(REFILL_EVERY):
                self._step()
            running = self.active[: self.width].tolist()
            self._mark(f"decode_{self.width}")  # per width: a drained batch's narrow steps apart
            ended = [row for row, answering in enumerate(running) if not answering and self.held[row]]
            if ended:
                counts = self.generated.tolist()
                answers = self.out[ended].tolist()
                for row, answer in zip(ended, answers):
                    yield self.held[row].key, until_end(answer[: counts[row]], self.eos_ids)
                    self.held[row] = None
                self._mark("hand_back")
                self._refill_idle()
            self._resize()
            self._mark("resize")

    def _mark(self, span: str) -> None:
        """Profiling only: the time since the last mark, once the GPU has run what was queued, charged to ``span``."""
        if self.spans is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.spans[span] = self.spans.get(span, 0.0) + now - self._clock
        self._clock = now

    def profile(self) -> dict[str, Any] | None:
        """Seconds per phase and the prefill's work, when profiled."""
        if self.spans is None:
            return None
        return {"seconds": dict(self.spans), "steps": self.steps, "refills": self.refills,
                "prefill_forwards": self.prefill_forwards, "prefilled_tokens": self.prefilled_tokens}

    def _refill_idle(self) -> None:
        """Refill the idle rows (ended ones, or ones a dry source left empty: jobs may have arrived
        since) once there are ``refill_at_least`` of them, or none answers."""
        idle = [row for row in range(self.width) if self.held[row] is None]
        # at most a quarter of the width: rows left idle by a source that still has jobs must not narrow it
        enough = min(self.decoder.refill_at_least, max(1, self.width // 4))
        if idle and (len(idle) >= enough or len(idle) == self.width):
            self._refill(idle)

    def _resize(self) -> None:
        """Narrow a drained batch to its answering rows, or widen it again when jobs are waiting."""
        held = [row for row in range(self.width) if self.held[row] is not None]
        if len(held) == self.width:
            if self.width < len(self.held):  # a full narrow batch: jobs may be waiting for the other rows
                self.width, narrow = len(self.held), self.width
                if not self._refill(list(range(narrow, self.width))):
                    self.width = narrow
                else:
                    self.widths.append(self.width)
            return
        width = narrower(self.width, len(held), min(self.decoder.narrowest, len(self.held)))
        if width == self.width or not held:
            return
        sources = [row for row in held if row >= width]
        targets = [row for row in range(width) if self.held[row] is None][: len(sources)]
        if sources:
            self._move(sources, targets)
        self.width = width
        self.widths.append(width)

    def _move(self, sources: list[int], targets: list[int]) -> None:
        source, target = torch.tensor(sources, device=self.device), torch.tensor(targets, device=self.device)
        for tensor in (self.visible, self.token, self.position, self.generated, self.min_new, self.max_new_row,
                       self.active, self.out):
            tensor[target] = tensor[source]
        self.active[source] = False
        self.cache.move(source, target)
        for row_from, row_to in zip(sources, targets):
            self.held[row_to], self.held[row_from] = self.held[row_from], None

    def _batch(self, width: int) -> tuple[RowCache, GraphedForward]:
        """The cache view and the step's forward of a batch of the first ``width`` rows."""
        if width not in self.batches:
            cache = self.cache.first(width)
            # the cache position a model may ask for only shapes masks, and the mask here is given whole
            if self.graph_pool is None and self.device.type == "cuda":
                self.graph_pool = torch.cuda.graph_pool_handle()
            # a step one width could not record (its pool may be left mid-recording) stays eager at every width
            failed = any(recorded.failure for _, recorded in self.batches.values())
            forward = self.decoder.step_forward(self.token[:width], self.position[:width], self.visible[:width],
                                                cache, cache.write_at[:1], pool=self.graph_pool, graphs=not failed)
            self.batches[width] = cache, forward
        return self.batches[width]

    def _step(self) -> None:
        width = self.width
        self.steps += 1
        self.slots += width
        cache, forward = self._batch(width)
        rows, active, generated = cache.rows, self.active[:width], self.generated[:width]
        visible, out = self.visible[:width], self.out[:width]
        visible[rows, 0, 0, cache.write_at] |= active
        logits = forward()
        # an answer shorter than its minimum may not end yet (benchmarks force lengths this way)
        logits[:, self.eos] = torch.where((generated < self.min_new[:width])[:, None], float("-inf"),
                                          logits[:, self.eos])
        chosen = torch.where(active, logits.argmax(-1), self.pad_id)
        at = generated.clamp(max=self.max_new - 1)
        out[rows, at] = torch.where(active, chosen, out[rows, at])
        generated += active
        ended = active & (torch.isin(chosen, self.eos) | (generated >= self.max_new_row[:width]))
        active &= ~ended
        # only a row that goes on moves to its next slot: an ended one stays inside its cache row
        cache.write_at += active
        self.position[:width] += active[:, None]
        self.token[:width].copy_(chosen[:, None])

    def _refill(self, free: list[int]) -> int:
        """Give free rows the next waiting jobs (how many it gave), prefilled together straight into their rows.

        A newcomer's prompt sits in its row as in the prefill batch (its shared prefix in front,
        its own tokens right-aligned at ``width - 1``: worker.row_cache.prefill_rows); its position
        ids, not its cache slots, are what the model's rotary embedding reads.
        """
        jobs = self.source.take(len(free), length=self.length)
        if not jobs:
            return 0
        self.refills += 1
        taken = list(zip(free, jobs))
        width = max(len(job.ids) for _, job in taken)
        ids = torch.full((len(taken), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(taken), width), dtype=torch.long)
        for index, (_, job) in enumerate(taken):
            ids[index, width - len(job.ids):] = torch.tensor(job.ids)
            mask[index, width - len(job.ids):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        rows = torch.tensor([row for row, _ in taken], device=self.device)
        request = DecodeRequest(ids, mask, 1, 0, self.eos_ids, self.pad_id, 0)
        if self.decoder.share_prefix:
            request = self.prefix.arrange(request)
            mask = request.attention_mask
        own = max(0, width - 1 - request.shared_prefix)  # tokens each prompt runs through the model
        if self.prefill_tokens:
            # the activations a chunk holds are of the tokens it runs: a shared prefix's ran once, apart
            run = width if self.decoder.prefill_counts_prefix else max(1, own)
            request = replace(request, prefill_chunk=max(1, self.prefill_tokens // run))
        self.decoder.last_shared_prefix = max(self.decoder.last_shared_prefix, request.shared_prefix)
        if self.cache is None:
            self.cache = self._allocate(self.decoder.model.get_input_embeddings().weight.dtype)
        computed = self.prefix.computed(self.decoder.keyword) if request.shared_prefix else None
        self._mark("refill_prep")
        self.prefill_forwards += prefill_rows(self.decoder.forward_model, request, computed, self.cache, rows,
                                              self.decoder.keyword, self.decoder.takes_cache_position)
        self.prefilled_tokens += len(taken) * own
        self._mark("prefill")
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
        self._mark("refill_write")
        return len(taken)

    def _allocate(self, dtype: torch.dtype) -> RowCache:
        cache = self.decoder.cache_of_shape(RowCache, len(self.held), self.length, dtype, self.device)
        cache.write_at.zero_()  # a reused cache: rows not yet refilled write harmlessly at slot 0
        return cache

