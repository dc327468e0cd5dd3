"""A worker's tasks at work: a single-document task runs alone in its worker (so a death is its own)."""

from __future__ import annotations

import threading

from models.settings import load_settings
from worker.runtime import Runtime


def _task(runtime: Runtime, alone: bool, log: list[str], name: str, release: threading.Event) -> threading.Thread:
    def run() -> None:
        with runtime.working(alone=alone):
            log.append(f"{name} in")
            release.wait()
            log.append(f"{name} out")

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_task_alone_waits_for_the_running_ones_and_holds_back_new_ones() -> None:
    runtime = Runtime(settings=load_settings(), worker_id="w", queue="extract", sessions=None)  # type: ignore[arg-type]
    log: list[str] = []
    first, lone, later = threading.Event(), threading.Event(), threading.Event()
    threads = [_task(runtime, False, log, "group", first)]
    while log != ["group in"]:
        pass  # the group task is at work
    threads.append(_task(runtime, True, log, "single", lone))
    while runtime._alone != 1:  # noqa: SLF001 - the single task is waiting to run alone
        pass
    threads.append(_task(runtime, False, log, "next group", later))
    assert not later.is_set() and log == ["group in"]  # neither the single task nor the next group started
    first.set()
    while "single in" not in log:
        pass
    assert log == ["group in", "group out", "single in"]  # the next group is still held back
    lone.set()
    later.set()
    for thread in threads:
        thread.join()
    assert log == ["group in", "group out", "single in", "single out", "next group in", "next group out"]
