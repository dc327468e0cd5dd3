"""The one model loader: extraction, training and evaluation load base models and adapters here.

Device, precision (4-bit NF4, bf16, fp32), attention, remote code and LoRA adapters are
decided in this module only, so an engine and a trainer given the same folder and settings
run the same model. Local files only, safetensors only, remote code only when asked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from models.errors import ConfigError, ModelError
from models.adapter_files import check_adapter_folder
from worker import attention


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"TRIPLETS_DEVICE: {device} requested but CUDA is not available")
    return "cuda:0" if device == "cuda" else device


def resolve_precision(precision: str, device: str) -> str:
    if precision == "auto":
        return "4bit" if device.startswith("cuda") else "fp32"
    return precision


def compute_dtype(device: str) -> torch.dtype:
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def nf4_config(device: str) -> BitsAndBytesConfig:
    """QLoRA's 4-bit NormalFloat with double quantisation; bf16 compute on CUDA."""
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype(device),
    )


def check_model_folder(path: Path | None, variable: str) -> Path:
    """``path``, if it is a folder a model can be loaded from; else a ConfigError naming ``variable``."""
    if path is None:
        raise ConfigError(f"{variable}: not set (a local folder with config.json and *.safetensors)")
    if not path.is_dir():
        raise ConfigError(f"{variable}: {path} is not a folder")
    if not (path / "config.json").is_file():
        raise ConfigError(f"{variable}: {path} has no config.json")
    if not any(path.glob("*.safetensors")):
        pickled = sorted(p.name for p in path.glob("*.bin"))
        hint = f" ({', '.join(pickled)} are pickles and are never loaded)" if pickled else ""
        raise ConfigError(f"{variable}: {path} has no *.safetensors weights{hint}")
    return path


def load_model(path: Path, *, device: str, precision: str, trust_remote_code: bool = False,
               training: bool = False) -> tuple[Any, Any]:
    """Tokenizer and model from ``path`` on a resolved device and precision; eval mode unless ``training``."""
    common = {"local_files_only": True, "trust_remote_code": trust_remote_code}
    kwargs: dict[str, Any] = {**common, "use_safetensors": True}
    if not trust_remote_code:  # remote modelling code brings its own attention
        kwargs["attn_implementation"] = attention.NAME
    if precision == "4bit":
        kwargs["quantization_config"] = nf4_config(device)
        kwargs["device_map"] = {"": device}
        kwargs["dtype"] = compute_dtype(device)  # the layers left unquantised: norms, embeddings, output
    else:
        kwargs["dtype"] = torch.bfloat16 if precision == "bf16" else torch.float32
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **common)
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        if not trust_remote_code and "trust_remote_code" in str(exc):
            raise ModelError(f"cannot load model from {path}: it ships its own modelling code, which runs only "
                             "with TRIPLETS_TRUST_REMOTE_CODE=true (trust_remote_code) for weights you trust") from exc
        raise ModelError(f"cannot load model from {path}: {_first_line(exc)}") from exc
    if precision != "4bit":
        model.to(device)
    elif device == "cpu":
        _keep_packable_cpu_layers(model)
    model.train(training)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, model


def _keep_packable_cpu_layers(model: Any) -> None:
    """bitsandbytes' AVX512-BF16 CPU path repacks 4-bit weights in 32-row blocks of whole quantisation
    blocks and fails on other shapes (a layer 864 wide); such layers keep the generic 4-bit kernel."""
    for module in model.modules():
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        if state is None or not getattr(module, "support_avx512bf16_for_cpu", False):
            continue
        rows, columns = state.shape
        if rows % 32 or columns % state.blocksize:
            module.support_avx512bf16_for_cpu = False


def attach_adapter(model: Any, adapter: Path, *, merge: bool, adapter_name: str = "default",
                   dtype: torch.dtype | None = None) -> Any:
    """``model`` with the LoRA adapter at ``adapter`` (safetensors only), merged into it if ``merge``.

    Merged weights skip the LoRA matmuls on every step; a 4-bit base cannot be merged into.
    A model that already carries adapters gets this one beside them. With ``dtype`` (inference on a
    4-bit base), the adapters are cast to it: see ``cast_adapters``.
    """
    from peft import PeftModel

    check_adapter_folder(adapter)  # peft would fall back to a pickled adapter_model.bin
    try:
        if isinstance(model, PeftModel):
            model.load_adapter(adapter, adapter_name=adapter_name, is_trainable=False)
        else:
            model = PeftModel.from_pretrained(model, adapter, adapter_name=adapter_name, is_trainable=False)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load adapter from {adapter}: {_first_line(exc)}") from exc
    if merge:
        return model.merge_and_unload()
    if dtype is not None:
        cast_adapters(model, dtype)
    return model


def cast_adapters(model: Any, dtype: torch.dtype) -> None:
    """Every LoRA weight of ``model`` in ``dtype``, for inference.

    peft keeps adapters in fp32, and on a bf16 base it casts each projection's input to fp32 and
    the update back: two small fp32 GEMMs and two casts per projection and step. In bf16 the update
    is rounded as the base's own output is, and a 6B GLM in 4-bit decodes 97.0 instead of 89.1
    docs/s of 128-token answers on an H200 (docs/benchmarks.md, run F).
    """
    for name, parameter in model.named_parameters():
        if "lora_" in name and parameter.dtype != dtype:
            parameter.data = parameter.data.to(dtype)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
