"""Demo assets: the committed demo model and its held-out sentences, and a tiny memorised corpus.

``demo-glm/`` is a 7.7 M-parameter GLM the project trained from scratch on synthetic DuIE
sentences (``python -m worker.demo_model``); ``demo-glm/heldout.jsonl`` holds 500 sentences it
never saw. ``demo_corpus.jsonl`` + ``demo_schema.json`` are 12 sentences the tests' tiny model
memorises in seconds.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from models.schema import PredicateSchema, load_schema
from models.triplet import Triplet

_PACKAGE = resources.files("models")


def demo_model_path() -> Path:
    return Path(str(_PACKAGE.joinpath("demo-glm")))


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
