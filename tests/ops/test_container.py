"""The Docker image and docker-compose.yml, for real: the project's Dockerfile built with BuildKit
and the project's compose file run by docker-compose 1.29 on this machine's engine, the way an
operator runs them (`cp .env.example .env`, `docker compose up -d`), then the README walkthrough
against the containers over HTTP.

What differs from an operator's host, and only that (tests/ops/compose.host-network.yml, whose
contents the first test pins): the base images are stand-ins built here from Debian packages
(nothing can be pulled; tests/ops/images), and every container uses host networking, with
127.0.0.1 for everything.

The other tests run in file order on one stack (module fixture), after the rest of the suite
(tests/ops/conftest.py): it starts, takes the walkthrough, goes down and comes back up with two
workers, stops. Teardown is always `down -v`. Skipped only where no Docker engine runs (failing
instead with LEHNZ_REQUIRE_DOCKER=1, as in CI).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
import yaml

from tests.ops.compose_stack import BACKING_PORTS, OVERRIDE_FILE, ComposeStack, check_ports_free, free_port
from tests.ops.images.background import BUILD_TIMEOUT_S
from tests.waiting import eventually

STACK_TIMEOUT_S = 900  # the stack's own steps; waiting for the image build comes on top
pytestmark = [pytest.mark.slow, pytest.mark.timeout(BUILD_TIMEOUT_S + STACK_TIMEOUT_S)]

APP_SERVICES = ("api", "worker")
HEALTHY_WITHIN_S = 180  # the worker's first healthcheck runs 30 s after it starts
STOP_GRACE_S = 30  # docker-compose.yml's stop_grace_period for api and worker
APP_UID = "10001"
TWO_WORKERS_UP = ("up", "--detach", "--no-build", "--scale", "worker=2")
DATA_DIR = "/var/lib/lehnz"

# The README's catalog and first shopper, plus a few shoppers so that there is something to learn.
CATALOG = {
    "serum-1": {"title": "Vitamin C serum", "brand": "Glow", "category": "skincare", "price": 24},
    "cream-2": {"title": "Night cream", "brand": "Glow", "category": "skincare", "price": 31},
    "toner-3": {"title": "Rose toner", "brand": "Glow", "category": "skincare", "price": 18},
    "mask-4": {"title": "Clay mask", "brand": "Earth", "category": "skincare", "price": 22},
    "balm-5": {"title": "Lip balm", "brand": "Earth", "category": "lips", "price": 9},
}
HISTORIES = {
    "shopper-1": [("view", "serum-1"), ("purchase", "serum-1")],
    "shopper-2": [("view", "serum-1"), ("view", "cream-2"), ("purchase", "serum-1"), ("purchase", "cream-2")],
    "shopper-3": [("view", "serum-1"), ("view", "cream-2"), ("view", "toner-3"), ("purchase", "cream-2")],
    "shopper-4": [("view", "cream-2"), ("view", "toner-3"), ("view", "mask-4"), ("purchase", "toner-3")],
    "shopper-5": [("view", "mask-4"), ("view", "balm-5"), ("purchase", "balm-5")],
    "shopper-6": [("view", "serum-1"), ("view", "toner-3"), ("purchase", "toner-3")],
}
FAMILIES = {"view": "engagement", "purchase": "conversion"}


def item_records() -> list[dict[str, Any]]:
    return [
        {"item_id": item_id, "item_type": "product", "status": "active", "attributes": attributes}
        for item_id, attributes in CATALOG.items()
    ]


def event_records(histories: dict[str, list[tuple[str, str]]]) -> list[dict[str, Any]]:
    records = []
    for user_id, history in histories.items():
        for number, (name, item_id) in enumerate(history):
            record: dict[str, Any] = {
                "event_id": str(uuid.uuid4()),
                "user_id": user_id,
                "event_family": FAMILIES[name],
                "event_name": name,
                "item_id": item_id,
            }
            if name == "purchase":
                record["context"] = {
                    "order_id": f"o-{user_id}-{number}",
                    "price": CATALOG[item_id]["price"],
                    "quantity": 1,
                }
            records.append(record)
    return records


@dataclass(frozen=True)
class Walkthrough:
    org: dict[str, str]  # lehnz org create --json
    model_version: str
    recommended: list[str]

    @property
    def sk(self) -> dict[str, str]:
        return {"X-API-KEY": self.org["secret_key"]}

    @property
    def pk(self) -> dict[str, str]:
        return {"X-API-KEY": self.org["publishable_key"]}


@pytest_asyncio.fixture(scope="module")
async def stack(
    container_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ComposeStack]:
    api_port = free_port()
    check_ports_free({**BACKING_PORTS, "api": api_port})
    stack = ComposeStack(
        directory=tmp_path_factory.mktemp("compose-project"), images=container_images, api_port=api_port
    )
    try:
        await stack.compose("up", "--detach", "--no-build", timeout=300)
        yield stack
    finally:
        await stack.compose(
            "down", "--volumes", "--remove-orphans", "--timeout", str(STOP_GRACE_S), timeout=180, check=False
        )
        leftovers = await stack.leftovers()
        assert leftovers == [], f"docker-compose down -v left these behind: {leftovers}"


@pytest_asyncio.fixture(scope="module")
async def http(stack: ComposeStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=15) as client:
        yield client


async def wait_healthy(stack: ComposeStack, service: str, replicas: int = 1) -> None:
    async def healthy() -> bool:
        return await stack.healthy(service, replicas)

    await eventually(healthy, timeout=HEALTHY_WITHIN_S, interval=1.0)


async def model_status(http: httpx.AsyncClient, sk: dict[str, str]) -> dict[str, Any]:
    response = await http.get("/v1/models/status", headers=sk)
    assert response.status_code == 200, response.text
    return dict(response.json()["data"])


async def recommend(http: httpx.AsyncClient, pk: dict[str, str]) -> dict[str, Any]:
    body = {"strategy": "personalized", "user_id": "shopper-1", "limit": 5}
    response = await http.post("/v1/recommend", json=body, headers=pk)
    assert response.status_code == 200, response.text
    return dict(response.json()["data"])


async def lehnz_json(stack: ComposeStack, *argv: str) -> Any:
    result = await stack.exec("api", "lehnz", *argv)
    assert result.code == 0, f"lehnz {' '.join(argv)} exited with {result.code}:\n{result.stderr[-3000:]}"
    return json.loads(result.stdout)


def test_the_override_changes_only_images_and_networking() -> None:
    # What the container test runs is the project's compose file; the override may only swap the
    # backing images and put everything on the host's network.
    override = yaml.safe_load(OVERRIDE_FILE.read_text())
    allowed = {
        "postgres": {"image", "network_mode"},
        "redis": {"image", "network_mode"},
        "migrate": {"network_mode", "extra_hosts"},
        "api": {"network_mode", "extra_hosts", "environment"},
        "worker": {"network_mode", "extra_hosts"},
    }
    assert {name: set(service) for name, service in override["services"].items()} == allowed
    assert set(override) - {"services"} == {"x-app-on-host-network"}
    assert {s["network_mode"] for s in override["services"].values()} == {"host"}
    assert set(override["services"]["api"]["environment"]) == {"LEHNZ_HOST", "LEHNZ_PORT"}


# --- the tests, in the order they run on the one stack ----------------------------------------


async def test_migrate_completes_then_api_and_worker_become_healthy(stack: ComposeStack) -> None:
    [migrate] = await stack.inspect("migrate")
    assert migrate["State"]["Status"] == "exited" and migrate["State"]["ExitCode"] == 0, await stack.logs(
        "migrate"
    )
    for service in APP_SERVICES:
        await wait_healthy(stack, service)
    for service in ("postgres", "redis"):
        assert await stack.healthy(service)
    for service in ("migrate", *APP_SERVICES):
        for container in await stack.inspect(service):
            assert container["Config"]["User"].split(":")[0] == APP_UID, (
                f"{service} runs as {container['Config']['User']}"
            )
    whoami = await stack.exec("api", "id", "-u")
    assert whoami.stdout.strip() == APP_UID


async def test_the_api_made_the_jwt_secret_in_the_data_volume_when_it_started(stack: ComposeStack) -> None:
    await wait_healthy(stack, "api")  # no login has happened: only the start can have made it
    result = await stack.exec("api", "stat", "--format", "%s %a %u", f"{DATA_DIR}/jwt_secret")
    assert result.code == 0, f"no {DATA_DIR}/jwt_secret after the api started: {result.stderr}"
    size, mode, owner = result.stdout.split()
    assert int(size) >= 32 and mode == "600" and owner == APP_UID


@pytest_asyncio.fixture(scope="module")
async def walkthrough(stack: ComposeStack, http: httpx.AsyncClient) -> Walkthrough:
    """The README's walkthrough, step by step, against the containers."""
    await wait_healthy(stack, "api")
    await wait_healthy(stack, "worker")
    org = await lehnz_json(stack, "org", "create", "--name", "Glow Beauty", "--json")
    assert org["secret_key"].startswith("lehnz_sk_") and org["publishable_key"].startswith("lehnz_pk_"), org
    sk, pk = {"X-API-KEY": org["secret_key"]}, {"X-API-KEY": org["publishable_key"]}

    items = await http.post("/v1/ingest/items/upsert", json=item_records(), headers=sk)
    assert items.status_code == 202 and items.json()["data"] == {"accepted": len(CATALOG)}, items.text
    events = event_records(HISTORIES)
    accepted = await http.post("/v1/ingest/events/ingest", json=events, headers=pk)
    assert accepted.status_code == 202 and accepted.json()["data"] == {"accepted": len(events)}, accepted.text

    async def persisted() -> bool:  # by the worker container, into the postgres container
        stored = (await model_status(http, sk))["stored"]
        return bool(stored["items"] == len(CATALOG) and stored["events"] == len(events))

    await eventually(persisted, timeout=60, interval=0.5)

    train = await http.post("/v1/models/train", headers=sk)
    assert train.status_code == 202, train.text

    async def trained() -> dict[str, Any] | None:
        status = await model_status(http, sk)
        assert status["last_error"] is None, status
        return status["model"]

    model = await eventually(trained, timeout=180, interval=1.0)
    assert model is not None

    async def served() -> dict[str, Any] | None:  # the api loads the new model within seconds
        answer = await recommend(http, pk)
        return answer if answer["mode"] != "fallback" and answer["recommended_items"] else None

    answer = await eventually(served, timeout=60, interval=0.5)
    assert answer is not None
    return Walkthrough(org=org, model_version=model["version"], recommended=answer["recommended_items"])


