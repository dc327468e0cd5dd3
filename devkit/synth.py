"""Synthetic DuIE 2.0-style training sentences with gold triplets.

Entity names are assembled from fixed character pools, so names are open-vocabulary
(a model cannot memorise them) while ``CHARACTERS`` still covers every emitted text;
a character-level tokenizer built from it never meets an unknown character. Write the
examples as DuIE 2.0 lines with ``models.duie.write_jsonl``.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterable

from devkit.synth_templates import (
    AWARD_CATEGORIES, AWARD_NAMES, BRAND_CHARS, CITIES, CLIMATES, COMPANY_SUFFIXES, COMPOUND_SURNAMES, COUNTRIES,
    COUNTRY_SUFFIXES, DYNASTIES, FILLERS, GIVEN_CHARS, HAO_CHARS, HAO_SUFFIXES, INDUSTRIES, KIND_WORDS, LANGUAGES,
    MAJORS, MOUNTAIN_SUFFIXES, PLACE_CHARS, REGION_SUFFIXES, SCENIC_SUFFIXES, SCHOOL_SUFFIXES, SURNAMES, TEMPLATES,
    TITLE_SUFFIXES, TITLE_TAILS, TRANSLIT_CHARS, UNITS, WORK_HEADS, WORK_KINDS, YEARS_OF_STUDY, Spec
)
from models.errors import ConfigError
from models.schema import PredicateSchema, Relation, load_schema
from models.triplet import Triplet

PUNCTUATION = "，。、《》"
FILLER_RATE = 0.05
SAME_SUBJECT_RATE = 0.7
MULTI_OBJECT_RATE = 0.3


def _template_chars(templates: Iterable[str]) -> str:
    return "".join(literal for template in templates for literal, *_ in string.Formatter().parse(template))


def _all_characters() -> str:
    pools: list[Iterable[str]] = [
        SURNAMES, COMPOUND_SURNAMES, GIVEN_CHARS, WORK_HEADS, TITLE_SUFFIXES, BRAND_CHARS, INDUSTRIES,
        COMPANY_SUFFIXES, SCHOOL_SUFFIXES, SCHOOL_SUFFIXES.values(), PLACE_CHARS, CITIES, REGION_SUFFIXES,
        MOUNTAIN_SUFFIXES, SCENIC_SUFFIXES, COUNTRIES, TRANSLIT_CHARS, COUNTRY_SUFFIXES, LANGUAGES, CLIMATES,
        AWARD_NAMES, AWARD_CATEGORIES, MAJORS, DYNASTIES, HAO_CHARS, HAO_SUFFIXES, YEARS_OF_STUDY,
        *TITLE_TAILS.values(), *KIND_WORDS.values(), [unit for units in UNITS.values() for unit, *_ in units],
        ["市语第届年月日.", string.digits, PUNCTUATION],
        [_template_chars(FILLERS)],
        [_template_chars(spec.full + spec.tail) for spec in TEMPLATES.values()],
    ]
    return "".join(sorted({char for pool in pools for item in pool for char in item}))


CHARACTERS: str = _all_characters()


def _number(rng: random.Random, kind: str) -> str:
    unit, low, high, decimal = rng.choice(UNITS[kind])
    value = f"{rng.uniform(low, high):.1f}".removesuffix(".0") if decimal else str(rng.randint(int(low), int(high)))
    return value + unit


def _date(rng: random.Random) -> str:
    year = f"{rng.randint(1950, 2023)}年"
    shape = rng.random()
    if shape < 0.3:
        return year
    if shape < 0.6:
        return f"{year}{rng.randint(1, 12)}月"
    return f"{year}{rng.randint(1, 12)}月{rng.randint(1, 28)}日"


def _person(rng: random.Random) -> str:
    surname = rng.choice(COMPOUND_SURNAMES) if rng.random() < 0.05 else rng.choice(SURNAMES)
    return surname + "".join(rng.choices(GIVEN_CHARS, k=rng.randint(1, 2)))


def _title(rng: random.Random, kind: str) -> str:
    tails = TITLE_TAILS.get(kind, TITLE_TAILS["book" if kind == "work" else "song"])
    first, second = rng.sample(WORK_HEADS, 2)
    title = first + (rng.choice(tails) if rng.random() < 0.7 else second)
    if kind in ("film", "book", "work") and rng.random() < 0.2:
        title += rng.choice(TITLE_SUFFIXES)
    return title


def _place(rng: random.Random, suffixes: tuple[str, ...]) -> str:
    return "".join(rng.sample(PLACE_CHARS, 2)) + rng.choice(suffixes)


def _entity(rng: random.Random, kind: str, subject: str) -> str:
    """A random name of ``kind``; ``subject`` matters only for an abbreviation (简称)."""
    if kind == "person":
        return _person(rng)
    if kind in WORK_KINDS:
        return _title(rng, kind)
    if kind == "company":
        return "".join(rng.sample(BRAND_CHARS, 2)) + rng.choice(INDUSTRIES) + rng.choice(COMPANY_SUFFIXES)
    if kind == "school":
        return rng.choice([rng.choice(CITIES), "".join(rng.sample(PLACE_CHARS, 2))]) + rng.choice(
            list(SCHOOL_SUFFIXES)
        )
    if kind == "city":
        return rng.choice(CITIES) if rng.random() < 0.4 else _place(rng, ("市",))
    if kind == "region":
        return rng.choice(CITIES) if rng.random() < 0.2 else _place(rng, REGION_SUFFIXES)
    if kind == "mountain":
        return _place(rng, MOUNTAIN_SUFFIXES)
    if kind == "scenic":
        return _place(rng, SCENIC_SUFFIXES)
    if kind == "country":
        if rng.random() < 0.4:
            return rng.choice(COUNTRIES)
        return "".join(rng.sample(TRANSLIT_CHARS, 2)) + rng.choice(COUNTRY_SUFFIXES)
    if kind == "language":
        return rng.choice(LANGUAGES) if rng.random() < 0.5 else "".join(rng.sample(TRANSLIT_CHARS, 2)) + "语"
    if kind == "award":
        prefix = f"第{rng.randint(1, 40)}届" if rng.random() < 0.6 else ""
        return prefix + rng.choice(AWARD_NAMES) + rng.choice(AWARD_CATEGORIES)
    if kind == "abbr":
        return _abbreviation(subject)
    if kind == "date":
        return _date(rng)
    if kind in UNITS:
        return _number(rng, kind)
    simple = {"climate": CLIMATES, "major": MAJORS, "dynasty": DYNASTIES, "years": YEARS_OF_STUDY}
    if kind in simple:
        return rng.choice(simple[kind])
    if kind == "hao":
        return "".join(rng.sample(HAO_CHARS, 2)) + rng.choice(HAO_SUFFIXES)
    if kind == "code":
        return f"{rng.randint(1, 12):02d}{rng.randint(1, 99):02d}{rng.randint(1, 99):02d}"
    if kind == "postcode":
        return f"{rng.randint(10, 86)}{rng.randint(0, 9999):04d}"
    raise ValueError(f"unknown entity kind {kind!r}")


def _abbreviation(name: str) -> str:
    for suffix in COMPANY_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    # Longest suffix first: "师范大学" must win over "大学".
    for suffix in sorted(SCHOOL_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            stem = name[: -len(suffix)]
            return (stem[0] if suffix == "大学" else stem) + SCHOOL_SUFFIXES[suffix]
    raise ValueError(f"no abbreviation rule for {name!r}")


def generate_examples(
    count: int, *, seed: int, schema: PredicateSchema | None = None, max_facts: int = 3
) -> list[tuple[str, list[Triplet]]]:
    """``count`` distinct sentences with their gold triplets, the same ones for the same seed.

    Each sentence states 1..max_facts facts (about 5% state none), mostly about one
    subject. Only predicates of ``schema`` (default DuIE 2.0) that have templates are
    used; triplet types come from the schema. A marriage is one fact but two triplets
    (妻子 and 丈夫), since DuIE annotates both directions.
    """
    if count < 0:
        raise ValueError("count must not be negative")
    if max_facts < 1:
        raise ValueError("max_facts must be at least 1")
    schema = schema or load_schema()
    relations = [relation for relation in schema.relations if relation.predicate in TEMPLATES]
    if not relations:
        raise ConfigError(f"schema {schema.name}: no predicate has synthetic sentence templates")
    rng = random.Random(seed)
    seen: set[str] = set()
    examples: list[tuple[str, list[Triplet]]] = []
    for _ in range(20 * count + 1000):
        if len(examples) == count:
            return examples
        text, triplets = _example(rng, relations, schema, max_facts)
        if text not in seen:
            seen.add(text)
            examples.append((text, triplets))
    if len(examples) == count:
        return examples
    raise ConfigError(f"schema {schema.name}: cannot make {count} distinct sentences")


def _example(
    rng: random.Random, relations: list[Relation], schema: PredicateSchema, max_facts: int
) -> tuple[str, list[Triplet]]:
    if rng.random() < FILLER_RATE:
        return _filler(rng), []
    sentence = _Sentence(rng, schema)
    budget = rng.randint(1, max_facts)
    # The first fact is drawn uniformly over predicates so that every predicate is well covered.
    relation = rng.choice(relations)
    subject = sentence.new_entity(rng.choice(TEMPLATES[relation.predicate].subject))
    budget -= sentence.state(relation, subject, budget, full=True)
    while budget > 0:
        kind = sentence.entities[subject]
        same = [
            r for r in relations
            if kind in TEMPLATES[r.predicate].subject and (subject, r.predicate) not in sentence.stated
        ]
        if same and rng.random() < SAME_SUBJECT_RATE:
            budget -= sentence.state(rng.choice(same), subject, budget, full=False)
            continue
        relation = rng.choice(relations)
        spec = TEMPLATES[relation.predicate]
        known = [
            name for name, entity_kind in sentence.entities.items()
            if entity_kind in spec.subject and (name, relation.predicate) not in sentence.stated
        ]
        if known and rng.random() < 0.5:
            subject = rng.choice(known)
        else:
            subject = sentence.new_entity(rng.choice(spec.subject))
        budget -= sentence.state(relation, subject, budget, full=True)
    return "，".join(sentence.clauses) + "。", sentence.triplets


def _filler(rng: random.Random) -> str:
    template = rng.choice(FILLERS)
    return template.format(p=_person(rng), c=_entity(rng, "city", ""), w=f"《{_title(rng, 'film')}》") + "。"


class _Sentence:
    """The clauses, triplets and entities of one sentence under construction."""

    def __init__(self, rng: random.Random, schema: PredicateSchema) -> None:
        self.rng = rng
        self.schema = schema
        self.clauses: list[str] = []
        self.triplets: list[Triplet] = []
        self.entities: dict[str, str] = {}  # name -> kind, in order of appearance
        self.stated: set[tuple[str, str]] = set()  # (subject, predicate) already said
        self._kind_words: dict[str, str] = {}
        self._topic = ""  # the subject the last clause leads with; only it may take a tail clause

    def new_entity(self, kind: str, subject: str = "") -> str:
        # A name already in the sentence would make e.g. someone their own father.
        for _ in range(100):
            name = _entity(self.rng, kind, subject)
            if name not in self.entities:
                break
        self.entities.setdefault(name, kind)
        return name

    def mention(self, name: str) -> str:
        return f"《{name}》" if self.entities[name] in WORK_KINDS else name

    def kind_word(self, kind: str) -> str:
        if kind not in self._kind_words:
            self._kind_words[kind] = self.rng.choice(KIND_WORDS[kind])
        return self._kind_words[kind]

    def state(self, relation: Relation, subject: str, budget: int, *, full: bool) -> int:
        """Add one clause of ``relation`` about ``subject``; return how many facts it states."""
        spec: Spec = TEMPLATES[relation.predicate]
        count = 1
        if spec.multi and budget >= 2 and self.rng.random() < MULTI_OBJECT_RATE:
            count = self.rng.randint(2, min(3, budget))
        objects = [self.new_entity(spec.object, subject) for _ in range(count)]
        # "X颁给了A，生活在唐朝" reads as if X lived in 唐朝: tails only continue a clause led by the subject.
        full = full or self._topic != subject
        template = self.rng.choice(spec.full if full else spec.tail)
        if full:
            self._topic = subject if template.startswith(("{s}", "{kind}{s}")) else ""
        kind = self.kind_word(self.entities[subject]) if "{kind}" in template else ""
        listed = "、".join(self.mention(name) for name in objects)
        self.clauses.append(template.format(s=self.mention(subject), o=listed, kind=kind))
        inverse = self.schema.get(spec.inverse) if spec.inverse else None
        for name in objects:
            self.triplets.append(
                Triplet(subject, relation.predicate, name, relation.subject_type, relation.object_type)
            )
            self.stated.add((subject, relation.predicate))
            if inverse is not None:
                swapped = Triplet(name, inverse.predicate, subject, inverse.subject_type, inverse.object_type)
                self.triplets.append(swapped)
                # Neither spouse may take a second spouse in the same sentence.
                self.stated.update({(subject, inverse.predicate), (name, relation.predicate)})
                self.stated.add((name, inverse.predicate))
        return count
