"""The `lehnz` command."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

# implicit and numpy must not start one BLAS thread per core in every process.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import orjson
import typer
from rich.console import Console
from rich.table import Table

from app import logs
from app.embedded import embedded_for
from app.settings import Settings, get_settings

cli = typer.Typer(
    name="lehnz",
    help="lehnz-server: a self-hostable recommendation API server.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
org_cli = typer.Typer(help="Organisations (tenants).", no_args_is_help=True)
keys_cli = typer.Typer(help="API key pairs of an organisation.", no_args_is_help=True)
cli.add_typer(org_cli, name="org")
cli.add_typer(keys_cli, name="keys")

console = Console(stderr=True)
out = Console()


@contextlib.contextmanager
def connected_settings() -> Iterator[Settings]:
    """Settings with both URLs filled: the configured ones, else embedded servers (joined or started)."""
    settings = get_settings()
    with embedded_for(
        settings.data_dir, need_postgres=settings.database_url is None, need_redis=settings.redis_url is None
    ) as urls:
        updates: dict[str, Any] = {}
        if urls.database_url:
            updates["database_url"] = urls.database_url
        if urls.redis_url:
            updates["redis_url"] = urls.redis_url
        yield settings.model_copy(update=updates)


def _child_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env["LEHNZ_DATABASE_URL"] = settings.database_url or ""
    env["LEHNZ_REDIS_URL"] = settings.redis_url or ""
    env["LEHNZ_DATA_DIR"] = str(settings.data_dir.resolve())
    return env


def _migrate(settings: Settings) -> None:
    from app.storage.migrate import upgrade_head

    upgrade_head(settings.database_url or "")


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="interface to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="port to listen on")] = None,
) -> None:
    """Everything in one process tree: api + worker (+ embedded Postgres and Redis when no URLs are set)."""
    base = get_settings()
    logs.configure(base.log_level)
    bind_host, bind_port = host or base.host, port or base.port
    # Before anything starts: a busy port would otherwise only show up once the api tries it.
    problem = _port_problem(bind_host, bind_port)
    if problem:
        console.print(f"[red]error:[/] cannot listen on {bind_host}:{bind_port}: {problem}. "
                      "Is another `lehnz serve` running? Stop it, or pick another --port.")
        raise typer.Exit(code=2)
    with connected_settings() as settings:
        _migrate(settings)
        env = _child_env(settings)
        env["LEHNZ_HOST"], env["LEHNZ_PORT"] = bind_host, str(bind_port)
        env[_SUPERVISOR_ENV] = str(os.getpid())  # the children stop if this process dies
        children = [
            subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], env=env),
            subprocess.Popen([sys.executable, "-m", "app.cli", "api"], env=env),
        ]
        listen = f"http://{_url_host(bind_host)}:{bind_port}"
        probe = f"http://{_url_host(_LOOPBACK.get(bind_host, bind_host))}:{bind_port}/healthz"

        def announce() -> None:
            console.print(f"[bold green]lehnz serving on {listen}[/] (docs at {listen}/docs); Ctrl-C to stop")

        _supervise(children, ready=lambda: _answers(probe), on_ready=announce)


# A wildcard address is listened on, not connected to: the readiness probe uses loopback.
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host  # an IPv6 literal


_SUPERVISOR_ENV = "LEHNZ_SUPERVISOR_PID"
_ORPHAN_GRACE_S = 30.0


def _port_problem(host: str, port: int) -> str | None:
    """Why (host, port) cannot be listened on, or None. SO_REUSEADDR, as uvicorn binds."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"unknown host ({exc.strerror})"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except Exception:  # noqa: BLE001 - not answering yet, whatever the reason: ask again later
        return False


def _stop_with_supervisor() -> None:
    """In a child of `lehnz serve`: stop gracefully (as on SIGTERM) once `serve` is gone, even
    when it was killed without a chance to stop us (kill -9, the OOM killer)."""
    supervisor = os.environ.get(_SUPERVISOR_ENV)
    if not supervisor or not supervisor.isdigit():
        return
    import threading

    def watch() -> None:
        while os.getppid() == int(supervisor):
            time.sleep(0.5)
        logging.getLogger("lehnz.cli").warning("lehnz serve (pid %s) is gone; stopping", supervisor)
        os.kill(os.getpid(), signal.SIGTERM)
        # A graceful stop takes seconds; a SIGTERM that landed before the process installed its
        # handler (serve died during start-up) must not leave an orphan behind either.
        time.sleep(_ORPHAN_GRACE_S)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="lehnz-supervisor-watch", daemon=True).start()