async def test_readme_walkthrough_recommends_the_trained_items(walkthrough: Walkthrough) -> None:
    assert walkthrough.recommended, "personalized answered nothing"
    assert set(walkthrough.recommended) <= set(CATALOG)
    assert "serum-1" not in walkthrough.recommended, "personalized excludes what shopper-1 bought"


async def test_down_then_up_keeps_orgs_events_models_and_the_jwt_secret(
    stack: ComposeStack, http: httpx.AsyncClient, walkthrough: Walkthrough
) -> None:
    secret_before = (await stack.exec("api", "cat", f"{DATA_DIR}/jwt_secret")).stdout
    before = await model_status(http, walkthrough.sk)
    stored_before, version_before = before["stored"], before["model"]["version"]

    await stack.compose("down", "--timeout", str(STOP_GRACE_S), timeout=180)  # no -v: volumes stay
    assert await stack.containers("api") == []
    # Back up with two workers: the next test's (one start less to wait for).
    await stack.compose(*TWO_WORKERS_UP, timeout=300)
    await wait_healthy(stack, "api")

    status = await model_status(http, walkthrough.sk)  # the org and its key: Postgres kept them
    assert status["stored"] == stored_before
    # The model files: the lehnz-data volume kept them. A train asked for while the scheduler's
    # first one ran is owed and may run after the restart (same data, same answers), so the
    # serving version may be newer; the one from before the restart must still be on the volume.
    assert status["model"] is not None and status["model"]["version"] >= version_before
    manifest = f"{DATA_DIR}/models/{walkthrough.org['org_id']}/{version_before}/manifest.json"
    kept = await stack.exec("api", "test", "-f", manifest)
    assert kept.code == 0, f"model {version_before} is not on the data volume after down/up"

    async def served() -> list[str] | None:  # the model files: the lehnz-data volume kept them
        answer = await recommend(http, walkthrough.pk)
        return answer["recommended_items"] if answer["mode"] != "fallback" else None

    assert await eventually(served, timeout=60, interval=0.5) == walkthrough.recommended
    assert (await stack.exec("api", "cat", f"{DATA_DIR}/jwt_secret")).stdout == secret_before


