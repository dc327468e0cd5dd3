"""Cost of parsing and checking model output (schema + grounding) per document, on the CPU.

Compares parse alone with parse + check over the same answers, and prints a table and JSON.

    python bench/validation_cost.py --docs 20000
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import make_texts  # noqa: E402
from models.parser import parse_triplets  # noqa: E402
from models.prompt import format_answer  # noqa: E402
from models.schema import load_schema  # noqa: E402
from models.triplet import Triplet  # noqa: E402
from models.validate import check_triplets  # noqa: E402


def answers_for(texts: list[str]) -> list[str]:
    """Three triplets per document: two grounded, one with an invented object."""
    answers = []
    for text in texts:
        work = text[1 : text.index("》")]
        director = text[text.index("》是") + 2 : text.index("执导")]
        answers.append(format_answer([
            Triplet(work, "导演", director, "影视作品", "人物"),
            Triplet(work, "主演", director, "影视作品", "人物"),
            Triplet(work, "编剧", "不存在的人", "影视作品", "人物"),
        ]))
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "validation.json")
    args = parser.parse_args()
    schema = load_schema()
    texts = make_texts(args.docs, 300)
    answers = answers_for(texts)
    started = time.perf_counter()
    for answer in answers:
        parse_triplets(answer)
    parse_only = time.perf_counter() - started
    started = time.perf_counter()
    rejected = 0
    for text, answer in zip(texts, answers):
        rejected += len(check_triplets(parse_triplets(answer), text, schema).rejected)
    both = time.perf_counter() - started
    rows = {"docs": args.docs, "parse_us_per_doc": 1e6 * parse_only / args.docs,
            "parse_and_check_us_per_doc": 1e6 * both / args.docs,
            "check_us_per_doc": 1e6 * (both - parse_only) / args.docs, "rejected": rejected,
            "machine": platform.platform()}
    print(f"{'docs':>7}{'parse µs':>10}{'parse+check µs':>16}{'check µs':>10}{'rejected':>10}")
    print(f"{args.docs:>7}{rows['parse_us_per_doc']:>10.1f}{rows['parse_and_check_us_per_doc']:>16.1f}"
          f"{rows['check_us_per_doc']:>10.1f}{rejected:>10}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
