"""Continuous batching on the CPU: the same answers as the static loop, token for token, with rows refilled."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from devkit.assets import demo_schema_path, load_demo_examples  # noqa: E402
from models.settings import load_settings  # noqa: E402
from tests.lora import ATTENTION, save_lora  # noqa: E402
from worker.continuous_decode import Job, ListSource, cache_length  # noqa: E402
from worker.hf_engine import HuggingFaceEngine  # noqa: E402

EXAMPLES = load_demo_examples()
TEXTS = [text for text, _ in EXAMPLES]


def _engine(model_dir: Path, **overrides: object) -> HuggingFaceEngine:
    settings = {"base_model": model_dir, "schema_path": demo_schema_path(), "device": "cpu", "max_new_tokens": 200}
    return HuggingFaceEngine.from_settings(load_settings(**{**settings, **overrides}))


def test_refilled_rows_answer_exactly_as_static_batches(demo_model) -> None:
    # 3 rows for 12 documents whose answers end at different steps: rows are refilled 9 times
    static = _engine(demo_model[0], max_batch_size=3, decode_loop="static")
    continuous = static.with_config(decode_loop="continuous")
    expected = static.extract(TEXTS)
    results = continuous.extract(TEXTS)
    assert [r.raw for r in results] == [r.raw for r in expected]
    assert [r.triplets for r in results] == [gold for _, gold in EXAMPLES]
    assert len({len(r.raw) for r in results}) > 3  # the answers really do end at different steps


def test_four_bit_lora_with_forced_lengths_matches_static_and_fills_its_slots(demo_model, tmp_path: Path) -> None:
    pytest.importorskip("bitsandbytes")
    lora = save_lora(demo_model[0], tmp_path / "lora", b_std=0.02, targets=ATTENTION)
    engine = _engine(demo_model[0], precision="4bit", adapter=lora, max_batch_size=4, max_new_tokens=40)
    prompts = [prompt for index, text in enumerate(TEXTS) for prompt in engine.prompts.prompts_for(index, text)]
    lengths = [5, 40, 7, 12, 3, 30, 9, 21, 4, 16, 25, 6]  # drawn answer lengths, as the benchmark forces them
    static_outputs, static_slots = [], 0
    for start in range(0, len(prompts), 4):  # the static loop in batches of 4, in the same order
        static_outputs += engine.decode(prompts[start:start + 4], forced_lengths=lengths[start:start + 4])
        static_slots += engine.decoder.last_slots
    continuous = engine.with_config(decode_loop="continuous")
    outputs = continuous.decode_continuous(prompts, forced_lengths=lengths)
    assert [o.raw for o in outputs] == [o.raw for o in static_outputs]
    # slot efficiency, answer tokens over rows x steps: refilled rows do not wait for the longest answer
    assert sum(lengths) / continuous.continuous_decoder.last_slots > sum(lengths) / static_slots


class _LateSource(ListSource):
    """Jobs in two waves: the second only after the decoder has asked ``dry_takes`` times in vain."""

    def __init__(self, first: list[Job], later: list[Job], dry_takes: int) -> None:
        super().__init__(first)
        self.later, self.dry_takes = later, dry_takes

    def take(self, count: int, *, length: int) -> list[Job]:
        taken = super().take(count, length=length)
        if not taken and self.later:
            self.dry_takes -= 1
            if self.dry_takes == 0:
                self.waiting.extend(self.later)
                self.later = []
        return taken


def test_a_draining_batch_narrows_then_widens_again_and_answers_as_static(demo_model) -> None:
    engine = _engine(demo_model[0], max_batch_size=8, max_new_tokens=40)
    prompts = [prompt for index, text in enumerate(TEXTS) for prompt in engine.prompts.prompts_for(index, text)]
    lengths = [3, 40, 5, 12, 38, 4, 9, 30, 4, 16, 25, 6]
    expected = [output.raw for start in range(0, 12, 4)
                for output in engine.decode(prompts[start:start + 4], forced_lengths=lengths[start:start + 4])]
    continuous = engine.with_config(decode_loop="continuous")
    jobs = continuous.jobs(prompts, range(12), lengths)
    decoder = continuous.continuous_decoder

    def answers(source: ListSource) -> dict[int, str]:
        return {key: continuous.tokenizer.decode(tokens, skip_special_tokens=True) for key, tokens in
                decoder.stream(source, rows=8, length=cache_length(jobs), eos_ids=continuous.eos_ids,
                               pad_id=continuous.tokenizer.pad_token_id, prefill_tokens=0, device=continuous.device)}

    decoder.narrowest = 8  # never narrower than the batch: every row runs every step
    assert answers(ListSource(jobs)) == dict(enumerate(expected))
    wide_slots = decoder.last_slots
    decoder.narrowest = 1
    assert answers(ListSource(jobs)) == dict(enumerate(expected))
    assert decoder.last_widths[0] == 8 and min(decoder.last_widths) < 4
    assert decoder.last_slots < 0.8 * wide_slots  # the drained rows no longer run
    # jobs that arrive after the batch narrowed widen it again, and are answered the same
    late = _LateSource(jobs[:6], jobs[6:], dry_takes=6)
    assert answers(late) == dict(enumerate(expected))
    widths = decoder.last_widths
    assert min(widths) < 8 and any(later > earlier for earlier, later in zip(widths, widths[1:]))


def test_refills_that_wait_for_idle_rows_are_fewer_and_answer_the_same(demo_model) -> None:
    engine = _engine(demo_model[0], max_batch_size=8, max_new_tokens=40)
    prompts = [prompt for index, text in enumerate(TEXTS) for prompt in engine.prompts.prompts_for(index, text)] * 2
    lengths = [3, 40, 5, 12, 38, 4, 9, 30, 4, 16, 25, 6] * 2
    continuous = engine.with_config(decode_loop="continuous")
    decoder = continuous.continuous_decoder
    decoder.narrowest = 8  # the batch never narrows: only the refills differ between the two runs
    every_row = [output.raw for output in continuous.decode_continuous(prompts, forced_lengths=lengths)]
    eager_refills, eager_slots = decoder.last_refills, decoder.last_slots
    decoder.refill_at_least = 2
    assert [output.raw for output in continuous.decode_continuous(prompts, forced_lengths=lengths)] == every_row
    assert decoder.last_refills < eager_refills  # rows ending in different windows now share a refill
    assert decoder.last_slots > eager_slots  # paid for with rows that idle while they wait


def test_prefill_chunks_count_the_tokens_they_run_not_the_shared_prefix(demo_model) -> None:
    # chunks of 256 tokens: a whole prompt (~300 with the shared template) is one per chunk, its own
    # tokens (those the prefill runs once the template is shared) several
    engine = _engine(demo_model[0], max_batch_size=8, max_new_tokens=40, prefill_chunk_tokens=256)
    prompts = [prompt for index, text in enumerate(TEXTS) for prompt in engine.prompts.prompts_for(index, text)]
    lengths = [3, 40, 5, 12, 38, 4, 9, 30, 4, 16, 25, 6]
    continuous = engine.with_config(decode_loop="continuous")
    decoder = continuous.continuous_decoder
    decoder.prefill_counts_prefix = True  # as before run H
    before = [output.raw for output in continuous.decode_continuous(prompts, forced_lengths=lengths)]
    before_forwards = decoder.last_prefill_forwards
    assert decoder.last_shared_prefix > 128 and before_forwards >= len(prompts)  # one prompt a chunk
    decoder.prefill_counts_prefix = False
    assert [output.raw for output in continuous.decode_continuous(prompts, forced_lengths=lengths)] == before
    assert decoder.last_prefill_forwards < before_forwards
