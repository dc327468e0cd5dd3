"""The Hugging Face engine: a local causal LM (+ optional LoRA) with batched greedy decoding."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any, Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, GenerationConfig

from models.errors import ConfigError, DocumentTooLongError, ModelError
from models.extraction import Extraction, WindowOutput, assemble
from models.registry import check_adapter_folder, model_key
from models.prompt import PromptTemplate, get_template
from models.schema import PredicateSchema, load_schema
from models.settings import Settings
from models.windows import Window, make_windows
from worker import attention
from worker.static_decode import StaticDecoder, kv_shape, prompt_positions

log = logging.getLogger(__name__)


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


def nf4_config(device: str) -> BitsAndBytesConfig:
    """QLoRA's 4-bit NormalFloat with double quantisation; bf16 compute on CUDA."""
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16 if device.startswith("cuda") else torch.float32,
    )


def _check_model_folder(path: Path | None, variable: str) -> Path:
    if path is None:
        raise ConfigError(f"{variable}: not set (a local folder with config.json and *.safetensors)")
    if not path.is_dir():
        raise ConfigError(f"{variable}: {path} is not a folder")
    return path


def load_model(settings: Settings, device: str, precision: str) -> tuple[Any, Any]:
    """Tokenizer and model from local files only: safetensors, no remote code unless asked."""
    path = _check_model_folder(settings.base_model, "TRIPLETS_BASE_MODEL")
    common = {"local_files_only": True, "trust_remote_code": settings.trust_remote_code}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **common)
        kwargs: dict[str, Any] = {**common, "use_safetensors": True}
        if not settings.trust_remote_code:  # remote modelling code brings its own attention
            kwargs["attn_implementation"] = attention.NAME
        if precision == "4bit":
            kwargs["quantization_config"] = nf4_config(device)
            kwargs["device_map"] = {"": device}
        else:
            kwargs["dtype"] = torch.bfloat16 if precision == "bf16" else torch.float32
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load model from {path}: {exc}") from exc
    if settings.adapter is not None:
        try:
            adapter = check_adapter_folder(settings.adapter)
        except ConfigError as exc:
            raise ConfigError(f"TRIPLETS_ADAPTER: {exc}") from None
        model = attach_adapter(model, adapter, merge=precision != "4bit")
    if precision != "4bit":
        model.to(device)
    model.eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, model


def attach_adapter(model: Any, adapter: Path, *, merge: bool) -> Any:
    from peft import PeftModel

    try:
        model = PeftModel.from_pretrained(model, adapter, is_trainable=False)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load LoRA adapter from {adapter}: {exc}") from exc
    # Merged weights skip the LoRA matmuls on every step; a 4-bit base cannot be merged into.
    return model.merge_and_unload() if merge else model


# Measured on an H100 with a 6B GLM at batch 1024: peak memory over weights was 1.12x the
# bf16 KV cache (bench/extract_gpu.py); 1.2 leaves room for other shapes.
KV_OVERHEAD = 1.2
GPU_HEADROOM_GIB = 1.0
# On the CPU, cached tokens per batch: a long document's windows must not take all memory (at
# 6B shape, fp32, this is ~3.7 GB of KV cache).
CPU_BATCH_TOKENS = 65_536


def kv_token_budget(config: Any, weight_bytes: int, budget_gib: float) -> int:
    """How many cached tokens (all sequences of a batch together) fit the GPU budget."""
    layers, kv_heads, head_dim = kv_shape(config)
    kv_bytes_per_token = 2 * layers * kv_heads * head_dim * 2  # keys + values, bf16
    free = (budget_gib - GPU_HEADROOM_GIB) * 2**30 - weight_bytes
    if free <= 0:
        raise ConfigError(
            f"TRIPLETS_GPU_MEMORY_BUDGET_GIB: {budget_gib} GiB does not hold the model "
            f"({weight_bytes / 2**30:.1f} GiB of weights)"
        )
    return int(free / (kv_bytes_per_token * KV_OVERHEAD))


def batch_token_limit(model: Any, settings: Settings) -> int:
    if settings.max_batch_tokens:
        return settings.max_batch_tokens
    if next(model.parameters()).device.type != "cuda":
        return CPU_BATCH_TOKENS
    return kv_token_budget(model.config, model.get_memory_footprint(), settings.gpu_memory_budget_gib)


@dataclass
class _Prompt:
    """One generation unit: a window of one document (the whole document when it fits)."""

    doc: int
    window: Window
    ids: list[int]


