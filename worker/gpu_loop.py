"""One GPU loop per worker process, fed by every task in flight: the GPU does not wait for the CPU.

Celery runs several extraction tasks at once on threads (``TRIPLETS_TASKS_IN_FLIGHT``). Each
task claims its documents, tokenises them, and hands its prompts to this loop as a ticket;
while the single loop thread decodes, the other tasks tokenise, parse and store. With the
continuous decoder the loop streams: a row whose answer ended is refilled with the next
waiting prompt of any ticket, so the batch stays full across tasks and groups. Each ticket
wakes its task when its last prompt is answered.

The adapter changes only between decoding runs: a switch waits until the tickets already
started are answered, and a ticket is decoded under one adapter from start to end (its
extractions name it).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from models.extraction import Extraction, WindowOutput
from worker.batching import Prompt
from worker.continuous_decode import Job, cache_length, fits
from worker.hf_engine import HuggingFaceEngine

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Ticket:
    """One task's prompts on their way through the loop."""

    prompts: list[Prompt]
    progress: Callable[[], None]
    outputs: dict[int, WindowOutput] = field(default_factory=dict)
    adapter_id: str = ""
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def answer(self, index: int, output: WindowOutput) -> None:
        self.outputs[index] = output
        if len(self.outputs) == len(self.prompts):
            self.done.set()
        else:
            self.progress()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.done.set()


@dataclass(eq=False)
class _Switch:
    adapter_id: str
    path: Path
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class EngineLoop:
    """An ExtractionEngine whose decoding runs on one thread, shared by the tasks that call ``extract``."""

    def __init__(self, engine: HuggingFaceEngine, *, on_progress: Callable[[], None] = lambda: None,
                 start: bool = True) -> None:
        self.engine = engine
        self.on_progress = on_progress
        self.runs = 0  # decoding runs so far
        self._lock = threading.Condition()
        self._waiting: deque[Ticket] = deque()  # not yet started
        self._switches: deque[_Switch] = deque()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="gpu-loop", daemon=True)
        if start:
            self.start()

    def start(self) -> None:
        self._thread.start()

    def pending(self) -> tuple[int, int]:
        """Tickets and adapter switches waiting for the loop."""
        with self._lock:
            return len(self._waiting), len(self._switches)

    @property
    def model_id(self) -> str:
        return self.engine.model_id

    @property
    def adapter_id(self) -> str:
        return self.engine.adapter_id

    @property
    def prompt_version(self) -> str:
        return self.engine.prompt_version

    def extract(self, texts: Sequence[str], *, progress: Callable[[], None] = lambda: None) -> list[Extraction]:
        prepared = self.engine.prepare(texts)  # tokenising happens on the caller's thread
        ticket = Ticket(prepared.prompts, progress)
        if ticket.prompts:
            self._put(ticket)
            ticket.done.wait()
            if ticket.error is not None:
                raise ticket.error
        extractions = self.engine.finish(prepared, ((p, ticket.outputs[i]) for i, p in enumerate(ticket.prompts)))
        return [replace(extraction, adapter_id=ticket.adapter_id or self.adapter_id) for extraction in extractions]

    def use_adapter(self, adapter_id: str, path: Path) -> None:
        """Switch once the tickets already started are answered; raises what loading the adapter raised."""
        switch = _Switch(adapter_id, path)
        with self._lock:
            if self._closed:
                raise RuntimeError("the GPU loop is closed")
            self._switches.append(switch)
            self._lock.notify_all()
        switch.done.wait()
        if switch.error is not None:
            raise switch.error

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=60)

    def _put(self, ticket: Ticket) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the GPU loop is closed")
            self._waiting.append(ticket)
            self._lock.notify_all()

    def _serve(self) -> None:
        while True:
            with self._lock:
                while not (self._waiting or self._switches or self._closed):
                    self._lock.wait()
                if self._closed:
                    self._fail_waiting(RuntimeError("the worker is stopping"))
                    return
                switches = list(self._switches)
                self._switches.clear()
            for switch in switches:  # between runs: no ticket is half decoded
                self._switch(switch)
            if not switches:
                self._run()

    def _switch(self, switch: _Switch) -> None:
        try:
            self.engine.use_adapter(switch.adapter_id, switch.path)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, who decides whose fault it is
            switch.error = exc
        switch.done.set()

    def _run(self) -> None:
        """One decoding run over the waiting tickets (and, continuously, the ones that arrive meanwhile).

        A run that fails with several tickets in it proves nothing against any one of them: each
        goes again alone, and only a ticket that fails alone hands the error to its task.
        """
        run = self._attempt(_Run(self))
        if run is None:
            return
        for ticket in list(run.open()):
            solo = self._attempt(_Run(self, only=ticket))
            if solo is not None:
                ticket.fail(solo.error)

    def _attempt(self, run: _Run) -> _Run | None:
        """``run`` decoded; the run back if it failed with several tickets open (else they learn why)."""
        self.runs += 1
        try:
            run.decode()
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            log.warning("CUDA out of memory in a continuous run; its tickets go through planned batches")
            run.fallback()
        except BaseException as exc:  # noqa: BLE001 - the tasks decide whose fault it is
            open_tickets = list(run.open())
            if len(open_tickets) > 1:
                run.error = exc
                return run
            for ticket in open_tickets:
                ticket.fail(exc)
        return None

    def _admit(self, room: Callable[[Ticket], bool]) -> Ticket | None:
        """The next waiting ticket if ``room`` accepts it and no adapter switch waits; else None."""
        with self._lock:
            if self._waiting and not self._switches and room(self._waiting[0]):
                return self._waiting.popleft()
            return None

    def _fail_waiting(self, error: BaseException) -> None:
        while self._waiting:
            self._waiting.popleft().fail(error)
        while self._switches:
            switch = self._switches.popleft()
            switch.error = error
            switch.done.set()


