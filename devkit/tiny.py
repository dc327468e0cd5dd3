"""Tiny self-made models for tests, benchmarks and the demo: nothing is downloaded.

One character-level tokenizer (``devkit.tokenizer``) and tiny models of three architectures
on it: GLM, Qwen2 and Llama, each saved in safetensors with its tokenizer so that the worker's
loading path (AutoTokenizer / AutoModelForCausalLM) gets both back unchanged. A Qwen2 model
takes the tokenizer in Qwen2's byte-level form (see ``devkit.tokenizer.tokenizer_for``).

``train_to_extract`` memorises a few examples, with the trainer's own encoder and optimizer
step, until greedy decoding returns their exact triplet JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM, AutoTokenizer, GenerationConfig, GlmConfig, LlamaConfig, PretrainedConfig, Qwen2Config
)

from devkit.assets import load_demo_examples, load_demo_schema
from devkit.tokenizer import MAX_POSITIONS, build_tokenizer, is_byte_level, pad_vocabulary, tokenizer_for
from models.prompt import format_answer, get_template
from models.schema import PredicateSchema
from models.triplet import Triplet
from worker.trainer import IGNORE, encode_pairs, optimizer_step

__all__ = [
    "ARCHITECTURES", "build_random_model", "build_tokenizer", "glm_config", "greedy_generate", "llama_config",
    "model_config", "pad_vocabulary", "qwen2_config", "save_model", "tokenizer_for", "train_to_extract",
]
# Round-tripped through a saved folder: a tokenizer transformers rebuilds differently fails here.
PROBE = "《娘家的故事第二部》是张玲执导，林在培主演的电视剧。\n\t ASCII {\"a\": [1, 2.5]} 2024年 Ünïcödé"


def _shape(tokenizer: Any, hidden_size: int, num_layers: int, num_heads: int, num_kv_heads: int,
           intermediate_size: int, tie_word_embeddings: bool) -> dict[str, Any]:
    return {
        "vocab_size": len(tokenizer), "hidden_size": hidden_size, "intermediate_size": intermediate_size,
        "num_hidden_layers": num_layers, "num_attention_heads": num_heads, "num_key_value_heads": num_kv_heads,
        "max_position_embeddings": MAX_POSITIONS, "rms_norm_eps": 1e-6, "tie_word_embeddings": tie_word_embeddings,
        "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id, "bos_token_id": None,
    }


def glm_config(tokenizer: Any, *, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4,
               num_kv_heads: int = 2, intermediate_size: int = 128, tie_word_embeddings: bool = True) -> GlmConfig:
    """A GLM (ChatGLM's architecture in transformers) sized for ``tokenizer``'s vocabulary."""
    shape = _shape(tokenizer, hidden_size, num_layers, num_heads, num_kv_heads, intermediate_size, tie_word_embeddings)
    # GlmConfig's head_dim defaults to 128 whatever the hidden size.
    return GlmConfig(**shape, head_dim=hidden_size // num_heads)


def qwen2_config(tokenizer: Any, *, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4,
                 num_kv_heads: int = 2, intermediate_size: int = 128, tie_word_embeddings: bool = True) -> Qwen2Config:
    """A Qwen2 (Qwen2 / Qwen2.5) for a tokenizer in byte-level form (``tokenizer_for("qwen2", ...)``)."""
    if not is_byte_level(tokenizer):
        raise ValueError('qwen2_config: the tokenizer must be in byte-level form: tokenizer_for("qwen2", tokenizer)')
    shape = _shape(tokenizer, hidden_size, num_layers, num_heads, num_kv_heads, intermediate_size, tie_word_embeddings)
    return Qwen2Config(**shape, use_sliding_window=False)


def llama_config(tokenizer: Any, *, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4,
                 num_kv_heads: int = 2, intermediate_size: int = 128, tie_word_embeddings: bool = True) -> LlamaConfig:
    """A Llama (Llama 2 / 3 and their many derivatives) sized for ``tokenizer``'s vocabulary."""
    shape = _shape(tokenizer, hidden_size, num_layers, num_heads, num_kv_heads, intermediate_size, tie_word_embeddings)
    return LlamaConfig(**shape, head_dim=hidden_size // num_heads)


CONFIGS: dict[str, Callable[..., PretrainedConfig]] = {"glm": glm_config, "qwen2": qwen2_config, "llama": llama_config}
ARCHITECTURES = tuple(CONFIGS)


def model_config(architecture: str, tokenizer: Any, **shape: Any) -> PretrainedConfig:
    """``glm_config``, ``qwen2_config`` or ``llama_config`` by name."""
    if architecture not in CONFIGS:
        raise ValueError(f"architecture {architecture!r}: expected one of {', '.join(ARCHITECTURES)}")
    return CONFIGS[architecture](tokenizer, **shape)


def save_model(model: Any, tokenizer: Any, out_dir: str | Path) -> Path:
    """``model`` (safetensors) and ``tokenizer`` in ``out_dir``, checked to load back unchanged."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    # Named explicitly: without it AutoTokenizer may pick the model type's own class, which
    # rebuilds a pipeline of its own (transformers 5.0 loads a Llama folder as CodeLlamaTokenizer).
    config_path = out / "tokenizer_config.json"
    tokenizer_config = json.loads(config_path.read_text(encoding="utf-8"))
    tokenizer_config["tokenizer_class"] = type(tokenizer).__name__
    config_path.write_text(json.dumps(tokenizer_config, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    _check_reloads(out, tokenizer)
    return out


def _check_reloads(out: Path, tokenizer: Any) -> None:
    loaded = AutoTokenizer.from_pretrained(out, local_files_only=True)
    expected = tokenizer(PROBE)["input_ids"]
    if loaded.get_vocab() != tokenizer.get_vocab() or loaded(PROBE)["input_ids"] != expected:
        model_type = json.loads((out / "config.json").read_text(encoding="utf-8"))["model_type"]
        raise ValueError(f"{out}: transformers loads this {model_type} folder's tokenizer as "
                         f"{type(loaded).__name__}, which tokenizes differently; "
                         f"build the model on tokenizer_for({model_type!r}, tokenizer)")
    pickles = [path.name for path in out.iterdir() if path.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]
    if pickles:
        raise ValueError(f"{out}: pickled weights written: {', '.join(pickles)}")


def build_random_model(out_dir: str | Path, tokenizer: Any, *, architecture: str = "glm", hidden_size: int = 64,
                       num_layers: int = 2, num_heads: int = 4, num_kv_heads: int = 2, intermediate_size: int = 128,
                       seed: int = 0, tie_word_embeddings: bool = True, device: str = "cpu",
                       dtype: torch.dtype = torch.float32) -> Path:
    """An untrained model saved with ``tokenizer`` (in the architecture's form): loadable and fast, its output noise.

    With the shape of a real model (``bench/``) it is built on ``device`` in ``dtype``, since
    speed depends on shape, not weights.
    """
    tokenizer = tokenizer_for(architecture, tokenizer)
    config = model_config(architecture, tokenizer, hidden_size=hidden_size, num_layers=num_layers,
                          num_heads=num_heads, num_kv_heads=num_kv_heads, intermediate_size=intermediate_size,
                          tie_word_embeddings=tie_word_embeddings)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config).to(dtype).eval()
    return save_model(model, tokenizer, out_dir)


def greedy_generate(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
    """The worker's decoding: one left-padded batch, greedy, new tokens without special ones."""
    tokenizer.padding_side = "left"
    batch = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
    new_tokens = output[:, batch["input_ids"].shape[1]:]
    return tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


@contextmanager
def _fixed_threads(count: int) -> Iterator[None]:
    # Thread count can change float reductions; a fixed count keeps a seed's run reproducible.
    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def train_to_extract(out_dir: str | Path, examples: Sequence[tuple[str, Sequence[Triplet]]], schema: PredicateSchema,
                     *, architecture: str = "glm", template_version: str = "v1", max_steps: int = 1500, seed: int = 0,
                     hidden_size: int = 128, num_layers: int = 2, num_heads: int = 4, num_kv_heads: int = 2,
                     intermediate_size: int = 256, lr: float = 3e-3, check_every: int = 25,
                     num_threads: int = 1) -> dict:
    """Train a fresh model on ``examples`` (all in one batch) until greedy decoding reproduces every answer; save it."""
    template = get_template(template_version)
    answers = [format_answer(triplets) for _, triplets in examples]
    tokenizer = tokenizer_for(architecture,
                              build_tokenizer([template.plain(text, schema) for text, _ in examples] + answers))
    # The encoding training uses everywhere: the prompt extraction renders, the answer, EOS.
    encoded, _ = encode_pairs(examples, tokenizer, template, schema)
    if any(tokenizer.unk_token_id in ids for ids, _ in encoded):
        raise ValueError("tiny tokenizer: a prompt or answer has characters outside the vocabulary")
    prompts = [template.render(tokenizer, text, schema) for text, _ in examples]
    max_new_tokens = max(sum(label != IGNORE for label in labels) for _, labels in encoded) + 4
    with _fixed_threads(num_threads):
        torch.manual_seed(seed)
        config = model_config(architecture, tokenizer, hidden_size=hidden_size, num_layers=num_layers,
                              num_heads=num_heads, num_kv_heads=num_kv_heads, intermediate_size=intermediate_size)
        model = AutoModelForCausalLM.from_config(config)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        started = time.perf_counter()
        steps, exact_match, loss = 0, 0.0, float("nan")
        while steps < max_steps:
            model.train()
            loss = optimizer_step(model, [encoded], optimizer, pad_id=tokenizer.pad_token_id)
            steps += 1
            if steps % check_every == 0 or steps == max_steps:
                model.eval()
                decoded = greedy_generate(model, tokenizer, prompts, max_new_tokens)
                exact_match = sum(d == a for d, a in zip(decoded, answers)) / len(answers)
                if exact_match == 1.0:
                    break
        seconds = time.perf_counter() - started
    save_model(model.eval(), tokenizer, out_dir)
    return {"steps": steps, "seconds": round(seconds, 2), "exact_match": exact_match, "loss": round(loss, 5),
            "params": sum(p.numel() for p in model.parameters()), "architecture": architecture}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devkit.tiny", description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("demo", "random"), help="demo: trained on the demo corpus; random: untrained")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--architecture", choices=ARCHITECTURES, default="glm")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    schema = load_demo_schema()
    if args.kind == "demo":
        stats = train_to_extract(args.out_dir, load_demo_examples(), schema, architecture=args.architecture,
                                 seed=args.seed)
    else:
        texts = [get_template("v1").plain(text, schema) for text, _ in load_demo_examples()]
        path = build_random_model(args.out_dir, build_tokenizer(texts), architecture=args.architecture, seed=args.seed)
        stats = {"path": str(path)}
    print(json.dumps(stats, ensure_ascii=False))


if __name__ == "__main__":
    main()
