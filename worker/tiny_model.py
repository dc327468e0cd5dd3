"""Tiny self-made models for tests and the demo: nothing is downloaded.

A character-level tokenizer plus a small GLM (``model_type`` "glm": unlike "qwen2",
transformers 5 keeps our ``tokenizer.json`` instead of swapping in a model-specific
tokenizer class). ``train_to_extract`` memorises a few examples so the normal
worker path (AutoTokenizer/AutoModelForCausalLM, left-padded batched greedy
``generate``) returns real, parseable triplet JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Iterable, Sequence

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import GenerationConfig, GlmConfig, GlmForCausalLM, PreTrainedTokenizerFast

from models.prompt import format_answer, get_template
from models.demo import load_demo_examples, load_demo_schema
from models.schema import PredicateSchema
from models.triplet import Triplet

PAD, UNK, EOS = "<pad>", "<unk>", "<eos>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
# The fixed pieces of format_answer's compact JSON, one token each, so answers are short.
JSON_FRAGMENTS = (
    '[{"subject":"',
    '","subject_type":"',
    '","predicate":"',
    '","object":"',
    '","object_type":"',
    '"},{"subject":"',
    '"}]',
    "[]",
)
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
MAX_POSITIONS = 4096


def build_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """One token per character (ASCII + every character of ``texts``) plus the JSON fragments."""
    vocab: dict[str, int] = {}
    for token in (PAD, UNK, EOS, *ROLE_TOKENS):
        vocab[token] = len(vocab)
    for text in ("\n\t" + "".join(chr(code) for code in range(32, 127)), *texts):
        for char in text:
            vocab.setdefault(char, len(vocab))
    for fragment in JSON_FRAGMENTS:
        vocab.setdefault(fragment, len(vocab))

    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    # No normalizer: NFKC would turn the full-width "，" of Chinese text into ",".
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (PAD, UNK, EOS, *ROLE_TOKENS)])
    # Added tokens are matched (leftmost-longest) before pre-tokenization, so fragments stay whole.
    backend.add_tokens([AddedToken(t, normalized=False) for t in JSON_FRAGMENTS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        unk_token=UNK,
        eos_token=EOS,
        additional_special_tokens=list(ROLE_TOKENS),
        clean_up_tokenization_spaces=False,
        model_max_length=MAX_POSITIONS,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "left"
    return tokenizer


def _glm_config(tokenizer: PreTrainedTokenizerFast, hidden_size: int, num_layers: int, num_heads: int,
                num_kv_heads: int, intermediate_size: int, *, tie_word_embeddings: bool = True) -> GlmConfig:
    return GlmConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=hidden_size // num_heads,  # GlmConfig defaults to 128 whatever the hidden size
        max_position_embeddings=MAX_POSITIONS,
        rms_norm_eps=1e-6,
        tie_word_embeddings=tie_word_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )


def _save(model: GlmForCausalLM, tokenizer: PreTrainedTokenizerFast, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def pad_vocabulary(tokenizer: PreTrainedTokenizerFast, size: int) -> PreTrainedTokenizerFast:
    """Fill the vocabulary with unused tokens up to ``size``, as real 60k+ vocabularies are."""
    missing = size - len(tokenizer)
    if missing > 0:
        tokenizer.add_tokens([AddedToken(f"<unused_{i}>", normalized=False) for i in range(missing)])
    return tokenizer


def build_random_model(out_dir: str | Path, tokenizer: PreTrainedTokenizerFast, *, hidden_size: int = 64,
                       num_layers: int = 2, num_heads: int = 4, num_kv_heads: int = 2,
                       intermediate_size: int = 128, seed: int = 0, tie_word_embeddings: bool = True,
                       device: str = "cpu", dtype: torch.dtype = torch.float32) -> Path:
    """An untrained GLM saved with ``tokenizer``: loadable and fast, its output is noise.

    With the shape of a real model (``bench/``) it is built on ``device`` in ``dtype``, since
    speed depends on shape, not weights.
    """
    torch.manual_seed(seed)
    config = _glm_config(tokenizer, hidden_size, num_layers, num_heads, num_kv_heads, intermediate_size,
                         tie_word_embeddings=tie_word_embeddings)
    with torch.device(device):
        model = GlmForCausalLM(config).to(dtype).eval()
    return _save(model, tokenizer, out_dir)


def greedy_generate(model, tokenizer, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
    """The worker's decoding: one left-padded batch, greedy, new tokens without special ones."""
    tokenizer.padding_side = "left"
    batch = tokenizer(list(prompts), return_tensors="pt", padding=True)
    with torch.no_grad():
        output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
    new_tokens = output[:, batch["input_ids"].shape[1]:]
    return tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


