"""One decoding run of the GPU loop (worker.gpu_loop): the tickets in it, and the continuous decoder's source.

A run takes the tickets waiting at its start; a continuous run goes on taking tickets as rows
free up, while their prompts fit its rows and no adapter switch waits.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from models.extraction import WindowOutput
from worker.batching import Prompt
from worker.continuous_decode import Job, cache_length, fits
from worker.hf_engine import HuggingFaceEngine

log = logging.getLogger("worker.gpu_loop")


@dataclass(eq=False)
class Ticket:
    """One task's prompts on their way through the loop."""

    prompts: list[Prompt]
    progress: Callable[[], None]
    outputs: dict[int, WindowOutput] = field(default_factory=dict)
    adapter_id: str = ""
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)
    finished: deque[int] = field(default_factory=deque)  # documents whose every window is answered
    on_fed: Callable[[], None] = lambda: None  # called once: every prompt is with the decoder (or the ticket ended)

    def __post_init__(self) -> None:
        self._windows_left: dict[int, int] = {}
        for prompt in self.prompts:
            self._windows_left[prompt.doc] = self._windows_left.get(prompt.doc, 0) + 1
        self._queued = 0  # prompts in a run's queue, not yet taken by the decoder
        self._fed = False

    def queued(self) -> None:
        self._queued += 1

    def taken(self) -> None:
        """One of its queued prompts is with the decoder now."""
        self._queued -= 1
        if not self._queued:
            self.fed()

    def fed(self) -> None:
        if not self._fed:
            self._fed = True
            self.on_fed()

    def answer(self, index: int, output: WindowOutput) -> None:
        self.outputs[index] = output
        doc = self.prompts[index].doc
        self._windows_left[doc] -= 1
        if not self._windows_left[doc]:
            self.finished.append(doc)
        if len(self.outputs) == len(self.prompts):
            self.fed()
            self.done.set()
        else:
            self.progress()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.fed()
        self.done.set()


@dataclass
class LoopStats:
    """What the loop has done since the worker started (read by the metrics endpoint and the logs)."""

    runs: int = 0
    prompts: int = 0
    answer_tokens: int = 0
    decode_seconds: float = 0.0
    rows: int = 0  # rows of the last run (continuous) or its last batch (planned)


Admit = Callable[[Callable[[Ticket], bool]], Ticket | None]  # the loop's next waiting ticket, if it may join


