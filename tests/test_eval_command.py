"""`triplets eval`: tables for people, --json for machines, a progress bar on stderr while it runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

from devkit.assets import demo_model_path  # noqa: E402
from models.settings import load_settings  # noqa: E402
from tests.workers import triplets, worker_env  # noqa: E402

HELD_OUT = demo_model_path() / "heldout.jsonl"
# As tests/test_demo_model.py reads the demo model; batches of 2, so that the progress bar has steps.
SETTINGS = {"device": "cpu", "max_new_tokens": 400, "max_input_tokens": 4096, "max_batch_size": 2}


def test_eval_reports_progress_after_each_chunk() -> None:
    from worker.evaluation import evaluate_adapter

    calls: list[tuple[int, int]] = []
    scores = evaluate_adapter(demo_model_path(), None, HELD_OUT, settings=load_settings(**SETTINGS), max_examples=5,
                              progress=lambda done, total: calls.append((done, total)), chunk=2)
    assert calls == [(0, 5), (2, 5), (4, 5), (5, 5)]
    assert scores.examples == 5 and scores.strict_f1 >= 0.9


def test_eval_prints_tables_or_json_and_a_progress_bar(tmp_path: Path) -> None:
    env = worker_env(**SETTINGS)
    args = ("eval", "--base-model", str(demo_model_path()), "--data", str(HELD_OUT), "--max-examples", "6")
    table = triplets({**env, "COLUMNS": "120"}, *args, cwd=tmp_path, timeout=300)
    assert table.returncode == 0, table.stderr[-3000:]
    first_cells = {line.split("│")[1].strip() for line in table.stdout.splitlines() if line.count("│") > 2}
    assert {"DuIE (subject, predicate, object)", "strict (and both types)"} <= first_cells, table.stdout
    assert "per predicate" in table.stdout
    assert "extracting" in table.stderr and "6/6" in table.stderr  # the bar's last state, drawn on stderr
    machine = triplets(env, *args, "--json", cwd=tmp_path, timeout=300)
    assert machine.returncode == 0, machine.stderr[-3000:]
    scores = json.loads(machine.stdout)
    assert scores["examples"] == 6 and scores["strict_f1"] >= 0.9
    assert set(scores["per_predicate"]) <= first_cells  # every predicate has its row in the table
