"""What the GPU benchmarks share: the model shapes, DuIE-style documents, a randomly initialised
model of a shape with its LoRA adapter, and the JSON report (device, library versions)."""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
from pathlib import Path
from typing import Any

import torch

from devkit.assets import load_demo_schema
from models.prompt import get_template

ROOT = Path(__file__).resolve().parent.parent
SHAPES: dict[str, dict[str, Any]] = {
    # ChatGLM3-6B: 6.24 B parameters, 2 KV heads, untied output layer.
    "chatglm3-6b": dict(hidden_size=4096, num_layers=28, num_heads=32, num_kv_heads=2, intermediate_size=13696,
                        vocab_size=65024, tie_word_embeddings=False),
    "tiny": dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128,
                 vocab_size=None, tie_word_embeddings=True),
}
NAMES = "张王李赵刘陈杨黄周吴徐孙胡朱高林何郭马罗梁宋郑谢韩唐冯于董萧程曹袁邓许傅沈曾彭吕苏卢蒋蔡贾丁魏薛叶阎"
WORKS = "故事 传奇 之歌 往事 人生 江湖 风云 岁月 家园 远方 青春 归途".split()
KINDS = "电视剧 电影 网络剧 纪录片".split()


def make_texts(count: int, chars: int, seed: int = 0) -> list[str]:
    """DuIE-style sentences about works and people, about ``chars`` characters per document."""
    rng = random.Random(seed)

    def person() -> str:
        return rng.choice(NAMES) + "".join(rng.choice(NAMES) for _ in range(rng.randint(1, 2)))

    texts = []
    for i in range(count):
        parts: list[str] = []
        while sum(map(len, parts)) < chars:
            work = f"{rng.choice(WORKS)}{rng.randint(1, 999)}"
            parts.append(f"《{work}》是{person()}执导，{person()}、{person()}主演的{rng.choice(KINDS)}，"
                         f"由{person()}编剧，于{rng.randint(1980, 2025)}年上映。")
        texts.append("".join(parts)[:chars] + f"（第{i}篇）")
    return texts


def build_model(folder: Path, shape: dict[str, Any], texts: list[str], device: str) -> tuple[Path, Path]:
    """Base model and LoRA adapter folders, both safetensors."""
    from peft import LoraConfig, get_peft_model
    from transformers import GlmForCausalLM

    from devkit.tiny import build_tokenizer, glm_config, pad_vocabulary, save_model

    schema = load_demo_schema()
    template = get_template("v1")
    tokenizer = build_tokenizer([template.plain(text, schema) for text in texts])
    if shape["vocab_size"]:
        pad_vocabulary(tokenizer, shape["vocab_size"])
    config = glm_config(tokenizer, hidden_size=shape["hidden_size"], num_layers=shape["num_layers"],
                        num_heads=shape["num_heads"], num_kv_heads=shape["num_kv_heads"],
                        intermediate_size=shape["intermediate_size"], tie_word_embeddings=shape["tie_word_embeddings"])
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build in the final dtype: a 6B model in fp32 is 25 GB
    try:
        torch.manual_seed(0)
        with torch.device(device):
            model = GlmForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(previous)
    base = save_model(model, tokenizer, folder / "base")
    lora = get_peft_model(model, LoraConfig(r=8, lora_alpha=32, lora_dropout=0.1, init_lora_weights="gaussian",
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    lora.save_pretrained(folder / "adapter")
    del model, lora
    free_memory()
    return base, folder / "adapter"


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def bench_parser(doc: str, out_name: str, *, variants: str) -> argparse.ArgumentParser:
    """Options every benchmark takes: the model's shape, the variants to run (comma-separated), and
    where its JSON report goes."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--shape", choices=SHAPES, default="chatglm3-6b")
    parser.add_argument("--variants", default=variants)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / out_name)
    return parser


def new_report(shape: str) -> tuple[str, dict[str, Any]]:
    """The device to run on, and a report that names it (the GPU, else the processor), the shape and
    the library versions, so that results from different machines can be told apart."""
    if torch.cuda.is_available():
        device, card = "cuda:0", torch.cuda.get_device_name(0)
    else:
        device, card = "cpu", platform.processor() or "cpu"
    return device, {"card": card, "shape": shape, "versions": versions()}


def versions() -> dict[str, str]:
    import peft
    import transformers

    found = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}
    try:
        import bitsandbytes

        found["bitsandbytes"] = bitsandbytes.__version__
    except ImportError:
        pass
    return found


def save(report: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False))