def _supervise(
    children: list[subprocess.Popen[bytes]],
    *,
    ready: Any = None,
    on_ready: Any = None,
) -> None:
    """Wait until a child exits or we are asked to stop; then stop all children gracefully.
    Meanwhile, once `ready()` is true, call `on_ready()` (once)."""
    stopping = False
    announced = ready is None

    def ask_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, ask_stop)
    signal.signal(signal.SIGINT, ask_stop)
    while not stopping and all(child.poll() is None for child in children):
        if not announced and ready():
            announced = True
            if on_ready is not None:
                on_ready()
        time.sleep(0.2)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    for child in children:
        remaining = max(0.1, deadline - time.monotonic())
        try:
            child.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            child.kill()
    failed = [c.returncode for c in children if c.returncode not in (0, -signal.SIGTERM, None)]
    if failed and not stopping:
        raise typer.Exit(code=1)


@cli.command()
def api(
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes")] = 1,
) -> None:
    """The HTTP api only (compose/production role)."""
    import uvicorn

    base = get_settings()
    logs.configure(base.log_level, access_log=base.access_log)
    _stop_with_supervisor()
    with connected_settings() as settings:
        os.environ.update(_child_env(settings))
        get_settings.cache_clear()
        # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal into the handler
        # that was there before it; a no-op one lets the process exit 0 instead of -15.
        signal.signal(signal.SIGTERM, lambda signum, frame: None)
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            host=host or settings.host,
            port=port or settings.port,
            workers=workers,
            log_config=None,
            access_log=False,
            proxy_headers=False,  # the client IP is taken from X-Forwarded-For only for LEHNZ_TRUSTED_PROXIES
            timeout_graceful_shutdown=10,
        )


@cli.command()
def worker(burst: Annotated[bool, typer.Option(help="exit when the queues are empty")] = False) -> None:
    """The queue worker only: persists ingestion, trains models (compose/production role)."""
    from workers.main import run

    logs.configure(get_settings().log_level)
    _stop_with_supervisor()
    with connected_settings() as settings:
        asyncio.run(run(settings, burst=burst))


@cli.command()
def migrate() -> None:
    """Apply database migrations (alembic upgrade head)."""
    logs.configure(get_settings().log_level)
    with connected_settings() as settings:
        _migrate(settings)
    console.print("[green]database is at the latest migration[/]")


# --- organisations and keys -------------------------------------------------------------


def _run_db(fn: Any) -> Any:
    """Run `fn(session)` in one transaction against the configured (or embedded) database."""
    from app.storage.db import create_engine, create_session_factory

    async def main(settings: Settings) -> Any:
        engine = create_engine(settings.database_url or "", pool_size=1)
        try:
            async with create_session_factory(engine)() as session, session.begin():
                return await fn(session, settings)
        finally:
            await engine.dispose()

    with connected_settings() as settings:
        _migrate(settings)
        return asyncio.run(main(settings))


def _fail(message: str) -> None:
    console.print(f"[red]error:[/] {message}")
    raise typer.Exit(code=1)


@org_cli.command("create")
def org_create(
    name: Annotated[str, typer.Option(help="display name")],
    slug: Annotated[str | None, typer.Option(help="tenant id (lowercase, digits, dashes); from the name if absent")]
    = None,
    domain: Annotated[str, typer.Option(help="commerce, content, media, ...")] = "commerce",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON only")] = False,
) -> None:
    """Create an organisation and its first key pair (the secret is shown once)."""
    from app.errors import AppError
    from app.storage import orgs

    if slug is not None and not orgs.valid_slug(slug):
        _fail("slug must be 1-64 lowercase letters, digits or dashes, not starting or ending with a dash")

    async def create(session: Any, settings: Settings) -> dict[str, str]:
        chosen = slug or await orgs.unique_slug(session, name)
        org = await orgs.create_org(session, name=name, slug=chosen, domain=domain)
        pair = await orgs.add_key_pair(session, org.id)
        return {
            "org_id": str(org.id),
            "tenant_id": org.slug,
            "publishable_key": pair.publishable_key,
            "secret_key": pair.secret_key,
        }

    try:
        created = _run_db(create)
    except AppError as exc:
        _fail(exc.message)
        return
    if as_json:
        out.print_json(orjson.dumps(created).decode())
        return
    table = Table(title=f"organisation {created['tenant_id']}", show_header=False)
    for key, value in created.items():
        table.add_row(key, value)
    out.print(table)
    console.print("[yellow]The secret key is shown only now. Store it safely.[/]")


