"""Peak memory and time of `triplets export` in each format, on a SQLite store of many triplets.

The store is filled directly with SQLAlchemy Core (not the extraction path: this measures the
export). Each export runs as its own process under a small launcher that reads its peak RSS
(getrusage RUSAGE_CHILDREN), so one format's peak never hides another's, nor this script's.
Writes a table and bench/results/export_memory.json.

    python bench/export_memory.py --triplets 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, insert, select  # noqa: E402

from models import triplet_rows  # noqa: E402
from models.db import make_session_factory  # noqa: E402
from models.migrate import upgrade  # noqa: E402
from models.tables import Document, Job, Status, utcnow  # noqa: E402

PER_DOCUMENT = 10
CHUNK = 50_000
SURNAMES = "张王李赵刘陈杨黄周吴徐孙胡朱高林何郭马罗梁宋郑谢韩唐冯于董萧程曹袁邓许傅沈曾彭吕苏卢蒋蔡贾丁魏薛叶阎"
PREDICATES = "导演 主演 编剧 作者 出品公司 国籍 父亲 母亲 妻子 丈夫 毕业院校 出生地 祖籍 所属专辑 歌手 作词 作曲 首都".split()
TYPES = ["人物", "影视作品", "图书作品", "企业", "国家", "学校", "地点", "歌曲", ""]
RUNS = {  # name: extra arguments; every run writes to --output under the work folder
    "jsonl": ["--format", "jsonl"], "csv": ["--format", "csv"], "jsonl --distinct": ["--format", "jsonl", "--distinct"],
    "ntriples": ["--format", "ntriples"], "neo4j": ["--format", "neo4j"],
}


def entity_names(count: int, rng: random.Random) -> list[str]:
    """Chinese names, some with the characters exports must quote or escape."""
    odd = [",", '"', "\n", " ", "%", "<", "\\"]
    return [
        "".join(rng.choice(SURNAMES) for _ in range(rng.randint(2, 4))) + f"{i}"
        + (rng.choice(odd) + "x" if i % 100 == 0 else "")
        for i in range(count)
    ]


def build_store(url: str, triplets: int, seed: int = 0) -> None:
    """A store of ``triplets`` rows in documents of PER_DOCUMENT, over ``triplets // 4`` entity names."""
    rng = random.Random(seed)
    names = entity_names(max(triplets // 4, 10), rng)
    upgrade(url)
    with make_session_factory(url).begin() as session:
        job = session.execute(insert(Job).returning(Job.id), {"name": "bench"}).scalar_one()
        documents = triplets // PER_DOCUMENT
        session.execute(insert(Document), [
            {"job_id": job, "external_id": f"doc:{i}", "sha256": f"{i:064x}", "text": "…", "status": Status.done,
             "has_triplets": True}
            for i in range(documents)
        ])
        first = session.scalar(select(func.min(Document.id)))
        created_at = triplet_rows.timestamp(session, utcnow())
        for start in range(0, triplets, CHUNK):  # into the store's segments, as workers write
            triplet_rows.insert_triplets(session, [
                (first + n // PER_DOCUMENT, rng.choice(names), rng.choice(TYPES), rng.choice(PREDICATES),
                 rng.choice(names), rng.choice(TYPES), None, None, None, None, "bench", "", "v1",
                 created_at)
                for n in range(start, min(start + CHUNK, triplets))
            ])


# A small parent for each run: a child forked from this (large) process would report this
# process's resident size as its own peak, since Linux carries the peak across fork and exec.
LAUNCHER = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)")


def measure(url: str, name: str, args: list[str], output: Path | None) -> dict[str, object]:
    """One run of ``triplets ARGS`` (``export ARGS --output OUTPUT`` with an output): its peak RSS and time."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPLETS_")} | {"TRIPLETS_DATABASE_URL": url}
    command = [*args] if output is None else ["export", *args, "--output", str(output)]
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", LAUNCHER, sys.executable, "-m", "producer", *command],
                         env=env, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    peak_kb, code = map(int, run.stdout.split())
    if code:
        raise SystemExit(f"{name}: exit {code}: {run.stderr.strip()}")
    files = [] if output is None else sorted(output.iterdir()) if output.is_dir() else [output]
    return {"format": name, "peak_rss_mb": round(peak_kb / 1024, 1), "seconds": round(seconds, 1),
            "output_mb": round(sum(f.stat().st_size for f in files) / 2**20, 1),
            "summary": (run.stderr.strip().splitlines() or [""])[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triplets", type=int, default=1_000_000)
    parser.add_argument("--work", type=Path, default=ROOT / ".triplets" / "export-bench",
                        help="Folder for the store (kept and reused) and the exports (replaced).")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "export_memory.json")
    options = parser.parse_args()
    options.work.mkdir(parents=True, exist_ok=True)
    store = options.work / f"store-{options.triplets}.db"
    url = f"sqlite:///{store}"
    if not store.exists():
        started = time.perf_counter()
        build_store(url, options.triplets)
        print(f"built {store} in {time.perf_counter() - started:.0f} s")
    # What the CLI costs before it reads a row: the floor under every export's peak.
    rows = [measure(url, "(CLI start: --version)", ["--version"], None)]
    for name, args in RUNS.items():
        output = options.work / name.replace(" --", "-")
        rows.append(measure(url, name, args, output))
    for row in rows:
        print(f"{row['format']:24} {row['peak_rss_mb']:>7} MB {row['seconds']:>6} s {row['output_mb']:>7} MB out  "
              f"{row['summary']}")
    report = {"triplets": options.triplets, "database": "sqlite", "python": platform.python_version(),
              "cpus": os.cpu_count(), "runs": rows}
    out = options.out
    out.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"(JSON: {out})")


if __name__ == "__main__":
    main()
