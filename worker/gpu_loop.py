"""One GPU loop per worker process, fed by every task in flight: the GPU does not wait for the CPU.

Celery runs several extraction tasks at once on threads. Each task claims its documents,
tokenises them, and hands its prompts to this loop as a ticket; while the single loop thread
decodes, the other tasks tokenise, parse and store. With the continuous decoder the loop
streams: a row whose answer ended is refilled with the next waiting prompt of any ticket, so
the batch stays full across tasks and groups. Each ticket wakes its task when its last prompt
is answered.

``feeding`` (``TRIPLETS_TASKS_IN_FLIGHT``) bounds the tickets whose prompts are not all with the
decoder yet; a task waits for room before handing its ticket over. A ticket whose every prompt
is decoding no longer counts, though its task waits on for its longest answers: the worker's
thread pool holds ``TRIPLETS_TASKS_FINISHING`` more tasks for those, so the next group is fed
while the last one's longest answers end.

The adapter changes only between decoding runs: a switch waits until the tickets already
started are answered, and a ticket is decoded under one adapter from start to end (its
extractions name it).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from models.extraction import Extraction
from worker.engine import Finished
from worker.hf_engine import HuggingFaceEngine, Prepared
from worker.loop_runs import DecodingRun, LoopStats, Ticket

log = logging.getLogger(__name__)
# How often a task hands on the documents of its group that are done (so progress moves inside a group).
EARLY_RESULTS_SECONDS = 5.0


@dataclass(eq=False)
class _Switch:
    adapter_id: str
    path: Path
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class EngineLoop:
    """An ExtractionEngine whose decoding runs on one thread, shared by the tasks that call ``extract``."""

    def __init__(self, engine: HuggingFaceEngine, *, on_progress: Callable[[], None] = lambda: None,
                 feeding: int | None = None, start: bool = True) -> None:
        self.engine = engine
        self.feeding = feeding  # tickets at most whose prompts are not all with the decoder; None: no bound
        self.on_progress = on_progress
        self.counters = LoopStats()
        self._lock = threading.Condition()
        self._waiting: deque[Ticket] = deque()  # not yet started
        self._switches: deque[_Switch] = deque()
        self._closed = False
        self._feeding = 0  # tickets handed over whose prompts are not all with the decoder
        self._finishing: set[Ticket] = set()  # every prompt with the decoder, their extract calls not yet returned
        self._returned: set[Ticket] = set()  # extract calls that returned before their tickets were fed
        self._gated = 0  # tasks waiting for room to hand their ticket over
        self._thread = threading.Thread(target=self._serve, name="gpu-loop", daemon=True)
        if start:
            self.start()

    def start(self) -> None:
        self._thread.start()

    @property
    def runs(self) -> int:
        return self.counters.runs

    def stats(self) -> dict[str, float]:
        """A snapshot of the counters (runs, prompts, answer_tokens, decode_seconds, rows)."""
        return asdict(self.counters)

    def pending(self) -> tuple[int, int]:
        """Tickets and adapter switches waiting for the loop."""
        with self._lock:
            return len(self._waiting), len(self._switches)

    def finishing(self) -> int:
        """Tasks whose prompts are all decoding (or answered) and that have not had their extractions yet."""
        with self._lock:
            return len(self._finishing)

    def gated(self) -> int:
        """Tasks waiting for room to hand their tickets over (``feeding`` tickets are being fed)."""
        with self._lock:
            return self._gated

    @property
    def model_id(self) -> str:
        return self.engine.model_id

    @property
    def adapter_id(self) -> str:
        return self.engine.adapter_id

    @property
    def prompt_version(self) -> str:
        return self.engine.prompt_version

    def extract(self, texts: Sequence[str], *, progress: Callable[[], None] = lambda: None,
                finished: Finished | None = None) -> list[Extraction]:
        """As ``ExtractionEngine.extract``; ``finished`` gets the documents done so far every few seconds
        (assembled on this, the caller's, thread: the loop thread only decodes)."""
        prepared = self.engine.prepare(texts)  # tokenising happens on the caller's thread
        ticket = Ticket(prepared.prompts, progress)
        ticket.on_fed = functools.partial(self._fed, ticket)
        if ticket.prompts:
            self._put(ticket)
            try:
                while not ticket.done.wait(timeout=EARLY_RESULTS_SECONDS if finished else None):
                    if ticket.finished:
                        finished(self._early(prepared, ticket))
            finally:
                with self._lock:
                    if ticket in self._finishing:
                        self._finishing.remove(ticket)
                    else:  # it left early (a failed hand-over): the loop may still feed it
                        self._returned.add(ticket)
            if ticket.error is not None:
                raise ticket.error
        extractions = self.engine.finish(prepared, ((p, ticket.outputs[i]) for i, p in enumerate(ticket.prompts)))
        return [replace(extraction, adapter_id=ticket.adapter_id or self.adapter_id) for extraction in extractions]

    def _early(self, prepared: Prepared, ticket: Ticket) -> list[tuple[int, Extraction]]:
        docs = [ticket.finished.popleft() for _ in range(len(ticket.finished))]
        assemble = self.engine.assemble_document
        return [(doc, replace(assemble(prepared, doc, ticket.outputs), adapter_id=ticket.adapter_id)) for doc in docs]

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
            self._gated += 1
            try:
                while self.feeding is not None and self._feeding >= self.feeding and not self._closed:
                    self._lock.wait()
            finally:
                self._gated -= 1
            if self._closed:
                raise RuntimeError("the GPU loop is closed")
            self._feeding += 1
            self._waiting.append(ticket)
            self._lock.notify_all()

    def _fed(self, ticket: Ticket) -> None:
        with self._lock:  # re-entrant: a ticket failed under the lock (on close) is fed too
            self._feeding -= 1
            if ticket in self._returned:
                self._returned.remove(ticket)
            else:
                self._finishing.add(ticket)
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
        run = self._attempt(self._new_run())
        if run is None:
            return
        for ticket in list(run.open()):
            solo = self._attempt(self._new_run(only=ticket))
            if solo is not None:
                ticket.fail(solo.error)

    def _attempt(self, run: DecodingRun) -> DecodingRun | None:
        """``run`` decoded; the run back if it failed with several tickets open (else they learn why)."""
        self.counters.runs += 1
        started = time.perf_counter()
        try:
            run.decode()
            run.log(time.perf_counter() - started)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            log.warning("CUDA out of memory in a continuous run; its tickets go through planned batches")
            run.fallback()
        except BaseException as exc:  # noqa: BLE001 - the tasks decide whose fault it is
            log.warning("a decoding run of %d tickets failed: %s: %s", len(run.tickets), type(exc).__name__, exc)
            open_tickets = list(run.open())
            if len(open_tickets) > 1:
                run.error = exc
                return run
            for ticket in open_tickets:
                ticket.fail(exc)
        return None

    def _new_run(self, *, only: Ticket | None = None) -> DecodingRun:
        return DecodingRun(self.engine, admit=self._admit, stats=self.counters, on_progress=self.on_progress, only=only)

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
