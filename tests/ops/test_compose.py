"""The compose file, the Dockerfile and .env.example, checked without a Docker engine.

docker-compose.yml is validated against the Compose Specification JSON schema as shipped by
check-jsonschema (its `--builtin-schema vendor.compose-spec`, kept up to date upstream), with
jsonschema, after the same ${VAR} interpolation compose performs. The roles it runs are the
`lehnz` commands that tests/ops/test_roles.py starts for real.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from check_jsonschema.builtin_schemas import get_builtin_schema
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for
from typer.testing import CliRunner

from app.cli import cli
from app.settings import Settings
from tests.ops.deployment import (
    COMPOSE_FILE,
    DOCKERFILE,
    DOCKERIGNORE,
    ENV_EXAMPLE,
    ROLES,
    ROOT,
    InterpolationError,
    command_argv,
    compose_config,
    compose_healthcheck,
    dockerfile_stages,
    env_example,
    interpolate,
    raw_compose,
    role_argv,
    service_environment,
    variable_uses,
)

APP_SERVICES = ("api", "worker")


@pytest.fixture(scope="module")
def validator() -> Validator:
    schema = get_builtin_schema("vendor.compose-spec")
    cls = validator_for(schema)  # the draft the schema declares (2020-12 today)
    cls.check_schema(schema)
    return cls(schema)


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return compose_config()


def schema_errors(validator: Validator, document: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
        for error in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    ]


# --- the compose specification ---------------------------------------------------------------


def test_compose_file_validates_against_the_compose_specification(
    validator: Validator, config: dict[str, Any]
) -> None:
    assert schema_errors(validator, config) == []


def test_compose_file_validates_before_interpolation_too(validator: Validator) -> None:
    # What editors and pre-commit hooks see.
    assert schema_errors(validator, raw_compose()) == []


@pytest.mark.parametrize(
    ("breakage", "path"),
    [
        (lambda c: c["services"]["api"].update(imagee="typo"), "services/api"),
        (lambda c: c["services"]["api"]["depends_on"]["migrate"].update(condition="done"), "condition"),
        (lambda c: c["services"]["redis"]["healthcheck"].update(intervall="5s"), "redis/healthcheck"),
        (lambda c: c.update(servces={}), "(root)"),
    ],
    ids=[
        "unknown-service-key",
        "bad-depends-on-condition",
        "unknown-healthcheck-key",
        "unknown-top-level-key",
    ],
)
def test_the_schema_rejects_a_broken_compose_file(
    validator: Validator, config: dict[str, Any], breakage: Any, path: str
) -> None:
    broken = copy.deepcopy(config)
    breakage(broken)
    errors = schema_errors(validator, broken)
    assert errors, "the validator accepted a broken file: it would accept anything"
    assert any(path in error for error in errors), errors


def test_every_variable_has_a_default_or_is_in_env_example() -> None:
    defined = set(env_example())
    text = COMPOSE_FILE.read_text()
    uses = variable_uses(text)
    assert uses, "expected ${VAR} interpolation in docker-compose.yml"
    missing = sorted({u.name for u in uses if u.op not in ("-", ":-") and u.name not in defined})
    assert missing == []
    # Nothing required is left unset after `cp .env.example .env`...
    compose_config()
    # ...and without a .env, only the variables declared required (:?) are missing.
    required = {u.name for u in uses if u.op in ("?", ":?")}
    with pytest.raises(InterpolationError):
        interpolate(raw_compose(), {})
    interpolate(raw_compose(), {name: "x" for name in required})


def test_interpolation_follows_compose_rules() -> None:
    from tests.ops.deployment import interpolate_string

    env = {"SET": "v", "EMPTY": ""}
    text = "${SET:-d} ${EMPTY:-d} ${UNSET:-d} ${EMPTY-d} $SET $$SET"
    assert interpolate_string(text, env) == "v d d  v $SET"
    assert interpolate_string("${SET:+alt}${UNSET:+alt}", env) == "alt"
    with pytest.raises(InterpolationError):
        interpolate_string("${EMPTY:?needed}", env)
    with pytest.raises(InterpolationError):
        interpolate_string("${SET/%x/y}", env)


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="Debian's docker-compose is not installed")
def test_docker_compose_1_29_config_accepts_the_file_and_agrees_on_the_result(
    tmp_path: Path, config: dict[str, Any]
) -> None:
    # A second, independent implementation: compose 1.29 parses, interpolates, merges env_file
    # and validates the file with its own schema (it needs no engine for `config`).
    shutil.copy(COMPOSE_FILE, tmp_path / "docker-compose.yml")
    shutil.copy(ENV_EXAMPLE, tmp_path / ".env")
    env = {k: v for k, v in os.environ.items() if k not in env_example() and not k.startswith("LEHNZ_")}
    result = subprocess.run(
        ["docker-compose", "config"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    for role in APP_SERVICES:
        ours = {**env_example(), **service_environment(config["services"][role])}
        assert service_environment(resolved["services"][role]) == ours
        assert resolved["services"][role]["command"] == config["services"][role]["command"]
    assert resolved["services"]["redis"]["command"] == config["services"]["redis"]["command"]


# --- the roles ------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_role_runs_the_lehnz_command_of_the_same_name(config: dict[str, Any], role: str) -> None:
    assert role_argv(role, config) == ["lehnz", role]
    result = CliRunner().invoke(cli, [role, "--help"])
    assert result.exit_code == 0, result.output


def test_the_lehnz_executable_is_the_projects_cli() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"lehnz": "app.cli:main"}


def test_app_services_share_one_image_and_use_the_compose_postgres_and_redis(config: dict[str, Any]) -> None:
    services = config["services"]
    images = {services[role]["image"] for role in ROLES}
    assert len(images) == 1
    for role in ROLES:
        env = service_environment(services[role])
        # Both URLs set: no embedded server ever starts in a container.
        database_url = env["LEHNZ_DATABASE_URL"]
        assert re.fullmatch(r"postgresql\+asyncpg://[^:@/]+:[^@/]+@postgres:5432/\w+", database_url)
        assert env["LEHNZ_REDIS_URL"] == "redis://redis:6379/0"
        assert env["LEHNZ_HOST"] == "0.0.0.0"
    postgres = service_environment(services["postgres"])
    api_url = service_environment(services["api"])["LEHNZ_DATABASE_URL"]
    assert api_url == (
        f"postgresql+asyncpg://{postgres['POSTGRES_USER']}:{postgres['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{postgres['POSTGRES_DB']}"
    )


def test_api_is_published_on_the_port_it_listens_on(config: dict[str, Any]) -> None:
    api = config["services"]["api"]
    port = service_environment(api)["LEHNZ_PORT"]
    published = [str(p) for p in api["ports"]]
    assert published == [f"{env_example()['API_PUBLISHED_PORT']}:{port}"]
    runtime = dockerfile_stages()[-1]
    assert [c.value[0] for c in runtime.all("EXPOSE")] == [port]
    for service in ("postgres", "redis", "worker", "migrate"):
        assert "ports" not in config["services"][service], f"{service} must not be published"


def test_services_use_healthchecks_and_start_in_order(config: dict[str, Any]) -> None:
    services = config["services"]
    for name in ("postgres", "redis", "api", "worker"):
        healthcheck = services[name]["healthcheck"]
        assert not healthcheck.get("disable"), name
        assert healthcheck["test"][0] in ("CMD", "CMD-SHELL"), name
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "redis-cli ping" in " ".join(services["redis"]["healthcheck"]["test"])
    assert "/healthz" in " ".join(compose_healthcheck("api", config))
    # The one-shot migration has nothing to probe; the others wait for it to succeed.
    assert services["migrate"]["healthcheck"] == {"disable": True}
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in APP_SERVICES:
        depends_on = services[name]["depends_on"]
        assert depends_on["migrate"] == {"condition": "service_completed_successfully"}
        assert depends_on["redis"] == {"condition": "service_healthy"}
        assert depends_on["postgres"] == {"condition": "service_healthy"}


def test_redis_persists_every_accepted_job(config: dict[str, Any]) -> None:
    argv = command_argv(config["services"]["redis"]["command"])
    assert argv[0] == "redis-server"
    options = dict(zip(argv[1::2], argv[2::2], strict=True))
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "everysec"
    assert options["--maxmemory-policy"] == "noeviction"
    volumes = config["services"]["redis"]["volumes"]
    assert any(v.split(":")[0] in config["volumes"] and v.split(":")[1] == "/data" for v in volumes)


def test_redis_fsync_policy_is_an_operator_setting() -> None:
    # `always` is the documented way to lose nothing accepted even when the host crashes.
    argv = command_argv(compose_config({"REDIS_APPENDFSYNC": "always"})["services"]["redis"]["command"])
    assert dict(zip(argv[1::2], argv[2::2], strict=True))["--appendfsync"] == "always"


@pytest.mark.parametrize(("service", "repository"), [("postgres", "postgres"), ("redis", "redis")])
def test_backing_images_are_pinned(config: dict[str, Any], service: str, repository: str) -> None:
    image = config["services"][service]["image"]
    name, _, tag = image.partition(":")
    assert name == repository
    assert re.fullmatch(r"\d+(\.\d+)*(-[a-z0-9.]+)?", tag), f"{image}: pin at least the major version"


def test_postgres_keeps_its_data_in_a_named_volume(config: dict[str, Any]) -> None:
    volumes = config["services"]["postgres"]["volumes"]
    data = "/var/lib/postgresql/data"
    assert any(v.split(":")[0] in config["volumes"] and v.split(":")[1] == data for v in volumes)


def test_model_store_is_one_named_volume_shared_by_api_and_worker(config: dict[str, Any]) -> None:
    mounts = {}
    for name in APP_SERVICES:
        service = config["services"][name]
        model_dir = PurePosixPath(service_environment(service)["LEHNZ_MODEL_DIR"])
        holding = [
            (source, target)
            for source, target, *_ in (v.split(":") for v in service["volumes"])
            if model_dir == PurePosixPath(target) or PurePosixPath(target) in model_dir.parents
        ]
        assert len(holding) == 1, f"{name}: LEHNZ_MODEL_DIR={model_dir} must be on exactly one volume"
        source, target = holding[0]
        assert source in config["volumes"], f"{name}: {source} is not a named volume"
        mounts[name] = (source, target, model_dir)
    assert mounts["api"] == mounts["worker"]


def test_compose_keeps_the_x_lehnz_anchor_for_the_shared_app_config() -> None:
    text = COMPOSE_FILE.read_text()
    assert re.search(r"^x-lehnz: &lehnz$", text, re.MULTILINE)
    for role in ROLES:
        assert re.search(rf"^  {role}:\n    <<: \*lehnz$", text, re.MULTILINE), role


# --- .env.example -------------------------------------------------------------------------------


def env_example_settings() -> tuple[set[str], set[str]]:
    """(LEHNZ_* names set in .env.example, LEHNZ_* names present only as a commented-out line)."""
    active, commented = set(), set()
    for line in ENV_EXAMPLE.read_text().splitlines():
        if match := re.fullmatch(r"(#\s*)?(LEHNZ_[A-Z0-9_]+)=.*", line.strip()):
            (commented if match[1] else active).add(match[2])
    return active, commented


def test_env_example_lists_every_setting() -> None:
    active, commented = env_example_settings()
    fields = {f"LEHNZ_{name.upper()}" for name in Settings.model_fields}
    assert sorted(fields - active - commented) == [], "settings missing from .env.example"
    assert sorted((active | commented) - fields) == [], ".env.example names settings that do not exist"
    # A setting whose default is "unset" can only be shown commented out: an empty value is not unset.
    unset_by_default = {
        f"LEHNZ_{name.upper()}" for name, field in Settings.model_fields.items() if field.default is None
    }
    assert commented == unset_by_default


def test_env_example_values_are_the_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("LEHNZ_"):
            monkeypatch.delenv(key)
    from_example = Settings(_env_file=ENV_EXAMPLE)  # type: ignore[call-arg]
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert from_example.model_dump() == defaults.model_dump()


def test_env_example_has_a_comment_for_every_variable() -> None:
    lines = ENV_EXAMPLE.read_text().splitlines()
    for number, line in enumerate(lines):
        if re.fullmatch(r"(#\s*)?[A-Z][A-Z0-9_]*=.*", line):
            previous = lines[number - 1]
            assert previous.startswith("#") and not re.fullmatch(r"#\s*[A-Z][A-Z0-9_]*=.*", previous), (
                f".env.example line {number + 1}: {line.split('=')[0]} needs a one-line comment above it"
            )


# --- Dockerfile and .dockerignore ----------------------------------------------------------------


def test_image_is_slim_python_and_runs_as_a_non_root_user() -> None:
    stages = dockerfile_stages()
    runtime = stages[-1]
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", runtime.base), runtime.base
    user = runtime.last("USER")
    assert user is not None and user.value[0].split(":")[0] not in ("root", "0")
    env = runtime.env()
    assert env["OPENBLAS_NUM_THREADS"] == "1"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["LEHNZ_HOST"] == "0.0.0.0"
    assert runtime.last("ENTRYPOINT").value == ("lehnz",)  # type: ignore[union-attr]
    assert runtime.last("CMD").value == ("api",)  # type: ignore[union-attr]


def _runs(stage: Any) -> str:
    return " ".join(" ".join(c.value) for c in stage.all("RUN"))


def _apt_installed(run: str) -> set[str]:
    """Packages named by the `apt-get install` commands in a RUN's shell text."""
    packages: set[str] = set()
    for command in re.split(r"&&|;|\|\|", run):
        words = command.split()
        if words[:2] == ["apt-get", "install"]:
            packages.update(word for word in words[2:] if not word.startswith("-"))
    return packages


