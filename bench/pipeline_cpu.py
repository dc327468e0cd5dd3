"""End-to-end CPU pipeline throughput, this tree beside an earlier commit, in one run.

Each variant runs the real path: `triplets db upgrade`, a `triplets worker --device cpu`
process, `triplets submit --wait` of the same corpus (timed submit -> every document ended),
against the local Redis and a fresh SQLite store, with the committed demo model. Variants
alternate round by round so that drift in the machine's speed hits both alike.

    python bench/pipeline_cpu.py --baseline a457b59 --docs 96 --rounds 2 --out bench/results/pipeline_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devkit.assets import demo_model_path  # noqa: E402
from models.errors import TripletsError  # noqa: E402
from models.settings import load_settings  # noqa: E402
from producer.local_worker import wait_until_ready  # noqa: E402
from worker.app import create_app  # noqa: E402

BENCH_REDIS_DB = 15
READY_TIMEOUT_S = 180


def run_variant(tree: Path, corpus: Path, workdir: Path, settings: dict[str, str]) -> dict[str, float]:
    workdir.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPLETS_")}
    env.update({f"TRIPLETS_{k.upper()}": v for k, v in settings.items()})
    env.update(TRIPLETS_DATABASE_URL=f"sqlite:///{workdir / 'store.db'}", PYTHONPATH=str(tree))
    redis.Redis.from_url(settings["broker_url"]).flushdb()
    cli = [sys.executable, "-m", "producer"]
    subprocess.run([*cli, "db", "upgrade"], env=env, cwd=tree, check=True, capture_output=True)
    with (workdir / "worker.log").open("w") as log:
        worker = subprocess.Popen([*cli, "worker", "--device", "cpu"], env=env, cwd=tree, stdout=log,
                                  stderr=subprocess.STDOUT)
    app = create_app(load_settings(broker_url=settings["broker_url"]))
    try:
        try:
            wait_until_ready(app, worker, workdir / "worker.log", READY_TIMEOUT_S)
        except TripletsError as err:
            raise SystemExit(f"{tree}: {err}") from err
        started = time.perf_counter()
        submitted = subprocess.run([*cli, "submit", str(corpus), "--name", "bench", "--wait"], env=env, cwd=tree,
                                   capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if submitted.returncode != 0:
            raise SystemExit(f"submit in {tree} failed: {submitted.stdout[-1000:]} {submitted.stderr[-1000:]}")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=120)
        app.close()
    return {"seconds": round(seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="a457b59", help="git ref to compare with")
    parser.add_argument("--docs", type=int, default=96)
    parser.add_argument("--group", type=int, default=16, help="documents per message and per batch")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--broker", default=f"redis://127.0.0.1:6379/{BENCH_REDIS_DB}")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/pipeline_cpu.json")
    args = parser.parse_args()
    settings = {"broker_url": args.broker, "base_model": str(demo_model_path()), "task_group_size": str(args.group),
                "max_batch_size": str(args.group), "max_new_tokens": "128"}
    lines = (demo_model_path() / "heldout.jsonl").read_text(encoding="utf-8").splitlines()[: args.docs]
    with tempfile.TemporaryDirectory(prefix="triplets-bench-") as scratch_name:
        scratch = Path(scratch_name)
        corpus = scratch / "corpus.jsonl"
        corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
        baseline = scratch / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(baseline), args.baseline], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            commit = subprocess.run(["git", "rev-parse", "--short", args.baseline], cwd=ROOT, check=True,
                                    capture_output=True, text=True).stdout.strip()
            variants = {f"baseline {commit}": baseline, "this tree": ROOT}
            rows = []
            for round_index in range(args.rounds):
                for name, tree in variants.items():
                    result = run_variant(tree, corpus, scratch / f"{round_index}-{name.split()[0]}", settings)
                    rows.append({"variant": name, "round": round_index + 1, "docs": args.docs,
                                 "docs_per_s": round(args.docs / result["seconds"], 3), **result})
                    print(f"{name:<20} round {round_index + 1}: {rows[-1]['docs_per_s']:.3f} docs/s", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(baseline)], cwd=ROOT, capture_output=True)
    mean = {name: sum(r["docs_per_s"] for r in rows if r["variant"] == name) / args.rounds for name in variants}
    base_name, this_name = list(variants)
    ratio = mean[this_name] / mean[base_name]
    print(f"\n{'variant':<20} {'mean docs/s':>12}\n{'-' * 33}")
    for name, value in mean.items():
        print(f"{name:<20} {value:>12.3f}")
    print(f"this tree / baseline: {ratio:.3f} ({args.docs} documents, groups of {args.group}, demo model, CPU)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", "python": platform.python_version(),
        "docs": args.docs, "group": args.group, "rows": rows, "mean_docs_per_s": mean, "ratio": round(ratio, 4),
    }, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
