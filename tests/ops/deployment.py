"""Read the deployment files the way their tools do, without a Docker engine.

- docker-compose.yml: YAML (anchors and `<<` merge keys), then ${VAR} interpolation from the
  environment and `.env` as Docker Compose does it; `.env` here is `.env.example`, i.e. what an
  operator has after `cp .env.example .env`.
- Dockerfile: buildkit's own parser (the `dockerfile` package wraps it).
- .env.example: python-dotenv, as pydantic-settings reads it.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dockerfile
import yaml
from dotenv import dotenv_values

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"

ROLES = ("migrate", "api", "worker")

# $$ | ${NAME} | ${NAME:-x} ${NAME-x} ${NAME:?x} ${NAME?x} ${NAME:+x} ${NAME+x} | $NAME
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    pass


@dataclass(frozen=True)
class VariableUse:
    name: str
    op: str | None  # None, "-", ":-", "?", ":?", "+", ":+"
    arg: str | None


def variable_uses(text: str) -> list[VariableUse]:
    uses = []
    for match in _VARIABLE.finditer(text):
        if match["escaped"]:
            continue
        uses.append(VariableUse(match["braced"] or match["bare"], match["op"], match["arg"]))
    return uses


def interpolate_string(text: str, env: Mapping[str, str]) -> str:
    """Compose's substitution: `:` forms treat an empty value like an unset one."""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["bare"]
        op, arg = match["op"], match["arg"] or ""
        value = env.get(name)
        present = value is not None and (value != "" or not (op or "").startswith(":"))
        if op in ("-", ":-"):
            return value if present and value is not None else arg
        if op in ("?", ":?"):
            if not present or value is None:
                raise InterpolationError(f"required variable {name} is missing a value: {arg}")
            return value
        if op in ("+", ":+"):
            return arg if present else ""
        return value or ""

    if "$" in _VARIABLE.sub("", text):
        raise InterpolationError(f"unsupported interpolation syntax (or a lone $) in {text!r}")
    return _VARIABLE.sub(replace, text)


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    """Interpolate every string value (compose leaves mapping keys alone)."""
    if isinstance(node, str):
        return interpolate_string(node, env)
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    return node


def raw_compose() -> dict[str, Any]:
    """The file as YAML, anchors and merge keys resolved, before interpolation."""
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def env_example() -> dict[str, str]:
    return {key: value or "" for key, value in dotenv_values(ENV_EXAMPLE).items()}


def compose_config(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The model compose would run after `cp .env.example .env` (shell variables win over .env)."""
    merged = dict(env_example())
    merged.update(env or {})
    return interpolate(raw_compose(), merged)


def service_environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's `environment:` (mapping or KEY=VALUE list) as a dict."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        return dict(item.split("=", 1) for item in environment)
    return {key: "" if value is None else str(value) for key, value in environment.items()}


def command_argv(value: str | list[str]) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else [str(part) for part in value]


# --- Dockerfile ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    base: str
    name: str | None
    commands: list[dockerfile.Command]

    def last(self, instruction: str) -> dockerfile.Command | None:
        found = [c for c in self.commands if c.cmd == instruction]
        return found[-1] if found else None

    def all(self, instruction: str) -> list[dockerfile.Command]:
        return [c for c in self.commands if c.cmd == instruction]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for command in self.all("ENV"):
            pairs = command.value
            for key, value in zip(pairs[::2], pairs[1::2], strict=True):
                values[key] = _unquote(value)
        return values


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def dockerfile_stages() -> list[Stage]:
    commands = dockerfile.parse_file(str(DOCKERFILE))
    build_args: dict[str, str] = {}
    stages: list[Stage] = []
    for command in commands:
        if command.cmd == "ARG" and not stages:
            name, _, default = command.value[0].partition("=")
            build_args[name] = _unquote(default)
        elif command.cmd == "FROM":
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: build_args[m[1] or m[2]], command.value[0])
            name = command.value[2] if len(command.value) == 3 and command.value[1].upper() == "AS" else None
            stages.append(Stage(image, name, []))
        elif stages:
            stages[-1].commands.append(command)
    return stages


def image_entrypoint() -> list[str]:
    entrypoint = dockerfile_stages()[-1].last("ENTRYPOINT")
    assert entrypoint is not None and entrypoint.json, "the final stage needs an exec-form ENTRYPOINT"
    return list(entrypoint.value)


def image_healthcheck() -> list[str]:
    """The HEALTHCHECK command of the final stage, as argv (exec form)."""
    healthcheck = dockerfile_stages()[-1].last("HEALTHCHECK")
    assert healthcheck is not None and healthcheck.json, "the final stage needs an exec-form HEALTHCHECK"
    assert healthcheck.value[0] == "CMD"
    return list(healthcheck.value[1:])


def compose_healthcheck(service: str, config: Mapping[str, Any] | None = None) -> list[str]:
    """A service's healthcheck test as argv (CMD form only)."""
    test = (config or compose_config())["services"][service]["healthcheck"]["test"]
    assert isinstance(test, list) and test[0] == "CMD", f"{service}: healthcheck must use the CMD form"
    return [str(part) for part in test[1:]]


def role_argv(service: str, config: Mapping[str, Any] | None = None) -> list[str]:
    """What a role's container runs: its entrypoint (compose's, else the image's) plus command."""
    spec = (config or compose_config())["services"][service]
    entrypoint = command_argv(spec["entrypoint"]) if "entrypoint" in spec else image_entrypoint()
    return entrypoint + command_argv(spec.get("command", []))
