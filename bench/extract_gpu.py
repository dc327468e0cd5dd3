"""Extraction throughput: origin style (one document at a time) vs the worker's engine.

Builds a randomly initialised GLM of a real model's shape (speed depends on shape, not
weights) plus a LoRA adapter (r=8, alpha=32 on q/k/v/o), then runs every variant over the
same prompts in one process, answers forced to --new-tokens tokens. Prints a table, writes JSON.

    python bench/extract_gpu.py --shape chatglm3-6b --out $OUT/extract.json   # GPU machine
    python bench/extract_gpu.py --shape tiny --docs 8 --origin-docs 2         # CPU smoke run
"""

from __future__ import annotations

import argparse
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
from models.settings import load_settings  # noqa: E402
from worker.hf_engine import HuggingFaceEngine  # noqa: E402


def make_engine(base: Path, adapter: Path, device: str, precision: str, batch: int, new_tokens: int) -> HuggingFaceEngine:
    settings = load_settings(
        base_model=base, adapter=adapter, schema_path=demo_schema_path(), device=device, precision=precision,
        max_batch_size=batch, max_batch_tokens=10**9, max_input_tokens=4096,
        max_new_tokens=new_tokens, min_new_tokens=new_tokens,
    )
    return HuggingFaceEngine.from_settings(settings)


def timed_extract(engine: HuggingFaceEngine, texts: list[str], one_at_a_time: bool) -> dict[str, float]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    if one_at_a_time:
        results = [engine.extract([text])[0] for text in texts]
    else:
        results = engine.extract(texts)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    assert len(results) == len(texts)
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
    return {"seconds": seconds, "peak_gib": peak}


def profile_decode(engine: HuggingFaceEngine, texts: list[str], steps: int) -> dict[str, Any]:
    """Where one decode step's time goes: per-operator time of a generation of ``steps + 1``
    tokens minus that of one token (the prefill), divided by ``steps``; and how much of a
    step's wall time the GPU spends running kernels."""
    from torch.profiler import ProfilerActivity, profile

    prompts = [engine.prompts.prompts_for(i, text)[0] for i, text in enumerate(texts)]
    key = "device_time_total" if torch.cuda.is_available() else "cpu_time_total"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    totals: list[dict[str, tuple[int, float]]] = []
    walls: list[float] = []
    kernels: list[float] = []
    for new_tokens in (1, steps + 1):
        forced = engine.with_config(max_new_tokens=new_tokens, min_new_tokens=new_tokens)
        forced.decode(prompts)  # warm-up at this length
        started = time.perf_counter()
        forced.decode(prompts)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - started)
        with profile(activities=activities) as prof:
            forced.decode(prompts)
        averages = prof.key_averages()
        totals.append({e.key: (e.count, getattr(e, key)) for e in averages})
        kernels.append(sum(e.self_device_time_total for e in averages if str(e.device_type).endswith("CUDA")))
    prefill, full = totals
    per_step = [
        {"op": op, "calls_per_step": (count - prefill.get(op, (0, 0))[0]) / steps,
         "ms_per_step": (micros - prefill.get(op, (0, 0.0))[1]) / steps / 1000}
        for op, (count, micros) in full.items()
    ]
    return {"wall_ms_per_step": (walls[1] - walls[0]) * 1000 / steps,
            "kernel_ms_per_step": (kernels[1] - kernels[0]) / 1000 / steps,
            "top_ops": sorted(per_step, key=lambda row: row["ms_per_step"], reverse=True)[:20]}


