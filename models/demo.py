"""The demo corpus: DuIE 2.0-style sentences with gold triplets, and the schema they use.

The demo model is trained on exactly these sentences (it memorises them), so README's
main command can show the whole path offline. It is no measure of extraction quality.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from models.schema import PredicateSchema, load_schema
from models.triplet import Triplet

_PACKAGE = resources.files("models")


def demo_corpus_path() -> Path:
    return Path(str(_PACKAGE.joinpath("demo_corpus.jsonl")))


def demo_schema_path() -> Path:
    return Path(str(_PACKAGE.joinpath("demo_schema.json")))


def load_demo_schema() -> PredicateSchema:
    return load_schema(demo_schema_path())


def load_demo_examples() -> list[tuple[str, list[Triplet]]]:
    """(text, gold triplets) per line of the demo corpus."""
    examples = []
    for line in demo_corpus_path().read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        examples.append((record["text"], [_triplet(spo) for spo in record["spo_list"]]))
    return examples


def _triplet(spo: dict) -> Triplet:
    def value(field: str) -> str:
        item = spo[field]
        return item["@value"] if isinstance(item, dict) else item

    return Triplet(spo["subject"], spo["predicate"], value("object"), spo["subject_type"], value("object_type"))
