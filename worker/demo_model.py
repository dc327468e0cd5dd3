"""Train the demo model from scratch on synthetic DuIE sentences, and score it on held-out ones.

A small GLM (character-level tokenizer built here, the real loading path) learns to answer
the project's own prompt over all 48 DuIE predicates with open-vocabulary entity names.

    python -m worker.demo_model OUT --device cuda --minutes 2.5 --seed 0      # how models/demo-glm was built
    python -m worker.demo_model OUT --device cpu --minutes 0.2 --train 2000  # a smoke run
"""

from __future__ import annotations

import argparse
import json
import random
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from transformers import GlmForCausalLM

from models.prompt import format_answer, get_template
from models.schema import load_schema
from models.settings import load_settings
from models.synth import CHARACTERS, generate_examples, write_duie_jsonl
from worker.tiny_model import _glm_config, _save, build_tokenizer
from worker.trainer import IGNORE, collate

SHAPE = {"hidden_size": 320, "num_layers": 6, "num_heads": 5, "num_kv_heads": 5, "intermediate_size": 864}


def split_examples(train: int, heldout: int, seed: int) -> tuple[list, list]:
    """Training and held-out sentences; no held-out text occurs in training."""
    training = generate_examples(train, seed=seed)
    seen = {text for text, _ in training}
    held = [ex for ex in generate_examples(heldout * 2, seed=seed + 7919) if ex[0] not in seen][:heldout]
    return training, held


def encode(tokenizer, examples, schema) -> list[tuple[list[int], list[int]]]:  # type: ignore[no-untyped-def]
    template = get_template("v1")
    prompts = tokenizer([template.render(tokenizer, text, schema) for text, _ in examples],
                        add_special_tokens=False)["input_ids"]
    answers = tokenizer([format_answer(triplets) for _, triplets in examples], add_special_tokens=False)["input_ids"]
    return [
        (prompt + answer + [tokenizer.eos_token_id], [IGNORE] * len(prompt) + answer + [tokenizer.eos_token_id])
        for prompt, answer in zip(prompts, answers)
    ]


def train(out: Path, *, device: str, minutes: float, seed: int, train_size: int, heldout: int,
          batch_size: int, lr: float) -> dict:
    torch.manual_seed(seed)
    random.seed(seed)
    schema = load_schema()
    template = get_template("v1")
    training, held = split_examples(train_size, heldout, seed)
    tokenizer = build_tokenizer([template.plain("", schema), CHARACTERS])
    config = _glm_config(tokenizer, SHAPE["hidden_size"], SHAPE["num_layers"], SHAPE["num_heads"],
                         SHAPE["num_kv_heads"], SHAPE["intermediate_size"])
    model = GlmForCausalLM(config).to(device)
    data = encode(tokenizer, training, schema)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else nullcontext()
    budget, started, step, seen, loss_value = minutes * 60, time.perf_counter(), 0, 0, float("nan")
    order: list[int] = []
    model.train()
    while (elapsed := time.perf_counter() - started) < budget:
        if len(order) < batch_size:
            order = list(range(len(data)))
            random.shuffle(order)
        batch_ids, order = order[:batch_size], order[batch_size:]
        batch = {k: v.to(device) for k, v in collate([data[i] for i in batch_ids], tokenizer.pad_token_id).items()}
        # warm up, hold, then decay over the last 30 % of the time budget
        progress = elapsed / budget
        scale = min(1.0, (step + 1) / 200) * min(1.0, (1 - progress) / 0.3)
        for group in optimizer.param_groups:
            group["lr"] = lr * max(scale, 0.02)
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step, seen, loss_value = step + 1, seen + len(batch_ids), loss.item()
        if step % 200 == 0:
            print(f"step {step} loss {loss_value:.4f} {seen / (time.perf_counter() - started):.0f} samples/s", flush=True)
    seconds = time.perf_counter() - started
    model.eval()
    _save(model.to(torch.bfloat16), tokenizer, out)
    heldout_path = out / "heldout.jsonl"
    write_duie_jsonl(heldout_path, held)
    stats = {"steps": step, "samples": seen, "epochs": round(seen / len(data), 2), "train_seconds": round(seconds, 1),
             "final_loss": round(loss_value, 5), "params": sum(p.numel() for p in model.parameters()),
             "train_examples": len(data), "seed": seed, "device": device,
             "card": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"}
    stats["eval"] = evaluate(out, heldout_path, device)
    (out / "demo_model.json").write_text(json.dumps(stats, ensure_ascii=False, indent=2))
    return stats


def evaluate(model_dir: Path, data: Path, device: str, max_examples: int = 10_000) -> dict:
    from worker.evaluation import evaluate_adapter

    settings = load_settings(device=device, precision="bf16" if device.startswith("cuda") else "fp32",
                             max_new_tokens=400, max_batch_size=256, max_input_tokens=4096)
    return evaluate_adapter(model_dir, None, data, settings=settings, max_examples=max_examples).as_dict()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m worker.demo_model", description=__doc__.splitlines()[0])
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
