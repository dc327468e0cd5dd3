"""The demo assets shipped in ``devkit/assets/``: the demo model and a tiny memorised corpus.

``demo-glm/`` is a 7.7 M-parameter GLM the project trained from scratch on synthetic DuIE
sentences (``python -m devkit.demo_training``); ``demo-glm/heldout.jsonl`` holds 500 sentences
it never saw. ``demo_corpus.jsonl`` + ``demo_schema.json`` are 12 sentences the tests' tiny
model memorises in seconds (``devkit.tiny.train_to_extract``).

Pure Python: ``triplets demo`` imports this, and the producer starts without torch.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from models.duie import read_jsonl
from models.schema import PredicateSchema, load_schema
from models.triplet import Triplet

_ASSETS = resources.files("devkit").joinpath("assets")


def demo_model_path() -> Path:
    return Path(str(_ASSETS.joinpath("demo-glm")))


def demo_corpus_path() -> Path:
    return Path(str(_ASSETS.joinpath("demo_corpus.jsonl")))


def demo_schema_path() -> Path:
    return Path(str(_ASSETS.joinpath("demo_schema.json")))


def load_demo_schema() -> PredicateSchema:
    return load_schema(demo_schema_path())


def load_demo_examples() -> list[tuple[str, list[Triplet]]]:
    """(text, gold triplets) per line of the demo corpus; lists, as an extraction's triplets are."""
    return [(text, list(triplets)) for text, triplets in read_jsonl(demo_corpus_path())]
