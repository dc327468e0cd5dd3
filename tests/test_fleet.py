"""`triplets worker --gpus`: GPUs found without torch, one worker per GPU kept running, all stopped on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from sqlalchemy import select

from devkit.assets import demo_model_path
from models.db import make_session_factory
from models.errors import InputError
from models.migrate import upgrade
from models.settings import load_settings
from models.tables import Worker
from tests.workers import triplets, worker_env
from worker import gpus, supervisor
from worker.supervisor import Member

ROOT = Path(__file__).resolve().parent.parent
TWO_GPUS = [gpus.Gpu(0, "cuda:0"), gpus.Gpu(1, "cuda:1")]


@pytest.mark.parametrize(("spec", "chosen"), [("all", [0, 1]), ("0,1", [0, 1]), ("1", [1]), (" 1 , 0 ", [1, 0])])
def test_gpus_are_all_or_indexes(monkeypatch: pytest.MonkeyPatch, spec: str, chosen: list[int]) -> None:
    monkeypatch.setattr(gpus, "list_gpus", lambda: TWO_GPUS)
    assert [gpu.device for gpu in gpus.select_gpus(spec)] == [f"cuda:{index}" for index in chosen]


@pytest.mark.parametrize(("spec", "found", "reason"), [
    ("2", TWO_GPUS, "--gpus 2: no GPU 2 on this host (it has 0, 1)"),
    ("0,0", TWO_GPUS, "--gpus 0,0: a GPU is named twice"),
    ("cpu,cpu", TWO_GPUS, "--gpus cpu,cpu: expected all, or GPU indexes such as 0,1"),
    ("all", [], "--gpus all: no GPU on this host"),
])
def test_bad_gpus_are_one_line_naming_them(monkeypatch: pytest.MonkeyPatch, spec: str, found: list,
                                           reason: str) -> None:
    monkeypatch.setattr(gpus, "list_gpus", lambda: found)
    with pytest.raises(InputError, match="^" + re.escape(reason)):
        gpus.select_gpus(spec)


@pytest.mark.parametrize(("visible", "count"), [("2,3", 2), ("GPU-8f1c,GPU-77aa", 2), ("", 0), ("-1", 0),
                                                ("0,-1,2", 1)])
def test_cuda_visible_devices_is_what_workers_see(monkeypatch: pytest.MonkeyPatch, visible: str, count: int) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert gpus.list_gpus() == [gpus.Gpu(index, f"cuda:{index}") for index in range(count)]


def test_nvidia_smi_lists_whole_gpus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-a)'\necho '  MIG 1g.18gb Device 0: (UUID: MIG-b)'\n"
                    "echo 'GPU 1: NVIDIA H200 (UUID: GPU-c)'\n")
    fake.chmod(0o755)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert gpus.list_gpus() == TWO_GPUS
    fake.unlink()
    with pytest.raises(InputError, match=r"no GPU on this host \(nvidia-smi is not installed\)"):
        gpus.select_gpus("all")


def test_gpus_and_device_exclude_each_other(tmp_path: Path) -> None:
    result = triplets(worker_env(), "worker", "--gpus", "0", "--device", "cpu", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == ("error: --gpus: not with --device: --gpus runs one worker per GPU, each on its own "
                             "cuda:N\n")


def test_gpus_all_on_a_host_without_gpus_is_one_line(tmp_path: Path) -> None:
    env = {**worker_env(), "PATH": str(tmp_path)}  # no nvidia-smi here
    env.pop("CUDA_VISIBLE_DEVICES", None)
    result = triplets(env, "worker", "--gpus", "all", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "error: --gpus all: no GPU on this host (nvidia-smi is not installed)\n"


def test_worker_processes_hide_weight_bars_and_library_future_warnings() -> None:
    member = Member("extract-cuda0@host", "cuda:0")
    command = supervisor.child_command(member, queue="extract", worker_id="w", loglevel="INFO")
    assert command[1:3] == ["-W", "ignore::FutureWarning"]
    assert "-W" not in supervisor.child_command(member, queue="extract", worker_id="w", loglevel="DEBUG")
    assert supervisor.child_environment()["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"


# A stand-in worker process, for the supervisor's own logic in a second: it records each start,
# then acts out its scenario (the device it is given).
STAND_IN = """
import os, pathlib, signal, sys, time
scenario, folder = sys.argv[1], pathlib.Path(sys.argv[2])
if scenario == "stubborn":  # a warm shutdown that never ends; a cold one, at once (no core dump)
    signal.signal(signal.SIGTERM, lambda *_: (folder / "warm").write_text("asked"))
    signal.signal(signal.SIGQUIT, lambda *_: ((folder / "cold").write_text("asked"), os._exit(0)))
with (folder / scenario).open("a") as runs:
    runs.write(f"started {os.getpid()}\\n")
starts = (folder / scenario).read_text().count("started")
if scenario == "not-ready":
    sys.exit(3)
if scenario == "dies-once" and starts == 1:
    sys.exit(70)