class DecodingRun:
    """The tickets of one decoding run, and the continuous decoder's source of jobs."""

    def __init__(self, engine: HuggingFaceEngine, *, admit: Admit, stats: LoopStats,
                 on_progress: Callable[[], None], only: Ticket | None = None) -> None:
        self.engine = engine
        self.admit = admit
        self.stats = stats
        self.on_progress = on_progress
        self.only = only  # a ticket decoded alone: nothing else is admitted
        self.tickets: list[Ticket] = []
        self.where: dict[int, tuple[Ticket, int]] = {}  # key -> (ticket, prompt index), until answered
        self.keys = 0  # keys given so far
        self.jobs: deque[Job] = deque()
        self.closed = only is not None  # closed: admit no more tickets, let the run drain
        self.error: BaseException | None = None
        self.answer_tokens = 0
        self.slots = 0  # rows x decode steps of a continuous run
        self.profile: dict | None = None  # seconds per phase of a continuous run (benchmarks only)

    def start(self, ticket: Ticket) -> list[tuple[int, Prompt]]:
        """Make ``ticket``'s unanswered prompts part of this run, keyed."""
        ticket.adapter_id = self.engine.adapter_id
        self.tickets.append(ticket)
        keyed = []
        for index, prompt in enumerate(ticket.prompts):
            if index not in ticket.outputs:
                keyed.append((self.keys, prompt))
                self.where[self.keys] = (ticket, index)
                self.keys += 1
        return keyed

    def decode(self) -> None:
        """The tickets waiting now (or the one given) decoded; a continuous run takes more as rows free up."""
        if self.only is not None:
            keyed = self.start(self.only)
        else:
            keyed = []
            while (ticket := self.admit(lambda _: True)) is not None:
                keyed += self.start(ticket)
        if not keyed:
            return
        if self.engine.continuous:
            self._stream(keyed)
        else:
            self._planned(keyed)

    def _planned(self, keyed: list[tuple[int, Prompt]]) -> None:
        for ticket in self.tickets:  # every prompt is in the plan from the start
            ticket.fed()
        key_of = {id(prompt): key for key, prompt in keyed}
        for batch in self.engine.plan([prompt for _, prompt in keyed]):
            self.stats.rows = len(batch)
            outputs = self.engine.decode(batch, forced_lengths=self.engine.forced_lengths(batch))
            for prompt, output in zip(batch, outputs):
                self._answer(key_of[id(prompt)], output)

    def _stream(self, keyed: list[tuple[int, Prompt]]) -> None:
        """One continuous batch, sized for the tickets waiting at its start, fed by the ones that follow."""
        self._queue(keyed)
        # sized for any answer, not the longest among these: tickets that follow fit unless their prompts are longer
        length = cache_length(self.jobs, answer_tokens=self.engine.config.max_new_tokens)
        arguments = self.engine.stream_arguments(length)
        self.stats.rows = arguments["rows"]
        decoder = self.engine.continuous_decoder
        for key, tokens in decoder.stream(self, **arguments):
            ticket, index = self.where[key]
            self._answer(key, self.engine.output(ticket.prompts[index], tokens))
        self.slots, self.profile = decoder.last_slots, decoder.last_profile

    def _queue(self, keyed: list[tuple[int, Prompt]]) -> None:
        self.jobs.extend(self.engine.jobs([prompt for _, prompt in keyed], [key for key, _ in keyed]))
        for key, _ in keyed:
            self.where[key][0].queued()

    def take(self, count: int, *, length: int) -> list[Job]:
        """The decoder's source: this run's jobs, then new tickets' while they fit and none waits."""
        while len(self.jobs) < count and not self.closed:
            ticket = self.admit(lambda t: self._fits(t, length))
            if ticket is None:
                break
            self._queue(self.start(ticket))
        taken = []
        while self.jobs and len(taken) < count:
            job = self.jobs.popleft()
            self.where[job.key][0].taken()
            taken.append(job)
        return taken

    def _fits(self, ticket: Ticket, length: int) -> bool:
        """Whether every prompt of ``ticket`` and its longest answer fit a row; if not, the run closes."""
        if all(fits(job, length) for job in self.engine.jobs(ticket.prompts, range(len(ticket.prompts)))):
            return True
        self.closed = True
        return False

    def fallback(self) -> None:
        for ticket in self.open():
            missing = [index for index in range(len(ticket.prompts)) if index not in ticket.outputs]
            for index, output in zip(missing, self.engine.decode_planned([ticket.prompts[i] for i in missing])):
                ticket.answer(index, output)

    def open(self) -> Iterator[Ticket]:
        return (ticket for ticket in self.tickets if not ticket.done.is_set())

    def _answer(self, key: int, output: WindowOutput) -> None:
        ticket, index = self.where.pop(key)
        stats = self.stats
        stats.prompts += 1
        stats.answer_tokens += output.answer_tokens
        self.answer_tokens += output.answer_tokens
        ticket.answer(index, output)
        self.on_progress()

    def log(self, seconds: float) -> None:
        self.stats.decode_seconds += seconds
        prompts = sum(len(ticket.prompts) for ticket in self.tickets)
        log.info("decoded %d prompts of %d tickets in %.1f s: %d answer tokens, %d rows%s", prompts,
                 len(self.tickets), seconds, self.answer_tokens, self.stats.rows,
                 f", slot efficiency {self.answer_tokens / self.slots:.2f}" if self.slots else "")
        if self.profile:  # ContinuousDecoder.profile, which a benchmark sets (bench/scale_gpu.py --profile-loop)
            log.info("phases of the run: %s", json.dumps(self.profile))
