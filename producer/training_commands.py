"""`triplets train …`, `triplets adapters …` and `triplets eval`: submission and the registry."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from models import registry
from models.db import make_session_factory
from models.migrate import require_head
from models.settings import get_settings
from models.train_config import parse_train_config
from producer.progress import progress_bar

console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)
EVAL_CHUNK = 128  # examples per extraction call in `eval`: how often its progress bar moves


def _sessions():  # type: ignore[no-untyped-def]
    settings = get_settings()
    require_head(settings.database_url)
    return make_session_factory(settings.database_url)


def run_train_submit(values: dict[str, object]) -> None:
    """Validate the job config here, before anything is queued, then queue it on `train`."""
    from models.training_data import require_examples, require_model_folder

    config = parse_train_config(values)
    # Checked from here, read by the training worker: catch typos before anything is queued.
    where = " (paths are as the training worker sees them)"
    require_model_folder(config.base_model, option="--base-model", where=where)
    require_examples(config.train_data, option="--train-data", where=where)
    if config.dev_data is not None:
        require_examples(config.dev_data, option="--dev-data", where=where)

    from celeryconfig import TRAIN_QUEUE  # Celery only once the job is worth queueing
    from producer.queue import broker_app
    from worker.app import TRAIN_TASK

    sessions = _sessions()
    with broker_app(get_settings()) as app:
        with sessions.begin() as session:
            job = registry.create_training_job(session, name=config.name, config=config.model_dump(mode="json"))
            job_id = job.id
        app.send_task(TRAIN_TASK, args=[job_id], queue=TRAIN_QUEUE)
    console.print(f"training job {job_id} queued: {config.name} on {config.base_model}")


def run_train_status(job_id: int | None, *, as_json: bool) -> None:
    with _sessions()() as session:
        job = registry.get_training_job(session, job_id=job_id)
        payload = {"job": job.id, "name": job.name, "status": job.status.value, "attempts": job.attempts,
                   "progress": job.progress, "error": job.error, "adapter_id": job.adapter_id}
    if as_json:
        print(json.dumps(payload, ensure_ascii=False))
        return
    console.print(
        f"training job {payload['job']} · {payload['name']} · {payload['status']} · "
        + registry.describe_progress(payload["progress"])
        + (f"\nerror: {payload['error']}" if payload["error"] else "")
    )


def run_adapters_list() -> None:
    with _sessions()() as session:
        adapters = registry.list_adapters(session)
        table = Table()
        for column in ("adapter", "base model", "F1", "strict F1", "promoted", "created"):
            table.add_column(column)
        for a in adapters:
            scores = (a.metrics or {}).get("eval", {})
            table.add_row(f"{a.name}:{a.version}", Path(a.base_model).name, _fmt(scores.get("f1")),
                          _fmt(scores.get("strict_f1")), str(a.promoted_at or ""), str(a.created_at))
    console.print(table)


def run_adapters_show(ref: str) -> None:
    settings = get_settings()
    with _sessions()() as session:
        a = registry.get_adapter(session, ref=ref)
        print(json.dumps({
            "adapter": f"{a.name}:{a.version}", "path": str(registry.resolve_adapter_path(settings.adapter_registry, a.path)),
            "base_model": a.base_model, "metrics": a.metrics, "config": a.config,
            "promoted_at": str(a.promoted_at) if a.promoted_at else None,
        }, ensure_ascii=False, indent=2))


def run_adapters_promote(ref: str) -> None:
    settings = get_settings()
    with _sessions().begin() as session:
        adapter = registry.promote_adapter(session, ref=ref, adapter_registry=settings.adapter_registry)
        console.print(f"{adapter.name}:{adapter.version} promoted: extraction workers on "
                      f"{Path(adapter.base_model).name} use it from their next batch")


def run_adapters_demote(ref: str) -> None:
    with _sessions().begin() as session:
        current = registry.demote_adapter(session, ref=ref)
        demoted = registry.get_adapter(session, ref=ref)
        now = f"{current.name}:{current.version}" if current else "no adapter (the bare base model)"
        console.print(f"{demoted.name}:{demoted.version} demoted: extraction workers on "
                      f"{Path(demoted.base_model).name} use {now} from their next batch")


def run_eval(adapter_ref: str | None, data: Path, base_model: Path | None, max_examples: int, *,
             as_json: bool) -> None:
    from models.errors import ConfigError
    from models.training_data import require_examples, require_model_folder

    require_examples(data, option="--data")  # before any model is loaded

    from worker.evaluation import evaluate_adapter

    settings = get_settings()
    adapter_path = None
    base = base_model or settings.base_model
    if adapter_ref:
        with _sessions()() as session:
            a = registry.get_adapter(session, ref=adapter_ref)
            adapter_path = registry.resolve_adapter_path(settings.adapter_registry, a.path)
            base = base or Path(a.base_model)
    if base is None:
        raise ConfigError("no base model: pass --base-model or --adapter, or set TRIPLETS_BASE_MODEL")
    require_model_folder(Path(base), option="base model")
    with progress_bar(errors) as bar:
        task = bar.add_task("loading the model", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, description="extracting", completed=done, total=total)

        # Chunks of EVAL_CHUNK examples: the bar moves, at the price of batches no larger than that.
        scores = evaluate_adapter(base, adapter_path, data, settings=settings, schema_path=settings.schema_path,
                                  max_examples=max_examples, progress=advance,
                                  chunk=min(EVAL_CHUNK, settings.max_batch_size))
    if as_json:
        print(json.dumps(scores.as_dict(), ensure_ascii=False, indent=2))
    else:
        print_scores(scores.as_dict())


def print_scores(scores: dict) -> None:
    """The overall scores, then one row per predicate (most gold triplets first)."""
    overall = Table(title=f"{scores['examples']} examples · {scores['gold']} gold triplets · "
                          f"{scores['predicted']} predicted")
    for column in ("", "precision", "recall", "F1"):
        overall.add_column(column, justify="right" if column else "left")
    overall.add_row("DuIE (subject, predicate, object)", *(_fmt(scores[key]) for key in ("precision", "recall", "f1")))
    overall.add_row("strict (and both types)", *(_fmt(scores[key]) for key in ("strict_precision", "strict_recall",
                                                                          "strict_f1")))
    console.print(overall)
    console.print(f"unparsable answers {scores['parse_failure_rate']:.1%} · "
                  f"ungrounded triplets {scores['ungrounded_rate']:.1%}")
    per_predicate = Table(title="per predicate")
    for column in ("predicate", "precision", "recall", "F1", "gold"):
        per_predicate.add_column(column, justify="left" if column == "predicate" else "right")
    rows = sorted(scores["per_predicate"].items(), key=lambda item: (-item[1]["support"], item[0]))
    for predicate, row in rows:
        per_predicate.add_row(predicate, _fmt(row["precision"]), _fmt(row["recall"]), _fmt(row["f1"]),
                              str(row["support"]))
    console.print(per_predicate)


def _fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "–"
