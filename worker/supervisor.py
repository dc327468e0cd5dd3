"""`triplets worker`: a light parent that keeps its worker processes running, one or one per GPU.

The parent imports no model code. It starts one ``python -m worker.main`` (the process that
holds the engine) per member, and when one dies it records the death (so its work is taken
over at once instead of after the lease) and starts it again, with backoff; the others go
on. A worker that is not ready (its model, device or adapter cannot work) is not restarted:
restarting cannot help. The parent exits once every member has ended, with the exit code of
the first member (in their order) that ended with one, else 0. SIGTERM/SIGINT ask every
worker for a warm shutdown (the running groups finish); a second one asks for a cold one.
The workers die with their parent (PR_SET_PDEATHSIG on Linux).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

from models import workers
from models.db import make_session_factory
from models.settings import Settings
from worker.runtime import EXIT_NOT_READY, EXIT_OK

log = logging.getLogger("triplets.supervisor")
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
HEALTHY_AFTER_S = 60.0  # a worker that lived this long restarts without backoff
POLL_S = 0.2  # how often the parent looks at its workers; one thread, so signals and forks stay simple
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Member:
    """One worker process the parent keeps running."""

    name: str  # Celery node name (name@host), as Flower shows it
    device: str


@dataclass
class _Slot:
    member: Member
    child: subprocess.Popen | None = None
    worker_id: str = ""
    started: float = 0.0
    start_at: float = 0.0  # monotonic time of its next start
    backoff: float = FIRST_BACKOFF_S
    ended: int | None = None  # its final exit code, once it is not restarted
    signalled: int = 0  # stop signals forwarded to the running child


def supervise(settings: Settings, *, queue: str, members: list[Member], loglevel: str) -> int:
    """Run ``members`` until each has ended (see the module's docstring); the parent's exit code."""
    return _Supervisor(settings, queue=queue, members=members, loglevel=loglevel).run()


class _Supervisor:
    def __init__(self, settings: Settings, *, queue: str, members: list[Member], loglevel: str) -> None:
        self.settings, self.queue, self.loglevel = settings, queue, loglevel
        self.slots = [_Slot(member) for member in members]
        self.stops = 0  # stop signals received

    def run(self) -> int:
        previous = {signum: signal.signal(signum, self._on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}
        try:
            while any(slot.ended is None for slot in self.slots):
                for slot in self.slots:
                    self._tend(slot)
                time.sleep(POLL_S)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return next((slot.ended for slot in self.slots if slot.ended), EXIT_OK)

    def _on_signal(self, _signum: int, _frame: object) -> None:
        self.stops += 1
        for slot in self.slots:
            self._forward(slot)

    def _forward(self, slot: _Slot) -> None:
        """Pass the stop on to the slot's child once per signal: the first warm (SIGTERM), later ones cold."""
        child = slot.child
        if child is None or child.poll() is not None or slot.signalled >= self.stops:
            return
        slot.signalled = self.stops
        child.send_signal(signal.SIGTERM if self.stops == 1 else signal.SIGQUIT)

    def _tend(self, slot: _Slot) -> None:
        if slot.ended is not None:
            return
        if slot.child is None:
            if self.stops:
                slot.ended = EXIT_OK  # waiting out its backoff: nothing to stop
            elif time.monotonic() >= slot.start_at:
                self._start(slot)
            return
        code = slot.child.poll()
        if code is None:
            self._forward(slot)  # a signal that came while it was being started
            return
        slot.child = None
        self._after_exit(slot, code)

    def _start(self, slot: _Slot) -> None:
        member = slot.member
        slot.worker_id = f"{member.name}:{uuid.uuid4().hex[:8]}"
        slot.started, slot.signalled = time.monotonic(), 0
        slot.child = subprocess.Popen(
            child_command(member, queue=self.queue, worker_id=slot.worker_id, loglevel=self.loglevel),
            env=child_environment(), preexec_fn=_die_with_parent,
            process_group=0,  # its own group: a terminal's Ctrl+C reaches the parent only
        )
        log.info("worker %s started on %s (pid %d)", member.name, member.device, slot.child.pid)

    def _after_exit(self, slot: _Slot, code: int) -> None:
        name = slot.member.name
        if self.stops:
            slot.ended = EXIT_OK if code in (EXIT_OK, -signal.SIGTERM) else code
            if code != EXIT_OK:  # stopped before it could record its end itself (still loading, say)
                _record_death(self.settings, slot.worker_id, code)
            return
        if code in (EXIT_OK, EXIT_NOT_READY):
            slot.ended = code
            if code == EXIT_NOT_READY and len(self.slots) > 1:
                log.error("worker %s is not ready (see its error above): not restarted", name)
            return
        _record_death(self.settings, slot.worker_id, code)
        if time.monotonic() - slot.started > HEALTHY_AFTER_S:
            slot.backoff = FIRST_BACKOFF_S
        log.error("worker %s %s; restarting in %.1f s", name, _describe(code), slot.backoff)
        slot.start_at = time.monotonic() + slot.backoff
        slot.backoff = min(slot.backoff * 2, MAX_BACKOFF_S)


def child_command(member: Member, *, queue: str, worker_id: str, loglevel: str) -> list[str]:
    """The worker process's command line."""
    # Libraries' FutureWarnings speak to their own developers, not to whoever reads a worker's
    # log: hidden unless the log is at DEBUG.
    warnings = [] if loglevel == "DEBUG" else ["-W", "ignore::FutureWarning"]
    return [sys.executable, *warnings, "-m", "worker.main", "--queue", queue, "--device", member.device,
            "--worker-id", worker_id, "--name", member.name, "--loglevel", loglevel]


def child_environment() -> dict[str, str]:
    """The parent's environment, plus what makes a worker's log and GPU numbering what an operator expects."""
    return {
        # CUDA numbers GPUs fastest first unless told otherwise; nvidia-smi (and --gpus) by PCI bus.
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        # A log file is no terminal: transformers' "Loading weights" bars are noise there.
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        **os.environ,
    }


def _describe(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exited with {code}"


def _record_death(settings: Settings, worker_id: str, code: int) -> None:
    try:
        with make_session_factory(settings.database_url).begin() as session:
            workers.stop_worker(session, worker_id=worker_id, reason=_describe(code))
    except Exception as exc:  # noqa: BLE001 - its lease runs out by itself
        log.warning("could not record the worker's death (%s); its lease will expire", type(exc).__name__)


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