def _training_batch(prompt_ids: list[list[int]], answer_ids: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    length = max(len(p) + len(a) for p, a in zip(prompt_ids, answer_ids))
    input_ids, labels, mask = [], [], []
    for prompt, answer in zip(prompt_ids, answer_ids):
        padding = length - len(prompt) - len(answer)
        input_ids.append(prompt + answer + [pad_id] * padding)
        labels.append([-100] * len(prompt) + answer + [-100] * padding)
        mask.append([1] * (len(prompt) + len(answer)) + [0] * padding)
    return {"input_ids": torch.tensor(input_ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(mask)}


def train_to_extract(out_dir: str | Path, examples: Sequence[tuple[str, Sequence[Triplet]]], schema: PredicateSchema,
                     *, template_version: str = "v1", max_steps: int = 1500, seed: int = 0, hidden_size: int = 128,
                     num_layers: int = 2, num_heads: int = 4, num_kv_heads: int = 2, intermediate_size: int = 256,
                     lr: float = 3e-3, check_every: int = 25, num_threads: int = 1) -> dict:
    """Full fine-tune of a fresh GLM until greedy decoding reproduces every answer, then save it."""
    template = get_template(template_version)
    answers = [format_answer(triplets) for _, triplets in examples]
    tokenizer = build_tokenizer([template.plain(text, schema) for text, _ in examples] + answers)
    # The same rendering extraction uses, so the trained model sees its real prompt.
    prompts = [template.render(tokenizer, text, schema) for text, _ in examples]
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    answer_ids = [tokenizer(a, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for a in answers]
    if any(tokenizer.unk_token_id in ids for ids in prompt_ids + answer_ids):
        raise ValueError("tiny tokenizer: a prompt or answer has characters outside the vocabulary")
    batch = _training_batch(prompt_ids, answer_ids, tokenizer.pad_token_id)
    max_new_tokens = max(len(a) for a in answer_ids) + 4

    threads = torch.get_num_threads()
    # Thread count can change float reductions; a fixed count keeps a seed's run reproducible.
    torch.set_num_threads(num_threads)
    try:
        torch.manual_seed(seed)
        config = _glm_config(tokenizer, hidden_size, num_layers, num_heads, num_kv_heads, intermediate_size)
        model = GlmForCausalLM(config)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        started = time.perf_counter()
        steps, exact_match, loss = 0, 0.0, float("nan")
        while steps < max_steps:
            model.train()
            loss = model(**batch).loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            steps += 1
            if steps % check_every == 0 or steps == max_steps:
                model.eval()
                decoded = greedy_generate(model, tokenizer, prompts, max_new_tokens)
                exact_match = sum(d == a for d, a in zip(decoded, answers)) / len(answers)
                if exact_match == 1.0:
                    break
        seconds = time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)
    _save(model.eval(), tokenizer, out_dir)
    return {
        "steps": steps,
        "seconds": round(seconds, 2),
        "exact_match": exact_match,
        "loss": round(loss.item(), 5),
        "params": sum(p.numel() for p in model.parameters()),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m worker.tiny_model", description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("demo", "random"), help="demo: trained on the demo corpus; random: untrained")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.kind == "demo":
        stats = train_to_extract(args.out_dir, load_demo_examples(), load_demo_schema(), seed=args.seed)
    else:
        schema = load_demo_schema()
        texts = [get_template("v1").plain(text, schema) for text, _ in load_demo_examples()]
        path = build_random_model(args.out_dir, build_tokenizer(texts), seed=args.seed)
        stats = {"path": str(path)}
    print(json.dumps(stats, ensure_ascii=False))


if __name__ == "__main__":
    main()