async def test_two_workers_run_side_by_side_and_persist_new_events(
    stack: ComposeStack, http: httpx.AsyncClient, walkthrough: Walkthrough
) -> None:
    await stack.compose(*TWO_WORKERS_UP, timeout=300)  # already so, after the previous test
    assert len(await stack.containers("worker")) == 2
    await wait_healthy(stack, "worker", replicas=2)

    stored_before = (await model_status(http, walkthrough.sk))["stored"]["events"]
    more = event_records({f"shopper-{n}": [("view", "cream-2"), ("view", "toner-3")] for n in range(10, 30)})
    accepted = await http.post("/v1/ingest/events/ingest", json=more, headers=walkthrough.pk)
    assert accepted.status_code == 202, accepted.text

    async def persisted() -> bool:
        stored = (await model_status(http, walkthrough.sk))["stored"]
        return bool(stored["events"] == stored_before + len(more))

    await eventually(persisted, timeout=60, interval=0.5)
    assert await stack.healthy("worker", replicas=2)  # neither replica crashed meanwhile


async def test_stop_is_graceful(stack: ComposeStack) -> None:
    await wait_healthy(stack, "api")
    await stack.compose("stop", timeout=180)  # SIGTERM, then SIGKILL after each stop_grace_period
    for service in ("api", "worker", "postgres", "redis"):
        for container in await stack.inspect(service):
            state = container["State"]
            assert state["Status"] == "exited", (service, state)
            # 0, not 137: the process ended on its own after SIGTERM, nothing had to be killed.
            assert state["ExitCode"] == 0 and not state["OOMKilled"], (
                f"{container['Name']} exited with {state['ExitCode']} on stop:\n{await stack.logs(service)}"
            )
    assert "Application shutdown complete" in await stack.logs("api", tail=200)
