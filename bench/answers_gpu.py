"""Realistic answers: fixed-length answers beside DuIE-like ones, static batches beside continuous batching.

Every answer of ``--answers fixed`` is forced to the same length; in ``duie`` mode each
document's answer length is drawn: a number of triplets from a DuIE-like distribution
(``TRIPLETS_PER_SENTENCE``: mean 2.05, a long tail to 15; DuIE 2.0's own histogram is not
available offline, so this is its shape, not its measurement), each triplet's tokens measured
by rendering synthetic triplets with the project's answer format and the model's tokenizer.
Rows are ended at their drawn lengths by a benchmark-only hook (``forced_lengths``; off in
production). The fixed mode uses the duie draws' mean length, so the two compare at the same
mean. Reported per row: docs/s, answer tokens/s, slot efficiency (answer tokens decoded ÷
rows × decode steps), peak memory.

    python bench/answers_gpu.py --shape chatglm3-6b --docs 1024 --batch 1024 --out $OUT/answers.json
    python bench/answers_gpu.py --shape tiny --docs 24 --batch 6                # CPU smoke run
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from bench.common import SHAPES, bench_parser, build_model, free_memory, make_texts, new_report, save  # noqa: E402
from bench.extract_gpu import make_engine  # noqa: E402
from devkit.synth import generate_examples  # noqa: E402
from models.prompt import format_answer  # noqa: E402
from worker.continuous_decode import NARROWEST  # noqa: E402
from worker.hf_engine import HuggingFaceEngine  # noqa: E402
from worker.loader import cast_adapters, compute_dtype  # noqa: E402

# Triplets per sentence, DuIE-like: most sentences state one or two facts, a few a dozen or more.
TRIPLETS_PER_SENTENCE = {0: 0.08, 1: 0.40, 2: 0.22, 3: 0.12, 4: 0.07, 5: 0.04, 6: 0.025, 7: 0.015, 8: 0.01,
                         9: 0.006, 10: 0.004, 11: 0.003, 12: 0.002, 13: 0.0015, 14: 0.001, 15: 0.0005}


def draw_answer_lengths(tokenizer: Any, docs: int, seed: int = 0) -> list[int]:
    """Answer tokens (with the end token) per document: k triplets drawn, rendered, tokenized."""
    rng = random.Random(seed)
    triplets = [t for _, facts in generate_examples(4000, seed=seed) for t in facts]
    counts = rng.choices(list(TRIPLETS_PER_SENTENCE), weights=list(TRIPLETS_PER_SENTENCE.values()), k=docs)
    return [len(tokenizer(format_answer(rng.sample(triplets, k)), add_special_tokens=False)["input_ids"]) + 1
            for k in counts]


def timed(engine: HuggingFaceEngine, loop: str, prompts: list, lengths: list[int]) -> dict[str, float]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    if loop == "continuous":
        engine.decode_continuous(prompts, forced_lengths=lengths)
        slots = engine.continuous_decoder.last_slots
    else:
        slots = 0
        by_doc = dict(zip((p.doc for p in prompts), lengths))
        for batch in engine.plan(prompts):
            engine.decode(batch, forced_lengths=[by_doc[p.doc] for p in batch])
            slots += engine.decoder.last_slots
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
    return {"seconds": seconds, "peak_gib": peak, "slot_efficiency": sum(lengths) / slots}


def variant_engine(engine: HuggingFaceEngine, variant: str, batch: int) -> tuple[HuggingFaceEngine, str]:
    """The engine configured as ``variant`` says (a decode loop, then options), and its loop."""
    loop, *options = variant.split("-")
    # `-lora32`: the adapter as peft keeps it, in fp32 (a worker casts it to the base's compute dtype)
    cast_adapters(engine.model, torch.float32 if "lora32" in options else compute_dtype(str(engine.device)))
    looped = engine.with_config(decode_loop=loop, cuda_graphs="eager" not in options,
                                share_prefix="unshared" not in options)
    if loop == "continuous":  # `-wide`: every row runs every step, even once the batch drains
        looped.continuous_decoder.narrowest = batch if "wide" in options else NARROWEST
        # `-refillN`: a refill waits for N idle rows (fewer, larger prefills)
        looped.continuous_decoder.refill_at_least = next(
            (int(option.removeprefix("refill")) for option in options if option.startswith("refill")), 1)
        # `-profile`: the GPU synced at each phase of the loop, each phase timed (slower; see `profile`)
        looped.continuous_decoder.profile = "profile" in options
        # `-prefixcounted`: a prefill chunk's token budget counts every prompt's shared prefix too
        looped.continuous_decoder.prefill_counts_prefix = "prefixcounted" in options
    return looped, loop


def looped_decoder(engine: HuggingFaceEngine, loop: str) -> Any:
    return engine.continuous_decoder if loop == "continuous" else engine.decoder


def main() -> None:
    # a variant is a decode loop, with `-eager` for its step launched op by op instead of as a CUDA graph,
    # `-unshared` for every prompt prefilled whole (no shared prefix), `-wide` for a batch that never narrows,
    # `-lora32` for the LoRA in fp32, `-refillN` for refills that wait for N idle rows, `-profile` for phases timed,
    # `-prefixcounted` for prefill chunks that count each prompt's shared prefix (as before run H)
    parser = bench_parser(__doc__, "answers.json", variants="static-unshared,static,continuous-unshared,continuous")
    parser.add_argument("--docs", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--answers", default="fixed,duie", help="fixed: every answer the duie mean; fixedN: N tokens")
    parser.add_argument("--text-chars", type=int, default=80)
    parser.add_argument("--precision", default="", help="default: 4bit on a GPU, fp32 on the CPU")
    args = parser.parse_args()
    device, report = new_report(args.shape)
    report["rows"] = []
    texts = make_texts(args.docs, args.text_chars)
    with tempfile.TemporaryDirectory() as tmp:
        base, adapter = build_model(Path(tmp), SHAPES[args.shape], texts, device)
        precision = args.precision or ("4bit" if device != "cpu" else "fp32")
        duie = draw_answer_lengths(AutoTokenizer.from_pretrained(base, local_files_only=True), args.docs)
        mean = round(sum(duie) / len(duie))
        lengths = {mode: duie if mode == "duie" else [int(mode.removeprefix("fixed") or mean)] * args.docs
                   for mode in args.answers.split(",")}
        report.update(answer_tokens_mean=sum(duie) / len(duie), answer_tokens_max=max(duie), precision=precision)
        # the KV-token budget of TRIPLETS_GPU_MEMORY_BUDGET_GIB (18.6 = 20 GB), as a worker runs: no unbounded batches
        engine = make_engine(base, adapter, device, precision, args.batch, max(n for drawn in lengths.values() for n in drawn)).with_config(
            min_new_tokens=0, max_batch_tokens=None)
        prompts = [engine.prompts.prompts_for(i, text)[0] for i, text in enumerate(texts)]
        report["prompt_tokens_mean"] = sum(len(prompt.ids) for prompt in prompts) / len(prompts)
        for variant in args.variants.split(","):
            looped, loop = variant_engine(engine, variant, args.batch)
            graphs, shared = looped.config.cuda_graphs, looped.config.share_prefix
            warm = max(1, min(args.batch, len(prompts)))
            timed(looped, loop, prompts[:warm], [mean] * warm)  # allocate and compile before timing
            for mode in args.answers.split(","):
                # the answer limit a user would set: fixedN's N, else the longest DuIE-like answer (a
                # row reserves that many cache slots, so it sets how many rows fit the budget)
                limit = max(duie) if mode in ("fixed", "duie") else lengths[mode][0]
                result = timed(looped.with_config(max_new_tokens=limit), loop, prompts, lengths[mode])
                row = {"variant": variant, "decode_loop": loop, "cuda_graphs": graphs, "share_prefix": shared,
                       "shared_prefix_tokens": looped_decoder(looped, loop).last_shared_prefix,
                       "widths": looped.continuous_decoder.last_widths if loop == "continuous" else None,
                       "refills": looped.continuous_decoder.last_refills if loop == "continuous" else None,
                       "profile": looped.continuous_decoder.last_profile if loop == "continuous" else None,
                       "answers": mode, "max_new_tokens": limit, "precision": precision, "batch": args.batch,
                       "docs": args.docs, "card": report["card"], **result,
                       "docs_per_s": args.docs / result["seconds"],
                       "answer_tokens_per_s": sum(lengths[mode]) / result["seconds"]}
                report["rows"].append(row)
                print(f"  {variant:<20} {mode:<6} {row['docs_per_s']:8.2f} docs/s {row['answer_tokens_per_s']:9.0f} tok/s"
                      f"  slot efficiency {row['slot_efficiency']:.3f}  {row['peak_gib']:.1f} GiB", flush=True)
                if row["profile"]:
                    print("    " + "  ".join(f"{span} {seconds:.2f} s" for span, seconds in row["profile"]["seconds"].items())
                          + f"  ({row['profile']['prefill_forwards']} prefill forwards,"
                          f" {row['profile']['prefilled_tokens']} tokens)", flush=True)
                save(report, args.out)
            del looped
            free_memory()
    print(f"\n{report['card']} · {args.shape} · {precision} · prompts: mean {report['prompt_tokens_mean']:.1f} tokens · "
          f"answers: mean {report['answer_tokens_mean']:.1f}, max {report['answer_tokens_max']} tokens")
    save(report, args.out)


if __name__ == "__main__":
    main()
