"""LoRA / QLoRA training of an extraction adapter, with checkpoints a redelivered job resumes from.

The prompt is rendered by the same template module the extraction engine uses; prompt tokens
are masked out of the loss, so the adapter learns only to answer.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from models.errors import InputError, ModelError
from models.prompt import format_answer, get_template
from models.schema import load_schema
from models.train_config import TrainConfig
from models.training_data import TrainingExample, iter_training_examples
from worker.hf_engine import nf4_config, resolve_device, resolve_precision
from worker.memory_plan import TrainingPlan, choose_plan, decoder_layers, probe_activations, set_checkpointed_layers

log = logging.getLogger(__name__)
ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "query_key_value", "qkv_proj", "W_pack")
CHECKPOINT = "checkpoint"
IGNORE = -100


@dataclass(frozen=True, slots=True)
class TrainResult:
    adapter_dir: Path
    steps: int
    loss: float
    seconds: float
    examples: int
    skipped: int
    resumed_from: int
    plan: TrainingPlan


Progress = Callable[[dict[str, Any]], None]


def encode_examples(
    examples: Sequence[TrainingExample], tokenizer: Any, config: TrainConfig
) -> tuple[list[tuple[list[int], list[int]]], int]:
    """(input ids, labels) per example that fits ``max_length``, and how many did not."""
    template, schema = get_template(config.prompt_version), load_schema(config.schema_path)
    add_special = not getattr(tokenizer, "chat_template", None)
    encoded, skipped = [], 0
    for example in examples:
        prompt = tokenizer(template.render(tokenizer, example.text, schema), add_special_tokens=add_special)["input_ids"]
        answer = tokenizer(format_answer(example.triplets), add_special_tokens=False)["input_ids"]
        answer = answer + [tokenizer.eos_token_id]
        if len(prompt) + len(answer) > config.max_length:
            skipped += 1
            continue
        encoded.append((prompt + answer, [IGNORE] * len(prompt) + answer))
    return encoded, skipped


def micro_batches(lengths: Sequence[int], size: int, seed: int, epoch: int) -> list[list[int]]:
    """Shuffled, then sorted by length inside windows of 64 batches: little padding, still random."""
    order = list(range(len(lengths)))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    window = size * 64
    grouped = []
    for start in range(0, len(order), window):
        grouped.extend(sorted(order[start : start + window], key=lambda i: lengths[i]))
    batches = [grouped[i : i + size] for i in range(0, len(grouped), size)]
    random.Random(seed + epoch).shuffle(batches)
    return batches


def collate(items: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in items)
    input_ids = [ids + [pad_id] * (width - len(ids)) for ids, _ in items]
    labels = [labels + [IGNORE] * (width - len(labels)) for _, labels in items]
    mask = [[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in items]
    return {"input_ids": torch.tensor(input_ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(mask)}


def load_for_training(config: TrainConfig, device: str, precision: str) -> tuple[Any, Any]:
    common = {"local_files_only": True}
    try:
        tokenizer = AutoTokenizer.from_pretrained(config.base_model, **common)
        kwargs: dict[str, Any] = {**common, "use_safetensors": True}
        if precision == "4bit":
            kwargs["quantization_config"] = nf4_config(device)
            kwargs["device_map"] = {"": device}
            # unquantised layers (norms, embeddings, output) in the compute dtype
            kwargs["dtype"] = torch.bfloat16 if device.startswith("cuda") else torch.float32
        else:
            kwargs["dtype"] = torch.bfloat16 if precision == "bf16" else torch.float32
        model = AutoModelForCausalLM.from_pretrained(config.base_model, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load model from {config.base_model}: {exc}") from exc
    if precision != "4bit":
        model.to(device)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, model


def target_modules(model: Any, config: TrainConfig) -> list[str] | str:
    if config.target_modules != "auto":
        return config.target_modules
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    found = [name for name in ATTENTION_PROJECTIONS if name in names]
    return found or "all-linear"


def train_adapter(
    config: TrainConfig, out_dir: Path, *, on_progress: Progress = lambda progress: None
) -> TrainResult:
    """Train, checkpointing every ``checkpoint_every`` steps into ``out_dir``; resume from a checkpoint there."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    torch.manual_seed(config.seed)
    tokenizer, model = load_for_training(config, device, precision)
    errors: list[InputError] = []
    examples = list(iter_training_examples(config.train_data, errors.append))
    for error in errors[:20]:
        log.warning("skipped %s", error)
    encoded, too_long = encode_examples(examples, tokenizer, config)
    if not encoded:
        raise InputError(str(config.train_data), "no usable training examples")
    model.config.use_cache = False
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=target_modules(model, config), task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    optimizer = _optimizer(model, config, device, precision)
    checkpoint = out_dir / CHECKPOINT
    state = json.loads((checkpoint / "state.json").read_text()) if (checkpoint / "state.json").is_file() else None
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else nullcontext()

    def forward_backward(items: Sequence[tuple[list[int], list[int]]], scale: float) -> float:
        batch = {k: v.to(model.device) for k, v in collate(items, tokenizer.pad_token_id).items()}
        with autocast:
            loss = answer_loss(model, batch) / scale
        loss.backward()
        return loss.item()

    # A resumed job keeps its plan: the plan fixes the data order.
    plan = TrainingPlan(**state["plan"]) if state else _plan(model, config, device, encoded, forward_backward)
    set_checkpointed_layers(model, plan.checkpointed_layers)
    log.info("training plan for %s: %s", config.name, plan)
    per_epoch = math.ceil(len(encoded) / plan.micro_batch_size)
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * per_epoch / plan.grad_accum))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / (config.warmup_steps + 1)) * max(0.0, 1 - step / total_steps)
    )
    step = 0
    if state:
        set_peft_model_state_dict(model, load_file(checkpoint / "adapter.safetensors"))
        optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", weights_only=True))
        scheduler.load_state_dict(torch.load(checkpoint / "scheduler.pt", weights_only=True))
        step = state["step"]
        log.info("resuming %s from step %d", config.name, step)
    resumed_from = step
    lengths = [len(ids) for ids, _ in encoded]
    epoch_batches: dict[int, list[list[int]]] = {}
    model.train()
    started, loss_value, samples = time.perf_counter(), float("nan"), 0
    while step < total_steps:
        accumulated = 0.0
        for micro in range(plan.grad_accum):
            index = step * plan.grad_accum + micro
            epoch, position = divmod(index, per_epoch)
            if epoch not in epoch_batches:
                epoch_batches = {epoch: micro_batches(lengths, plan.micro_batch_size, config.seed, epoch)}
            batch_ids = epoch_batches[epoch][position]
            accumulated += forward_backward([encoded[i] for i in batch_ids], plan.grad_accum)
            samples += len(batch_ids)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        loss_value = accumulated
        elapsed = time.perf_counter() - started
        rate = samples / elapsed
        on_progress({
            "step": step, "total_steps": total_steps, "loss": round(loss_value, 5), "samples_per_s": round(rate, 3),
            "eta_s": round((total_steps - step) * config.batch_size / rate, 1),
            "resumed_from": resumed_from, "micro_batch_size": plan.micro_batch_size, "grad_accum": plan.grad_accum,
            "checkpointed_layers": plan.checkpointed_layers,
        })
        if step % config.checkpoint_every == 0 and step < total_steps:
            _save_checkpoint(model, optimizer, scheduler, {"step": step, "plan": plan.as_dict()}, checkpoint)
    model.save_pretrained(out_dir)
    (out_dir / "train_config.json").write_text(config.model_dump_json(indent=2))
    shutil.rmtree(checkpoint, ignore_errors=True)
    return TrainResult(out_dir, step, loss_value, time.perf_counter() - started, len(encoded),
                       too_long + len(errors), resumed_from, plan)


