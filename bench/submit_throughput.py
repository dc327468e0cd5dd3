"""Producer throughput and memory: `triplets submit` of an N-line .txt, per store.

Runs the real CLI in a child process against a real Redis and each store, and reads the
child's peak RSS from the kernel (wait4). Prints a table and writes JSON.

    python bench/submit_throughput.py --lines 100000 --out bench/results/submit.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devkit.services import postgres_database, redis_server  # noqa: E402
from models.migrate import upgrade  # noqa: E402

BENCH_REDIS_DB = 14
NAMES = "张王李赵刘陈杨黄周吴徐孙胡朱高林何郭马罗"
WORKS = "故事 传奇 之歌 往事 人生 江湖 风云 岁月".split()


def write_corpus(path: Path, lines: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as out:
        for i in range(lines):
            director = rng.choice(NAMES) + rng.choice(NAMES)
            out.write(f"《{rng.choice(WORKS)}第{i}部》是{director}执导的电视剧，共{rng.randint(10, 60)}集。\n")


def run_submit(corpus: Path, broker_url: str, database_url: str) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPLETS_")}
    env.update(TRIPLETS_BROKER_URL=broker_url, TRIPLETS_DATABASE_URL=database_url)
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "producer", "submit", str(corpus), "--name", "bench"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"submit failed with status {status}: {child.stdout.read().decode()}")  # type: ignore[union-attr]
    return {"seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "submit.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, redis_server() as redis_base:
        corpus = Path(tmp) / "corpus.txt"
        write_corpus(corpus, args.lines)
        broker_url = f"{redis_base}/{BENCH_REDIS_DB}"
        client = redis.Redis.from_url(broker_url)
        with postgres_database() as postgres_url:
            stores = {"sqlite": f"sqlite:///{tmp}/bench.db", "postgres": postgres_url}
            for store_name, database_url in stores.items():
                if database_url is None:
                    continue
                upgrade(database_url)
                client.flushdb()
                result = run_submit(corpus, broker_url, database_url)
                messages = client.llen("extract")
                rows.append({
                    "store": store_name, "documents": args.lines, "messages": messages,
                    "docs_per_s": args.lines / result["seconds"], **result,
                })
        client.flushdb()
    print(f"{'store':<10}{'docs':>9}{'messages':>10}{'seconds':>9}{'docs/s':>10}{'peak RSS MB':>13}")
    for row in rows:
        print(f"{row['store']:<10}{row['documents']:>9}{row['messages']:>10}{row['seconds']:>9.2f}"
              f"{row['docs_per_s']:>10.0f}{row['peak_rss_mb']:>13.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    args.out.write_text(json.dumps({"machine": machine, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
