"""Security promises, each tested where it could break: SQL, weights, remote code. Broker auth and TLS,
passwords in URLs and Flower are in test_security_services.py.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from models import registry, store
from models.errors import ConfigError, ModelError
from models.triplet import Triplet
from tests.workers import triplets, worker_env


def test_query_filters_are_bound_parameters(sessions: sessionmaker[Session], database_url: str, tmp_path: Path) -> None:
    text = "O'Brien 导演了《Don't Look》"
    with sessions.begin() as session:
        job = store.create_job(session, name="quotes")
        [doc_id] = store.add_documents(session, job_id=job.id, documents=[store.NewDocument(text, "d1")])
        found = [Triplet("O'Brien", "导演", "Don't Look"), Triplet("《Don't Look》", "导演", "O'Brien")]
        store.record_outcomes(session, [store.Outcome(document_id=doc_id, text=text, triplets=found)], model="m",
                              adapter="", prompt_version="v1")
    env = worker_env(database_url=database_url)

    def query(*args: str) -> list[dict]:
        result = triplets(env, "query", "--jsonl", "--limit", "0", *args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in result.stdout.splitlines()]

    assert len(query()) == 2
    assert query("--subject", "x' OR 1=1 --") == []
    assert query("--object", "x') OR ('1'='1") == []
    assert query("--predicate", "导演'; DROP TABLE triplets; --") == []
    assert [(r["subject"], r["object"]) for r in query("--subject", "O'Brien")] == [("O'Brien", "Don't Look")]
    assert [r["subject"] for r in query("--object", "O'Brien")] == ["《Don't Look》"]
    assert len(query()) == 2  # the table is still there


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from devkit.tiny import build_random_model, build_tokenizer

    return build_random_model(tmp_path_factory.mktemp("tiny") / "model", build_tokenizer(["《娘家的故事》张玲"]),
                              hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=32)


def load(model_dir: Path, *, trust_remote_code: bool = False):  # type: ignore[no-untyped-def]
    """The one loader every engine and trainer goes through."""
    from worker.loader import check_model_folder, load_model

    return load_model(check_model_folder(model_dir, "TRIPLETS_BASE_MODEL"), device="cpu", precision="fp32",
                      trust_remote_code=trust_remote_code)


def test_weights_load_from_safetensors_only(tiny_model: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    pickled = shutil.copytree(tiny_model, tmp_path / "pickled")
    model = AutoModelForCausalLM.from_pretrained(pickled, local_files_only=True)
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")  # what safe_serialization=False wrote
    (pickled / "model.safetensors").unlink()
    # The folder is loadable by a loader that accepts pickles: the refusal below is the policy's.
    assert AutoModelForCausalLM.from_pretrained(pickled, local_files_only=True) is not None
    with pytest.raises(ConfigError, match=r"has no \*\.safetensors weights \(pytorch_model\.bin are pickles"):
        load(pickled)
    assert load(tiny_model)[1] is not None

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / registry.ADAPTER_CONFIG).write_text('{"peft_type": "LORA"}', encoding="utf-8")
    (adapter / registry.PICKLED_WEIGHTS).write_bytes(b"pickle")
    with pytest.raises(ConfigError, match="lacks adapter_model.safetensors .adapter_model.bin is a pickle"):
        registry.check_adapter_folder(adapter)


def test_remote_code_runs_only_when_asked(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers.dynamic_module_utils as dynamic

    # Imported remote code is copied into this cache and put on sys.path: keep both to this test.
    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    model_dir = shutil.copytree(tiny_model, tmp_path / "remote")
    marker = tmp_path / "marker"
    (model_dir / "marker_glm.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('remote code ran')\n"
        "from transformers import GlmConfig, GlmForCausalLM\n\n\n"
        "class MarkerConfig(GlmConfig):\n    model_type = 'marker-glm'\n\n\n"
        "class MarkerModel(GlmForCausalLM):\n    config_class = MarkerConfig\n",
        encoding="utf-8",
    )
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    config |= {"model_type": "marker-glm",
               "auto_map": {"AutoConfig": "marker_glm.MarkerConfig", "AutoModelForCausalLM": "marker_glm.MarkerModel"}}
    (model_dir / "config.json").write_text(json.dumps(config), encoding="utf-8")

    with pytest.raises(ModelError, match="ships its own modelling code, which runs only with TRIPLETS_TRUST_REMOTE_CODE=true") as refused:
        load(model_dir)
    assert "trust_remote_code" in str(refused.value)
    assert not marker.exists()
    load(model_dir, trust_remote_code=True)  # the marker is real: asked for, the code runs
    assert marker.read_text(encoding="utf-8") == "remote code ran"

