"""LoRA / QLoRA training of an extraction adapter, with checkpoints a redelivered job resumes from.

The prompt is rendered by the same template module the extraction engine uses; prompt tokens
are masked out of the loss, so the adapter learns only to answer.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from models.errors import InputError
from models.prompt import PromptTemplate, format_answer, get_template
from models.schema import PredicateSchema, load_schema
from models.train_config import TrainConfig
from models.training_data import TrainingExample, iter_training_examples
from models.triplet import Triplet
from worker.checkpoints import CHECKPOINT, checkpoint_position, restore_checkpoint, save_checkpoint
from worker.loader import check_model_folder, load_model, resolve_device, resolve_precision
from worker.memory_plan import TrainingPlan, choose_plan, decoder_layers, probe_activations, set_checkpointed_layers

log = logging.getLogger(__name__)
ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "query_key_value", "qkv_proj", "W_pack")
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


Encoded = tuple[list[int], list[int]]  # (input ids, labels: IGNORE over the prompt)


def encode_pairs(pairs: Sequence[tuple[str, Sequence[Triplet]]], tokenizer: Any, template: PromptTemplate,
                 schema: PredicateSchema, *, max_length: int | None = None) -> tuple[list[Encoded], int]:
    """(input ids, labels) per (text, triplets) pair: the prompt extraction renders, then the answer and EOS.

    Pairs longer than ``max_length`` tokens are skipped; how many, second.
    """
    add_special = not getattr(tokenizer, "chat_template", None)
    prompts = tokenizer([template.render(tokenizer, text, schema) for text, _ in pairs],
                        add_special_tokens=add_special)["input_ids"] if pairs else []
    answers = tokenizer([format_answer(triplets) for _, triplets in pairs],
                        add_special_tokens=False)["input_ids"] if pairs else []
    encoded, skipped = [], 0
    for prompt, answer in zip(prompts, answers):
        answer = answer + [tokenizer.eos_token_id]
        if max_length is not None and len(prompt) + len(answer) > max_length:
            skipped += 1
            continue
        encoded.append((prompt + answer, [IGNORE] * len(prompt) + answer))
    return encoded, skipped


def encode_examples(examples: Sequence[TrainingExample], tokenizer: Any, config: TrainConfig) -> tuple[list[Encoded], int]:
    """A job's examples encoded with its prompt version and schema, cut at its ``max_length``."""
    return encode_pairs([(example.text, example.triplets) for example in examples], tokenizer,
                        get_template(config.prompt_version), load_schema(config.schema_path),
                        max_length=config.max_length)


def optimizer_step(model: Any, micro_batches: Sequence[Sequence[Encoded]], optimizer: torch.optim.Optimizer, *,
                   pad_id: int, autocast: Any = None, scheduler: Any = None, loss: Callable[..., Any] | None = None,
                   clip: float = 1.0) -> float:
    """One optimizer step: gradients accumulated over ``micro_batches``, clipped; the step's mean loss.

    The one training step of the project: adapters (``train_adapter``) and the dev kit's
    from-scratch models alike.
    """
    loss = loss or answer_loss
    total = 0.0
    for items in micro_batches:
        total += backward(model, items, pad_id=pad_id, autocast=autocast, loss=loss, scale=len(micro_batches))
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return total


def backward(model: Any, items: Sequence[Encoded], *, pad_id: int, autocast: Any = None,
             loss: Callable[..., Any] | None = None, scale: float = 1.0) -> float:
    """Forward and backward of one micro-batch, its loss divided by ``scale``; the loss."""
    batch = {k: v.to(model.device) for k, v in collate(items, pad_id).items()}
    with autocast or nullcontext():
        value = (loss or answer_loss)(model, batch) / scale
    value.backward()
    return value.item()


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


def load_for_training(config: TrainConfig, device: str, precision: str, *,
                      trust_remote_code: bool = False) -> tuple[Any, Any]:
    path = check_model_folder(config.base_model, "base_model")
    return load_model(path, device=device, precision=precision, trust_remote_code=trust_remote_code, training=True)


def target_modules(model: Any, config: TrainConfig) -> list[str] | str:
    if config.target_modules != "auto":
        return config.target_modules
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    found = [name for name in ATTENTION_PROJECTIONS if name in names]
    return found or "all-linear"