class HuggingFaceEngine:
    def __init__(
        self,
        tokenizer: Any,
        model: Any,
        *,
        schema: PredicateSchema,
        template: PromptTemplate,
        model_id: str,
        adapter_id: str,
        settings: Settings,
    ) -> None:
        self.tokenizer = tokenizer
        self.model = model
        self.schema = schema
        self.template = template
        self.model_id = model_id
        self.adapter_id = adapter_id
        self.prompt_version = template.version
        self.settings = settings
        self.device = next(model.parameters()).device
        self.batch_tokens = batch_token_limit(model, settings)
        self._decoder: StaticDecoder | None = None
        self.generation_config = GenerationConfig(
            max_new_tokens=settings.max_new_tokens,
            min_new_tokens=settings.min_new_tokens or None,
            do_sample=False,
            num_beams=1,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=model.generation_config.eos_token_id or tokenizer.eos_token_id,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> HuggingFaceEngine:
        device = resolve_device(settings.device)
        precision = resolve_precision(settings.precision, device)
        tokenizer, model = load_model(settings, device, precision)
        log.info("loaded %s (%s, %s) adapter=%s", settings.base_model, device, precision, settings.adapter)
        return cls(
            tokenizer,
            model,
            schema=load_schema(settings.schema_path),
            template=get_template(settings.prompt_version),
            model_id=model_key(settings.base_model),
            adapter_id=str(settings.adapter or ""),
            settings=settings,
        )

    def use_adapter(self, adapter_id: str, path: Path) -> None:
        """Switch to a registered adapter for the next batch, loading it once, without a restart."""
        if adapter_id == self.adapter_id:
            return
        if self.settings.adapter is not None:
            raise ConfigError("TRIPLETS_ADAPTER fixes this worker's adapter; unset it to follow promotions")
        from peft import PeftModel

        check_adapter_folder(path)  # safetensors only: peft would fall back to a pickled .bin
        try:
            if not isinstance(self.model, PeftModel):
                self.model = PeftModel.from_pretrained(self.model, path, adapter_name=adapter_id, is_trainable=False)
            elif adapter_id not in self.model.peft_config:
                self.model.load_adapter(path, adapter_name=adapter_id, is_trainable=False)
            self.model.set_adapter(adapter_id)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load adapter {adapter_id} from {path}: {exc}") from exc
        self.model.eval()
        log.info("switched to adapter %s", adapter_id)
        self.adapter_id = adapter_id

    def extract(self, texts: Sequence[str], *, progress: Callable[[], None] = lambda: None) -> list[Extraction]:
        outputs: list[list[WindowOutput]] = [[] for _ in texts]
        prompts: list[_Prompt] = []
        for doc, text in enumerate(texts):
            try:
                prompts.extend(self._prompts_for(doc, text))
            except DocumentTooLongError as exc:
                outputs[doc].append(WindowOutput(0, text, raw="", error=str(exc)))
        for batch in self._batches(prompts):
            for prompt, output in self._generate_splitting_on_oom(batch):
                outputs[prompt.doc].append(output)
            progress()
        results = []
        for doc_outputs in outputs:
            doc_outputs.sort(key=lambda output: output.start)
            results.append(assemble(doc_outputs, self.schema, max_new_tokens=self.settings.max_new_tokens))
        return results

    def _prompts_for(self, doc: int, text: str) -> list[_Prompt]:
        """The document as one prompt, or as sentence windows when it is over the input budget."""
        limit = self.settings.max_input_tokens
        ids = self._encode(text)
        if len(ids) > self.settings.max_document_tokens:
            # Its windows would fill batches (and, on the CPU, memory) for its neighbours' time.
            raise DocumentTooLongError(
                f"document of {len(ids)} tokens exceeds TRIPLETS_MAX_DOCUMENT_TOKENS={self.settings.max_document_tokens}"
            )
        if len(ids) <= limit:
            return [_Prompt(doc, Window(0, text), ids)]
        encoded: dict[str, list[int]] = {}

        def fits(piece: str) -> bool:
            if piece not in encoded:
                encoded[piece] = self._encode(piece)
            return len(encoded[piece]) <= limit

        if not fits(text[:1]):
            raise DocumentTooLongError(
                f"the prompt template alone exceeds TRIPLETS_MAX_INPUT_TOKENS={limit} ({len(encoded[text[:1]])} tokens)"
            )
        windows = make_windows(text, fits)
        log.info("document of %d tokens read in %d windows", len(ids), len(windows))
        return [_Prompt(doc, window, encoded.get(window.text) or self._encode(window.text)) for window in windows]

    def _encode(self, text: str) -> list[int]:
        rendered = self.template.render(self.tokenizer, text, self.schema)
        # A chat template already carries its special tokens.
        add_special = not getattr(self.tokenizer, "chat_template", None)
        return self.tokenizer(rendered, add_special_tokens=add_special)["input_ids"]

    def _batches(self, prompts: list[_Prompt]) -> list[list[_Prompt]]:
        """Length-sorted batches bounded by count and by tokens the KV cache will hold.

        A batch's cost is its padded width (longest prompt plus the tokens to generate)
        times its size, so sorting by length keeps the padding, and the memory, low.
        """
        batches: list[list[_Prompt]] = []
        current: list[_Prompt] = []
        for prompt in sorted(prompts, key=lambda p: len(p.ids)):
            width = len(prompt.ids) + self.settings.max_new_tokens  # sorted: the newest is the longest
            if current and (
                len(current) >= self.settings.max_batch_size or width * (len(current) + 1) > self.batch_tokens
            ):
                batches.append(current)
                current = []
            current.append(prompt)
        if current:
            batches.append(current)
        return batches

    def _generate_splitting_on_oom(self, batch: list[_Prompt]) -> list[tuple[_Prompt, WindowOutput]]:
        try:
            return self._generate(batch)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if len(batch) == 1:
                (prompt,) = batch
                error = f"out of GPU memory on a single prompt of {len(prompt.ids)} tokens"
                return [(prompt, WindowOutput(prompt.window.start, prompt.window.text, raw="", error=error))]
            log.warning("CUDA out of memory on a batch of %d; splitting it", len(batch))
            middle = len(batch) // 2
            return self._generate_splitting_on_oom(batch[:middle]) + self._generate_splitting_on_oom(batch[middle:])

    def _prefill_in_chunks(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, chunk: int) -> Any:
        """The KV cache of every prompt but its last token, computed ``chunk`` prompts at a time.

        A whole large batch's prefill holds each layer's MLP activations for every prompt
        token at once, which sets the peak memory; decoding needs only the cache. Prefilling
        in chunks lets the decode batch, and so throughput, grow inside the same GPU budget.
        """
        from transformers import DynamicCache

        positions = prompt_positions(attention_mask)
        chunks = []
        for start in range(0, input_ids.shape[0], chunk):
            rows = slice(start, start + chunk)
            cache = DynamicCache(config=self.model.config)
            self.model(
                input_ids=input_ids[rows, :-1],
                attention_mask=attention_mask[rows, :-1],
                position_ids=positions[rows, :-1],
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            chunks.append(cache)
        merged = DynamicCache(config=self.model.config)
        for index in range(len(chunks[0].layers)):
            keys = torch.cat([c.layers[index].keys for c in chunks])
            values = torch.cat([c.layers[index].values for c in chunks])
            for c in chunks:  # free each chunk's layer as soon as it is merged
                c.layers[index].keys = c.layers[index].values = None
            merged.update(keys, values, index)
        return merged

    @property
    def decoder(self) -> StaticDecoder | None:
        """The in-place-cache decoder, or None where transformers' generate() runs."""
        if self.settings.decode_loop == "generate" or self.settings.trust_remote_code:
            return None
        if self._decoder is None or self._decoder.model is not self.model:  # built again after an adapter swap
            self._decoder = StaticDecoder(self.model)
        return self._decoder

    @torch.inference_mode()
    def _generate(self, batch: list[_Prompt]) -> list[tuple[_Prompt, WindowOutput]]:
        padded = self.tokenizer.pad({"input_ids": [p.ids for p in batch]}, return_tensors="pt")
        input_ids = padded["input_ids"].to(self.device)
        attention_mask = padded["attention_mask"].to(self.device)
        budget = self.settings.prefill_chunk_tokens
        chunk = max(1, budget // input_ids.shape[1]) if budget else 0
        eos = self.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos])
        if self.decoder is not None:
            new_tokens = self.decoder.generate(
                input_ids, attention_mask, max_new_tokens=self.settings.max_new_tokens,
                min_new_tokens=self.settings.min_new_tokens, eos_ids=sorted(eos_ids),
                pad_id=self.generation_config.pad_token_id, prefill_chunk=chunk,
            ).tolist()
        else:
            extra: dict[str, Any] = {}
            if chunk and len(batch) > chunk and input_ids.shape[1] > 1 and not self.settings.trust_remote_code:
                extra["past_key_values"] = self._prefill_in_chunks(input_ids, attention_mask, chunk)
            output = self.model.generate(
                input_ids=input_ids, attention_mask=attention_mask, generation_config=self.generation_config, **extra
            )
            new_tokens = output[:, input_ids.shape[1] :].tolist()
        results = []
        for prompt, tokens in zip(batch, new_tokens):
            truncated = len(tokens) >= self.settings.max_new_tokens and not eos_ids.intersection(tokens)
            raw = self.tokenizer.decode(tokens, skip_special_tokens=True)
            results.append((prompt, WindowOutput(prompt.window.start, prompt.window.text, raw, truncated)))
        return results
