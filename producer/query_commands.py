"""The `query`, `stats` and `neighbors` commands: the triplet store read as a knowledge graph.

Tables are for a person and always say how many rows matched; --json, --jsonl and --csv are for
programs and carry every field, a header included when nothing matched.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from itertools import groupby

from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy.orm import Session

from models import triplet_query as tq
from models.db import make_session_factory
from models.errors import InputError, NotFoundError
from models.graph_stats import Rate, StoreStats, store_stats
from models.migrate import require_head
from models.settings import get_settings

console = Console(soft_wrap=True)
KEY_COLUMNS = ("subject", "subject_type", "predicate", "object", "object_type")
Row = tq.TripletRecord | tq.DistinctTriplet


def output_format(**chosen: bool) -> str:
    """"table", or the one output option of ``chosen`` (json=…, jsonl=…, csv=…) that is set."""
    given = [name for name, on in chosen.items() if on]
    if len(given) > 1:
        raise InputError(f"--{given[0]}", f"not with --{given[1]}: choose one output format")
    return given[0] if given else "table"


def run_query(flt: tq.TripletFilter, *, distinct: bool, limit: int, offset: int, output: str) -> None:
    """Print the triplets matching ``flt`` (``limit`` 0: all of them) in ``output``'s format."""
    _at_least(0, limit=limit, offset=offset)
    with _session() as session:
        total, items = _matches(session, flt, distinct=distinct, limit=limit or None, offset=offset)
        kind = tq.DistinctTriplet if distinct else tq.TripletRecord
        if output == "json":
            _write_json({"total": total, "offset": offset, "limit": limit or None}, items)
        elif output == "jsonl":
            for item in items:
                sys.stdout.write(json.dumps(item.as_dict(), ensure_ascii=False) + "\n")
        elif output == "csv":
            writer = csv.DictWriter(sys.stdout, fieldnames=[field.name for field in fields(kind)])
            writer.writeheader()
            writer.writerows(item.as_dict() for item in items)
        else:
            shown = _print_table(items, distinct=distinct)
            noun = "distinct triplets" if distinct else "triplets"
            console.print(_footer(total, offset, shown, noun), markup=False, highlight=False)


def _matches(session: Session, flt: tq.TripletFilter, *, distinct: bool, limit: int | None,
             offset: int) -> tuple[int, Iterable[Row]]:
    """The number matching and the rows asked for; every row is streamed, not held, when all are asked for."""
    find = tq.find_distinct if distinct else tq.find_triplets
    if limit is None and offset == 0:
        stream = tq.iter_distinct if distinct else tq.iter_triplets
        return find(session, flt, limit=0).total, stream(session, flt)
    page = find(session, flt, limit=limit, offset=offset)
    return page.total, page.items


def _write_json(head: dict[str, object], items: Iterable[Row]) -> None:
    # Written as it is read, so `--json --limit 0` on a large store holds one row at a time.
    sys.stdout.write(json.dumps(head)[:-1] + ', "items": [')
    for index, item in enumerate(items):
        sys.stdout.write((", " if index else "") + json.dumps(item.as_dict(), ensure_ascii=False))
    sys.stdout.write("]}\n")


def _print_table(items: Iterable[Row], *, distinct: bool) -> int:
    extra = ("count", "documents", "jobs") if distinct else ("document", "job_id")
    table = Table(*KEY_COLUMNS, *extra)
    shown = 0
    for item in items:
        values = item.as_dict()
        table.add_row(*(Text(str(values[column])) for column in (*KEY_COLUMNS, *extra)))
        shown += 1
    if shown:
        console.print(table)
    return shown


def _footer(total: int, offset: int, shown: int, noun: str) -> str:
    if total == 0:
        return f"no {noun} match"
    if shown == 0:
        return f"none shown: {total} {noun} match, fewer than --offset {offset}"
    end = offset + shown
    return f"showing {offset + 1}–{end} of {total} {noun}" + (f" (next page: --offset {end})" if end < total else "")


def run_stats(*, job_id: int | None, top: int, as_json: bool) -> None:
    _at_least(1, top=top)
    with _session() as session:
        stats = store_stats(session, job_id=job_id, top=top)
    if as_json:
        print(json.dumps(stats.as_dict(), ensure_ascii=False))
        return
    _print_summary(stats)
    for title, heading, rows in (("predicates", "predicate", stats.predicates),
                                 ("entities (as subject or object)", "entity", stats.entities)):
        table = Table(heading, "triplets", title=f"top {len(rows)} {title}")
        for name, count in rows:
            table.add_row(Text(name), str(count))
        console.print(table)
    jobs = Table("job", "name", "documents", "done", "failed", "triplets", title="jobs")
    for job in stats.jobs:
        jobs.add_row(str(job.id), Text(job.name), str(job.documents), str(job.done), str(job.failed),
                     str(job.triplets))
    console.print(jobs)


def _print_summary(stats: StoreStats) -> None:
    table = Table("", "", title="the store" if stats.job_id is None else f"job {stats.job_id}", show_header=False)
    for label, value in (
        ("triplets", str(stats.triplets)), ("distinct triplets", str(stats.distinct_triplets)),
        ("documents done", str(stats.documents_done)), ("documents failed", str(stats.documents_failed)),
        ("parse failures (of finished documents)", _rate(stats.parse_failures)),
        ("warnings (of done documents)", _rate(stats.warnings)),
        ("ungrounded rejections (of triplets produced)", _rate(stats.ungrounded)),
    ):
        table.add_row(label, value)
    console.print(table)


def _rate(rate: Rate) -> str:
    return f"{rate.count} of {rate.of}" + ("" if rate.value is None else f" ({rate.value:.1%})")


def run_neighbors(entity: str, *, depth: int, limit: int, as_json: bool) -> None:
    _at_least(1, depth=depth, limit=limit)
    with _session() as session:
        edges = tq.neighbors(session, entity, depth=depth, limit=limit)
    if not edges:
        raise NotFoundError(f"entity {entity!r}: in no stored triplet, as subject or object")
    if as_json:
        payload = {"entity": entity, "depth": depth, "limit": limit, "edges": [edge.as_dict() for edge in edges]}
        print(json.dumps(payload, ensure_ascii=False))
        return
    for hop, group in groupby(edges, key=lambda edge: edge.hop):
        hop_edges = list(group)
        table = Table(*KEY_COLUMNS, "count", title=f"hop {hop} · {_count(len(hop_edges), 'edge')}")
        for edge in hop_edges:
            values = edge.as_dict()
            table.add_row(*(Text(str(values[column])) for column in (*KEY_COLUMNS, "count")))
        console.print(table)
    capped = " (the --limit: there may be more)" if len(edges) >= limit else ""
    console.print(f"{_count(len(edges), 'edge')} within {_count(depth, 'hop')} of {entity}{capped}", markup=False,
                  highlight=False)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _at_least(minimum: int, **options: int) -> None:
    # Checked before the store is opened: PostgreSQL fails a negative LIMIT, SQLite ignores it.
    for name, value in options.items():
        if value < minimum:
            raise InputError(f"--{name}", f"must be {minimum} or more, got {value}")


@contextmanager
def _session() -> Iterator[Session]:
    settings = get_settings()
    require_head(settings.database_url)
    with make_session_factory(settings.database_url)() as session:
        yield session