def answer_loss(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over answer tokens, with logits computed only from the first answer onwards.

    The output layer's fp32 logits (vocabulary x tokens) are a large share of a step's memory;
    prompt tokens carry no loss, so their logits need not exist.
    """
    labels = batch["labels"]
    answer = (labels != IGNORE).any(dim=0).nonzero()
    first = max(int(answer[0]) - 1, 0) if len(answer) else labels.shape[1] - 1
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if _accepts_logits_to_keep(model):
        logits = model(**inputs, logits_to_keep=labels.shape[1] - first).logits
    else:  # remote modelling code: all positions
        logits = model(**inputs).logits[:, first:]
    targets = labels[:, first + 1 :]
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE
    )


def _accepts_logits_to_keep(model: Any) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def _plan(model: Any, config: TrainConfig, device: str, encoded: Sequence[tuple[list[int], list[int]]],
          forward_backward: Callable[[Sequence[tuple[list[int], list[int]]], float], float]) -> TrainingPlan:
    layers = len(decoder_layers(model))
    if not device.startswith("cuda"):  # host memory is not the budget worth planning for
        micro = config.micro_batch_size or config.batch_size
        checkpointed = layers if config.gradient_checkpointing == "all" else 0
        return TrainingPlan(micro, config.batch_size // micro, checkpointed, layers)
    longest = max(encoded, key=lambda item: len(item[0]))
    model.train()
    probe = probe_activations(model, lambda micro: forward_backward([longest] * micro, 1.0), torch.device(device))
    # optimizer state appears at the first step: fp32 gradients and two moments per trainable parameter
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    probe = dataclasses.replace(probe, resident=probe.resident + 12 * trainable)
    return choose_plan(probe, batch_size=config.batch_size, layers=layers,
                       budget_bytes=config.gpu_memory_budget_gib * 2**30,
                       micro_batch_size=config.micro_batch_size, checkpointing=config.gradient_checkpointing)


def _save_checkpoint(model: Any, optimizer: Any, scheduler: Any, position: dict[str, Any], checkpoint: Path) -> None:
    """Written beside the old one, then swapped in: a kill mid-write leaves the old one whole."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    staging = checkpoint.with_name(CHECKPOINT + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    state = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}
    save_file(state, staging / "adapter.safetensors")
    torch.save(optimizer.state_dict(), staging / "optimizer.pt")
    torch.save(scheduler.state_dict(), staging / "scheduler.pt")
    (staging / "state.json").write_text(json.dumps(position))
    old = checkpoint.with_name(CHECKPOINT + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if checkpoint.exists():
        checkpoint.rename(old)
    staging.rename(checkpoint)
    shutil.rmtree(old, ignore_errors=True)


def _optimizer(model: Any, config: TrainConfig, device: str, precision: str) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if precision == "4bit" and device.startswith("cuda"):
        import bitsandbytes as bnb

        # Paged 8-bit AdamW: the origin's QLoRA optimizer; its state spills to host memory under pressure.
        return bnb.optim.PagedAdamW8bit(params, lr=config.learning_rate)
    return torch.optim.AdamW(params, lr=config.learning_rate)
