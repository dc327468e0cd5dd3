"""The `triplets` command line. Imports stay light: no torch, no model code here."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

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
train_app = typer.Typer(help="Train LoRA adapters on the `train` queue.", no_args_is_help=True)
app.add_typer(train_app, name="train")
adapters_app = typer.Typer(help="The adapter registry.", no_args_is_help=True)
app.add_typer(adapters_app, name="adapters")
_debug = False  # set by --debug: an unexpected error prints its traceback


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help="On an internal error, print its traceback.")] = False,
) -> None:
    global _debug
    _debug = debug


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
    limit: Annotated[int, typer.Option(min=0, help="At most this many rows; 0 for all.")] = 100,
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
    queue: Annotated[str, typer.Option(help="Queue to consume: extract or train.")] = "extract",
    name: Annotated[str, typer.Option(help="Node name in Flower (default: QUEUE-DEVICE); @host is added.")] = "",
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO",
) -> None:
    """Run a worker on one device: it loads and checks its model before taking work, and is restarted if it dies.

    Exits 3 with one line when the worker cannot be made ready (model, device, adapter).
    """
    from producer.commands import run_worker

    raise typer.Exit(run_worker(device=device, queue=queue, name=name, loglevel=loglevel))


@app.command()
def monitor(
    port: Annotated[int, typer.Option(help="Port for Flower.")] = 5555,
    address: Annotated[str, typer.Option(help="Address to bind; loopback unless you put TLS in front.")] = "127.0.0.1",
) -> None:
    """Start Flower on the broker, behind basic auth (TRIPLETS_FLOWER_BASIC_AUTH=user:password)."""
    from producer.commands import run_monitor

    run_monitor(port=port, address=address)


@app.command()
def demo() -> None:
    """Run the whole path on embedded defaults: local Redis, SQLite, a model built offline."""
    from producer.demo import run_demo

    raise typer.Exit(run_demo())


@train_app.command("submit")
def train_submit(
    name: Annotated[str, typer.Option(help="Adapter name in the registry.")],
    base_model: Annotated[Path, typer.Option(help="Local base model folder (as the training worker sees it).")],
    train_data: Annotated[Path, typer.Option(help="DuIE 2.0 / instruction / context-target / text+triplets JSONL.")],
    dev_data: Annotated[Optional[Path], typer.Option(help="Held-out JSONL, scored when training ends.")] = None,
    setting: Annotated[
        Optional[list[str]], typer.Option("--set", help="Any other job field, e.g. --set lora_r=16 --set epochs=2.")
    ] = None,
) -> None:
    """Validate a training job and queue it."""
    from producer.training_commands import run_train_submit

    values: dict[str, object] = {"name": name, "base_model": base_model, "train_data": train_data, "dev_data": dev_data}
    for item in setting or []:
        key, separator, value = item.partition("=")
        if not separator:
            raise typer.BadParameter(f"--set {item}: expected key=value")
        values[key.strip()] = value
    run_train_submit(values)


@train_app.command("status")
def train_status(
    job: Annotated[Optional[int], typer.Argument(help="Training job id (default: the newest).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Step, loss, samples/s and ETA of a training job."""
    from producer.training_commands import run_train_status

    run_train_status(job, as_json=as_json)


@adapters_app.command("list")
def adapters_list() -> None:
    """Every registered adapter with its scores."""
    from producer.training_commands import run_adapters_list

    run_adapters_list()


@adapters_app.command("show")
def adapters_show(ref: Annotated[str, typer.Argument(help="name or name:version")]) -> None:
    """One adapter's path, config and metrics."""
    from producer.training_commands import run_adapters_show

    run_adapters_show(ref)


@adapters_app.command("promote")
def adapters_promote(ref: Annotated[str, typer.Argument(help="name or name:version")]) -> None:
    """Make extraction workers use this adapter from their next batch."""
    from producer.training_commands import run_adapters_promote

    run_adapters_promote(ref)


@adapters_app.command("demote")
def adapters_demote(ref: Annotated[str, typer.Argument(help="name:version")]) -> None:
    """Withdraw a promotion: the adapter promoted before it is used again from the next batch."""
    from producer.training_commands import run_adapters_demote

    run_adapters_demote(ref)


@app.command("eval")
def evaluate(
    data: Annotated[Path, typer.Option(help="Held-out JSONL with gold triplets.")],
    adapter: Annotated[Optional[str], typer.Option(help="Registered adapter (name or name:version).")] = None,
    base_model: Annotated[Optional[Path], typer.Option(help="Base model folder (default: the adapter's).")] = None,
    max_examples: Annotated[int, typer.Option(help="Score at most this many examples.")] = 500,
) -> None:
    """Precision / recall / F1 (DuIE semantics) of a model on held-out data, run here."""
    from producer.training_commands import run_eval

    run_eval(adapter, data, base_model, max_examples)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the tables at TRIPLETS_DATABASE_URL."""
    from models.migrate import upgrade
    from models.settings import get_settings

    upgrade(get_settings().database_url)
    typer.echo("database at head")


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
