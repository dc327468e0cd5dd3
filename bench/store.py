"""The triplet store at scale: insert rate through the workers' write path, then read latencies.

Loads N synthetic triplets into a fresh SQLite file and/or a fresh PostgreSQL database the way
workers do: documents added and claimed in groups of 1,024, each group's outcomes (1-5 triplets a
document, 3 on average) stored by one ``store.record_outcomes`` call in one transaction. Entities
are 3-character Chinese-like names drawn from a Zipf-Mandelbrot law over a vocabulary of N/10
names, so a typical entity has a handful of rows and a popular one thousands; predicates and
their types come from the DuIE schema. Then it times the readers (``models.triplet_query``); where
the store has more segments than ``--compact-to``, it times ``triplets db compact`` and the readers
again.

    python bench/store.py --triplets 10000000 --store both
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devkit.services import postgres_database  # noqa: E402
from models import claims, segments, store, triplet_query  # noqa: E402
from models.db import get_engine, make_session_factory  # noqa: E402
from models.migrate import upgrade  # noqa: E402
from models.triplet import Triplet  # noqa: E402
from models.triplet_query import TripletFilter  # noqa: E402

SCHEMA = json.loads((ROOT / "models" / "duie_schema.json").read_text(encoding="utf-8"))
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢"
GIVEN = [chr(c) for c in range(0x4E00, 0x4E00 + 2000)]  # 2,000² names after each surname: plenty, all distinct
EXTRACTOR = {"model": "bench-glm", "adapter": "bench-lora", "prompt_version": "v1"}
OWNER = "bench-worker"
ZIPF_S, ZIPF_Q = 1.0, 200.0  # rank r drawn with weight 1/(r+q)^s: the commonest entity holds ~0.06 % of rows


def entity(rank: int) -> str:
    mixed = (rank * 2654435761) % (len(GIVEN) ** 2)  # an odd multiplier coprime to 2,000²: a bijection
    return SURNAMES[rank % len(SURNAMES)] + GIVEN[mixed // len(GIVEN)] + GIVEN[mixed % len(GIVEN)]


class Corpus:
    """Groups of documents with their triplets, deterministic for a seed."""

    def __init__(self, entities: int, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        weights = 1.0 / (np.arange(entities) + ZIPF_Q) ** ZIPF_S
        self.cdf = np.cumsum(weights) / weights.sum()
        self.entities = entities
        self.next_document = 0
        self.pairs: list[tuple[str, str]] = []  # (predicate, object) pairs stored: lookups that find rows

    def ranks(self, size: int) -> np.ndarray:
        return np.minimum(np.searchsorted(self.cdf, self.rng.random(size)), self.entities - 1)

    def group(self, documents: int) -> list[tuple[str, str, list[Triplet]]]:
        counts = self.rng.integers(1, 6, size=documents)
        total = int(counts.sum())
        subjects, objects = self.ranks(total), self.ranks(total)
        kinds = self.rng.integers(0, len(SCHEMA), size=total)
        triplets = [Triplet(entity(int(s)), SCHEMA[k]["predicate"], entity(int(o)), SCHEMA[k]["subject_type"],
                            SCHEMA[k]["object_type"]) for s, o, k in zip(subjects, objects, kinds)]
        out, start = [], 0
        for count in counts:
            mine = triplets[start:start + count]
            start += count
            # numbered, so that no two texts are alike (a job keeps one copy of a text)
            text = f"（第{self.next_document}篇）" + "".join(f"{t.subject}的{t.predicate}是{t.object}。" for t in mine)
            out.append((text, f"bench:{self.next_document}", mine))
            self.next_document += 1
        pick = triplets[int(self.rng.integers(0, total))]
        self.pairs.append((pick.predicate, pick.object))
        return out


def load(sessions: sessionmaker[Session], corpus: Corpus, triplets: int, group: int, analyze: bool) -> list[dict]:
    """Store groups until ``triplets`` rows exist; one record per group: triplets, seconds (store, documents),
    and their parts (adding, claiming, the store's commit).

    With ``analyze``, ANALYZE runs whenever the store has grown by 10 %, as PostgreSQL's autovacuum
    does by default (autovacuum_analyze_scale_factor 0.1); this machine's server runs with it off,
    and without statistics the planner scans the whole table for each group's ``IN`` lists.
    """
    with sessions.begin() as session:
        job_id = store.create_job(session, name="bench").id
    log, stored, next_report, analyzed = [], 0, triplets // 10, 0
    while stored < triplets:
        docs = corpus.group(group)
        started = time.perf_counter()
        with sessions.begin() as session:
            ids = store.add_documents(session, job_id=job_id, documents=[store.NewDocument(t, e) for t, e, _ in docs])
        added = time.perf_counter()
        with sessions.begin() as session:
            claims.claim_documents(session, document_ids=ids, owner=OWNER, lease_seconds=3600, max_attempts=3)
        claimed = time.perf_counter()
        outcomes = [store.Outcome(i, text, found) for i, (text, _, found) in zip(ids, docs)]
        with sessions.begin() as session:
            recorded = store.record_outcomes(session, outcomes, owner=OWNER, **EXTRACTOR)
            committing = time.perf_counter()
        done = time.perf_counter()
        promised = sum(len(set(found)) for _, _, found in docs)  # a triplet repeated in a document is stored once
        if len(ids) != len(docs) or recorded.fenced or recorded.triplets != promised:
            raise SystemExit(f"group stored {recorded.triplets} triplets, fenced {len(recorded.fenced)}")
        stored += recorded.triplets
        log.append({"triplets": recorded.triplets, "store_s": done - claimed, "documents_s": claimed - started,
                    "add_s": added - started, "claim_s": claimed - added, "commit_s": done - committing,
                    "analyze_s": 0.0})
        if analyze and stored > 2 * analyzed:
            with sessions.begin() as session:
                session.connection().exec_driver_sql("ANALYZE")
            log[-1]["analyze_s"], analyzed = time.perf_counter() - done, stored
        if stored >= next_report:
            recent = log[-50:]
            rate = sum(r["triplets"] for r in recent) / sum(r["store_s"] for r in recent)
            print(f"  {stored:>11,} triplets stored, last groups at {rate:,.0f}/s", flush=True)
            next_report += triplets // 10
    return log


def timed(samples: list, call: Callable[[object], object]) -> dict[str, float]:
    """p50/p95 in ms of ``call(sample)`` over the samples, each in a session of its own (as a request)."""
    return timed_side_by_side(samples, {"": call})[""]


def timed_side_by_side(samples: list, calls: dict[str, Callable[[object], object]]) -> dict[str, dict[str, float]]:
    """p50/p95 in ms of each call over the samples; every sample goes through each call in turn, the
    first of them taking turns, so that none finds the pages the others read warmer than they did."""
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for number, sample in enumerate(samples):
        names = list(calls)
        for name in names[number % len(names):] + names[:number % len(names)]:
            started = time.perf_counter()
            calls[name](sample)
            seconds[name].append(time.perf_counter() - started)
    return {name: {"p50": 1000 * statistics.median(values),
                   "p95": 1000 * sorted(values)[int(0.95 * (len(values) - 1))]} for name, values in seconds.items()}


def measure_reads(sessions: sessionmaker[Session], corpus: Corpus, lookups: int, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    typical = [entity(rng.randrange(corpus.entities)) for _ in range(lookups)]
    popular = [entity(int(rank)) for rank in corpus.ranks(lookups)]
    pairs = rng.sample(corpus.pairs, min(lookups, len(corpus.pairs)))

    # An engine of its own (the same settings), so that its rollbacks leave the other's connection alone.
    planning = sessionmaker(get_engine.__wrapped__(sessions.kw["bind"].url.render_as_string(hide_password=False)))

    def run(make: Callable[[object], Callable], *, prepared: bool = True) -> Callable[[object], object]:
        """Each call in a session of its own, as the web view's requests: ending by committing, which
        keeps the connection's prepared statements (``models.db.read_sessions``); unprepared, ending by
        rolling back, which drops them: every lookup planned afresh, as a one-off ``triplets query``."""
        def call(sample: object) -> object:
            with sessions.begin() if prepared else planning() as session:
                return make(sample)(session)
        return call

    page = triplet_query.find_triplets
    results: dict[str, float] = {}
    subject = lambda s: lambda x: page(x, TripletFilter(subject=s))  # noqa: E731
    for kind, samples in (("typical", typical), ("popular", popular)):
        timings = timed_side_by_side(samples, {"": run(subject), ", unprepared": run(subject, prepared=False)})
        for variant, stats in timings.items():
            for stat, value in stats.items():
                results[f"subject lookup ({kind} entity){variant} {stat} ms"] = round(value, 2)
    for name, samples, make in (
        ("predicate+object lookup", pairs,
         lambda s: lambda x: page(x, TripletFilter(predicate=s[0], object=s[1]))),
        ("neighbours depth 2 (typical entity)", typical, lambda s: lambda x: triplet_query.neighbors(x, s, depth=2)),
        ("distinct page, one subject", typical,
         lambda s: lambda x: triplet_query.find_distinct(x, TripletFilter(subject=s))),
    ):
        for stat, value in timed(samples, run(make)).items():
            results[f"{name} {stat} ms"] = round(value, 2)
    started = time.perf_counter()
    with sessions() as session:
        triplet_query.find_distinct(session, TripletFilter(), limit=100)
    results["distinct page, whole store (once) ms"] = round(1000 * (time.perf_counter() - started), 1)
    planning.kw["bind"].dispose()
    return results


def summarise(log: list[dict]) -> dict[str, float]:
    total = sum(r["triplets"] for r in log)
    tail = log[bisect.bisect_left(list(itertools.accumulate(r["triplets"] for r in log)), 0.9 * total):]
    return {
        "insert triplets/s (record_outcomes)": round(total / sum(r["store_s"] for r in log)),
        "insert triplets/s, last 10 %": round(sum(r["triplets"] for r in tail) / sum(r["store_s"] for r in tail)),
        "load triplets/s incl. adding and claiming documents":
            round(total / sum(r["store_s"] + r["documents_s"] for r in log)),
        "ANALYZE at every doubling, s in all": round(sum(r["analyze_s"] for r in log), 1),
    }


@contextmanager
def fresh_store(kind: str, folder: Path) -> Iterator[str]:
    """The URL of a migrated empty store of this kind, removed afterwards."""
    if kind == "sqlite":
        url = f"sqlite:///{folder / 'store.db'}"
        upgrade(url)
        yield url
        return
    with postgres_database() as url:
        if url is None:
            raise SystemExit("no PostgreSQL at 127.0.0.1:5432")
        upgrade(url)
        yield url


def settle(kind: str, sessions: sessionmaker[Session]) -> dict[str, float]:
    """What an operator, or PostgreSQL's autovacuum, does after a load, timed: statistics, and on
    PostgreSQL a VACUUM, which marks the pages all-visible (autovacuum vacuums an insert-only table
    once a fifth of it is new). Without it, counting a popular subject's rows visits every row's page."""
    started = time.perf_counter()
    if kind == "sqlite":
        with sessions.begin() as session:
            session.connection().exec_driver_sql("PRAGMA analysis_limit=1000")  # sampled, as PostgreSQL's
            session.connection().exec_driver_sql("ANALYZE")
        return {"ANALYZE after the load, s": round(time.perf_counter() - started, 1)}
    with sessions.kw["bind"].connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM ANALYZE")  # not inside a transaction
    return {"VACUUM ANALYZE after the load, s": round(time.perf_counter() - started, 1)}


def segment_count(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return len(segments.all_segments(session))


def compact(kind: str, sessions: sessionmaker[Session], keep: int) -> dict[str, float]:
    """``triplets db compact --keep KEEP`` after the load, timed, then the statistics again."""
    started = time.perf_counter()
    with sessions.begin() as session:
        merges = segments.compact(session, keep=keep)
    seconds = time.perf_counter() - started
    settle(kind, sessions)
    return {f"db compact --keep {keep}, s": round(seconds, 1), "merges": merges,
            "segments after compact": segment_count(sessions)}


def describe(kind: str, sessions: sessionmaker[Session], folder: Path) -> dict[str, object]:
    """The store's size on disk, and the server's version."""
    if kind == "sqlite":
        return {"store size GB": round(sum(p.stat().st_size for p in folder.glob("store.db*")) / 1e9, 2)}
    with sessions() as session:
        run = session.connection().exec_driver_sql
        size = run("SELECT pg_database_size(current_database())").scalar()
        return {"store size GB": round(size / 1e9, 2), "server": f"PostgreSQL {run('SHOW server_version').scalar()}"}


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or platform.machine())
    return f"{cpu}, {os.cpu_count()} cores, SQLite {sqlite3.sqlite_version}"


def bench(kind: str, args: argparse.Namespace, folder: Path) -> list[dict]:
    with fresh_store(kind, folder) as url:
        sessions = make_session_factory(url)
        corpus = Corpus(max(args.triplets // 10, 100), args.seed)
        print(f"{kind}: loading {args.triplets:,} triplets in groups of {args.group} documents", flush=True)
        log = load(sessions, corpus, args.triplets, args.group, analyze=kind == "postgres")
        settled = settle(kind, sessions)
        results = {**summarise(log), **settled, "segments": segment_count(sessions),
                   **measure_reads(sessions, corpus, args.lookups, args.seed)}
        if results["segments"] > args.compact_to:
            results.update(compact(kind, sessions, args.compact_to))
            results.update({f"{name}, after compact": value
                            for name, value in measure_reads(sessions, corpus, args.lookups, args.seed).items()})
        results.update(describe(kind, sessions, folder))
        sessions.kw["bind"].dispose()  # postgres_database drops the database on leaving
    stored = sum(r["triplets"] for r in log)
    return [{"store": kind, "triplets": stored, "metric": metric, "value": value, "machine": machine()}
            for metric, value in results.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triplets", type=int, default=10_000_000)
    parser.add_argument("--store", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--group", type=int, default=1024, help="documents per group, as a worker stores them")
    parser.add_argument("--lookups", type=int, default=200, help="timed queries of each kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compact-to", type=int, default=32,
                        help="after the reads, merge segments down to this many and time the reads again")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--scratch", type=Path, default=None, help="where the SQLite file goes (default: a temp dir)")
    args = parser.parse_args()
    kinds = ("sqlite", "postgres") if args.store == "both" else (args.store,)
    for kind in kinds:  # one after the other: both share this machine's cores
        with tempfile.TemporaryDirectory(prefix="triplets-store-", dir=args.scratch) as folder:
            rows = bench(kind, args, Path(folder))
        print(f"\n{'metric':<55} {kind:>12}\n{'-' * 68}")
        for row in rows:
            value = row["value"]
            print(f"{row['metric']:<55} {value:>12,}" if isinstance(value, (int, float)) else
                  f"{row['metric']:<55} {value:>12}")
        print(f"({rows[0]['triplets']:,} triplets; {rows[0]['machine']})\n", flush=True)
        args.out_dir.mkdir(parents=True, exist_ok=True)
        out = args.out_dir / f"store_{kind}.json"
        out.write_text(json.dumps({"rows": rows}, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