class _Run:
    """The tickets of one decoding run, and the continuous decoder's source of jobs."""

    def __init__(self, loop: EngineLoop, *, only: Ticket | None = None) -> None:
        self.loop = loop
        self.engine = loop.engine
        self.only = only  # a ticket decoded alone: nothing else is admitted
        self.tickets: list[Ticket] = []
        self.where: dict[int, tuple[Ticket, int]] = {}  # key -> (ticket, prompt index), until answered
        self.keys = 0  # keys given so far
        self.jobs: deque[Job] = deque()
        self.closed = only is not None  # closed: admit no more tickets, let the run drain
        self.error: BaseException | None = None

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
            while (ticket := self.loop._admit(lambda _: True)) is not None:
                keyed += self.start(ticket)
        if not keyed:
            return
        if self.engine.continuous:
            self._stream(keyed)
        else:
            self._planned(keyed)

    def _planned(self, keyed: list[tuple[int, Prompt]]) -> None:
        key_of = {id(prompt): key for key, prompt in keyed}
        for batch in self.engine.plan([prompt for _, prompt in keyed]):
            outputs = self.engine.decode(batch, forced_lengths=self.engine.forced_lengths(batch))
            for prompt, output in zip(batch, outputs):
                self._answer(key_of[id(prompt)], output)

    def _stream(self, keyed: list[tuple[int, Prompt]]) -> None:
        """One continuous batch, sized for the tickets waiting at its start, fed by the ones that follow."""
        self._queue(keyed)
        # sized for any answer, not the longest among these: tickets that follow fit unless their prompts are longer
        length = cache_length(self.jobs, answer_tokens=self.engine.config.max_new_tokens)
        for key, tokens in self.engine.continuous_decoder.stream(self, **self.engine.stream_arguments(length)):
            ticket, index = self.where[key]
            self._answer(key, self.engine.output(ticket.prompts[index], tokens))

    def _queue(self, keyed: list[tuple[int, Prompt]]) -> None:
        self.jobs.extend(self.engine.jobs([prompt for _, prompt in keyed], [key for key, _ in keyed]))

    def take(self, count: int, *, length: int) -> list[Job]:
        """The decoder's source: this run's jobs, then new tickets' while they fit and none waits."""
        while len(self.jobs) < count and not self.closed:
            ticket = self.loop._admit(lambda t: self._fits(t, length))
            if ticket is None:
                break
            self._queue(self.start(ticket))
        taken = []
        while self.jobs and len(taken) < count:
            taken.append(self.jobs.popleft())
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
        ticket.answer(index, output)
        self.loop.on_progress()
