"""docker-compose.yml, the Dockerfile and .dockerignore, checked without a Docker engine.

The Compose file is validated against the Compose Specification's JSON schema
(tests/data/compose-spec.json: schema/compose-spec.json of github.com/compose-spec/compose-spec
at commit 00655e2222608fa6eaecdf12ac5195889ca2244a, Apache-2.0 licence), after the variable
interpolation `docker compose` does, implemented below for the forms this file uses.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from models.errors import ConfigError
from models.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = Path(__file__).parent / "data" / "compose-spec.json"
ENV = {"POSTGRES_PASSWORD": "pg-secret", "FLOWER_BASIC_AUTH": "admin:flower-secret", "WEB_BASIC_AUTH": "admin:web-secret",
       "MODELS_DIR": "/srv/models"}
# $$ (a literal $), ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}, $NAME
_VARIABLE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_]\w*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
                       r"|(?P<plain>[A-Za-z_]\w*))")


class MissingVariable(Exception):
    pass


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's substitution: ``:-``/``:?`` treat an empty variable as unset, ``-``/``?`` only an unset one."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["plain"]
        op, arg = match["op"], match["arg"] or ""
        value = env.get(name)
        unset = value is None or (value == "" and op is not None and op.startswith(":"))
        if op and op.endswith("-"):
            return arg if unset else value
        if op and op.endswith("?"):
            if unset:
                raise MissingVariable(f"{name}: {arg}")
            return value
        return value or ""

    return _VARIABLE.sub(substitute, text)


def interpolated(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {key: interpolated(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolated(value, env) for value in node]
    return node


def load_compose(env: dict[str, str]) -> dict[str, Any]:
    # YAML first, then substitution on the values, as `docker compose config` does.
    return interpolated(yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8")), env)


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Container path → (source, mode) from the short volume syntax."""
    result = {}
    for volume in service.get("volumes", []):
        source, target, *mode = volume.split(":")
        result[target] = (source, mode[0] if mode else "rw")
    return result


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(ENV)


def workers(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if (s.get("command") or [""])[0] == "worker"}


def test_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_schema_catches_a_malformed_file(compose: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["redis"]["restart"] = False  # what an unquoted `restart: no` parses to
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))


@pytest.mark.parametrize("variable", ["POSTGRES_PASSWORD", "FLOWER_BASIC_AUTH", "WEB_BASIC_AUTH", "MODELS_DIR"])
@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_required_secrets_and_paths_stop_compose(variable: str, value: str | None) -> None:
    env = {k: v for k, v in ENV.items() if k != variable} | ({} if value is None else {variable: value})
    with pytest.raises(MissingVariable, match=f"^{variable}: set {variable}"):
        load_compose(env)


def test_interpolation_forms() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d} $SET $$SET ${UNSET}", env) == "x d  d x $SET "
    with pytest.raises(MissingVariable, match="EMPTY: needed"):
        interpolate("${EMPTY:?needed}", env)
    assert interpolate("${EMPTY?needed}", env) == ""


