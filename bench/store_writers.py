"""The store's insert rate with several writers at once, as a fleet of workers stores its groups.

``bench/store.py`` times one writer. Here each writer is a process with a job of its own: it adds
and claims all its documents first (untimed: a submitted corpus is added before workers take it),
then, from one barrier, every writer stores its groups back to back, one ``store.record_outcomes``
call and transaction per group of 1,024 documents, as workers do. The aggregate rate is every
stored row over the span from the first store's start to the last one's end. Each writer count
loads a fresh store, one after the other in one run, so the ratio compares like with like.

    python bench/store_writers.py --triplets 10000000 --store sqlite --writers 1,2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.store import EXTRACTOR, Corpus, fresh_store, machine  # noqa: E402
from models import claims, store  # noqa: E402
from models.db import make_session_factory  # noqa: E402


def writer(url: str, index: int, triplets: int, entities: int, group: int, seed: int,
           added: multiprocessing.synchronize.Barrier, go: multiprocessing.synchronize.Barrier,
           results: multiprocessing.Queue) -> None:
    """Add and claim groups until they hold ``triplets``; wait; store them all; report the span."""
    sessions = make_session_factory(url)
    corpus, owner = Corpus(entities, seed + index), f"bench-writer-{index}"
    with sessions.begin() as session:
        job_id = store.create_job(session, name=owner).id
    groups, promised = [], 0
    while promised < triplets:
        docs = corpus.group(group)
        with sessions.begin() as session:
            ids = store.add_documents(session, job_id=job_id, documents=[store.NewDocument(t, e) for t, e, _ in docs])
        with sessions.begin() as session:
            claims.claim_documents(session, document_ids=ids, owner=owner, lease_seconds=86_400, max_attempts=3)
        groups.append([store.Outcome(i, text, found) for i, (text, _, found) in zip(ids, docs)])
        promised += sum(len(set(found)) for _, _, found in docs)
    added.wait()
    go.wait()
    started, stored = time.monotonic(), 0  # CLOCK_MONOTONIC: one clock for every process of the machine
    for outcomes in groups:
        with sessions.begin() as session:
            recorded = store.record_outcomes(session, outcomes, owner=owner, **EXTRACTOR)
        if recorded.fenced:
            raise SystemExit(f"writer {index}: {len(recorded.fenced)} documents fenced")
        stored += recorded.triplets
    results.put({"writer": index, "triplets": stored, "promised": promised, "start": started, "end": time.monotonic()})
    sessions.kw["bind"].dispose()


def run(kind: str, writers: int, args: argparse.Namespace, folder: Path) -> dict[str, object]:
    context = multiprocessing.get_context("spawn")
    added, go, results = context.Barrier(writers + 1), context.Barrier(writers + 1), context.Queue()
    with fresh_store(kind, folder) as url:
        processes = [context.Process(target=writer, args=(url, i, args.triplets // writers, max(args.triplets // 10, 100),
                                                          args.group, args.seed, added, go, results))
                     for i in range(writers)]
        for process in processes:
            process.start()
        added.wait()
        if kind == "postgres":  # the claims and locks look documents up by id lists: statistics first
            with make_session_factory(url).begin() as session:
                session.connection().exec_driver_sql("ANALYZE")
        go.wait()
        spans = [results.get() for _ in processes]
        for process in processes:
            process.join()
            if process.exitcode:
                raise SystemExit(f"a writer exited {process.exitcode}")
        make_session_factory(url).kw["bind"].dispose()
    if any(span["triplets"] != span["promised"] for span in spans):
        raise SystemExit(f"stored fewer triplets than promised: {spans}")
    total = sum(span["triplets"] for span in spans)
    seconds = max(span["end"] for span in spans) - min(span["start"] for span in spans)
    return {"store": kind, "writers": writers, "triplets": total, "seconds": round(seconds, 3),
            "insert_triplets_per_s": round(total / seconds), "machine": machine()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triplets", type=int, default=10_000_000)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--writers", default="1,2", help="writer counts, one load each, e.g. 1,2")
    parser.add_argument("--group", type=int, default=1024, help="documents per group, as a worker stores them")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default: bench/results/store_writers_KIND.json)")
    parser.add_argument("--scratch", type=Path, default=None, help="where the SQLite file goes (default: a temp dir)")
    args = parser.parse_args()
    rows = []
    for writers in (int(value) for value in args.writers.split(",")):
        with tempfile.TemporaryDirectory(prefix="triplets-writers-", dir=args.scratch) as folder:
            rows.append(run(args.store, writers, args, Path(folder)))
        print(f"{args.store}: {writers} writer(s), {rows[-1]['triplets']:,} triplets stored in {rows[-1]['seconds']} s: "
              f"{rows[-1]['insert_triplets_per_s']:,}/s", flush=True)
    print(f"\n{'writers':>7} {'triplets':>12} {'seconds':>8} {'insert/s':>10} {'x 1st':>6}")
    for row in rows:
        ratio = row["insert_triplets_per_s"] / rows[0]["insert_triplets_per_s"]
        print(f"{row['writers']:>7} {row['triplets']:>12,} {row['seconds']:>8} {row['insert_triplets_per_s']:>10,} "
              f"{ratio:>6.2f}")
    print(f"({args.store}; {rows[0]['machine']})")
    out = args.out or ROOT / "bench" / "results" / f"store_writers_{args.store}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows}, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
