"""QLoRA training throughput: the origin's config (1 × 512, accumulation 8) vs the memory-budget plan.

Builds a randomly initialised GLM of ChatGLM3-6B shape (bench/common.py, as bench/extract_gpu.py), writes
~512-token training examples, and runs the project's own trainer (`train_adapter`) per
variant on the same data: samples/s, tokens/s, peak memory, and the loss after the same
number of samples, so speed is not bought with wrong gradients. Prints a table, writes JSON.

A variant is ``MICROxACCUM:CHECKPOINTING`` (checkpointing all|none|auto, default all) or
``auto`` (the trainer's own choice for the 20 GB budget). Every variant steps over 8 samples.

    python bench/train_gpu.py --shape chatglm3-6b --steps 12 --out $OUT/train.json   # GPU machine
    python bench/train_gpu.py --shape tiny --steps 3                                 # CPU smoke run
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.common import SHAPES, bench_parser, build_model, free_memory, make_texts, new_report, save  # noqa: E402
from devkit.assets import demo_schema_path  # noqa: E402
from models.duie import write_jsonl  # noqa: E402
from models.train_config import parse_train_config  # noqa: E402
from models.triplet import Triplet  # noqa: E402
from worker.trainer import train_adapter  # noqa: E402

_FACT = re.compile(r"《(?P<work>[^》]+)》是(?P<director>[^，]+)执导，(?P<a>[^、]+)、(?P<b>[^，]+)主演的[^，]+，由(?P<writer>[^，]+)编剧")


def gold(text: str) -> list[Triplet]:
    """The facts of the first sentence of a make_texts document."""
    match = _FACT.search(text)
    assert match, text
    work = match["work"]
    return [Triplet(work, "导演", match["director"], "影视作品", "人物"),
            Triplet(work, "主演", match["a"], "影视作品", "人物"),
            Triplet(work, "主演", match["b"], "影视作品", "人物")]


def mean_tokens(base: Path, data: Path) -> float:
    from transformers import AutoTokenizer

    from models.training_data import iter_training_examples
    from worker.trainer import encode_examples

    tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
    config = parse_train_config({"name": "probe", "base_model": base, "train_data": data,
                                 "schema_path": demo_schema_path(), "max_length": 4096})
    encoded, _ = encode_examples(list(iter_training_examples(data, lambda error: None))[:200], tokenizer, config)
    return sum(len(ids) for ids, _ in encoded) / len(encoded)


def parse_variant(variant: str) -> tuple[int | None, str]:
    """``auto`` or ``MICROxACCUM[:all|none|auto]`` (accumulation is 8 / micro): micro-batch and checkpointing."""
    if variant == "auto":
        return None, "auto"
    sizes, _, checkpointing = variant.partition(":")
    micro, accum = (int(part) for part in sizes.split("x"))
    if micro * accum != 8:
        raise SystemExit(f"variant {variant}: micro x accum must be 8")
    return micro, checkpointing or "all"


def after_first(progress: list[dict]) -> float:
    """Samples/s over every step but the first, which pays for allocation and kernel choice."""
    if len(progress) < 2:
        return progress[-1]["samples_per_s"]
    first, last = progress[0], progress[-1]
    first_seconds = first["step"] * 8 / first["samples_per_s"]
    last_seconds = last["step"] * 8 / last["samples_per_s"]
    return (last["step"] - first["step"]) * 8 / (last_seconds - first_seconds)


def parse_args() -> argparse.Namespace:
    parser = bench_parser(__doc__, "train.json", variants="1x8:all,8x1:all,4x2:none,auto")
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps of 8 samples per variant")
    parser.add_argument("--text-chars", type=int, default=230, help="~512 tokens with the prompt and answer")
    parser.add_argument("--budget-gib", type=float, default=20.0)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    device, report = new_report(args.shape)
    report["rows"] = []
    with tempfile.TemporaryDirectory() as tmp:
        samples_needed = args.steps * 16 * 2
        texts = make_texts(samples_needed, args.text_chars, seed=1)
        data = Path(tmp) / "train.jsonl"
        write_jsonl(data, [(text, gold(text)) for text in texts])
        base, _ = build_model(Path(tmp), SHAPES[args.shape], texts, device)
        report["tokens_per_sample"] = mean_tokens(base, data)
        for variant in args.variants.split(","):
            row = run_variant(args, variant, base, data, Path(tmp) / f"adapter-{len(report['rows'])}", device)
            row["tokens_per_s"] = row["samples_per_s_after_first"] * report["tokens_per_sample"]
            report["rows"].append(row)
            print(f"  {row['variant']} ({row['micro_batch']} x {row['grad_accum']}, {row['checkpointed_layers']}/"
                  f"{row['layers']} layers checkpointed): {row['samples_per_s']:.2f} samples/s, "
                  f"peak {row['peak_gib']:.1f} GiB, loss {row['first_step_loss']:.3f} → {row['final_loss']:.3f}",
                  flush=True)
            save(report, args.out)
            free_memory()
    print_table(report)
    save(report, args.out)


def run_variant(args: argparse.Namespace, variant: str, base: Path, data: Path, out_dir: Path,
                device: str) -> dict[str, Any]:
    """Train one variant for ``args.steps`` steps: its plan, speed, peak memory and losses."""
    micro, checkpointing = parse_variant(variant)
    steps = args.steps
    config = parse_train_config({
        "name": "bench", "base_model": base, "train_data": data, "schema_path": demo_schema_path(),
        "device": device, "precision": "4bit" if device != "cpu" else "fp32", "batch_size": 8,
        "micro_batch_size": micro, "gradient_checkpointing": checkpointing, "gpu_memory_budget_gib": args.budget_gib,
        "max_steps": steps, "max_length": 1024, "checkpoint_every": 10**6,
    })
    progress: list[dict] = []
    if device != "cpu":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    result = train_adapter(config, out_dir, on_progress=progress.append)
    seconds = time.perf_counter() - started
    first = progress[0]
    plan = result.plan
    return {"variant": variant, "micro_batch": plan.micro_batch_size, "grad_accum": plan.grad_accum,
            "checkpointed_layers": plan.checkpointed_layers, "layers": plan.layers,
            "estimated_peak_gib": plan.estimated_peak_gib, "steps": steps, "samples": steps * 8,
            "seconds": seconds,
            "samples_per_s": progress[-1]["samples_per_s"], "samples_per_s_after_first": after_first(progress),
            "first_step_loss": first["loss"], "final_loss": progress[-1]["loss"],
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device != "cpu" else float("nan")}


def print_table(report: dict[str, Any]) -> None:
    print(f"\n{report['card']} · {report['shape']} · QLoRA r=8 α=32 · "
          f"{report['tokens_per_sample']:.0f} tokens/sample · {report['versions']}")
    origin = report["rows"][0]["samples_per_s_after_first"] if report["rows"] else float("nan")
    print(f"{'variant':<10}{'micro x accum':>14}{'ckpt':>7}{'samples':>8}{'samples/s':>11}{'tok/s':>9}{'x first':>8}"
          f"{'peak GiB':>10}{'est GiB':>9}{'loss first→last':>18}")
    for row in report["rows"]:
        plan = f"{row['micro_batch']} x {row['grad_accum']}"
        print(f"{row['variant']:<10}{plan:>14}{row['checkpointed_layers']:>4}/{row['layers']:<2}{row['samples']:>8}"
              f"{row['samples_per_s_after_first']:>11.2f}{row['tokens_per_s']:>9.0f}"
              f"{row['samples_per_s_after_first'] / origin:>8.2f}{row['peak_gib']:>10.1f}"
              f"{row['estimated_peak_gib'] or float('nan'):>9.1f}{row['first_step_loss']:>9.3f} → {row['final_loss']:.3f}")


if __name__ == "__main__":
    main()
