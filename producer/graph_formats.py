"""Export formats as pure writers: iterables of records in, text out, one row at a time.

Nothing here touches the database; ``producer.export_commands`` feeds these from the store's streams.
See docs/export.md for each format's shape and the reasons behind it.
"""

from __future__ import annotations

import _csv
import csv
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import fields
from operator import attrgetter
from typing import TextIO, Union

from models.errors import InputError
from models.graph_export import Entity
from models.triplet_query import DistinctTriplet, TripletRecord

Record = Union[TripletRecord, DistinctTriplet]
FORMATS = ("jsonl", "csv", "ntriples", "neo4j")
DEFAULT_BASE_IRI = "urn:triplet-queue:"
RDF_TYPE = "<http://www.w3.org/1999/02/22-rdf-syntax-ns#type>"
RDFS_LABEL = "<http://www.w3.org/2000/01/rdf-schema#label>"
NODE_HEADER = ("entityId:ID", "name", "type", ":LABEL")
RELATIONSHIP_HEADER = (":START_ID", ":END_ID", ":TYPE", "predicate", "count:int", "documents:int", "jobs:int",
                       "first_document_id:long")
DEFAULT_LABEL = "Entity"  # every node's label, so one index covers them all; an empty type adds none
DEFAULT_RELATIONSHIP = "RELATED_TO"  # the type of an edge whose predicate is blank

# What may stay as it is in one path segment of an IRI (RFC 3987 isegment): RFC 3986's unreserved
# characters, sub-delims, ":" and "@", and ucschar (most of Unicode beyond ASCII, so Chinese stays
# readable). Everything else, "%" itself included (so decoding gives the name back), is
# percent-encoded as UTF-8: that covers all N-Triples forbids inside <…> (controls, space, <>"{}|^`\)
# and "/", "?", "#", which would change the IRI's structure.
_UNSAFE_IN_SEGMENT = re.compile(
    "[^A-Za-z0-9\\-._~!$&'()*+,;=:@"
    "\u00a0-\ud7ff\uf900-\ufdcf\ufdf0-\uffef"
    + "".join(f"{chr(plane << 16)}-{chr((plane << 16) + 0xFFFD)}" for plane in range(1, 14))
    + "\U000e1000-\U000efffd]"
)
_IRI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_IRIREF_FORBIDDEN = re.compile(r'[\x00-\x20<>"{}|^`\\]')
# N-Triples canonical form: ECHAR for \b \t \n \f \r " \, UCHAR for the other controls and DEL.
_LITERAL_ESCAPES = {code: f"\\u{code:04X}" for code in (*range(0x20), 0x7F)} | {
    0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r", 0x22: '\\"', 0x5C: "\\\\",
}


def record_fields(*, distinct: bool) -> tuple[str, ...]:
    return tuple(field.name for field in fields(DistinctTriplet if distinct else TripletRecord))


def write_jsonl(records: Iterable[Record], out: TextIO) -> int:
    """One JSON object per record and line, every field, Chinese as is. Returns the records written."""
    written = 0
    for record in records:
        out.write(json.dumps(record.as_dict(), ensure_ascii=False) + "\n")
        written += 1
    return written


def write_csv(records: Iterable[Record], out: TextIO, *, distinct: bool) -> int:
    """RFC 4180 CSV with a header row, even for no records. Returns the records written."""
    names = record_fields(distinct=distinct)
    row_of = attrgetter(*names)
    writer = csv.writer(out)
    writer.writerow(names)
    written = 0
    for record in records:
        writer.writerow(row_of(record))
        written += 1
    return written


def check_base_iri(base: str) -> str:
    """``base`` if entity IRIs can be built on it (an absolute IRI, nothing N-Triples forbids in <…>)."""
    if not _IRI_SCHEME.match(base):
        raise InputError("--base-iri", f"{base!r} is not an absolute IRI (it needs a scheme, e.g. https:// or urn:)")
    bad = _IRIREF_FORBIDDEN.search(base)
    if bad:
        raise InputError("--base-iri", f"{base!r} contains {bad.group()!r}, which an IRI may not contain")
    return base