def test_every_worker_gets_what_settings_needs(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    found = workers(compose)
    assert {"worker-gpu0", "worker-train"} <= set(found)
    for name, service in {**found, "migrate": compose["services"]["migrate"]}.items():
        env = environment(service)
        assert env["TRIPLETS_BROKER_URL"] == "redis://redis:6379/0", name
        assert env["TRIPLETS_DATABASE_URL"] == "postgresql+psycopg://triplets:pg-secret@postgres:5432/triplets", name
        assert env["TRIPLETS_BASE_MODEL"] == "/models/chatglm3-6b", name
        assert env["TRIPLETS_ADAPTER_REGISTRY"] == "/adapters", name
        for key in [k for k in os.environ if k.startswith("TRIPLETS_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = load_settings()  # the same validation a container's first command runs
        assert settings.adapter is None, f"{name} pins an adapter; workers must follow the registry"


def test_no_service_gets_an_empty_setting(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        env = environment(service)
        assert "TRIPLETS_ADAPTER" not in env, f"{name}: an empty or fixed TRIPLETS_ADAPTER"
        assert all(value != "" for value in env.values()), f"{name}: {env}"


def test_train_worker_consumes_train_and_writes_the_shared_registry(compose: dict[str, Any]) -> None:
    found = workers(compose)
    queues = {name: s["command"][s["command"].index("--queue") + 1] for name, s in found.items()}
    assert queues.pop("worker-train") == "train"
    assert set(queues.values()) == {"extract"}
    assert mounts(found["worker-train"])["/adapters"] == ("adapters", "rw")
    for name in queues:
        assert mounts(found[name])["/adapters"] == ("adapters", "ro"), name
        assert mounts(found[name])["/models"] == ("/srv/models", "ro"), name
    assert mounts(compose["services"]["producer"])["/adapters"] == ("adapters", "ro")  # promote checks folders
    assert "adapters" in compose["volumes"]
    for service in found.values():
        assert service["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
        assert service["depends_on"]["redis"] == {"condition": "service_healthy"}


def test_restart_policies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in [*workers(compose), "flower", "web", "redis", "postgres"]:
        assert services[name]["restart"] == "unless-stopped", name
    assert services["migrate"].get("restart", "no") == "no"
    assert "healthcheck" in services["redis"] and "healthcheck" in services["postgres"]


def test_redis_never_evicts_and_keeps_an_append_only_file(compose: dict[str, Any]) -> None:
    command = compose["services"]["redis"]["command"]
    options = dict(zip(command[1::2], command[2::2]))
    assert options["--maxmemory-policy"] == "noeviction"
    assert options["--appendonly"] == "yes"
    assert mounts(compose["services"]["redis"])["/data"] == ("redis-data", "rw")


def test_flower_requires_auth_and_listens_on_loopback(compose: dict[str, Any]) -> None:
    flower = compose["services"]["flower"]
    assert flower["command"][0] == "monitor"  # the command that refuses to start without auth
    env = environment(flower)
    assert env["TRIPLETS_FLOWER_BASIC_AUTH"] == "admin:flower-secret"
    assert "TRIPLETS_DATABASE_URL" not in env  # Flower reads the broker only
    assert all(port.startswith("127.0.0.1:") for port in flower["ports"])
    with pytest.raises(ConfigError, match="TRIPLETS_FLOWER_BASIC_AUTH"):
        load_settings(flower_basic_auth="admin:")


def test_web_view_requires_auth_listens_on_loopback_and_starts_with_its_settings(
        compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from producer.web.serve import check

    web = compose["services"]["web"]
    assert web["command"][:3] == ["web", "--host", "0.0.0.0"]  # refused by `triplets web` without auth
    assert web["build"]["args"]["EXTRAS"] == "web"
    assert all(port.startswith("127.0.0.1:") for port in web["ports"])
    assert web["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    for key in [k for k in os.environ if k.startswith("TRIPLETS_")]:
        monkeypatch.delenv(key)
    for key, value in environment(web).items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    assert settings.web_basic_auth.get_secret_value() == "admin:web-secret"
    check(settings, host=web["command"][2])  # the container's bind passes the command's own check


def test_dockerfile_runs_as_triplets_and_owns_the_registry() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()]
    text = "\n".join(lines)
    assert re.search(r"mkdir[^\n]*/adapters", text) and "chown triplets:triplets /adapters" in text
    users = [line for line in lines if line.startswith("USER ")]
    assert users == ["USER triplets"]
    assert text.index("chown triplets:triplets /adapters") < text.index("USER triplets")
    assert "ENV TRIPLETS_ADAPTER_REGISTRY=/adapters" in lines


def test_dockerignore_keeps_the_context_small_and_the_sources_in() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.startswith("#")]

    def ignored(path: str) -> bool:
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        for pattern in patterns:
            deep = pattern.removeprefix("**/")
            candidates = parts if pattern.startswith("**/") else prefixes
            if any(fnmatch.fnmatchcase(candidate, deep) for candidate in candidates):
                return True
        return False

    for path in (".venv/bin/python", ".git/HEAD", "tests/test_compose.py", "bench/results/submit.json", "triplets.db",
                 "models/__pycache__/x.pyc", "worker/__pycache__", ".triplets/redis.sock", "store.db", ".env"):
        assert ignored(path), path
    copied = [line.split()[1:-1] for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()
              if line.startswith("COPY ")]
    for source in [s for group in copied for s in group]:
        assert (ROOT / source).exists() and not ignored(source), source
    assert not ignored("devkit/assets/demo-glm/model.safetensors")
