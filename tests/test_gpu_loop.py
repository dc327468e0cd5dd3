"""The worker's one GPU loop, fed by several tasks at once (on the CPU, with the trained demo model)."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from devkit.assets import demo_schema_path, load_demo_examples  # noqa: E402
from models.settings import load_settings  # noqa: E402
from tests.lora import ATTENTION, save_lora  # noqa: E402
from worker.engine import CANARY_TEXT  # noqa: E402
from worker.gpu_loop import EngineLoop  # noqa: E402
from worker.hf_engine import HuggingFaceEngine  # noqa: E402
from worker.pipeline import extract_isolating  # noqa: E402

TEXTS = [text for text, _ in load_demo_examples()]


def _engine(model_dir: Path, **overrides: object) -> HuggingFaceEngine:
    settings = {"base_model": model_dir, "schema_path": demo_schema_path(), "device": "cpu", "max_new_tokens": 200,
                "max_batch_size": 3, "decode_loop": "continuous"}
    return HuggingFaceEngine.from_settings(load_settings(**{**settings, **overrides}))


def _in_threads(calls: list[Callable[[], object]]) -> tuple[list[object], list[threading.Thread]]:
    results: list[object] = [None] * len(calls)

    def run(index: int) -> None:
        try:
            results[index] = calls[index]()
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    return results, threads


def _until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_tickets_of_several_tasks_share_one_continuous_run_with_unchanged_answers(demo_model) -> None:
    engine = _engine(demo_model[0])
    expected = engine.with_config(decode_loop="static").extract(TEXTS)
    loop = EngineLoop(engine, start=False)
    parts = [TEXTS[0:5], TEXTS[5:8], TEXTS[8:12]]
    results, threads = _in_threads([lambda part=part: loop.extract(part) for part in parts])
    _until(lambda: loop.pending() == (3, 0), "three tickets")
    loop.start()
    for thread in threads:
        thread.join()
    loop.close()
    extractions = [extraction for result in results for extraction in result]
    assert [e.raw for e in extractions] == [e.raw for e in expected]
    # three tasks' documents went through 3 rows together: one run, rows refilled across tickets
    assert loop.runs == 1


def test_a_task_is_fed_once_the_ticket_before_it_is_all_decoding_not_once_it_is_answered(demo_model) -> None:
    engine = _engine(demo_model[0])  # 3 rows
    texts = sorted(TEXTS[:6], key=len, reverse=True)  # the run's rows are sized for the first ticket's prompts
    expected = engine.with_config(decode_loop="static").extract(texts)
    seen_at_first_answer: list[tuple[int, int]] = []

    def first_answer() -> None:  # on the loop thread: the first ticket has 2 prompts still decoding
        if not seen_at_first_answer:
            _until(lambda: loop.pending() == (1, 0), "the second ticket, while the first is still decoding")
            seen_at_first_answer.append(loop.pending())

    loop = EngineLoop(engine, feeding=1, start=False)
    first, first_threads = _in_threads([lambda: loop.extract(texts[:3], progress=first_answer)])
    _until(lambda: loop.pending() == (1, 0), "the first ticket")
    second, second_threads = _in_threads([lambda: loop.extract(texts[3:])])
    _until(lambda: loop.gated() == 1, "the second task at the gate")
    assert loop.pending() == (1, 0)  # held back: one ticket is being fed
    loop.start()
    for thread in first_threads + second_threads:
        thread.join()
    loop.close()
    assert seen_at_first_answer == [(1, 0)]
    assert [e.raw for e in first[0] + second[0]] == [e.raw for e in expected]
    assert loop.runs == 1  # the second ticket refilled the first one's rows: the batch did not run dry between them


def test_an_adapter_switch_waits_for_the_started_ticket_and_the_next_one_uses_it(demo_model, tmp_path: Path) -> None:
    lora = save_lora(demo_model[0], tmp_path / "lora", b_std=0.5, targets=ATTENTION)
    plain = _engine(demo_model[0]).extract(TEXTS[:6])
    adapted = _engine(demo_model[0], adapter=lora).extract(TEXTS[:6])
    assert [e.raw for e in adapted] != [e.raw for e in plain]  # the adapter changes answers

    engine = _engine(demo_model[0])
    later: list[tuple[list[object], list[threading.Thread]]] = []

    def first_answer() -> None:  # on the loop thread, while the first ticket decodes
        if not later:
            later.append(_in_threads([lambda: loop.use_adapter("lora:1", lora)]))
            _until(lambda: loop.pending() == (0, 1), "the switch request")
            later.append(_in_threads([lambda: loop.extract(TEXTS[:6])]))
            _until(lambda: loop.pending() == (1, 1), "the second ticket")

    loop = EngineLoop(engine)
    (before,) = loop.extract(TEXTS[:6], progress=first_answer),
    for _, threads in later:
        threads[0].join()
    loop.close()
    (switch_result,), (after,) = later[0][0], later[1][0]
    assert switch_result is None  # the switch succeeded, after the first ticket and before the second
    assert [e.raw for e in before] == [e.raw for e in plain] and {e.adapter_id for e in before} == {""}
    assert [e.raw for e in after] == [e.raw for e in adapted] and {e.adapter_id for e in after} == {"lora:1"}


def test_a_document_that_breaks_a_shared_run_fails_alone(demo_model) -> None:
    engine = _engine(demo_model[0])
    used = {token for text in [*TEXTS, CANARY_TEXT] for token in engine.prompts.encode(text)}
    vocabulary = engine.tokenizer.get_vocab()
    # a character token that no other prompt holds: only the poison document's prompt has it
    marker = next(piece for piece, token in vocabulary.items()
                  if len(piece) == 1 and "\u4e00" <= piece <= "\u9fff" and token not in used)
    marker_id = vocabulary[marker]
    forward = engine.model.forward

    @functools.wraps(forward)  # its signature too: the decoders read the cache keyword from it
    def poisoned(*args, input_ids=None, **kwargs):  # type: ignore[no-untyped-def]
        if input_ids is not None and bool((input_ids == marker_id).any()):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return forward(*args, input_ids=input_ids, **kwargs)

    engine.model.forward = poisoned
    expected = engine.with_config(decode_loop="static").extract(TEXTS[:8])
    loop = EngineLoop(engine, start=False)
    poison = [*TEXTS[4:6], f"这句话里有一个{marker}字。", *TEXTS[6:8]]
    results, threads = _in_threads([lambda: extract_isolating(loop, TEXTS[:4]),
                                    lambda: extract_isolating(loop, poison)])
    _until(lambda: loop.pending() == (2, 0), "both tickets")
    loop.start()
    for thread in threads:
        thread.join()
    loop.close()
    good, mixed = results
    assert [e.raw for e in good] == [e.raw for e in expected[:4]]
    assert [e.raw for e in mixed[:2] + mixed[3:]] == [e.raw for e in expected[4:8]]
    assert mixed[2].error and "illegal memory access" in mixed[2].error
    assert loop.runs > 2  # the shared run failed both tickets; both went again, the poison alone at last
