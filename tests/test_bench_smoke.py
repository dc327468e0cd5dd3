"""The GPU extraction benchmark runs end to end on a tiny model (a smoke test, not timed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parent.parent


def test_extract_benchmark_runs_every_variant_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "extract.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "extract_gpu.py"), "--shape", "tiny", "--docs", "8",
         "--origin-docs", "2", "--batch-sizes", "4,8", "--new-tokens", "8", "--celery-batch", "8",
         "--profile-steps", "2", "--variants", "origin,4bit,profile,celery", "--decode-loops", "generate,static",
         "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    variants = [(row["variant"], row["batch"]) for row in report["rows"]]
    assert variants == [("origin (one at a time)", 1), ("engine (generate)", 4), ("engine (generate)", 8),
                        ("engine (static)", 4), ("engine (static)", 8)]
    assert all(row["docs_per_s"] > 0 and row["gen_tokens_per_s"] > 0 for row in report["rows"])
    assert report["decode_profile"]["top_ops"]
    # random weights answer noise: every document must still end, failed with its reason
    celery = report["celery"]
    assert celery["counts"]["pending"] == celery["counts"]["running"] == 0
    assert sum(celery["counts"].values()) == 8
    assert "x origin" in result.stdout


def test_train_benchmark_runs_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "train.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "train_gpu.py"), "--shape", "tiny", "--steps", "2",
         "--variants", "1x8:all,auto", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    plans = [(row["micro_batch"], row["grad_accum"], row["checkpointed_layers"], row["samples"]) for row in report["rows"]]
    assert plans == [(1, 8, 2, 16), (8, 1, 0, 16)]
    assert 400 < report["tokens_per_sample"] < 650
    assert all(row["samples_per_s"] > 0 and row["final_loss"] == row["final_loss"] for row in report["rows"])


def test_answers_benchmark_compares_fixed_and_duie_answers_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "answers.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "answers_gpu.py"), "--shape", "tiny", "--docs", "12", "--batch", "4",
         "--variants", "static,continuous-eager,continuous-eager-unshared,continuous-profile", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = {(row["variant"], row["answers"]): row for row in report["rows"]}
    variants = ("static", "continuous-eager", "continuous-eager-unshared", "continuous-profile")
    assert set(rows) == {(variant, mode) for variant in variants for mode in ("fixed", "duie")}
    assert not rows[("continuous-eager", "duie")]["cuda_graphs"] and rows[("static", "duie")]["cuda_graphs"]
    # the template's instruction and schema are the prompts' shared prefix, unless a variant turns sharing off
    assert rows[("static", "fixed")]["shared_prefix_tokens"] > 0.5 * report["prompt_tokens_mean"]
    assert rows[("continuous-eager-unshared", "duie")]["shared_prefix_tokens"] == 0
    assert rows[("continuous-eager", "duie")]["refills"] >= 3 and rows[("static", "duie")]["refills"] is None
    assert all(0 < row["slot_efficiency"] <= 1 and row["docs_per_s"] > 0 for row in rows.values())
    # answers of one length fill static batches; drawn lengths leave static rows idle, not refilled ones
    assert rows[("continuous-eager", "duie")]["slot_efficiency"] > rows[("static", "duie")]["slot_efficiency"]
    assert 1 <= report["answer_tokens_mean"] < report["answer_tokens_max"]
    # a profiled run times each phase of the loop inside the run's own time, and counts the prefill's work
    profiled = rows[("continuous-profile", "duie")]
    spans = profiled["profile"]["seconds"]
    assert spans["prefill"] > 0 and spans["decode_4"] > 0 and sum(spans.values()) <= profiled["seconds"]
    assert profiled["profile"]["prefill_forwards"] >= profiled["refills"] and rows[("static", "duie")]["profile"] is None


def test_scale_benchmark_runs_a_worker_fleet_beside_the_engine_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "scale_gpu.py"), "--shape", "tiny", "--gpus", "1", "--groups-per-gpu",
         "3", "--group", "4", "--answers", "duie", "--tasks-in-flight", "2", "--profile-loop", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = {row["variant"]: row for row in report["rows"]}
    assert set(rows) == {"engine alone", "celery fleet"}
    assert all(row["docs_per_s"] > 0 and row["answers"] == "duie" for row in rows.values())
    fleet = rows["celery fleet"]
    assert fleet["counts"]["pending"] == fleet["counts"]["running"] == 0
    assert sum(fleet["counts"].values()) == fleet["docs"] == 12
    assert fleet["end_to_end_ratio"] > 0 and fleet["groups"] == 3 and fleet["card"]
    # The hook acts in the worker processes: unforced (TRIPLETS_MIN_NEW_TOKENS=0), this random model's
    # answers run to TRIPLETS_MAX_NEW_TOKENS (all 12 with the hook left out), and the store names each such
    # answer in its document's error; forced to the drawn lengths, only those drawn at the maximum get there.
    at_limit = fleet["answers_at_limit"]
    assert 1 <= at_limit["stored"] == at_limit["forced"] < 12
    assert report["answer_tokens_mean"] < report["answer_tokens_max"] == report["max_new_tokens"]
    # --profile-loop: the phases of the loop alone, and of each decoding run the worker logged during the job
    (alone,), (worker,) = rows["engine alone"]["loop_profiles"], fleet["loop_profiles"]
    assert alone[0]["seconds"]["prefill"] > 0 and worker and all(run["seconds"]["prefill"] > 0 for run in worker)
    assert sum(sum(run["seconds"].values()) for run in worker) <= fleet["seconds"]
