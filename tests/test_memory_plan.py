"""Memory planning (micro-batch, checkpointed layers) and the answer-only loss, on the CPU."""

from __future__ import annotations

import inspect
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from worker.memory_plan import (  # noqa: E402
    ALLOCATOR_SLACK,
    ActivationProbe,
    TrainingPlan,
    choose_plan,
    decoder_layers,
    set_checkpointed_layers,
)
from worker.trainer import IGNORE, accepts_logits_to_keep, answer_loss, collate  # noqa: E402

GIB = 2**30
LAYERS = 28
BATCH = 8
PROBE = ActivationProbe(resident=4 * GIB, all_checkpointed=int(0.3 * GIB), none_checkpointed=int(2.5 * GIB))


def plan(budget_gib: float, probe: ActivationProbe = PROBE, *, micro: int | None = None,
         checkpointing: str = "auto") -> TrainingPlan:
    return choose_plan(probe, batch_size=BATCH, layers=LAYERS, budget_bytes=budget_gib * GIB,
                       micro_batch_size=micro, checkpointing=checkpointing)


def need(micro: int, count: int, probe: ActivationProbe = PROBE) -> float:
    """Activation bytes by hand: micro x (checkpointed floor + the uncheckpointed layers' share)."""
    per_layer = (probe.none_checkpointed - probe.all_checkpointed) / LAYERS
    return micro * (probe.all_checkpointed + (LAYERS - count) * per_layer)


def test_a_generous_budget_takes_the_whole_batch_without_checkpointing() -> None:
    chosen = plan(80)
    assert (chosen.micro_batch_size, chosen.grad_accum, chosen.checkpointed_layers, chosen.layers) == (8, 1, 0, 28)
    assert chosen.estimated_peak_gib == pytest.approx(4 + 8 * 2.5, abs=0.01)
    assert asdict(chosen)["micro_batch_size"] == 8


def test_a_tight_budget_checkpoints_the_fewest_layers_that_fit() -> None:
    budget = 19.6  # usable: 19.6 x 0.92 - 4 = 14.03 GiB
    usable = budget * GIB * ALLOCATOR_SLACK - PROBE.resident
    chosen = plan(budget)
    # micro 8 needs 10 checkpointed layers (13.7 GiB; 9 would need 14.3); micro 4 would fit with none,
    # but a smaller micro-batch loses more than recomputation costs (measured, see worker/memory_plan.py)
    assert (chosen.micro_batch_size, chosen.grad_accum, chosen.checkpointed_layers) == (8, 1, 10)
    assert need(8, 10) <= usable < need(8, 9)
    assert need(4, 0) <= usable
    assert chosen.estimated_peak_gib is not None
    assert chosen.estimated_peak_gib <= budget * ALLOCATOR_SLACK
    assert chosen.estimated_peak_gib == pytest.approx((PROBE.resident + need(8, 10)) / GIB, abs=0.005)


def test_the_micro_batch_shrinks_only_when_it_does_not_fit_fully_checkpointed() -> None:
    usable = 2 * PROBE.all_checkpointed + 0.5 * (PROBE.none_checkpointed - PROBE.all_checkpointed) / LAYERS
    chosen = plan((PROBE.resident + usable) / ALLOCATOR_SLACK / GIB)
    # micro 4 does not fit even with every layer checkpointed; micro 2 fits only with all of them
    assert need(4, LAYERS) > usable >= need(2, LAYERS) and need(2, LAYERS - 1) > usable
    assert (chosen.micro_batch_size, chosen.grad_accum, chosen.checkpointed_layers) == (2, 4, LAYERS)