def train_adapter(
    config: TrainConfig, out_dir: Path, *, on_progress: Progress = lambda progress: None, trust_remote_code: bool = False
) -> TrainResult:
    """Train, checkpointing every ``checkpoint_every`` steps into ``out_dir``; resume from a checkpoint there."""
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    torch.manual_seed(config.seed)
    tokenizer, model, encoded, skipped = _prepare(config, device, precision, trust_remote_code)
    optimizer = _optimizer(model, config, device, precision)
    checkpoint = out_dir / CHECKPOINT
    position = checkpoint_position(checkpoint)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else nullcontext()
    pad_id = tokenizer.pad_token_id
    # A resumed job keeps its plan: the plan fixes the data order.
    plan = TrainingPlan(**position["plan"]) if position else _plan(
        model, config, device, encoded, lambda items, scale: backward(model, items, pad_id=pad_id,
                                                                      autocast=autocast, scale=scale))
    set_checkpointed_layers(model, plan.checkpointed_layers)
    log.info("training plan for %s: %s", config.name, plan)
    per_epoch = math.ceil(len(encoded) / plan.micro_batch_size)
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * per_epoch / plan.grad_accum))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / (config.warmup_steps + 1)) * max(0.0, 1 - step / total_steps)
    )
    step = resumed_from = position["step"] if position else 0
    if position:
        restore_checkpoint(model, optimizer, scheduler, checkpoint)
        log.info("resuming %s from step %d", config.name, step)
    order = _DataOrder(encoded, plan, config.seed)
    model.train()
    started, loss_value, samples = time.perf_counter(), float("nan"), 0
    while step < total_steps:
        groups = order.step(step)
        loss_value = optimizer_step(model, groups, optimizer, pad_id=pad_id, autocast=autocast, scheduler=scheduler)
        samples += sum(map(len, groups))
        step += 1
        rate = samples / (time.perf_counter() - started)
        on_progress({
            "step": step, "total_steps": total_steps, "loss": round(loss_value, 5), "samples_per_s": round(rate, 3),
            "eta_s": round((total_steps - step) * config.batch_size / rate, 1), "resumed_from": resumed_from,
            **{k: v for k, v in asdict(plan).items() if k in ("micro_batch_size", "grad_accum", "checkpointed_layers")},
        })
        if step % config.checkpoint_every == 0 and step < total_steps:
            save_checkpoint(model, optimizer, scheduler, {"step": step, "plan": asdict(plan)}, checkpoint)
    model.save_pretrained(out_dir)
    (out_dir / "train_config.json").write_text(config.model_dump_json(indent=2))
    shutil.rmtree(checkpoint, ignore_errors=True)
    return TrainResult(out_dir, step, loss_value, time.perf_counter() - started, len(encoded), skipped,
                       resumed_from, plan)


def _prepare(config: TrainConfig, device: str, precision: str,
             trust_remote_code: bool) -> tuple[Any, Any, list[Encoded], int]:
    """Tokenizer, the base model with fresh LoRA layers, the encoded examples, and how many were skipped."""
    from peft import LoraConfig, get_peft_model

    tokenizer, model = load_for_training(config, device, precision, trust_remote_code=trust_remote_code)
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
    return tokenizer, get_peft_model(model, lora), encoded, too_long + len(errors)


class _DataOrder:
    """Which examples each optimizer step takes: shuffled per epoch by the seed, so a resumed job repeats it."""

    def __init__(self, encoded: list[Encoded], plan: TrainingPlan, seed: int) -> None:
        self.encoded, self.plan, self.seed = encoded, plan, seed
        self.lengths = [len(ids) for ids, _ in encoded]
        self.per_epoch = math.ceil(len(encoded) / plan.micro_batch_size)
        self.epoch_batches: dict[int, list[list[int]]] = {}

    def step(self, step: int) -> list[list[Encoded]]:
        groups = []
        for micro in range(self.plan.grad_accum):
            epoch, position = divmod(step * self.plan.grad_accum + micro, self.per_epoch)
            if epoch not in self.epoch_batches:
                self.epoch_batches = {epoch: micro_batches(self.lengths, self.plan.micro_batch_size, self.seed, epoch)}
            groups.append([self.encoded[i] for i in self.epoch_batches[epoch][position]])
        return groups


def answer_loss(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over answer tokens, with logits computed only from the first answer onwards.

    The output layer's fp32 logits (vocabulary x tokens) are a large share of a step's memory;
    prompt tokens carry no loss, so their logits need not exist.
    """
    labels = batch["labels"]
    answer = (labels != IGNORE).any(dim=0).nonzero()
    first = max(int(answer[0]) - 1, 0) if len(answer) else labels.shape[1] - 1
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if accepts_logits_to_keep(model):
        logits = model(**inputs, logits_to_keep=labels.shape[1] - first).logits
    else:  # remote modelling code: all positions
        logits = model(**inputs).logits[:, first:]
    targets = labels[:, first + 1 :]
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE
    )


def accepts_logits_to_keep(model: Any) -> bool:
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


def _optimizer(model: Any, config: TrainConfig, device: str, precision: str) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if precision == "4bit" and device.startswith("cuda"):
        import bitsandbytes as bnb

        # Paged 8-bit AdamW: the origin's QLoRA optimizer; its state spills to host memory under pressure.
        return bnb.optim.PagedAdamW8bit(params, lr=config.learning_rate)
    return torch.optim.AdamW(params, lr=config.learning_rate)