@org_cli.command("list")
def org_list(as_json: Annotated[bool, typer.Option("--json", help="print JSON only")] = False) -> None:
    """List organisations: tenant id (slug), name, domain, rate limit, creation time."""
    from app.storage import orgs

    async def listing(session: Any, settings: Settings) -> list[dict[str, Any]]:
        return [
            {"org_id": str(o.id), "tenant_id": o.slug, "name": o.name, "domain": o.domain,
             "rate_limit": o.rate_limit, "created_at": o.created_at.isoformat()}
            for o in await orgs.list_orgs(session)
        ]

    found = _run_db(listing)
    if as_json:
        out.print_json(orjson.dumps(found).decode())
        return
    table = Table("tenant_id", "name", "domain", "rate limit", "created (UTC)")
    table.add_column("org_id", overflow="fold")  # whole, even on a narrow terminal: it is copied
    for o in found:
        table.add_row(o["tenant_id"], o["name"], o["domain"], o["rate_limit"] or "default",
                      o["created_at"][:16].replace("T", " "), o["org_id"])
    out.print(table)


@org_cli.command("delete")
def org_delete(
    org: Annotated[str, typer.Option(help="org slug (tenant id), or its org_id")],
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False,
) -> None:
    """Delete an organisation and all its data: keys, accounts, catalog, users, events, models."""
    from redis.exceptions import RedisError

    from app.errors import NotFound
    from app.model_store import ModelStore
    from app.offboarding import delete_org
    from app.queue import create_redis
    from app.storage.db import create_engine, create_session_factory

    if not yes:
        typer.confirm(f"Delete organisation {org} and all its data? This cannot be undone", abort=True)

    async def main(settings: Settings) -> Any:
        engine = create_engine(settings.database_url or "", pool_size=1)
        redis = create_redis(settings.redis_url or "")
        try:
            return await delete_org(create_session_factory(engine), redis, ModelStore(settings.models_path), org)
        finally:
            await redis.aclose()
            await engine.dispose()

    with connected_settings() as settings:
        _migrate(settings)
        try:
            deleted = asyncio.run(main(settings))
        except NotFound:
            _fail(f"no organisation {org!r} (`lehnz org list` shows them)")
            return
        except (RedisError, OSError) as exc:
            _fail(f"the organisation may be deleted from Postgres, but Redis or the model store could not be "
                  f"cleaned ({type(exc).__name__}: {exc}); run this again with --org <org_id> once that is fixed")
            return
    if deleted.slug is None and not deleted.redis_keys and not deleted.model_versions:
        _fail(f"no organisation {org!r} and nothing left of one (`lehnz org list` shows them)")
    name = deleted.slug or "(already removed from Postgres)"
    console.print(
        f"[green]deleted organisation {name}[/] ({deleted.org_id}): {deleted.items:,} items, "
        f"{deleted.users:,} users, {deleted.events:,} events, {deleted.redis_keys:,} Redis keys"
        + (", its models" if deleted.model_versions else "")
    )


@org_cli.command("set-limit")
def org_set_limit(
    org: Annotated[str, typer.Option(help="org slug")],
    limit: Annotated[str, typer.Option(help='e.g. "5000/15minutes", or "default" for LEHNZ_RATE_LIMIT')],
) -> None:
    """Override the per-org rate limit (shared by all the org's keys)."""
    from app.api.rate_limit import parse_limit
    from app.storage import orgs

    value = None if limit == "default" else limit
    if value is not None:
        try:
            parse_limit(value)
        except ValueError as exc:
            _fail(str(exc))

    async def set_limit(session: Any, settings: Settings) -> None:
        found = await orgs.get_org_by_slug(session, org)
        await orgs.set_rate_limit(session, found.id, value)

    _run_db(set_limit)
    _bump_keys_epoch()
    console.print(f"[green]rate limit of {org}: {value or 'default'}[/]")


