"""The predicate schema: which relations exist and which entity types they join.

DuIE 2.0's 48 predicates are the default; a user file in the same JSON shape
(a list of ``{"predicate", "subject_type", "object_type"}``) replaces it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path

from models.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Relation:
    predicate: str
    subject_type: str
    object_type: str
    # DuIE's complex objects: extra slots such as {"inWork": "影视作品"}.
    object_slots: dict[str, str] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class PredicateSchema:
    relations: tuple[Relation, ...]
    name: str = "duie2"

    def __post_init__(self) -> None:
        if not self.relations:
            raise ConfigError(f"schema {self.name}: no predicates")

    @property
    def predicates(self) -> tuple[str, ...]:
        return tuple(relation.predicate for relation in self.relations)

    def get(self, predicate: str) -> Relation | None:
        return self._by_predicate.get(predicate)

    @cached_property
    def _by_predicate(self) -> dict[str, Relation]:
        return {relation.predicate: relation for relation in self.relations}


def parse_schema(data: object, name: str) -> PredicateSchema:
    if not isinstance(data, list):
        raise ConfigError(f"schema {name}: expected a JSON list of relations")
    relations = []
    for index, item in enumerate(data):
        if not isinstance(item, dict) or not all(
            isinstance(item.get(key), str) and item.get(key) for key in ("predicate", "subject_type", "object_type")
        ):
            raise ConfigError(
                f"schema {name}: relation {index} needs non-empty predicate, subject_type, object_type"
            )
        relations.append(
            Relation(item["predicate"], item["subject_type"], item["object_type"], dict(item.get("object_slots", {})))
        )
    return PredicateSchema(tuple(relations), name=name)


def load_schema(path: Path | None = None) -> PredicateSchema:
    """The schema at ``path``, or DuIE 2.0 when ``path`` is None."""
    if path is None:
        text = resources.files("models").joinpath("duie_schema.json").read_text(encoding="utf-8")
        return parse_schema(json.loads(text), name="duie2")
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"schema {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"schema {path}: not JSON ({exc.msg} at line {exc.lineno})") from exc
    return parse_schema(data, name=Path(path).stem)