time.sleep(120)
"""


def supervise_stand_ins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, scenarios: list[str],
                        when: Callable[[], bool], signals: int = 1) -> int:
    """Supervise one stand-in per scenario; SIGTERM to this process once ``when()``, and a second one (if
    ``signals`` is 2) once a stand-in saw the first."""
    monkeypatch.setattr(supervisor, "child_command",
                        lambda member, **_: [sys.executable, "-c", STAND_IN, member.device, str(tmp_path)])
    conditions = [when, lambda: (tmp_path / "warm").exists()][:signals]

    def stop() -> None:
        for condition in conditions:
            deadline = time.monotonic() + 30
            while not condition() and time.monotonic() < deadline:
                time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGTERM)

    handler = signal.getsignal(signal.SIGTERM)
    threading.Thread(target=stop, daemon=True).start()
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'none.db'}")
    members = [Member(f"{scenario}@host", scenario) for scenario in scenarios]
    code = supervisor.supervise(settings, queue="extract", members=members, loglevel="INFO")
    assert signal.getsignal(signal.SIGTERM) == handler  # this process's own handling is given back
    return code


def starts(tmp_path: Path, scenario: str) -> int:
    path = tmp_path / scenario
    return path.read_text().count("started") if path.exists() else 0


def running_stand_ins(tmp_path: Path, scenarios: list[str]) -> list[int]:
    pids = [int(line.split()[1]) for scenario in scenarios if (tmp_path / scenario).exists()
            for line in (tmp_path / scenario).read_text().splitlines()]
    return [pid for pid in pids if psutil.pid_exists(pid)]


def test_supervisor_restarts_a_dead_worker_and_stops_all_on_sigterm(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    code = supervise_stand_ins(monkeypatch, tmp_path, ["dies-once", "not-ready", "steady"],
                               when=lambda: starts(tmp_path, "dies-once") == 2 and starts(tmp_path, "steady") == 1)
    assert code == 3  # the worker that could not be made ready says why the fleet is short
    assert [starts(tmp_path, s) for s in ("dies-once", "not-ready", "steady")] == [2, 1, 1]
    assert not running_stand_ins(tmp_path, ["dies-once", "not-ready", "steady"])


def test_a_second_signal_stops_workers_cold(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    code = supervise_stand_ins(monkeypatch, tmp_path, ["stubborn"], when=lambda: starts(tmp_path, "stubborn") == 1,
                               signals=2)
    assert (tmp_path / "warm").read_text() == "asked"  # the first signal asked for a warm shutdown
    assert (tmp_path / "cold").read_text() == "asked"  # the second for a cold one
    assert code == 0
    assert not running_stand_ins(tmp_path, ["stubborn"])


def live_workers(database_url: str) -> dict[str, int]:
    """Node name (without @host) -> pid of every registered worker that has not stopped."""
    with make_session_factory(database_url)() as session:
        rows = session.execute(select(Worker.id, Worker.pid).where(Worker.stopped_at.is_(None))).all()
    return {worker_id.split("@")[0]: pid for worker_id, pid in rows}


def wait_for(condition: Callable[[], object], parent: subprocess.Popen, log: Path, timeout: float = 240) -> object:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert parent.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)
    return value


@pytest.mark.slow  # two real worker processes, one of them twice
def test_one_worker_per_gpu_restarted_when_killed_and_stopped_by_sigterm(tmp_path: Path, broker_url: str) -> None:
    from worker.app import create_app

    database_url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(database_url)
    env = {**worker_env(broker_url=broker_url, database_url=database_url, base_model=demo_model_path(),
                        max_new_tokens=128), "PYTHONPATH": str(ROOT)}
    log = tmp_path / "fleet.log"
    with log.open("w") as out:  # the GPUs are fake (tests/fake_gpus.py); the workers are real, on the CPU
        parent = subprocess.Popen([sys.executable, "-m", "tests.fake_gpus", "worker", "--gpus", "0,1"], env=env,
                                  cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    app = create_app(load_settings(broker_url=broker_url))
    host = socket.gethostname()
    try:
        first = wait_for(lambda: (w := live_workers(database_url)).keys() == {"extract-cuda0", "extract-cuda1"} and w,
                         parent, log)
        # One Celery node per GPU, as Flower lists them.
        wait_for(lambda: {name for reply in app.control.ping(timeout=1.0) for name in reply}
                 == {f"extract-cuda0@{host}", f"extract-cuda1@{host}"}, parent, log)
        os.kill(first["extract-cuda0"], signal.SIGKILL)
        again = wait_for(lambda: (w := live_workers(database_url)).get("extract-cuda0", first["extract-cuda0"])
                         != first["extract-cuda0"] and w, parent, log)
        assert again["extract-cuda1"] == first["extract-cuda1"]  # the other one went on undisturbed
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=120) == 0, log.read_text()[-3000:]
    finally:
        app.close()
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    assert not [pid for pid in {*first.values(), *again.values()} if psutil.pid_exists(pid)]
    assert live_workers(database_url) == {}  # every worker recorded its end
    text = log.read_text()
    assert f"worker extract-cuda0@{host} killed by SIGKILL; restarting" in text
    assert "Loading weights" not in text