def parse_args() -> argparse.Namespace:
    parser = bench_parser(__doc__, "extract.json", variants="origin,4bit,bf16,profile,celery")
    parser.add_argument("--docs", type=int, default=1024, help="documents per batched variant")
    parser.add_argument("--origin-docs", type=int, default=4, help="documents for the one-at-a-time baseline")
    parser.add_argument("--batch-sizes", default="512,1024")
    parser.add_argument("--bf16-batch", type=int, default=256)
    parser.add_argument("--decode-loops", default="static,generate", help="engine decode loops to compare")
    parser.add_argument("--bf16-loop", default="static", help="decode loop of the bf16 variant")
    parser.add_argument("--celery-loop", default="static", help="decode loop of the Celery worker")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--text-chars", type=int, default=80)
    parser.add_argument("--profile-steps", type=int, default=8)
    parser.add_argument("--celery-batch", type=int, default=1024)
    parser.add_argument("--warm-batches", action="store_true", help="warm each batch size before timing it")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    device, report = new_report(args.shape)
    report["rows"] = []
    variants = set(args.variants.split(","))
    texts = make_texts(args.docs, args.text_chars)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        base, adapter = build_model(Path(tmp), SHAPES[args.shape], texts, device)
        report["build_seconds"] = time.perf_counter() - started
        run_engine(args, report, variants, texts, base, adapter, device)
        free_memory()  # the engine went with run_engine's return
        if "bf16" in variants and device != "cpu":
            run_bf16(args, report, texts, base, adapter, device)
            free_memory()
        if "celery" in variants:
            from bench.extract_celery import run_through_celery  # the store and broker, only for this variant

            standalone = next((r for r in report["rows"] if r.get("variant") == f"engine ({args.celery_loop})"
                               and r["batch"] == args.celery_batch), None)
            report["celery"] = run_through_celery(base, adapter, texts, args.celery_batch, args.new_tokens, Path(tmp),
                                                  device, args.celery_loop)
            if standalone:
                report["celery"]["ratio_to_engine"] = report["celery"]["docs_per_s"] / standalone["docs_per_s"]
            save(report, args.out)
    print_table(report)
    save(report, args.out)


def run_engine(args: argparse.Namespace, report: dict[str, Any], variants: set[str], texts: list[str], base: Path,
               adapter: Path, device: str) -> None:
    """The origin's one document at a time, the engine per decode loop and batch size, and the decode
    profile: 4-bit on a GPU, fp32 on the CPU."""
    precision = "4bit" if device != "cpu" else "fp32"
    engine = make_engine(base, adapter, device, precision, 1, args.new_tokens)
    report["prompt_tokens_mean"] = sum(len(engine.prompts.encode(t)) for t in texts) / len(texts)
    report["params"] = param_count(SHAPES[args.shape], len(engine.tokenizer))
    if "origin" in variants:
        timed_extract(engine, texts[:1], one_at_a_time=True)  # warm-up
        record(args, report, "origin (one at a time)", precision, 1, args.origin_docs,
               timed_extract(engine, texts[: args.origin_docs], one_at_a_time=True))
    for loop in args.decode_loops.split(",") if "4bit" in variants else ():
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            batched = engine.with_config(max_batch_size=batch, decode_loop=loop)
            if args.warm_batches:  # one full-size batch first, as the Celery run gets
                started = time.perf_counter()
                timed_extract(batched, [t + "（预热）" for t in texts[:batch]], one_at_a_time=False)
                report.setdefault("warmup_seconds", {})[f"{loop} {batch}"] = time.perf_counter() - started
            record(args, report, f"engine ({loop})", precision, batch, len(texts),
                   timed_extract(batched, texts, one_at_a_time=False))
            del batched  # it holds its decoder's KV cache
    if "profile" in variants:
        batch = max(int(b) for b in args.batch_sizes.split(","))
        profiled = engine.with_config(max_batch_size=batch, decode_loop=args.decode_loops.split(",")[-1])
        report["decode_profile"] = {"batch": batch, "steps": args.profile_steps,
                                    "decode_loop": profiled.config.decode_loop,
                                    **profile_decode(profiled, texts[:batch], args.profile_steps)}


