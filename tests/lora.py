"""LoRA adapters for tests, saved as PEFT saves them, with a B that is zero or not on purpose."""

from __future__ import annotations

from pathlib import Path

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")


def save_lora(model_dir: Path, out: Path, *, b_std: float, targets: tuple[str, ...] = ("q_proj", "v_proj")) -> Path:
    """A LoRA adapter of the model at ``model_dir``.

    PEFT initialises B to zero, so a fresh adapter changes nothing; ``b_std`` > 0 draws B from a
    normal distribution (seed 0), so the adapter changes the model's answers and a test can see
    whether it was applied.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, use_safetensors=True)
    lora = get_peft_model(base, LoraConfig(r=8, lora_alpha=32, target_modules=list(targets)))
    torch.manual_seed(0)
    for name, parameter in lora.named_parameters():
        if "lora_B" in name and b_std:
            torch.nn.init.normal_(parameter, std=b_std)
    lora.save_pretrained(out)
    return out
