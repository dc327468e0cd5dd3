"""The `triplets` command line. Imports stay light: no torch, no model code here."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from producer.cli_training import adapters_app, evaluate, train_app
from producer.export_commands import export

if TYPE_CHECKING:
    from models.settings import Settings

# 0 and 1 (`submit --wait` saw failed documents) are returned by the commands themselves.
EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_INTERNAL, EXIT_INTERRUPTED = 2, 3, 4, 130
EXIT_CODES = (
    "Exit codes: 0 ok · 1 `submit --wait` finished with failed documents · 2 bad input, configuration or usage · "
    "3 service unavailable (database or broker) · 4 internal error (`triplets --debug …` prints its traceback) · "
    "130 interrupted."
)

app = typer.Typer(
    name="triplets",
    help="Turn text corpora into knowledge-graph triplets on a Celery + Redis worker fleet.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Manage the triplet store's schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(train_app, name="train")
app.add_typer(adapters_app, name="adapters")
_debug = False  # set by --debug: an unexpected error prints its traceback


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"triplets {version('triplet-queue')}")
        raise typer.Exit()


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help="On an internal error, print its traceback.")] = False,
    _version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                           help="Print the version and exit.")] = False,
) -> None:
    """Before any command: settings typos named, logging at the configured level."""
    from models.settings import unknown_variables
    from producer.logs import configure_cli_logging

    global _debug
    _debug = debug
    for warning in unknown_variables():
        print(f"warning: {warning}", file=sys.stderr)
    configure_cli_logging()


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
    subject: Annotated[Optional[str], typer.Option(help="Subject (exact, or a substring with --contains).")] = None,
    subject_type: Annotated[Optional[str], typer.Option(help="Subject type.")] = None,
    predicate: Annotated[Optional[str], typer.Option(help="Predicate.")] = None,
    object: Annotated[Optional[str], typer.Option("--object", help="Object.")] = None,
    object_type: Annotated[Optional[str], typer.Option(help="Object type.")] = None,
    job: Annotated[Optional[int], typer.Option(help="Only triplets of this job.")] = None,
    document: Annotated[Optional[str], typer.Option(help="Only this document (external id: FILE:LINE).")] = None,
    adapter: Annotated[Optional[str], typer.Option(help="Only triplets of this adapter.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Only triplets of this base model.")] = None,
    contains: Annotated[bool, typer.Option("--contains", help="Match substrings (% and _ are literal).")] = False,
    distinct: Annotated[bool, typer.Option("--distinct", help="One row per distinct triplet, with counts.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many rows; 0 for all.")] = 100,
    offset: Annotated[int, typer.Option(help="Skip this many rows first.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document: total, items.")] = False,
    as_jsonl: Annotated[bool, typer.Option("--jsonl", help="Print one JSON record per line.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV, header first.")] = False,
) -> None:
    """Search the stored triplets (docs/knowledge-graph.md)."""
    from models.triplet_query import TripletFilter
    from producer.query_commands import output_format, run_query

    output = output_format(json=as_json, jsonl=as_jsonl, csv=as_csv)
    flt = TripletFilter(subject=subject, subject_type=subject_type, predicate=predicate, object=object,
                        object_type=object_type, job_id=job, document=document, adapter=adapter, model=model,
                        contains=contains)
    run_query(flt, distinct=distinct, limit=limit, offset=offset, output=output)


@app.command()
def stats(
    job: Annotated[Optional[int], typer.Option(help="Only this job.")] = None,
    top: Annotated[int, typer.Option(help="How many predicates and entities to list.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Triplets, documents, the commonest predicates and entities, jobs, and parse/warning/grounding rates."""
    from producer.query_commands import run_stats

    run_stats(job_id=job, top=top, as_json=as_json)