def test_final_image_has_no_compilers_and_no_test_extras() -> None:
    stages = dockerfile_stages()
    final = _runs(stages[-1])
    # The runtime stage installs run-time libraries only: libgomp1, which implicit's wheel links.
    assert _apt_installed(final) == {"libgomp1"}
    assert "build-essential" not in final
    assert "[test]" not in final and ".[" not in final
    # Only the builder stage installs compilers; its files reach the image as wheels only.
    assert [s.name for s in stages if "build-essential" in _runs(s)] == ["builder"]


def test_apt_install_parsing_sees_every_package() -> None:
    run = "apt-get update && apt-get install -y --no-install-recommends libgomp1 curl && rm -rf /x"
    assert _apt_installed(run) == {"libgomp1", "curl"}


def test_dockerfile_names_no_frontend_image() -> None:
    # A `# syntax=` parser directive makes BuildKit pull that frontend image from a registry:
    # the build would fail on an air-gapped host. The built-in frontend has every feature used.
    for line in DOCKERFILE.read_text().splitlines():
        if not line.startswith("#"):
            break
        assert not re.match(r"#\s*syntax\s*=", line, re.IGNORECASE), line


def test_the_last_build_step_checks_that_everything_compiled_loads() -> None:
    runtime = dockerfile_stages()[-1]
    last_run = runtime.all("RUN")[-1]
    assert last_run.value == ("python /tmp/check_runtime.py",)
    mount = "--mount=type=bind,source=docker/check_runtime.py,target=/tmp/check_runtime.py"
    assert last_run.flags == (mount,)
    # ...after the last install, as the app user.
    commands = [c.cmd for c in runtime.commands]
    assert commands.index("USER") < len(commands) - 1 - commands[::-1].index("RUN")
    assert (ROOT / "docker" / "check_runtime.py").is_file()


