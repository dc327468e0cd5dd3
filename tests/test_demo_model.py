"""The committed demo model and README's main command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from devkit.assets import demo_model_path  # noqa: E402
from models.settings import load_settings  # noqa: E402
from tests.workers import worker_env  # noqa: E402


def test_demo_model_extracts_held_out_sentences(tmp_path: Path) -> None:
    from worker.evaluation import evaluate_adapter

    settings = load_settings(device="cpu", max_new_tokens=400, max_input_tokens=4096)
    scores = evaluate_adapter(demo_model_path(), None, demo_model_path() / "heldout.jsonl", settings=settings,
                              max_examples=40)
    # 0.976 on all 500 (docs/benchmarks.md); a subset guards against a broken loading path
    assert scores.examples == 40 and scores.strict_f1 >= 0.9 and scores.parse_failure_rate == 0.0
    assert (demo_model_path() / "model.safetensors").stat().st_size < 20 * 2**20
    assert not list(demo_model_path().glob("*.bin"))


@pytest.mark.slow  # the README's main command, whole: with the real-process suites in CI
def test_readme_main_command_runs_the_whole_path(tmp_path: Path) -> None:
    env = worker_env()  # no TRIPLETS_* at all: embedded Redis, SQLite, demo model
    result = subprocess.run([sys.executable, "-m", "producer", "demo"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "started an embedded Redis" in result.stderr
    assert (tmp_path / "triplets.db").is_file()
    found = [line for line in result.stderr.splitlines() if line.startswith("gold triplets found:")]
    assert found, result.stderr[-2000:]
    correct, total = (int(x) for x in found[0].split(":")[1].split(";")[0].strip().split("/"))
    assert total > 20 and correct / total >= 0.9
    status = subprocess.run([sys.executable, "-m", "producer", "status", "--json"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    counts = json.loads(status.stdout)["counts"]
    assert counts["pending"] == counts["running"] == 0 and counts["done"] + counts["failed"] == 24