def iri_segment(text: str) -> str:
    """``text`` as one IRI path segment; ``urllib.parse.unquote`` gives ``text`` back."""
    return _UNSAFE_IN_SEGMENT.sub(lambda m: "".join(f"%{byte:02X}" for byte in m.group().encode("utf-8")), text)


def literal(text: str) -> str:
    """``text`` as an N-Triples string literal, quotes included."""
    return '"' + text.translate(_LITERAL_ESCAPES) + '"'


def write_ntriples_entities(entities: Iterable[Entity], out: TextIO, *, base: str) -> int:
    """rdfs:label for each entity and rdf:type for each type it was given. ``entities`` must come
    sorted by name (``iter_entities`` does): a name's label is written when the name changes.
    Returns the statements written."""
    written, previous = 0, None
    for entity in entities:
        subject = f"<{base}entity/{iri_segment(entity.name)}>"
        if entity.name != previous:
            out.write(f"{subject} {RDFS_LABEL} {literal(entity.name)} .\n")
            written += 1
            previous = entity.name
        if entity.type:
            out.write(f"{subject} {RDF_TYPE} <{base}type/{iri_segment(entity.type)}> .\n")
            written += 1
    return written


def write_ntriples_statements(triplets: Iterable[Record], out: TextIO, *, base: str) -> int:
    """One statement per triplet, entity → predicate → entity. Returns the statements written."""
    entity, predicate = f"<{base}entity/", f"<{base}predicate/"
    written = 0
    for triplet in triplets:
        out.write(f"{entity}{iri_segment(triplet.subject)}> {predicate}{iri_segment(triplet.predicate)}> "
                  f"{entity}{iri_segment(triplet.object)}> .\n")
        written += 1
    return written


def entity_id(name: str, kind: str) -> str:
    """A node ID that is the same in every export of the same entity (80 bits of BLAKE2b)."""
    return hashlib.blake2b(f"{kind}\x1f{name}".encode("utf-8"), digest_size=10).hexdigest()


def node_labels(kind: str) -> str:
    """The :LABEL field: the default label, and the type where there is one (";" separates labels)."""
    label = kind.strip().replace(";", "_")
    return DEFAULT_LABEL if label in ("", DEFAULT_LABEL) else f"{DEFAULT_LABEL};{label}"


def _neo4j_writer(out: TextIO, header: tuple[str, ...]) -> _csv.Writer:
    # The header unquoted, as neo4j-admin's examples have it; every text value quoted, since the
    # importer may trim unquoted whitespace; numbers bare so the typed columns parse.
    csv.writer(out, lineterminator="\n").writerow(header)
    return csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC)


def write_neo4j_nodes(entities: Iterable[Entity], out: TextIO) -> int:
    """nodes.csv for ``neo4j-admin database import full``. Returns the nodes written."""
    writer = _neo4j_writer(out, NODE_HEADER)
    written = 0
    for entity in entities:
        writer.writerow((entity_id(entity.name, entity.type), entity.name, entity.type, node_labels(entity.type)))
        written += 1
    return written


def write_neo4j_relationships(triplets: Iterable[DistinctTriplet], out: TextIO) -> int:
    """relationships.csv: one relationship per distinct triplet, typed by its predicate, with counts."""
    writer = _neo4j_writer(out, RELATIONSHIP_HEADER)
    written = 0
    for t in triplets:
        writer.writerow((
            entity_id(t.subject, t.subject_type), entity_id(t.object, t.object_type),
            t.predicate.strip() or DEFAULT_RELATIONSHIP, t.predicate, t.count, t.documents, t.jobs,
            t.first_document_id,
        ))
        written += 1
    return written