def test_a_given_micro_batch_is_kept() -> None:
    chosen = plan(80, micro=2)
    assert (chosen.micro_batch_size, chosen.grad_accum, chosen.checkpointed_layers) == (2, BATCH // 2, 0)
    # also when the budget would have suited a larger micro-batch only with checkpointing
    tight = plan(19.6, micro=2)
    assert (tight.micro_batch_size, tight.grad_accum) == (2, 4)


def test_checkpointing_all_or_none_is_obeyed() -> None:
    assert plan(80, checkpointing="all").checkpointed_layers == LAYERS
    assert plan(80, checkpointing="none").checkpointed_layers == 0
    # "none" where the full micro-batch only fits checkpointed: a smaller micro-batch instead
    none = plan(19.6, checkpointing="none")
    assert (none.micro_batch_size, none.grad_accum, none.checkpointed_layers) == (4, 2, 0)
    every = plan(19.6, checkpointing="all")
    assert (every.micro_batch_size, every.checkpointed_layers) == (8, LAYERS)


def test_a_budget_below_the_resident_model_falls_back_to_the_smallest_plan() -> None:
    chosen = plan(3)
    assert chosen == TrainingPlan(1, BATCH, LAYERS, LAYERS, None)
    given = plan(3, micro=2)
    assert given == TrainingPlan(2, BATCH // 2, LAYERS, LAYERS, None)
    assert plan(3, checkpointing="none").checkpointed_layers == 0


def test_a_probe_that_ran_out_of_memory_unchecked_still_plans_all_checkpointed() -> None:
    probe = ActivationProbe(resident=4 * GIB, all_checkpointed=int(0.3 * GIB), none_checkpointed=float("inf"))  # type: ignore[arg-type]
    chosen = plan(80, probe)
    assert (chosen.micro_batch_size, chosen.grad_accum, chosen.checkpointed_layers) == (8, 1, LAYERS)
    assert chosen.estimated_peak_gib is not None and math.isfinite(chosen.estimated_peak_gib)
    assert chosen.estimated_peak_gib == pytest.approx(4 + 8 * 0.3, abs=0.01)
    assert not any(isinstance(v, float) and math.isnan(v) for v in asdict(chosen).values())
    small = plan(5.1, probe)  # usable 0.69 GiB: two samples checkpointed, not four
    assert (small.micro_batch_size, small.checkpointed_layers) == (2, LAYERS)


def load_tiny(path: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)


def gradients(model: Any, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    model(input_ids=input_ids, labels=input_ids).loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def saved_tensor_count(model: Any, input_ids: torch.Tensor) -> int:
    """Tensors autograd keeps from the forward pass outside any checkpointed region."""
    count = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal count
        count += 1
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(input_ids=input_ids, labels=input_ids).loss.backward()
    model.zero_grad(set_to_none=True)
    return count


def test_checkpointing_the_first_layer_keeps_gradients_and_saves_activations(demo_model) -> None:
    model = load_tiny(demo_model[0])
    layers = decoder_layers(model)
    assert layers is model.model.layers and len(layers) == 2
    assert model.config.attention_dropout == 0.0
    model.train()
    input_ids = torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))

    plain = gradients(model, input_ids)
    plain_saved = saved_tensor_count(model, input_ids)
    set_checkpointed_layers(model, 2)
    set_checkpointed_layers(model, 1)  # each call resets the others
    assert ["forward" in layer.__dict__ for layer in layers] == [True, False]
    assert layers[0].forward.func is torch.utils.checkpoint.checkpoint
    assert layers[0].forward.keywords == {"use_reentrant": False}
    checked = gradients(model, input_ids)
    one_saved = saved_tensor_count(model, input_ids)
    set_checkpointed_layers(model, 2)
    two_saved = saved_tensor_count(model, input_ids)

    assert plain.keys() == checked.keys() and plain
    for name in plain:
        assert torch.allclose(plain[name], checked[name], atol=1e-6), name
    assert two_saved < one_saved < plain_saved

    set_checkpointed_layers(model, 0)
    assert not any("forward" in layer.__dict__ for layer in layers)
    assert saved_tensor_count(model, input_ids) == plain_saved


def answer_batch(pad_id: int, vocab: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    items = []
    for length, prompt in ((11, 5), (7, 3)):
        ids = torch.randint(0, vocab, (length,), generator=generator).tolist()
        items.append((ids, [IGNORE] * prompt + ids[prompt:]))
    return collate(items, pad_id)


def test_answer_loss_matches_the_full_shifted_loss(demo_model) -> None:
    model = load_tiny(demo_model[0]).eval()
    batch = answer_batch(model.config.pad_token_id or 0, model.config.vocab_size)
    assert batch["labels"].shape == (2, 11) and batch["attention_mask"][1].sum() == 7
    assert accepts_logits_to_keep(model)
    with torch.no_grad():
        expected = model(**batch).loss
        got = answer_loss(model, batch)
    assert torch.isfinite(got)
    assert torch.allclose(got, expected, atol=1e-5), (got, expected)


def test_answer_loss_without_logits_to_keep_slices_all_positions(demo_model) -> None:
    model = load_tiny(demo_model[0]).eval()

    class Remote(torch.nn.Module):
        """A model whose forward knows nothing of logits_to_keep, as remote modelling code may."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask)

    remote = Remote()
    assert not accepts_logits_to_keep(remote)
    batch = answer_batch(model.config.pad_token_id or 0, model.config.vocab_size)
    with torch.no_grad():
        assert torch.allclose(answer_loss(remote, batch), model(**batch).loss, atol=1e-5)


def test_answer_loss_on_a_peft_model(demo_model) -> None:
    from peft import LoraConfig, get_peft_model

    base = load_tiny(demo_model[0])
    config = LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                        task_type="CAUSAL_LM", lora_dropout=0.0)
    model = get_peft_model(base, config)
    with torch.no_grad():  # LoRA B starts at zero: make the adapter change the output
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05, generator=torch.Generator().manual_seed(2))
    model.eval()
    assert "logits_to_keep" not in inspect.signature(model.forward).parameters
    assert accepts_logits_to_keep(model)
    batch = answer_batch(base.config.pad_token_id or 0, base.config.vocab_size)
    loss = answer_loss(model, batch)
    with torch.no_grad():
        expected = model(**batch).loss
    assert torch.allclose(loss.detach(), expected, atol=1e-5), (loss, expected)
    loss.backward()
    lora_grads = [p.grad for name, p in model.named_parameters() if "lora_" in name]
    assert lora_grads and all(g is not None for g in lora_grads)
    assert any(g.abs().sum() > 0 for g in lora_grads)
