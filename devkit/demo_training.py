"""Train the demo model from scratch on synthetic DuIE sentences, and score it on held-out ones.

A small GLM (character-level tokenizer built here, the real loading path) learns to answer
the project's own prompt over all 48 DuIE predicates with open-vocabulary entity names.

    python -m devkit.demo_training OUT --device cuda --minutes 3 --seed 0      # how devkit/assets/demo-glm was built
    python -m devkit.demo_training OUT --device cpu --minutes 0.2 --train 2000  # a smoke run
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from devkit.synth import CHARACTERS, generate_examples
from devkit.tiny import glm_config, save_model
from devkit.tokenizer import build_tokenizer
from models.duie import write_jsonl
from models.prompt import get_template
from models.schema import load_schema
from models.settings import load_settings
from worker.trainer import Encoded, encode_pairs, optimizer_step

SHAPE = {"hidden_size": 320, "num_layers": 6, "num_heads": 5, "num_kv_heads": 5, "intermediate_size": 864}


def split_examples(train: int, heldout: int, seed: int) -> tuple[list, list]:
    """Training and held-out sentences; no held-out text occurs in training."""
    training = generate_examples(train, seed=seed)
    seen = {text for text, _ in training}
    held = [ex for ex in generate_examples(heldout * 2, seed=seed + 7919) if ex[0] not in seen][:heldout]
    return training, held


def train(out: Path, *, device: str, minutes: float, seed: int, train_size: int, heldout: int,
          batch_size: int, lr: float) -> dict:
    torch.manual_seed(seed)
    random.seed(seed)
    schema = load_schema()
    template = get_template("v1")
    training, held = split_examples(train_size, heldout, seed)
    tokenizer = build_tokenizer([template.plain("", schema), CHARACTERS])
    model = AutoModelForCausalLM.from_config(glm_config(tokenizer, **SHAPE)).to(device)
    data, _ = encode_pairs(training, tokenizer, template, schema)
    started = time.perf_counter()
    step, seen, loss = _train_for(model, data, minutes * 60, pad_id=tokenizer.pad_token_id, batch_size=batch_size,
                                  lr=lr, device=device)
    seconds = time.perf_counter() - started
    model.eval()
    save_model(model.to(torch.bfloat16), tokenizer, out)
    heldout_path = out / "heldout.jsonl"
    write_jsonl(heldout_path, held)
    stats = {"steps": step, "samples": seen, "epochs": round(seen / len(data), 2), "train_seconds": round(seconds, 1),
             "final_loss": round(loss, 5), "params": sum(p.numel() for p in model.parameters()),
             "train_examples": len(data), "seed": seed, "device": device,
             "card": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"}
    stats["eval"] = evaluate(out, heldout_path, device)
    (out / "demo_model.json").write_text(json.dumps(stats, ensure_ascii=False, indent=2))
    return stats


def _train_for(model: Any, data: Sequence[Encoded], budget: float, *, pad_id: int, batch_size: int, lr: float,
               device: str) -> tuple[int, int, float]:
    """Shuffled epochs of ``data`` until ``budget`` seconds have passed: (steps, samples, last loss)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else nullcontext()
    started, step, seen, loss = time.perf_counter(), 0, 0, float("nan")
    order: list[int] = []
    model.train()
    while (elapsed := time.perf_counter() - started) < budget:
        if len(order) < batch_size:
            order = list(range(len(data)))
            random.shuffle(order)
        batch_ids, order = order[:batch_size], order[batch_size:]
        # warm up, hold, then decay over the last 30 % of the time budget
        scale = min(1.0, (step + 1) / 200) * min(1.0, (1 - elapsed / budget) / 0.3)
        for group in optimizer.param_groups:
            group["lr"] = lr * max(scale, 0.02)
        loss = optimizer_step(model, [[data[i] for i in batch_ids]], optimizer, pad_id=pad_id, autocast=autocast)
        step, seen = step + 1, seen + len(batch_ids)
        if step % 200 == 0:
            print(f"step {step} loss {loss:.4f} {seen / (time.perf_counter() - started):.0f} samples/s", flush=True)
    return step, seen, loss


def evaluate(model_dir: Path, data: Path, device: str, max_examples: int = 10_000) -> dict:
    from worker.evaluation import evaluate_adapter

    settings = load_settings(device=device, precision="bf16" if device.startswith("cuda") else "fp32",
                             max_new_tokens=400, max_batch_size=256, max_input_tokens=4096)
    return evaluate_adapter(model_dir, None, data, settings=settings, max_examples=max_examples).as_dict()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devkit.demo_training", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--minutes", type=float, default=2.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=100_000)
    parser.add_argument("--heldout", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--evaluate-only", action="store_true", help="score an existing model on its heldout.jsonl")
    args = parser.parse_args()
    if args.evaluate_only:
        print(json.dumps(evaluate(args.out, args.out / "heldout.jsonl", args.device), ensure_ascii=False))
        return
    stats = train(args.out, device=args.device, minutes=args.minutes, seed=args.seed, train_size=args.train,
                  heldout=args.heldout, batch_size=args.batch_size, lr=args.lr)
    print(json.dumps({k: v for k, v in stats.items() if k != "eval"} | {
        k: stats["eval"][k] for k in ("precision", "recall", "f1", "strict_f1", "parse_failure_rate", "ungrounded_rate")
    }, ensure_ascii=False))


if __name__ == "__main__":
    main()