def _bump_keys_epoch() -> None:
    """Api replicas drop their key cache (which carries each org's limit) within a second."""
    from app.api.auth import announce_key_change
    from app.queue import create_redis

    async def announce(url: str) -> None:
        redis = create_redis(url)
        try:
            await announce_key_change(redis)
        finally:
            await redis.aclose()

    with connected_settings() as settings:
        asyncio.run(announce(settings.redis_url or ""))


@keys_cli.command("create")
def keys_create(
    org: Annotated[str, typer.Option(help="org slug")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Make a new key pair (the secret is shown once)."""
    from app.storage import orgs

    async def create(session: Any, settings: Settings) -> dict[str, str]:
        found = await orgs.get_org_by_slug(session, org)
        pair = await orgs.add_key_pair(session, found.id)
        return {"key_id": str(pair.pair_id), "publishable_key": pair.publishable_key, "secret_key": pair.secret_key}

    created = _run_db(create)
    if as_json:
        out.print_json(orjson.dumps(created).decode())
    else:
        for key, value in created.items():
            out.print(f"{key}: {value}")
        console.print("[yellow]The secret key is shown only now. Store it safely.[/]")


@keys_cli.command("list")
def keys_list(
    org: Annotated[str, typer.Option(help="org slug")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List key pairs (ids and display prefixes; keys are stored only as hashes)."""
    from app.storage import orgs

    async def listing(session: Any, settings: Settings) -> list[dict[str, Any]]:
        found = await orgs.get_org_by_slug(session, org)
        return [
            {
                "key_id": str(p.key_id),
                "publishable_key_prefix": p.publishable_prefix,
                "secret_key_prefix": p.secret_prefix,
                "created_at": p.created_at.isoformat(),
                "revoked_at": p.revoked_at.isoformat() if p.revoked_at else None,
            }
            for p in await orgs.list_key_pairs(session, found.id)
        ]

    pairs = _run_db(listing)
    if as_json:
        out.print_json(orjson.dumps(pairs).decode())
        return
    table = Table("key_id", "publishable", "secret", "created", "revoked")
    for p in pairs:
        table.add_row(p["key_id"], p["publishable_key_prefix"] + "…", p["secret_key_prefix"] + "…",
                      p["created_at"], p["revoked_at"] or "")
    out.print(table)


@keys_cli.command("revoke")
def keys_revoke(
    org: Annotated[str, typer.Option(help="org slug")],
    key_id: Annotated[str, typer.Option(help="the pair's key_id (from `lehnz keys list`)")],
) -> None:
    """Revoke a key pair; every api replica refuses it within a second."""
    import uuid

    from app.storage import orgs

    try:
        pair_id = uuid.UUID(key_id)
    except ValueError:
        _fail("key_id must be a UUID (see `lehnz keys list`)")
        return

    async def revoke(session: Any, settings: Settings) -> bool:
        found = await orgs.get_org_by_slug(session, org)
        return await orgs.revoke_key_pair(session, found.id, pair_id)

    if not _run_db(revoke):
        _fail(f"no live key pair {key_id} in {org}")
    _bump_keys_epoch()
    console.print(f"[green]revoked key pair {key_id}[/]")


@cli.command()
def train(
    org: Annotated[str, typer.Option(help="org slug")],
    wait: Annotated[bool, typer.Option(help="wait until a worker has finished the train")] = False,
    inline: Annotated[bool, typer.Option(help="train in this process instead of queueing it for a worker")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait with --wait")] = 3600,
) -> None:
    """Train an organisation's models now."""
    logs.configure(get_settings().log_level)
    with connected_settings() as settings:
        _migrate(settings)
        result = asyncio.run(_train(settings, org, wait=wait, inline=inline, timeout=timeout))
    if result.get("status") == "failed":
        _fail(f"training failed: {result.get('error')}")
    out.print_json(orjson.dumps(result).decode())


async def _train(settings: Settings, slug: str, *, wait: bool, inline: bool, timeout: float) -> dict[str, Any]:
    from app.storage import orgs, training_runs
    from workers import training
    from workers.main import close_context, open_context

    ctx, _, _ = await open_context(settings)
    try:
        async with ctx["sessions"]() as session:
            org_id = (await orgs.get_org_by_slug(session, slug)).id
            before = await training_runs.latest(session, org_id)
        if inline:
            return await training.train_org(ctx, org_id=str(org_id), reason="cli")
        job_id = await ctx["queue"].enqueue_train(str(org_id), reason="cli")
        if not wait:
            return {"status": "queued", "job_id": job_id}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            async with ctx["sessions"]() as session:
                run = await training_runs.latest(session, org_id)
            if run is not None and (before is None or run.id != before.id):
                return {"status": run.status, "version": run.version, "duration_ms": run.duration_ms,
                        "error": run.error}
            await asyncio.sleep(0.5)
        return {"status": "failed", "error": f"no worker finished the train within {timeout:.0f} s "
                                             "(is `lehnz worker` or `lehnz serve` running? or use --inline)"}
    finally:
        await close_context(ctx)


dead_letter_cli = typer.Typer(help="Jobs the worker could not persist (never dropped).", no_args_is_help=True)
cli.add_typer(dead_letter_cli, name="dead-letter")


async def _with_queue(settings: Settings, action: Any) -> Any:
    from app.queue import Queue, create_redis

    redis = create_redis(settings.redis_url or "")
    try:
        return await action(Queue(redis))
    finally:
        await redis.aclose()


@dead_letter_cli.command("list")
def dead_letter_list(limit: Annotated[int, typer.Option(help="entries to show")] = 20) -> None:
    """Show parked jobs: function, org, error, tries (not the payloads)."""
    with connected_settings() as settings:
        entries = asyncio.run(_with_queue(settings, lambda q: q.dead_letters(limit=limit)))
    table = Table("job", "function", "org", "records", "tries", "error")
    for entry in entries:
        kwargs = entry.get("kwargs", {})
        table.add_row(str(entry.get("job_id")), entry.get("function", ""), str(kwargs.get("org_id", "")),
                      str(len(kwargs.get("records") or kwargs.get("rows") or [])), str(entry.get("tries")),
                      entry.get("error", ""))
    out.print(table)


@dead_letter_cli.command("replay")
def dead_letter_replay(limit: Annotated[int, typer.Option(help="jobs to re-queue")] = 1000) -> None:
    """Re-queue parked jobs, oldest first (once whatever made them fail is fixed)."""
    with connected_settings() as settings:
        count = asyncio.run(_with_queue(settings, lambda q: q.replay_dead_letters(limit=limit)))
    console.print(f"[green]re-queued {count} job(s)[/]")


@dead_letter_cli.command("discard")
def dead_letter_discard(
    org: Annotated[str | None, typer.Option(help="only the jobs of this org id")] = None,
    everything: Annotated[bool, typer.Option("--all", help="every parked job")] = False,
    save: Annotated[Path | None, typer.Option(help="first append them to this JSONL file")] = None,
) -> None:
    """Remove parked jobs for good (after saving them with --save, if they may be needed)."""
    if (org is None) == (not everything):
        _fail("give --org ORG_ID or --all")

    def keep_copy(entries: list[dict[str, Any]]) -> None:
        assert save is not None
        with save.open("ab") as fh:  # all written (and closed) before any entry is removed
            fh.writelines(orjson.dumps(entry) + b"\n" for entry in entries)

    async def discard(queue: Any) -> int:
        return int(await queue.discard_dead_letters(org_id=org, keep_copy=keep_copy if save else None))

    with connected_settings() as settings:
        removed = asyncio.run(_with_queue(settings, discard))
    where = f" (saved to {save})" if save is not None else ""
    console.print(f"[green]discarded {removed} parked job(s){where}[/]")


def _register_tool_commands() -> None:
    """Commands whose code lives with its concern; their modules import heavy things lazily."""
    from app.bulk_import import import_command
    from benchmarks.bench_command import bench_command
    from benchmarks.eval_command import eval_command

    cli.command("import")(import_command)
    cli.command("eval")(eval_command)
    cli.command("bench")(bench_command)


_register_tool_commands()


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