@app.command()
def neighbors(
    entity: Annotated[str, typer.Argument(help="An entity as stored, subject or object.")],
    depth: Annotated[int, typer.Option(help="Hops to follow.")] = 1,
    limit: Annotated[int, typer.Option(help="At most this many edges.")] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The distinct triplets around an entity, hop by hop."""
    from producer.query_commands import run_neighbors

    run_neighbors(entity, depth=depth, limit=limit, as_json=as_json)


@app.command()
def requeue(
    job: Annotated[int, typer.Argument(help="Job id.")],
    failed: Annotated[bool, typer.Option("--failed", help="Run its failed documents again (their ending is kept "
                                         "in their history).")] = False,
) -> None:
    """Queue a job's unfinished documents again (safe: finished ones are skipped by workers); un-cancels it."""
    from producer.job_commands import run_requeue

    run_requeue(job, failed=failed)


@app.command()
def jobs(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Every job: documents per status, warnings, cancelled."""
    from producer.job_commands import run_jobs

    run_jobs(as_json=as_json)


@app.command()
def cancel(job: Annotated[int, typer.Argument(help="Job id.")]) -> None:
    """Fail a job's pending documents as cancelled; those running now finish. `requeue JOB --failed` undoes it."""
    from producer.job_commands import run_cancel

    run_cancel(job)


@app.command()
def show(
    document: Annotated[int, typer.Argument(help="Document id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """One document: status, error, warning, history, text, triplets and rejected triplets."""
    from producer.job_commands import run_show

    run_show(document, as_json=as_json)


@app.command()
def worker(
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N (default: TRIPLETS_DEVICE).")] = "",
    gpus: Annotated[str, typer.Option(help="all, or GPU indexes such as 0,1: one worker per GPU (cuda:N), "
                                           "named QUEUE-cudaN (NAME-cudaN with --name). Not with --device.")] = "",
    queue: Annotated[str, typer.Option(help="Queue to consume: extract or train.")] = "extract",
    name: Annotated[str, typer.Option(help="Node name in Flower (default: QUEUE-DEVICE); @host is added.")] = "",
    loglevel: Annotated[str, typer.Option(help="debug, info, warning or error (default: TRIPLETS_LOG_LEVEL).")] = "",
) -> None:
    """Run a worker on one device, or one per GPU: each loads and checks its model before taking work, and is
    restarted if it dies.

    Exits 3 with one line when the workers cannot be made ready (model, device, adapter).
    """
    from producer.commands import run_worker

    raise typer.Exit(run_worker(device=device, gpus=gpus, queue=queue, name=name, loglevel=loglevel))


@app.command()
def monitor(
    port: Annotated[int, typer.Option(help="Port for Flower.")] = 5555,
    address: Annotated[str, typer.Option(help="Address to bind; loopback unless you put TLS in front.")] = "127.0.0.1",
) -> None:
    """Start Flower on the broker, behind basic auth (TRIPLETS_FLOWER_BASIC_AUTH=user:password)."""
    from producer.commands import run_monitor

    run_monitor(port=port, address=address)


@app.command()
def web(
    host: Annotated[str, typer.Option(help="Address to bind; beyond loopback only with TRIPLETS_WEB_BASIC_AUTH.")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port.")] = 8080,
) -> None:
    """Serve the read-only web view: jobs, triplet search, documents, entities, a JSON API (docs/web.md)."""
    from producer.web.serve import run_web

    run_web(host=host, port=port)


@app.command()
def demo() -> None:
    """Run the whole path on embedded defaults: local Redis, SQLite, a model built offline."""
    from producer.demo import run_demo

    raise typer.Exit(run_demo())


app.command("eval")(evaluate)
app.command("export")(export)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the tables at TRIPLETS_DATABASE_URL."""
    from models.migrate import upgrade
    from models.settings import get_settings

    upgrade(get_settings().database_url)
    typer.echo("database at head")


@db_app.command("compact")
def db_compact(
    keep: Annotated[int, typer.Option(min=3, help="Merge segments until at most this many are left.")] = 32,
) -> None:
    """Merge the triplet store's segments (16 of one size at a time) so that lookups ask fewer tables."""
    from models import segments
    from models.db import make_session_factory
    from models.migrate import require_head
    from models.settings import get_settings

    url = get_settings().database_url
    require_head(url)
    with make_session_factory(url).begin() as session:
        before = len(segments.all_segments(session))
        merges = segments.compact(session, keep=keep)
        after = len(segments.all_segments(session))
    typer.echo(f"{merges} merges: {before} segments -> {after}")


def main() -> None:
    """Run the CLI; every error leaves as one line on stderr and an exit code (see EXIT_CODES)."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - the one place nothing may escape as a traceback
        sys.exit(_report(exc))


def _report(exc: Exception) -> int:
    from models.errors import BrokerUnavailableError, StoreUnavailableError
    from models.service_errors import describe, one_line

    if _debug:
        traceback.print_exc()
    known = describe(exc, settings=_settings_or_none())
    if known is None:
        hint = "" if _debug else " (`triplets --debug …` prints the traceback)"
        print(f"error: internal error: {type(exc).__name__}: {one_line(str(exc))}{hint}", file=sys.stderr)
        return EXIT_INTERNAL
    # One line, whatever the library (or a worker log's tail) said; --debug shows the rest.
    print(f"error: {one_line(str(known))}", file=sys.stderr)
    return EXIT_UNAVAILABLE if isinstance(known, (StoreUnavailableError, BrokerUnavailableError)) else EXIT_USAGE


def _settings_or_none() -> Settings | None:
    from models.errors import ConfigError
    from models.settings import get_settings

    try:
        return get_settings()
    except ConfigError:
        return None  # the error being reported may be this very one


if __name__ == "__main__":
    main()
