"""Hostile input through the CLI, as a user meets it: `triplets submit`, `train submit`, `eval`.

Each case checks the one line that names the input and the reason, that the valid rest
of the corpus went in, and that no traceback reached the user.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from models.db import make_session_factory
from models.migrate import upgrade
from models.tables import Document, Job, TrainingJob
from tests.corpus_files import tiny_png
from tests.workers import worker_env

MAX = "more than TRIPLETS_MAX_DOCUMENT_CHARS (1,000,000)"
UNREACHABLE_BROKER = "redis://127.0.0.1:1/0"


@pytest.fixture
def store(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    return url


def triplets(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "producer", *map(str, args)], env=env, capture_output=True, text=True, timeout=120
    )
    assert "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
    return result


def submit(broker_url: str, database_url: str, *paths: str | Path) -> tuple[str, list[str]]:
    """`triplets submit paths`: its summary line and the lines it printed for skipped input."""
    result = triplets(worker_env(broker_url=broker_url, database_url=database_url), "submit", *paths)
    assert result.returncode == 0, result.stdout + result.stderr
    skipped = [line.removeprefix("skipped ") for line in result.stderr.splitlines() if line.startswith("skipped ")]
    return result.stdout.strip(), skipped


def stored(database_url: str) -> list[str]:
    with make_session_factory(database_url)() as session:
        return list(session.scalars(select(Document.text).order_by(Document.id)))


def count(database_url: str, table: type) -> int:
    with make_session_factory(database_url)() as session:
        return session.scalar(select(func.count()).select_from(table)) or 0


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


# --- paths: refused before a job exists ---------------------------------------


@pytest.mark.parametrize("case", ["missing", "missing-among-good", "empty-folder", "unsupported", "only-links"])
def test_bad_path_exits_2_with_one_line_and_no_job(tmp_path: Path, broker_url: str, store: str, case: str) -> None:
    good = write(tmp_path / "good.txt", "一句话\n")
    folder = tmp_path / "folder"
    folder.mkdir()
    write(folder / "notes.md", "not a corpus\n")
    if case == "only-links":
        (folder / "loop").symlink_to("loop")
    bad, reason = {
        "missing": (tmp_path / "nope", "no such file or directory"),
        "missing-among-good": (tmp_path / "typo.txt", "no such file or directory"),
        "empty-folder": (folder, "no .txt, .jsonl or .csv file in this folder"),
        "only-links": (folder, "no .txt, .jsonl or .csv file in this folder"),
        "unsupported": (write(tmp_path / "data.json", '{"text": "x"}'), "unsupported file type '.json' "
                        "(expected .txt, .jsonl or .csv)"),
    }[case]
    paths = [good, bad] if case == "missing-among-good" else [bad]
    result = triplets(worker_env(broker_url=broker_url, database_url=store), "submit", *paths)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"error: {bad}: {reason}"
    assert count(store, Job) == 0


# --- lines and records: reported one by one, the rest goes in -------------------


def test_empty_lines_are_silent_invisible_ones_are_named(tmp_path: Path, broker_url: str, store: str) -> None:
    path = write(tmp_path / "c.txt", "第一句\n\n   \n\u200b\u200d\n\r\n\x01\x7f\n\ufeff\u2060\n第二句\n")
    summary, skipped = submit(broker_url, store, path)
    assert skipped == [f"{path}:{n}: no visible text" for n in (3, 4, 6, 7)]
    assert stored(store) == ["第一句", "第二句"]
    assert summary.endswith("2 documents queued, 0 duplicates skipped, 4 unreadable records skipped")


def test_5mb_line_is_skipped_with_the_default_limit(tmp_path: Path, broker_url: str, store: str) -> None:
    path = tmp_path / "big.txt"
    path.write_bytes(b"before\n" + b"x" * 5_000_000 + b"\nafter\n")
    jsonl = write(tmp_path / "big.jsonl", json.dumps({"text": "y" * 1_000_001}) + '\n{"text": "ok"}\n')
    summary, skipped = submit(broker_url, store, path, jsonl)
    assert skipped == [f"{path}:2: 5,000,000 characters, {MAX}", f"{jsonl}:1: 'text': 1,000,001 characters, {MAX}"]
    assert stored(store) == ["before", "after", "ok"]
    assert summary.endswith("3 documents queued, 0 duplicates skipped, 2 unreadable records skipped")


def test_invalid_utf8_costs_its_line(tmp_path: Path, broker_url: str, store: str) -> None:
    path = write(tmp_path / "u.txt", "好\n".encode() + b"\xff\xfe\xc3 broken\n" + "也好\n".encode())
    _, skipped = submit(broker_url, store, path)
    assert skipped == [f"{path}:2: not valid UTF-8"]
    assert stored(store) == ["好", "也好"]


def test_utf16_exports_go_in_as_text(tmp_path: Path, broker_url: str, store: str) -> None:
    txt = write(tmp_path / "a.txt", "第一行\r\n\r\n第二行\r\n".encode("utf-16"))  # BOM + little-endian
    jsonl = write(tmp_path / "b.jsonl", b"\xfe\xff" + '{"text": "甲"}\r\n{"text": "乙"}\r\n'.encode("utf-16-be"))
    csv_file = write(tmp_path / "c.csv", "id,text\r\n1,丙\r\n2,\"丁\r\n戊\"\r\n".encode("utf-16"))
    summary, skipped = submit(broker_url, store, txt, jsonl, csv_file)
    assert skipped == []
    assert stored(store) == ["第一行", "第二行", "甲", "乙", "丙", "丁\r\n戊"]
    assert summary.endswith("6 documents queued, 0 duplicates skipped, 0 unreadable records skipped")


def test_nul_bytes_cost_their_line_on_every_store(tmp_path: Path, broker_url: str, database_url: str) -> None:
    # PostgreSQL refuses NUL in text: one used to abort the whole submit.
    txt = write(tmp_path / "n.txt", "好\na\x00b\n也好\n")
    jsonl = write(tmp_path / "n.jsonl", '{"text": "c\\u0000d"}\n{"text": "e", "id": "\\u0000"}\n{"text": "甲"}\n')
    _, skipped = submit(broker_url, database_url, txt, jsonl)
    assert skipped == [
        f"{txt}:2: contains NUL bytes",
        f"{jsonl}:1: 'text': contains NUL bytes",
        f"{jsonl}:2: 'id': contains NUL bytes",
    ]
    assert stored(database_url) == ["好", "也好", "甲"]


def test_long_file_name_makes_a_job_on_every_store(tmp_path: Path, broker_url: str, database_url: str) -> None:
    path = write(tmp_path / ("n" * 250 + ".txt"), "一句话\n")  # the job's name column holds 200 characters
    summary, skipped = submit(broker_url, database_url, path)
    assert skipped == []
    assert stored(database_url) == ["一句话"]
    with make_session_factory(database_url)() as session:
        assert session.scalars(select(Job.name)).one() == "n" * 200


@pytest.mark.parametrize(
    "content", [tiny_png(), b"\x00\x01" + bytes(range(256)) * 40], ids=["png", "bytes"]
)
def test_binary_file_is_one_message(tmp_path: Path, broker_url: str, store: str, content: bytes) -> None:
    corpus = tmp_path / "corpus"
    binary = write(corpus / "photo.txt", content)
    write(corpus / "text.txt", "正文\n")
    summary, skipped = submit(broker_url, store, corpus)
    assert skipped == [f"{binary}: binary file, not text"]
    assert stored(store) == ["正文"]
    assert summary.endswith("1 documents queued, 0 duplicates skipped, 0 unreadable records skipped, "
                            "1 files or links skipped")


def test_non_object_jsonl_and_csv_without_text(tmp_path: Path, broker_url: str, store: str) -> None:
    jsonl = write(tmp_path / "a.jsonl", '[1, 2]\n"text"\n{"text": "甲"}\n')
    no_text = write(tmp_path / "b.csv", "id,body\n1,乙\n")
    good_csv = write(tmp_path / "c.csv", "text\n丙\n")
    summary, skipped = submit(broker_url, store, jsonl, no_text, good_csv)
    assert skipped == [
        f"{jsonl}:1: expected a JSON object",
        f"{jsonl}:2: expected a JSON object",
        f"{no_text}: no 'text' column (columns: id, body)",
    ]
    assert stored(store) == ["甲", "丙"]
    assert summary.endswith("2 unreadable records skipped, 1 files or links skipped")


def test_symlink_loops_do_not_hang(tmp_path: Path, broker_url: str, store: str) -> None:
    corpus = tmp_path / "corpus"
    write(corpus / "a.txt", "甲\n")
    write(corpus / "dir" / "b.txt", "乙\n")
    (corpus / "self").symlink_to("self")
    (corpus / "dir" / "back").symlink_to(corpus / "dir")
    summary, skipped = submit(broker_url, store, corpus)
    assert sorted(skipped) == [
        f"{corpus / 'dir' / 'back'}: link to a folder already read (a loop?), skipped",
        f"{corpus / 'self'}: symbolic link loop",
    ]
    assert stored(store) == ["甲", "乙"]
    assert summary.endswith("2 files or links skipped")


def test_hostile_file_names_are_printed_and_stored(tmp_path: Path, broker_url: str, store: str) -> None:
    markup = write(tmp_path / "[/x] [bold].txt", "甲\n \n")  # not rich markup
    undecodable = write(tmp_path / os.fsdecode(b"bad\xff.txt"), "乙\n")
    _, skipped = submit(broker_url, store, markup, undecodable)
    assert skipped == [f"{markup}:2: no visible text"]
    assert stored(store) == ["甲", "乙"]


# --- train submit and eval: checked before anything is queued or loaded ---------


@pytest.fixture
def training_files(tmp_path: Path) -> dict[str, Path]:
    model = tmp_path / "model"
    write(model / "config.json", "{}")
    return {
        "model": model,
        "no-config": write(tmp_path / "weights" / "model.safetensors", b"").parent,
        "good": write(tmp_path / "train.jsonl", json.dumps({"text": "甲是乙的导演", "triplets": []}) + "\n"),
        "useless": write(tmp_path / "bad.jsonl", '{"text": "x"}\n[1]\n'),
        "empty": write(tmp_path / "empty.jsonl", ""),
        "folder": tmp_path,
        "missing": tmp_path / "missing.jsonl",
    }


WORKER_SEES = "(paths are as the training worker sees them)"
TRAIN_CASES = {
    "missing-train": (("model", "missing", None), "--train-data {missing}: no such file " + WORKER_SEES),
    "train-is-folder": (("model", "folder", None), "--train-data {folder}: not a file " + WORKER_SEES),
    "useless-train": (("model", "useless", None), "--train-data {useless}: no usable training example in its "
                      "first 300 lines ({useless}:1: unknown record shape (keys: text))"),
    "empty-train": (("model", "empty", None), "--train-data {empty}: no usable training example in its first "
                    "300 lines (the file is empty)"),
    "missing-dev": (("model", "good", "missing"), "--dev-data {missing}: no such file " + WORKER_SEES),
    "missing-model": (("missing", "good", None), "--base-model {missing}: no such folder " + WORKER_SEES),
    "model-is-file": (("good", "good", None), "--base-model {good}: not a folder " + WORKER_SEES),
    "model-without-config": (("no-config", "good", None), "--base-model {no-config}: no config.json: "
                             "not a model folder " + WORKER_SEES),
}


@pytest.mark.parametrize("case", TRAIN_CASES)
def test_train_submit_checks_its_paths_first(store: str, training_files: dict[str, Path], case: str) -> None:
    (model, train, dev), message = TRAIN_CASES[case]
    args = ["train", "submit", "--name", "t", "--base-model", training_files[model],
            "--train-data", training_files[train], *(["--dev-data", training_files[dev]] if dev else [])]
    # An unreachable broker: the path error, not the broker's, shows the check comes first.
    result = triplets(worker_env(broker_url=UNREACHABLE_BROKER, database_url=store), *args)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: " + message.format_map(training_files)]
    assert count(store, TrainingJob) == 0


@pytest.mark.parametrize("data", ["missing", "useless", "folder"])
def test_eval_checks_its_data_before_loading_a_model(
    tmp_path: Path, store: str, training_files: dict[str, Path], data: str
) -> None:
    env = worker_env(database_url=store, base_model=tmp_path / "no-model")
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "producer", "eval", "--data", str(training_files[data])],
        env=env, capture_output=True, text=True, timeout=120,
    )
    lines = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    reason = {"missing": "no such file", "folder": "not a file",
              "useless": f"no usable training example in its first 300 lines ({training_files['useless']}:1: "
                         "unknown record shape (keys: text))"}[data]
    assert result.returncode == 2
    assert lines == [f"error: --data {training_files[data]}: {reason}"]
    assert "torch" not in {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines()}


def test_eval_names_a_missing_base_model(tmp_path: Path, store: str, training_files: dict[str, Path]) -> None:
    env = worker_env(database_url=store, base_model=tmp_path / "no-model")
    result = triplets(env, "eval", "--data", training_files["good"])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: base model {tmp_path / 'no-model'}: no such folder"]
