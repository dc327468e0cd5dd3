"""The `triplets` command line. Imports stay light: no torch, no model code here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from models.errors import TripletsError

app = typer.Typer(
    name="triplets",
    help="Turn text corpora into knowledge-graph triplets on a Celery + Redis worker fleet.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Manage the triplet store's schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@app.command()
def submit(
    paths: Annotated[list[Path], typer.Argument(help=".txt / .jsonl / .csv files or folders of them.")],
    name: Annotated[Optional[str], typer.Option(help="Job name (default: the first path's name).")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the job to the end; exit 1 if any document failed.")] = False,
) -> None:
    """Queue every document of a corpus for extraction."""
    from producer.commands import run_submit

    raise typer.Exit(run_submit(paths, name=name or paths[0].name, wait=wait))


@app.command()
def status(
    job: Annotated[Optional[int], typer.Argument(help="Job id (default: the newest job).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Documents per status, throughput and ETA of a job."""
    from producer.commands import run_status

    run_status(job, as_json=as_json)


@app.command()
def query(
    subject: Annotated[Optional[str], typer.Option(help="Exact subject, or a LIKE pattern with % or _.")] = None,
    predicate: Annotated[Optional[str], typer.Option(help="Exact predicate, or a LIKE pattern.")] = None,
    object: Annotated[Optional[str], typer.Option("--object", help="Exact object, or a LIKE pattern.")] = None,
    job: Annotated[Optional[int], typer.Option(help="Only triplets of this job.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many rows; 0 for all.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV.")] = False,
) -> None:
    """Search the stored triplets."""
    from producer.commands import run_query

    run_query(
        subject=subject, predicate=predicate, object=object, job=job, limit=limit or None,
        output="json" if as_json else "csv" if as_csv else "table",
    )


@app.command()
def requeue(job: Annotated[int, typer.Argument(help="Job id.")]) -> None:
    """Queue a job's unfinished documents again (safe: finished ones are skipped by workers)."""
    from producer.commands import run_requeue

    run_requeue(job)


@app.command()
def worker(
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N (default: TRIPLETS_DEVICE).")] = "",
    queue: Annotated[str, typer.Option(help="Queue to consume: extract or train.")] = "extract",
    concurrency: Annotated[int, typer.Option(help="Pool processes; keep 1 per GPU.")] = 1,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
) -> None:
    """Start a Celery worker pinned to one device."""
    from producer.commands import run_worker

    run_worker(device=device, queue=queue, concurrency=concurrency, loglevel=loglevel)


@app.command()
def demo() -> None:
    """Run the whole path on embedded defaults: local Redis, SQLite, a model built offline."""
    from producer.demo import run_demo

    raise typer.Exit(run_demo())


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the tables at TRIPLETS_DATABASE_URL."""
    from models.migrate import upgrade
    from models.settings import get_settings

    upgrade(get_settings().database_url)
    typer.echo("database at head")


def main() -> None:
    try:
        app()
    except TripletsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