def run_bf16(args: argparse.Namespace, report: dict[str, Any], texts: list[str], base: Path, adapter: Path,
             device: str) -> None:
    """The engine in bf16, its LoRA merged into the weights."""
    engine = make_engine(base, adapter, device, "bf16", args.bf16_batch, args.new_tokens).with_config(
        decode_loop=args.bf16_loop)
    timed_extract(engine, [t + "（预热）" for t in texts[: args.bf16_batch]], one_at_a_time=False)  # warm-up
    record(args, report, f"engine ({args.bf16_loop}), LoRA merged", "bf16", args.bf16_batch, len(texts),
           timed_extract(engine, texts, one_at_a_time=False))


def record(args: argparse.Namespace, report: dict[str, Any], name: str, precision: str, batch: int, docs: int,
           result: dict[str, float]) -> None:
    batches = -(-docs // batch)
    report["rows"].append({
        "variant": name, "precision": precision, "batch": batch, "docs": docs, **result,
        "docs_per_s": docs / result["seconds"],
        "gen_tokens_per_s": docs * args.new_tokens / result["seconds"],
        "ms_per_step": 1000 * result["seconds"] / (batches * args.new_tokens),
    })
    print(f"  {name} {precision} batch {batch}: {docs / result['seconds']:.2f} docs/s, "
          f"{result['peak_gib']:.1f} GiB", flush=True)
    save(report, args.out)  # partial results survive a run cut short


def param_count(shape: dict[str, Any], vocab: int) -> int:
    """Parameters of the full-precision model (a 4-bit model's tensors count packed bytes)."""
    hidden, inter, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_layers"]
    head_dim = hidden // shape["num_heads"]
    kv = shape["num_kv_heads"] * head_dim
    attention = hidden * (hidden + 2 * kv) + (hidden + 2 * kv) + hidden * hidden  # qkv with bias, o
    mlp = 3 * hidden * inter
    embeddings = vocab * hidden * (1 if shape["tie_word_embeddings"] else 2)
    return layers * (attention + mlp + 2 * hidden) + embeddings + hidden


def print_table(report: dict[str, Any]) -> None:
    print(f"\n{report['card']} · {report['shape']} · {report.get('params', 0) / 1e9:.2f} B params · "
          f"prompt {report.get('prompt_tokens_mean', 0):.0f} tokens · {report['versions']}")
    origin = next((r for r in report["rows"] if r.get("batch") == 1), None)
    print(f"{'variant':<26}{'prec':>6}{'batch':>6}{'docs':>6}{'docs/s':>9}{'tok/s':>9}{'ms/step':>9}"
          f"{'peak GiB':>9}{'x origin':>9}")
    for row in report["rows"]:
        if "error" in row:
            print(f"{row['variant']:<26} failed: {row['error']}")
            continue
        ratio = row["docs_per_s"] / origin["docs_per_s"] if origin else float("nan")
        print(f"{row['variant']:<26}{row['precision']:>6}{row['batch']:>6}{row['docs']:>6}{row['docs_per_s']:>9.2f}"
              f"{row['gen_tokens_per_s']:>9.0f}{row['ms_per_step']:>9.1f}{row['peak_gib']:>9.1f}{ratio:>9.1f}")
    profile = report.get("decode_profile")
    if profile:
        print(f"one decode step at batch {profile['batch']} ({profile['decode_loop']}): "
              f"{profile['wall_ms_per_step']:.1f} ms wall, {profile['kernel_ms_per_step']:.1f} ms of GPU kernels; by operator:")
        for op in profile["top_ops"][:14]:
            print(f"  {op['ms_per_step']:>8.2f} ms  {op['calls_per_step']:>7.1f} calls  {op['op'][:70]}")
    celery = report.get("celery")
    if celery:
        print(f"through Celery: {celery['docs_per_s']:.2f} docs/s over {celery['docs']} docs "
              f"({celery.get('ratio_to_engine', float('nan')):.1%} of the engine alone), {celery['counts']}")


if __name__ == "__main__":
    main()
