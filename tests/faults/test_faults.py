"""Fault injection with real processes: every document ends done or failed with a reason, none lost, no copies.

Each scenario runs the demo model on the CPU through real `triplets worker` processes against
the suite's own Redis (AOF) and PostgreSQL, injects one fault mid-job, and compares the
outcome with a clean run of the same corpus (the table is printed at the end of the run).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

import models
from devkit.assets import demo_model_path
from models.tables import Document, Status, TrainingJob, Worker
from tests.faults.stack import Row, Stack, Triplets, WorkerProcess, corpus_lines
from worker.engine import CANARY_TEXT

pytestmark = pytest.mark.slow

DEFAULT_LEASES = {"heartbeat_seconds": 10, "lease_seconds": 60, "sweep_seconds": 15}
TAKEOVER_LIMIT_S = 120


def _assert_nothing_lost(row: Row, *, failed: int = 0) -> None:
    assert (row.lost, row.duplicated, row.failed) == (0, 0, failed), row
    assert row.done + row.failed == row.submitted


def _running_held_by(stack: Stack, worker_id: str | None) -> list[int]:
    with stack.sessions() as session:
        return list(session.scalars(select(Document.id).where(Document.status == Status.running,
                                                               Document.owner == worker_id)))


def _mid_job(stack: Stack) -> None:
    """Until a group is being extracted and at least one has finished."""
    stack.wait_for(lambda: stack.count(Status.running) and stack.count(Status.done), "a group in flight")


def _one_worker_mid_job(stack: Stack, worker: str, job: str) -> tuple[WorkerProcess, str | None, list[int]]:
    """A worker alone on a new job, caught mid-job: it, its worker id then, and the documents it held."""
    process = stack.worker(worker)
    stack.submit(stack.corpus(corpus_lines()), job)
    _mid_job(stack)
    worker_id = process.live_id()
    return process, worker_id, _running_held_by(stack, worker_id)


def test_a_worker_process_killed_mid_group(stack: Stack, clean: dict[str, Triplets], record) -> None:
    worker, first_id, held = _one_worker_mid_job(stack, "a", "a")
    worker.engine_process().send_signal(signal.SIGKILL)
    stack.wait_finished()
    row = record(stack.row("(a) SIGKILL the worker process mid-group", clean,
                           note=f"{len(held)} documents held when killed; the supervisor restarted it"))
    _assert_nothing_lost(row)
    assert row.differ_from_clean == 0
    assert worker.live_id() not in (None, first_id)  # a new worker process under the same parent


def test_b_worker_main_process_killed_is_taken_over_within_two_minutes(
    stack: Stack, clean: dict[str, Triplets], record
) -> None:
    victim = stack.worker("b1", **DEFAULT_LEASES)
    stack.worker("b2", **DEFAULT_LEASES)
    stack.submit(stack.corpus(corpus_lines()), "b")
    victim_id = victim.live_id()
    held = stack.wait_for(lambda: _running_held_by(stack, victim_id), "the first worker to hold a group")
    victim.process.send_signal(signal.SIGKILL)  # the parent; its worker process dies with it
    killed_at = time.monotonic()

    def taken_over() -> bool:
        with stack.sessions() as session:
            rows = session.execute(select(Document.status, Document.owner).where(Document.id.in_(held))).all()
        return all(status == Status.done or owner not in (None, victim_id) for status, owner in rows)

    stack.wait_for(taken_over, "the dead worker's group to be taken over", timeout=TAKEOVER_LIMIT_S + 30)
    takeover_s = time.monotonic() - killed_at
    stack.wait_finished()
    row = record(stack.row("(b) SIGKILL the worker's main process (2 workers)", clean,
                           note=f"its group of {len(held)} worked on again {takeover_s:.0f} s after the kill "
                                f"(lease {DEFAULT_LEASES['lease_seconds']} s)"))
    _assert_nothing_lost(row)
    assert takeover_s < TAKEOVER_LIMIT_S


def test_c_warm_shutdown_finishes_the_group_in_hand(stack: Stack, clean: dict[str, Triplets], record) -> None:
    worker, _, held = _one_worker_mid_job(stack, "c1", "c")
    assert worker.stop() == 0
    with stack.sessions() as session:
        statuses = {status for (status,) in session.execute(select(Document.status).where(Document.id.in_(held)))}
    assert statuses == {Status.done}  # the group in hand was finished before the worker left
    stack.worker("c2")
    stack.wait_finished()
    row = record(stack.row("(c) SIGTERM (warm shutdown) mid-group, then a new worker", clean,
                           note=f"the {len(held)} documents in hand finished before exit 0"))
    _assert_nothing_lost(row)
    assert row.differ_from_clean == 0


@pytest.mark.parametrize("how", ["restart", "kill"])
def test_d_redis_restarted_or_killed_mid_job(stack: Stack, clean: dict[str, Triplets], record, how: str) -> None:
    stack.worker("d")
    stack.submit(stack.corpus(corpus_lines()), f"d-{how}")
    _mid_job(stack)
    if how == "restart":
        stack.redis.restart()
    else:
        stack.redis.kill()
        stack.redis.start()
    stack.wait_finished()
    label = "restarted (AOF)" if how == "restart" else "SIGKILLed, then started (AOF, fsync every s)"
    row = record(stack.row(f"(d) Redis {label} mid-job", clean))
    _assert_nothing_lost(row)
    assert row.differ_from_clean == 0


def test_e_database_stopped_for_twenty_seconds_mid_job(stack: Stack, clean: dict[str, Triplets], record) -> None:
    worker = stack.worker("e", **DEFAULT_LEASES)
    stack.submit(stack.corpus(corpus_lines()), "e")
    _mid_job(stack)
    stack.postgres.stop()
    time.sleep(20)  # the outage itself, not a wait for anything
    stack.postgres.start()
    stack.wait_finished()  # by itself: no requeue
    tracebacks = worker.log.read_text().count("Traceback")
    row = record(stack.row("(e) PostgreSQL stopped for 20 s mid-job", clean,
                           note=f"no requeue; {tracebacks} tracebacks in the worker log"))
    _assert_nothing_lost(row)
    assert row.differ_from_clean == 0
    assert tracebacks == 0


def test_f_a_misconfigured_worker_fails_no_document(stack: Stack, clean: dict[str, Triplets], record) -> None:
    missing = stack.worker("f-missing", ready=False, base_model="/no/such/folder")
    no_gpu = stack.worker("f-nogpu", ready=False, device="cuda:0")
    assert missing.process.wait(timeout=120) == 3
    stack.worker("f-good")
    stack.submit(stack.corpus(corpus_lines()), "f")
    stack.wait_finished()
    assert missing.log.read_text().strip().splitlines()[-1] == (
        "error: worker not ready: TRIPLETS_BASE_MODEL: /no/such/folder is not a folder")
    if not torch_has_cuda():
        assert no_gpu.process.wait(timeout=120) == 3
        assert no_gpu.log.read_text().strip().splitlines()[-1] == (
            "error: worker not ready: TRIPLETS_DEVICE: cuda:0 requested but CUDA is not available")
    with stack.sessions() as session:
        registered = set(session.scalars(select(Worker.id)))
    assert not any(worker_id.startswith(("f-missing@", "f-nogpu@")) for worker_id in registered)
    row = record(stack.row("(f) workers with a missing model / no GPU beside a good one", clean,
                           note="the bad workers exited 3 before taking any message"))
    _assert_nothing_lost(row)


def test_g_two_workers_and_the_corpus_submitted_twice(stack: Stack, clean: dict[str, Triplets], record) -> None:
    stack.worker("g1")
    stack.worker("g2")
    corpus = stack.corpus(corpus_lines())
    stack.submit(corpus, "g-first")
    stack.submit(corpus, "g-second")
    stack.wait_finished()
    row = record(stack.row("(g) two workers, the corpus submitted twice", clean))
    _assert_nothing_lost(row)
    assert row.submitted == 2 * len(corpus_lines()) and row.differ_from_clean == 0


def test_h_training_outlives_its_visibility_timeout_and_runs_once(stack: Stack, record) -> None:
    train = stack.corpus(corpus_lines(64), "train.jsonl")
    settings = {"visibility_timeout": 2}
    stack.worker("h1", queue="train", **settings)
    stack.worker("h2", queue="train", **settings)
    result = stack.cli("train", "submit", "--name", "demo", "--base-model", str(demo_model_path()),
                       "--train-data", str(train), "--set", "device=cpu", "--set", "precision=fp32",
                       "--set", "max_steps=60", "--set", "batch_size=2", "--set", "checkpoint_every=20",
                       "--set", "lora_dropout=0", **settings)
    assert result.returncode == 0, result.stderr

    def finished() -> TrainingJob | None:
        with stack.sessions() as session:
            job = session.scalars(select(TrainingJob)).one()
            return job if job.status in (Status.done, Status.failed) else None

    job = stack.wait_for(finished, "the training job to end", timeout=600)
    skipped = sum(w.log.read_text().count("training job 1 skipped") for w in stack.workers)
    record(Row("(h) a training job outlives its visibility timeout (2 s)", 1, int(job.status == Status.done),
               int(job.status == Status.failed), 0, 0, 0, round(time.monotonic() - stack.started, 1),
               [job.error] if job.error else [], f"attempts {job.attempts}; {skipped} redeliveries skipped"))
    assert job.status == Status.done, job.error
    assert job.attempts == 1 and job.progress["step"] == 60
    assert skipped >= 1  # it was delivered again while it ran, and that delivery did not train


POISON_MODULE = '''
import os
import signal

from transformers import GlmForCausalLM

MARKER = {marker}  # a token only the poison document holds


class PoisonGlmForCausalLM(GlmForCausalLM):
    """The demo model, but reading the marker token kills the process (a segfault stands in)."""

    def forward(self, input_ids=None, **kwargs):
        if input_ids is not None and bool((input_ids == MARKER).any()):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().forward(input_ids=input_ids, **kwargs)
'''


def _poisoned_model(folder: Path, marker: str) -> Path:
    from transformers import AutoTokenizer

    (marker_id,) = AutoTokenizer.from_pretrained(demo_model_path())(marker, add_special_tokens=False)["input_ids"]
    shutil.copytree(demo_model_path(), folder)
    (folder / "poison.py").write_text(POISON_MODULE.replace("{marker}", str(marker_id)), encoding="utf-8")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["auto_map"] = {"AutoModelForCausalLM": "poison.PoisonGlmForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def test_i_a_poison_document_fails_alone(stack: Stack, clean: dict[str, Triplets], record) -> None:
    lines = corpus_lines(12)
    prompt_sources = [Path(models.__file__).parent / name for name in ("duie_schema.json", "prompt.py")]
    seen = set("".join(lines) + CANARY_TEXT + "".join(p.read_text(encoding="utf-8") for p in prompt_sources))
    marker = next(char for char in json.loads((demo_model_path() / "tokenizer.json").read_text())["model"]["vocab"]
                  if len(char) == 1 and "\u4e00" <= char <= "\u9fff" and char not in seen)
    model = _poisoned_model(stack.folder / "poisoned-model", marker)
    lines.insert(5, json.dumps({"text": f"这句话里有一个{marker}字，它让引擎崩溃。"}, ensure_ascii=False))
    worker = stack.worker("i", base_model=model, trust_remote_code="true", max_attempts=2)
    stack.submit(stack.corpus(lines), "i")
    stack.wait_finished(timeout=400)
    restarts = worker.log.read_text().count("killed by SIGKILL; restarting")
    row = record(stack.row("(i) a poison document kills its worker every time", clean,
                           note=f"{restarts} worker deaths; the other documents of its group done"))
    _assert_nothing_lost(row, failed=1)
    assert row.reasons == ["its worker died 2 times while extracting it alone (it crashes the engine; "
                           "see the worker log)"]
    assert row.differ_from_clean == 0


def test_j_producer_killed_mid_submit_then_resubmitted(stack: Stack, clean: dict[str, Triplets], record) -> None:
    unique = corpus_lines()
    filler = unique[0]
    lines = [line for text in unique for line in [text, *[filler] * 799]]  # 24 documents spread over 10 chunks
    corpus = stack.corpus(lines, "big.jsonl")
    stack.worker("j")
    producer = subprocess.Popen([sys.executable, "-m", "producer", "submit", str(corpus), "--name", "j"],
                                env=stack.env(), cwd=stack.folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stack.wait_for(lambda: stack.count(*Status) >= 3 or producer.poll() is not None, "documents to be stored")
    producer.kill()
    producer.wait()
    stored_at_kill = stack.count(*Status)
    resumed = stack.cli("submit", str(corpus), "--name", "j")
    assert resumed.returncode == 0, resumed.stderr
    stack.wait_finished()
    with stack.sessions() as session:
        jobs = {job_id for (job_id,) in session.execute(select(Document.job_id).distinct())}
    row = record(stack.row("(j) producer SIGKILLed mid-submit, then resubmitted", clean,
                           note=f"{stored_at_kill} of {len(unique)} documents stored when killed; "
                                f"{resumed.stdout.strip().splitlines()[0]}"))
    _assert_nothing_lost(row)
    assert row.submitted == len(unique) and len(jobs) == 1
    assert row.differ_from_clean == 0


def torch_has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_k_an_oversized_document_fails_alone(stack: Stack, clean: dict[str, Triplets], record) -> None:
    lines = corpus_lines(8)
    huge = "很长的文档。" * 850_000  # 5.1 M characters (~15 MB of UTF-8) in one line
    lines.insert(2, json.dumps({"text": huge}, ensure_ascii=False))
    stack.worker("k")
    result = stack.cli("submit", str(stack.corpus(lines)), "--name", "k", max_document_chars=10_000_000)
    assert result.returncode == 0, result.stderr
    stack.wait_finished()
    row = record(stack.row("(k) a 5 M-character document in a group of 4", clean,
                           note="stored past the submit limit on purpose; the worker's token budget fails it"))
    _assert_nothing_lost(row, failed=1)
    (reason,) = row.reasons
    assert reason.startswith("document of ") and reason.endswith("tokens exceeds TRIPLETS_MAX_DOCUMENT_TOKENS=262144")
    assert row.differ_from_clean == 0
