"""Tests for devkit.synth: coverage, gold quality, determinism, and its output through the DuIE writer."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from devkit.synth import CHARACTERS, generate_examples
from devkit.synth_templates import TEMPLATES
from models.duie import read_jsonl, write_jsonl
from models.errors import ConfigError, InputError
from models.schema import PredicateSchema, Relation, load_schema
from models.training_data import iter_training_examples
from models.triplet import Triplet

SCHEMA = load_schema()
WORKS = {"影视作品", "图书作品", "文学作品", "作品", "电视综艺", "歌曲", "音乐专辑"}


@pytest.fixture(scope="module")
def examples() -> list[tuple[str, list[Triplet]]]:
    return generate_examples(3000, seed=7)


def test_count_and_all_48_predicates_are_produced(examples: list[tuple[str, list[Triplet]]]) -> None:
    assert len(examples) == 3000
    produced = Counter(t.predicate for _, triplets in examples for t in triplets)
    assert len(SCHEMA.predicates) == 48
    assert set(produced) == set(SCHEMA.predicates)
    assert min(produced.values()) >= 20


def test_every_predicate_has_several_templates() -> None:
    assert set(TEMPLATES) == set(SCHEMA.predicates)
    for predicate, spec in TEMPLATES.items():
        assert len(spec.full) >= 3, predicate
        assert len(spec.tail) >= 2, predicate
        assert all("{s}" in t and "{o}" in t for t in spec.full), predicate
        assert all("{s}" not in t and "{o}" in t for t in spec.tail), predicate


def test_subjects_and_objects_occur_verbatim(examples: list[tuple[str, list[Triplet]]]) -> None:
    for text, triplets in examples:
        for t in triplets:
            assert t.subject in text and t.object in text, (text, t)
            assert "《" not in t.subject + t.object
            # DuIE convention: works are written inside 《》 in the text.
            if t.subject_type in WORKS:
                assert f"《{t.subject}》" in text, (text, t)
            if t.object_type in WORKS:
                assert f"《{t.object}》" in text, (text, t)


def test_types_come_from_the_schema(examples: list[tuple[str, list[Triplet]]]) -> None:
    for _, triplets in examples:
        for t in triplets:
            relation = SCHEMA.get(t.predicate)
            assert relation is not None
            assert (t.subject_type, t.object_type) == (relation.subject_type, relation.object_type)


def test_marriage_is_annotated_both_ways(examples: list[tuple[str, list[Triplet]]]) -> None:
    seen = 0
    for _, triplets in examples:
        keys = {(t.subject, t.predicate, t.object) for t in triplets}
        for s, p, o in keys:
            if p in ("妻子", "丈夫"):
                seen += 1
                assert (o, "丈夫" if p == "妻子" else "妻子", s) in keys
    assert seen > 0


def test_deterministic_for_a_seed_and_different_across_seeds() -> None:
    first = generate_examples(200, seed=1)
    assert generate_examples(200, seed=1) == first
    other = generate_examples(200, seed=2)
    assert other != first
    assert len({text for text, _ in first} & {text for text, _ in other}) < 10


def test_no_duplicate_texts(examples: list[tuple[str, list[Triplet]]]) -> None:
    texts = [text for text, _ in examples]
    assert len(set(texts)) == len(texts)


def test_names_are_open_vocabulary(examples: list[tuple[str, list[Triplet]]]) -> None:
    people = {t.object for _, triplets in examples for t in triplets if t.object_type == "人物"}
    assert len(people) > 1500


def test_multi_fact_and_filler_sentences(examples: list[tuple[str, list[Triplet]]]) -> None:
    sizes = [len(triplets) for _, triplets in examples]
    assert sum(size >= 2 for size in sizes) / len(sizes) >= 0.3
    assert 0.02 <= sizes.count(0) / len(sizes) <= 0.1
    # Several facts about one subject in one sentence.
    assert any(len({t.subject for t in triplets}) == 1 and len({t.predicate for t in triplets}) >= 3
               for _, triplets in examples)
    for text, triplets in examples:
        assert text.endswith("。") and text.count("。") == 1
        assert len(triplets) == len(set(triplets))


def facts(triplets: list[Triplet]) -> int:
    """Facts stated: a marriage is one fact annotated in both directions (妻子 and 丈夫)."""
    marriages = {frozenset((t.subject, t.object)) for t in triplets if t.predicate in ("妻子", "丈夫")}
    return len(marriages) + sum(t.predicate not in ("妻子", "丈夫") for t in triplets)


@pytest.mark.parametrize("max_facts", [1, 2, 5])
def test_max_facts_bounds_the_facts_per_sentence(max_facts: int) -> None:
    counts = Counter(facts(triplets) for _, triplets in generate_examples(500, seed=3, max_facts=max_facts))
    assert max(counts) == max_facts


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError):
        generate_examples(1, seed=0, max_facts=0)
    with pytest.raises(ValueError):
        generate_examples(-1, seed=0)
    assert generate_examples(0, seed=0) == []


def test_every_emitted_character_is_in_characters(examples: list[tuple[str, list[Triplet]]]) -> None:
    assert CHARACTERS == "".join(sorted(set(CHARACTERS)))
    allowed = set(CHARACTERS)
    emitted = {char for text, _ in examples for char in text}
    assert emitted <= allowed, "".join(sorted(emitted - allowed))


def test_custom_schema_uses_its_types_and_only_known_predicates() -> None:
    schema = PredicateSchema(
        (Relation("导演", "电影", "导演人物"), Relation("未知关系", "甲", "乙")), name="custom"
    )
    examples = generate_examples(100, seed=5, schema=schema)
    triplets = [t for _, ts in examples for t in ts]
    assert triplets and {t.predicate for t in triplets} == {"导演"}
    assert {(t.subject_type, t.object_type) for t in triplets} == {("电影", "导演人物")}
    with pytest.raises(ConfigError):
        generate_examples(1, seed=0, schema=PredicateSchema((Relation("未知关系", "甲", "乙"),), name="x"))


def test_synthetic_examples_round_trip_through_the_duie_writer(tmp_path: Path,
                                                               examples: list[tuple[str, list[Triplet]]]) -> None:
    path = tmp_path / "synth.jsonl"
    write_jsonl(path, examples[:500])
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert set(first) == {"text", "spo_list"}
    for spo in first["spo_list"]:
        assert set(spo) == {"subject", "subject_type", "predicate", "object", "object_type"}
        assert set(spo["object"]) == {"@value"} and set(spo["object_type"]) == {"@value"}
    errors: list[InputError] = []
    read = list(iter_training_examples(path, errors.append))
    assert errors == []
    assert [(r.text, list(r.triplets)) for r in read] == examples[:500]
    assert read[0].source == f"{path}:1"
    assert [(text, list(triplets)) for text, triplets in read_jsonl(path)] == examples[:500]
