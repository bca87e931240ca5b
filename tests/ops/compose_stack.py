"""The project's docker-compose.yml, run for real by docker-compose 1.29 on this machine's Docker
engine, for tests/ops/test_container.py.

- docker_problem(): why no Docker engine can run here (the test skips), or None; with
  LEHNZ_REQUIRE_DOCKER=1 (CI) that is a failure instead, and so is a missing tool.
- ComposeStack: one compose project (a unique name, its own .env in a temp project directory)
  made of docker-compose.yml plus the test-only override compose.host-network.yml, run through
  docker_compose_host.py (docker-compose 1.29 itself; that file says what it changes and why).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.ops.deployment import COMPOSE_FILE, ENV_EXAMPLE

OVERRIDE_FILE = Path(__file__).resolve().parent / "compose.host-network.yml"
COMPOSE_HOST = Path(__file__).resolve().parent / "docker_compose_host.py"
REQUIRE_DOCKER = os.environ.get("LEHNZ_REQUIRE_DOCKER") == "1"
# What the stack binds on the host's 127.0.0.1 besides the api (whose port the test picks):
# the LEHNZ_DATABASE_URL and LEHNZ_REDIS_URL that docker-compose.yml builds name these ports.
BACKING_PORTS = {"postgres": 5432, "redis": 6379}


def docker_problem() -> str | None:
    """Why no Docker engine can run containers here, or None."""
    docker = shutil.which("docker")
    if docker is None:
        return "no `docker` command (on Debian: apt-get install docker.io)"
    try:
        info = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 60 s"
    if info.returncode != 0:
        last = (info.stderr.strip().splitlines() or ["no output"])[-1]
        return f"the Docker engine does not answer `docker info` ({last})"
    return None


def require_docker() -> None:
    """Skip (no engine) or fail (LEHNZ_REQUIRE_DOCKER=1, or an engine but a missing tool)."""
    problem = docker_problem()
    if problem is not None:
        if REQUIRE_DOCKER:
            pytest.fail(f"LEHNZ_REQUIRE_DOCKER=1, but {problem}", pytrace=False)
        pytest.skip(f"no Docker engine can run here: {problem}")
    try:
        compose_python()
        missing = None
    except RuntimeError as error:
        missing = str(error)
    if missing is not None:
        pytest.fail(missing, pytrace=False)


def compose_python() -> str:
    """The interpreter docker-compose 1.29 runs on (its script's shebang), checked to import it."""
    script = shutil.which("docker-compose")
    if script is None:
        raise RuntimeError(
            "a Docker engine runs here but docker-compose 1.29 is missing (apt-get install docker-compose)"
        )
    first_line = Path(script).read_bytes()[:200].split(b"\n")[0].decode(errors="replace")
    python = first_line[2:].strip().split()[0] if first_line.startswith("#!") else ""
    probe = [python, "-c", "import compose, sys; sys.stdout.write(compose.__version__)"] if python else None
    version = (
        subprocess.run(probe, capture_output=True, text=True, timeout=60, check=False) if probe else None
    )
    if version is None or version.returncode != 0 or not version.stdout.startswith("1."):
        raise RuntimeError(
            f"{script} is not the Python docker-compose 1.x this test drives "
            "(Debian's docker-compose package)"
        )
    return python


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def check_ports_free(ports: dict[str, int]) -> None:
    taken = {name: port for name, port in ports.items() if port_in_use(port)}
    if taken:
        listing = ", ".join(f"{port} ({name})" for name, port in taken.items())
        pytest.fail(
            "the container test runs the stack with host networking and needs these ports free on "
            f"127.0.0.1, but they are in use: {listing}. Stop what listens there (`ss -ltnp`) and run "
            "it again.",
            pytrace=False,
        )


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str


class ComposeError(AssertionError):
    pass


class ComposeStack:
    def __init__(self, *, directory: Path, images: dict[str, str], api_port: int) -> None:
        self.project = f"lehnztest{uuid.uuid4().hex[:10]}"
        self.directory = directory
        self.api_port = api_port
        self.python = compose_python()
        self.docker = shutil.which("docker") or "docker"
        # The project directory holds the .env that docker-compose.yml reads (env_file and
        # interpolation): the operator's `cp .env.example .env`, with a password set.
        env_file = ENV_EXAMPLE.read_text().replace(
            "POSTGRES_PASSWORD=change-me", f"POSTGRES_PASSWORD=test-{uuid.uuid4().hex[:16]}"
        )
        assert env_file != ENV_EXAMPLE.read_text(), ".env.example no longer has POSTGRES_PASSWORD=change-me"
        (directory / ".env").write_text(env_file)
        # The shell's environment wins over .env in compose: keep only what runs the tools.
        self.env = {
            key: value
            for key, value in os.environ.items()
            if key in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "DOCKER_HOST", "DOCKER_CONFIG")
        }
        self.env.update(
            APP_IMAGE=images["app"],
            LEHNZ_TEST_POSTGRES_IMAGE=images["postgres"],
            LEHNZ_TEST_REDIS_IMAGE=images["redis"],
            LEHNZ_TEST_API_PORT=str(api_port),
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    async def _run(self, argv: list[str], *, timeout: float) -> Result:
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=self.directory,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise ComposeError(f"{' '.join(argv[2:6])}... did not finish within {timeout} s") from None
        assert process.returncode is not None
        return Result(process.returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace"))

    def _compose_argv(self, *args: str) -> list[str]:
        """docker-compose with the project's file, the host-network override and this project."""
        return [
            self.python,
            str(COMPOSE_HOST),
            "--file",
            str(COMPOSE_FILE),
            "--file",
            str(OVERRIDE_FILE),
            "--project-directory",
            str(self.directory),
            "--project-name",
            self.project,
            *args,
        ]

    async def compose(self, *args: str, timeout: float = 300, check: bool = True) -> Result:
        result = await self._run(self._compose_argv(*args), timeout=timeout)
        if check and result.code != 0:
            raise ComposeError(
                f"docker-compose {' '.join(args)} exited with {result.code}:\n{result.stderr[-3000:]}\n"
                f"{await self.logs()}"
            )
        return result

    async def docker_json(self, *args: str) -> Any:
        result = await self._run([self.docker, *args], timeout=60)
        assert result.code == 0, f"docker {' '.join(args)}: {result.stderr}"
        return json.loads(result.stdout)

    async def containers(self, service: str) -> list[str]:
        """Ids of the service's containers, running or not."""
        result = await self.compose("ps", "--all", "-q", service, timeout=60)
        return result.stdout.split()

    async def inspect(self, service: str) -> list[dict[str, Any]]:
        ids = await self.containers(service)
        return list(await self.docker_json("inspect", *ids)) if ids else []

    async def healthy(self, service: str, replicas: int = 1) -> bool:
        """True once `replicas` containers of the service are healthy; fails at once when one
        crashed (compose restarts it: a crash loop would otherwise look like "starting")."""
        containers = await self.inspect(service)
        for container in containers:
            state = container["State"]
            health = state.get("Health", {}).get("Status")
            if (
                container["RestartCount"]
                or state["Status"] in ("restarting", "exited")
                or health == "unhealthy"
            ):
                raise ComposeError(
                    f"{service} container {container['Name']} is {state['Status']} (health {health}, "
                    f"restarts {container['RestartCount']}, exit code {state['ExitCode']}):\n"
                    f"{await self.logs(service)}"
                )
        statuses = [c["State"].get("Health", {}).get("Status") for c in containers]
        return statuses.count("healthy") == replicas == len(statuses)

    async def exec(self, service: str, *argv: str, timeout: float = 120) -> Result:
        return await self.compose("exec", "-T", service, *argv, timeout=timeout, check=False)

    async def logs(self, *services: str, tail: int = 60) -> str:
        try:
            result = await self._run(self._compose_argv("logs", "--no-color", f"--tail={tail}", *services), timeout=60)
        except ComposeError as error:
            return f"(no logs: {error})"
        return (
            f"--- docker-compose logs {' '.join(services)} (last {tail} lines each):\n{result.stdout[-8000:]}"
        )

    async def leftovers(self) -> list[str]:
        """Containers, volumes and networks still labelled with this project."""
        label = f"label=com.docker.compose.project={self.project}"
        found = []
        for kind, argv in (
            ("container", ["ps", "--all", "--quiet", "--filter", label]),
            ("volume", ["volume", "ls", "--quiet", "--filter", label]),
            ("network", ["network", "ls", "--quiet", "--filter", label]),
        ):
            result = await self._run([self.docker, *argv], timeout=60)
            found += [f"{kind} {name}" for name in result.stdout.split()]
        return found
