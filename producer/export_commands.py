"""The `triplets export` command: its arguments, and the glue from the store's streams to the writers.

Every format is written as it is read, one batch of rows in memory at a time. A file is written
beside its final name and renamed at the end, so an interrupted export leaves no half file behind.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional, TextIO

import typer

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from models.triplet_query import TripletFilter

NEO4J_FILES = ("nodes.csv", "relationships.csv")


def export(
    format: Annotated[str, typer.Option("--format", help="jsonl, csv, ntriples or neo4j.")] = "jsonl",
    job: Annotated[Optional[int], typer.Option(help="Only triplets of this job.")] = None,
    distinct: Annotated[bool, typer.Option("--distinct", help="One row per distinct triplet, with counts "
                                           "(ntriples and neo4j always are).")] = False,
    output: Annotated[Optional[Path], typer.Option(help="File to write (default: stdout); a folder for neo4j.")] = None,
    base_iri: Annotated[Optional[str], typer.Option(help="ntriples: IRI prefix of entities, predicates and types "
                                                    "(default: urn:triplet-queue:).")] = None,
) -> None:
    """Write the stored triplets as JSON lines, CSV, N-Triples or neo4j-admin import files, streaming."""
    run_export(format=format, job=job, distinct=distinct, output=output, base_iri=base_iri)


def run_export(*, format: str, job: int | None, distinct: bool, output: Path | None, base_iri: str | None) -> None:
    from models.errors import InputError
    from models.db import read_sessions
    from models.migrate import require_head
    from models.settings import get_settings
    from models.store import get_job
    from models.triplet_query import TripletFilter
    from producer.graph_formats import DEFAULT_BASE_IRI, FORMATS, check_base_iri

    if format not in FORMATS:
        raise InputError("--format", f"unknown format {format!r}: use {', '.join(FORMATS)}")
    base = check_base_iri(base_iri if base_iri is not None else DEFAULT_BASE_IRI)
    _check_output(format, output)
    settings = get_settings()
    require_head(settings.database_url)
    flt = TripletFilter(job_id=job)
    with read_sessions(settings.database_url)() as session:
        if job is not None:
            get_job(session, job_id=job)  # an unknown job is an error, not an empty export
        if format == "neo4j":
            assert output is not None
            nodes, relationships = export_neo4j(session, flt, output)
            print(f"wrote {nodes} nodes and {relationships} relationships to {output}\n"
                  f"import them with: {neo4j_import_command(output)}", file=sys.stderr)
            return
        try:
            with _destination(output) as out:
                written = export_stream(session, flt, format, out, distinct=distinct, base=base)
        except BrokenPipeError:
            _quiet_stdout()  # the reader stopped early (`| head`): nothing wrong, nothing more to say
            return
    unit = "statements" if format == "ntriples" else "distinct triplets" if distinct else "triplets"
    print(f"wrote {written} {unit} to {output or 'stdout'}", file=sys.stderr)


def export_stream(session: Session, flt: TripletFilter, format: str, out: TextIO, *, distinct: bool,
                  base: str, batch: int | None = None) -> int:
    """Write ``format`` (jsonl, csv or ntriples) to ``out``; returns the rows or statements written."""
    from models.graph_export import iter_entities
    from models.triplet_query import STREAM_BATCH, iter_distinct, iter_triplets
    from producer import graph_formats

    batch = batch or STREAM_BATCH
    if format == "ntriples":
        # A graph is a set: one statement per distinct triplet, whatever --distinct says.
        written = graph_formats.write_ntriples_entities(iter_entities(session, flt, batch=batch), out, base=base)
        triplets = iter_distinct(session, flt, batch=batch)
        return written + graph_formats.write_ntriples_statements(triplets, out, base=base)
    records = iter_distinct(session, flt, batch=batch) if distinct else iter_triplets(session, flt, batch=batch)
    if format == "csv":
        return graph_formats.write_csv(records, out, distinct=distinct)
    return graph_formats.write_jsonl(records, out)


def export_neo4j(session: Session, flt: TripletFilter, folder: Path, *, batch: int | None = None) -> tuple[int, int]:
    """nodes.csv and relationships.csv in ``folder`` (made if missing); returns (nodes, relationships)."""
    from models.graph_export import iter_entities
    from models.triplet_query import STREAM_BATCH, iter_distinct
    from producer.graph_formats import write_neo4j_nodes, write_neo4j_relationships

    batch = batch or STREAM_BATCH
    folder.mkdir(parents=True, exist_ok=True)
    with _destination(folder / NEO4J_FILES[0]) as out:
        nodes = write_neo4j_nodes(iter_entities(session, flt, batch=batch), out)
    with _destination(folder / NEO4J_FILES[1]) as out:
        relationships = write_neo4j_relationships(iter_distinct(session, flt, batch=batch), out)
    return nodes, relationships


def neo4j_import_command(folder: Path) -> str:
    # Quoted text may hold newlines: the importer reads them only with --multiline-fields.
    # The database name comes first: --nodes/--relationships take several files each.
    nodes, relationships = (shlex.quote(str(folder / name)) for name in NEO4J_FILES)
    return (f"neo4j-admin database import full neo4j --multiline-fields=true --nodes={nodes} "
            f"--relationships={relationships}")


def _check_output(format: str, output: Path | None) -> None:
    from models.errors import InputError

    if format == "neo4j":
        if output is None:
            raise InputError("--output", "neo4j writes nodes.csv and relationships.csv: give a folder")
        if output.exists() and not output.is_dir():
            raise InputError("--output", f"{output} is a file; neo4j needs a folder")
        return
    if output is not None and output.is_dir():
        raise InputError("--output", f"{output} is a folder; {format} needs a file name")
    if output is not None and not output.parent.is_dir():
        raise InputError("--output", f"{output.parent} is not a folder")


@contextmanager
def _destination(path: Path | None) -> Iterator[TextIO]:
    """``path`` opened for writing through a temporary name, or stdout as UTF-8."""
    if path is None:
        if hasattr(sys.stdout, "reconfigure"):
            sys.stdout.reconfigure(encoding="utf-8")  # Chinese text, whatever the locale
        yield sys.stdout
        sys.stdout.flush()
        return
    partial = path.with_name(path.name + ".partial")
    try:
        # newline="": the csv module writes its own line ends
        with partial.open("w", encoding="utf-8", newline="") as out:
            yield out
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _quiet_stdout() -> None:
    # Python would report the broken pipe again when it flushes stdout at exit.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