def test_healthcheck_needs_no_curl() -> None:
    from tests.ops.deployment import image_healthcheck

    argv = image_healthcheck()
    assert argv[:2] == ["python", "-c"] and "urllib" in argv[2] and "/healthz" in argv[2]
    compile(argv[2], "<healthcheck>", "exec")


def test_dockerignore_lets_in_only_what_the_dockerfile_copies() -> None:
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    assert lines[0] == "*", "the build context should be an allowlist"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied: set[str] = set()
    for stage in dockerfile_stages():
        for command in stage.all("COPY"):
            if any(flag.startswith("--from=") for flag in command.flags):
                continue
            copied.update(PurePosixPath(source).parts[0] for source in command.value[:-1])
        for command in stage.all("RUN"):  # RUN --mount=type=bind without from= reads the context too
            for flag in command.flags:
                if not flag.startswith("--mount="):
                    continue
                options = flag.removeprefix("--mount=").split(",")
                mount = dict(option.partition("=")[::2] for option in options)
                if mount.get("type") == "bind" and "from" not in mount:
                    copied.add(mount["source"])
    assert copied == allowed
    for secret_or_bulky in (".git", ".venv", ".ci-venv", ".lehnz", ".env", "tests", "docs"):
        assert secret_or_bulky not in allowed
    assert "**/__pycache__" in lines
