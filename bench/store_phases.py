"""Where the store's write path spends its time: µs per stored triplet in each phase.

``bench/store.py``'s load (groups of 1,024 documents added, claimed, their outcomes stored by one
``store.record_outcomes`` call), with each phase timed on its own: adding the documents
(the producer's part), claiming them, and inside ``record_outcomes`` the COPY or executemany of
the rows, the update that marks the documents done, the rest (the documents' lock, Python), and
the commit. To compare two versions of the code, run it in a checkout of each
(``git worktree add``), one after the other, more than once: this machine drifts by several
per cent between runs.

    python bench/store_phases.py --triplets 1000000 --store postgres
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.store import Corpus, fresh_store, load, machine  # noqa: E402
from models import store  # noqa: E402
from models.db import make_session_factory  # noqa: E402

PHASES = ("add documents", "claim", "rows (COPY / executemany)", "mark documents done", "lock and the rest",
          "commit")


def timing(seconds: collections.Counter, phase: str, call: Callable) -> Callable:
    def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            seconds[phase] += time.perf_counter() - started
    return timed


def measure(kind: str, triplets: int, group: int, seed: int) -> dict[str, float]:
    seconds: collections.Counter = collections.Counter()
    # record_outcomes calls these two through its modules' namespaces: wrapping them times each inside it
    original_insert, original_finish = store.triplet_rows.insert_triplets, store._finish_documents
    store.triplet_rows.insert_triplets = timing(seconds, "rows (COPY / executemany)", original_insert)
    store._finish_documents = timing(seconds, "mark documents done", original_finish)
    try:
        with tempfile.TemporaryDirectory(prefix="triplets-phases-") as folder, \
                fresh_store(kind, Path(folder)) as url:
            sessions = make_session_factory(url)
            log = load(sessions, Corpus(max(triplets // 10, 100), seed), triplets, group,
                       analyze=kind == "postgres")
            sessions.kw["bind"].dispose()
    finally:
        store.triplet_rows.insert_triplets, store._finish_documents = original_insert, original_finish
    for name, key in (("add documents", "add_s"), ("claim", "claim_s"), ("commit", "commit_s"), ("store", "store_s")):
        seconds[name] = sum(record[key] for record in log)
    seconds["lock and the rest"] = (seconds["store"] - seconds["commit"] - seconds["rows (COPY / executemany)"]
                                    - seconds["mark documents done"])
    stored = sum(record["triplets"] for record in log)
    per_triplet = {phase: round(seconds[phase] / stored * 1e6, 2) for phase in PHASES}
    return {"triplets": stored, **per_triplet, "insert triplets/s (record_outcomes)": round(stored / seconds["store"]),
            "load triplets/s incl. adding and claiming":
                round(stored / (seconds["store"] + seconds["add documents"] + seconds["claim"]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triplets", type=int, default=1_000_000)
    parser.add_argument("--store", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--group", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "store_phases.json")
    args = parser.parse_args()
    kinds = ("sqlite", "postgres") if args.store == "both" else (args.store,)
    results = {kind: measure(kind, args.triplets, args.group, args.seed) for kind in kinds}
    print(f"\n{'µs per stored triplet':<45}" + "".join(f"{kind:>12}" for kind in kinds))
    print("-" * (45 + 12 * len(kinds)))
    for metric in next(iter(results.values())):
        print(f"{metric:<45}" + "".join(f"{results[kind][metric]:>12,}" for kind in kinds))
    print(f"({machine()})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), "results": results}, ensure_ascii=False, indent=2) + "\n",
                        encoding="utf-8")


if __name__ == "__main__":
    main()
