"""The Hugging Face engine: a local causal LM (+ optional LoRA) with batched greedy decoding.

It puts together the pieces, one concept each: the loader (worker.loader), prompts and
windows (worker.prompting), batch planning (worker.batching), decoding (worker.decoding,
worker.static_decode) and output checks (models.extraction).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import torch

from models.errors import ConfigError, DocumentTooLongError
from models.extraction import Extraction, WindowOutput, assemble
from models.prompt import PromptTemplate, get_template
from models.adapter_files import check_adapter_folder, model_key
from models.schema import PredicateSchema, load_schema
from models.settings import Settings
from worker.batching import Prompt, batch_token_limit, plan_batches
from worker.continuous_decode import ContinuousDecoder, Job, ListSource, cache_length
from worker.decoding import DecodeRequest, Decoder, GenerateDecoder
from worker.engine import EngineConfig, Finished
from worker.loader import (attach_adapter, check_model_folder, compute_dtype, load_model, resolve_device,
                           resolve_precision)
from worker.prompting import PromptBuilder
from worker.static_decode import CachedDecoder, StaticDecoder

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Prepared:
    """Documents made ready to decode: their prompts, and per document the outputs known already."""

    prompts: list[Prompt]
    outputs: list[list[WindowOutput]]


class HuggingFaceEngine:
    def __init__(self, tokenizer: Any, model: Any, *, config: EngineConfig, schema: PredicateSchema,
                 template: PromptTemplate, model_id: str, adapter_id: str = "", fixed_adapter: bool = False,
                 remote_code: bool = False) -> None:
        self.tokenizer = tokenizer
        self.model = model
        self.config = config
        self.schema = schema
        self.model_id = model_id
        self.adapter_id = adapter_id
        self.prompt_version = template.version
        self.fixed_adapter = fixed_adapter
        self.remote_code = remote_code
        self.prompts = PromptBuilder(tokenizer, template, schema, max_input_tokens=config.max_input_tokens,
                                     max_document_tokens=config.max_document_tokens)
        self.device = next(model.parameters()).device
        self.batch_tokens = batch_token_limit(model, configured=config.max_batch_tokens,
                                              budget_gib=config.gpu_memory_budget_gib)
        eos = model.generation_config.eos_token_id or tokenizer.eos_token_id
        self.eos_ids = sorted(set(eos if isinstance(eos, list) else [eos]))
        self._decoders: dict[str, Decoder] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> HuggingFaceEngine:
        device = resolve_device(settings.device)
        if device.startswith("cuda"):  # streams, graphs and cuBLAS handles are made on the current device
            torch.cuda.set_device(device)
        precision = resolve_precision(settings.precision, device)
        path = check_model_folder(settings.base_model, "TRIPLETS_BASE_MODEL")
        tokenizer, model = load_model(path, device=device, precision=precision,
                                      trust_remote_code=settings.trust_remote_code)
        if settings.adapter is not None:
            try:
                adapter = check_adapter_folder(settings.adapter)
            except ConfigError as exc:
                raise ConfigError(f"TRIPLETS_ADAPTER: {exc}") from None
            model = attach_adapter(model, adapter, merge=precision != "4bit", dtype=compute_dtype(device))
        log.info("loaded %s (%s, %s) adapter=%s", path, device, precision, settings.adapter)
        return cls(tokenizer, model, config=EngineConfig.from_settings(settings), schema=load_schema(settings.schema_path),
                   template=get_template(settings.prompt_version), model_id=model_key(path),
                   adapter_id=str(settings.adapter or ""), fixed_adapter=settings.adapter is not None,
                   remote_code=settings.trust_remote_code)

    def with_config(self, **changes: Any) -> HuggingFaceEngine:
        """This engine's loaded model under another configuration (benchmarks, evaluation)."""
        engine = HuggingFaceEngine(self.tokenizer, self.model, config=replace(self.config, **changes),
                                   schema=self.schema, template=self.prompts.template, model_id=self.model_id,
                                   adapter_id=self.adapter_id, fixed_adapter=self.fixed_adapter,
                                   remote_code=self.remote_code)
        engine._decoders = self._decoders  # their caches stay warm
        return engine

    def use_adapter(self, adapter_id: str, path: Path) -> None:
        """Switch to a registered adapter for the next batch, loading it once, without a restart."""
        if adapter_id == self.adapter_id:
            return
        if self.fixed_adapter:
            raise ConfigError("TRIPLETS_ADAPTER fixes this worker's adapter; unset it to follow promotions")
        if adapter_id not in getattr(self.model, "peft_config", {}):
            self.model = attach_adapter(self.model, path, merge=False, adapter_name=adapter_id,
                                        dtype=compute_dtype(str(self.device)))
        self.model.set_adapter(adapter_id)
        self.model.eval()
        log.info("switched to adapter %s", adapter_id)
        self.adapter_id = adapter_id

    def extract(self, texts: Sequence[str], *, progress: Callable[[], None] = lambda: None,
                finished: Finished | None = None) -> list[Extraction]:
        """One extraction per text (``finished`` is never called: only the GPU loop hands documents on early)."""
        prepared = self.prepare(texts)
        prompts = prepared.prompts
        if self.continuous:
            return self.finish(prepared, zip(prompts, self.decode_continuous(prompts, progress=progress)))
        decoded = []
        for batch in self.plan(prompts):
            decoded += zip(batch, self.decode(batch, forced_lengths=self.forced_lengths(batch)))
            progress()
        return self.finish(prepared, decoded)

    def prepare(self, texts: Sequence[str]) -> Prepared:
        """The documents' prompts (windows), and the documents that fail before any decoding."""
        prepared = Prepared([], [[] for _ in texts])
        for doc, text in enumerate(texts):
            try:
                prepared.prompts.extend(self.prompts.prompts_for(doc, text))
            except DocumentTooLongError as exc:
                prepared.outputs[doc].append(WindowOutput(0, text, raw="", error=str(exc)))
        return prepared

    def finish(self, prepared: Prepared, decoded: Iterable[tuple[Prompt, WindowOutput]]) -> list[Extraction]:
        """Each document's extraction from its prompts' outputs."""
        for prompt, output in decoded:
            prepared.outputs[prompt.doc].append(output)
        results = []
        for doc_outputs in prepared.outputs:
            doc_outputs.sort(key=lambda output: output.start)
            results.append(assemble(doc_outputs, self.schema, max_new_tokens=self.config.max_new_tokens))
        return results

    def assemble_document(self, prepared: Prepared, doc: int, outputs: dict[int, WindowOutput]) -> Extraction:
        """Document ``doc``'s extraction, its windows' outputs given by prompt index (others may be missing)."""
        windows = [*prepared.outputs[doc], *(outputs[index] for index, prompt in enumerate(prepared.prompts)
                                             if prompt.doc == doc)]
        windows.sort(key=lambda output: output.start)
        return assemble(windows, self.schema, max_new_tokens=self.config.max_new_tokens)

    @property
    def continuous(self) -> bool:
        """Continuous batching, the default (remote model code may only decode through ``generate``)."""
        return self.config.decode_loop in ("auto", "continuous") and not self.remote_code

    def forced_lengths(self, prompts: Sequence[Prompt]) -> list[int] | None:
        """Benchmarks only (a benchmark replaces this to force answer lengths); None in production."""
        return None

    def jobs(self, prompts: Sequence[Prompt], keys: Sequence[int],
             forced_lengths: Sequence[int] | None = None) -> list[Job]:
        """The continuous decoder's jobs for ``prompts``, keyed by ``keys``."""
        forced = forced_lengths if forced_lengths is not None else self.forced_lengths(prompts)
        return [Job(key, prompt.ids, forced[index] if forced else self.config.min_new_tokens,
                    forced[index] if forced else self.config.max_new_tokens)
                for index, (key, prompt) in enumerate(zip(keys, prompts, strict=True))]

    def rows_for(self, length: int) -> int:
        """Rows of a continuous batch whose rows each hold ``length`` cache slots: as the KV budget allows."""
        return max(1, min(self.config.max_batch_size, self.batch_tokens // length))

    def plan(self, prompts: Sequence[Prompt]) -> list[list[Prompt]]:
        return plan_batches(prompts, max_batch_size=self.config.max_batch_size, batch_tokens=self.batch_tokens,
                            max_new_tokens=self.config.max_new_tokens)

    def decode_continuous(self, prompts: Sequence[Prompt], *, forced_lengths: Sequence[int] | None = None,
                          progress: Callable[[], None] = lambda: None) -> list[WindowOutput]:
        """All prompts' outputs through one continuously refilled batch (``forced_lengths``: benchmarks only).

        Its rows are as many as the KV-token budget holds at the longest prompt's width plus
        ``max_new_tokens``, as a worker's are (forced lengths end rows, they do not size them); on
        CUDA out-of-memory the prompts go through planned static batches instead, which split.
        """
        if not prompts:
            return []
        jobs = self.jobs(prompts, range(len(prompts)), forced_lengths)
        length = cache_length(jobs, answer_tokens=self.config.max_new_tokens)
        answers: dict[int, list[int]] = {}
        try:
            for key, tokens in self.continuous_decoder.stream(ListSource(jobs), **self.stream_arguments(length)):
                answers[key] = tokens
                progress()
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            log.warning("CUDA out of memory in a continuous batch; decoding in planned batches")
            return self.decode_planned(prompts)
        return [self.output(prompt, answers[index]) for index, prompt in enumerate(prompts)]

    def stream_arguments(self, length: int) -> dict[str, Any]:
        """How the continuous decoder runs rows of ``length`` slots on this engine."""
        return {"rows": self.rows_for(length), "length": length, "eos_ids": self.eos_ids,
                "pad_id": self.tokenizer.pad_token_id, "prefill_tokens": self.config.prefill_chunk_tokens,
                "device": self.device}

    def decode_planned(self, prompts: Sequence[Prompt]) -> list[WindowOutput]:
        """Outputs of ``prompts`` (in their order) through planned static batches, which split on OOM."""
        outputs = {id(prompt): output for batch in self.plan(prompts)
                   for prompt, output in zip(batch, self.decode(batch))}
        return [outputs[id(prompt)] for prompt in prompts]

    def decode(self, batch: list[Prompt], *, forced_lengths: Sequence[int] | None = None) -> list[WindowOutput]:
        """One batch's outputs; on CUDA out-of-memory it is split, down to a prompt that fails alone."""
        if forced_lengths is not None:  # benchmarks only: no splitting, the lengths go with the rows
            return self._decode(batch, forced_lengths)
        try:
            return self._decode(batch)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if len(batch) == 1:
                (prompt,) = batch
                error = f"out of GPU memory on a single prompt of {len(prompt.ids)} tokens"
                return [WindowOutput(prompt.window.start, prompt.window.text, raw="", error=error)]
            log.warning("CUDA out of memory on a batch of %d; splitting it", len(batch))
            middle = len(batch) // 2
            return self.decode(batch[:middle]) + self.decode(batch[middle:])

    @property
    def decoder(self) -> Decoder:
        """The in-place-cache decoder, or transformers' generate() (asked for, or remote model code)."""
        loop = "generate" if self.config.decode_loop == "generate" or self.remote_code else "static"
        # (a "continuous" configuration decodes single planned batches, such as an OOM fallback, statically)
        return self._decoder(loop, GenerateDecoder if loop == "generate" else StaticDecoder)

    @property
    def continuous_decoder(self) -> ContinuousDecoder:
        return self._decoder("continuous", ContinuousDecoder)

    def _decoder(self, loop: str, kind: Callable[[Any], Any]) -> Any:
        """The decoder of ``loop``; the others' caches are freed, so only one holds GPU memory."""
        for name in [name for name in self._decoders if name != loop]:
            del self._decoders[name]
        decoder = self._decoders.get(loop)
        if decoder is None or decoder.model is not self.model:  # built again after an adapter is attached
            decoder = self._decoders[loop] = kind(self.model)
        if isinstance(decoder, CachedDecoder):  # views of one engine (with_config) share the decoder
            decoder.graphs = self.config.cuda_graphs
            decoder.share_prefix = self.config.share_prefix
        return decoder

    def output(self, prompt: Prompt, tokens: list[int]) -> WindowOutput:
        """A prompt's decoded answer."""
        truncated = len(tokens) >= self.config.max_new_tokens and not set(tokens[-1:]) & set(self.eos_ids)
        raw = self.tokenizer.decode(tokens, skip_special_tokens=True)
        return WindowOutput(prompt.window.start, prompt.window.text, raw, truncated, answer_tokens=len(tokens))

    @torch.inference_mode()
    def _decode(self, batch: list[Prompt], forced_lengths: Sequence[int] | None = None) -> list[WindowOutput]:
        padded = self.tokenizer.pad({"input_ids": [p.ids for p in batch]}, return_tensors="pt")
        input_ids = padded["input_ids"].to(self.device)
        budget = self.config.prefill_chunk_tokens
        chunk = 0 if self.remote_code or not budget else max(1, budget // input_ids.shape[1])
        request = DecodeRequest(input_ids, padded["attention_mask"].to(self.device), self.config.max_new_tokens,
                                self.config.min_new_tokens, self.eos_ids, self.tokenizer.pad_token_id, chunk,
                                forced_lengths)
        return [self.output(prompt, tokens) for prompt, tokens in zip(batch, self.decoder.decode(request))]
