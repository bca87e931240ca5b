"""The `lehnz` command.

Every command finds its servers and opens what it works with the same way (app/resources.py:
`connected`, then `open_resources`); `lehnz serve` runs the api and the worker under
app/supervisor.py; tables come from app/cli_tables.py. A user error is one line on stderr and a
non-zero exit, never a traceback (`main`). `import`, `eval` and `bench` live with their concern and
are loaded only when run or listed (_ToolGroup): app/ never imports benchmarks/ or workers/ at
import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from difflib import get_close_matches
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

# implicit and numpy must not start one BLAS thread per core in every process.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup
from typer.main import get_command_from_info
from typer.models import CommandInfo

from app import logs
from app.cli_tables import Column, print_records, print_table
from app.resources import CommandError, Resources, connected, open_resources, root_cause
from app.settings import Settings, get_settings

try:
    from typer._click.exceptions import ClickException, UsageError  # typer >= 0.24 vendors click
except ImportError:
    from click.exceptions import ClickException, UsageError  # type: ignore[assignment]

if TYPE_CHECKING:
    from typer._click import Command, Context

    from app.storage.migrate import Upgrade

T = TypeVar("T")

# Commands whose code lives with its concern: name -> (module, function). Their modules are
# imported only when the command runs or `lehnz --help` lists it, so app/ never imports
# benchmarks/ at import time and `lehnz org list` loads none of them.
_TOOLS = {
    "import": ("app.bulk_import", "import_command"),
    "eval": ("benchmarks.eval_command", "eval_command"),
    "bench": ("benchmarks.bench_command", "bench_command"),
}


class _ToolGroup(TyperGroup):
    """The `lehnz` group: its own commands, plus the tools', built from their modules on demand."""

    def list_commands(self, ctx: Context) -> list[str]:
        # Where typer would list them had they been registered with cli.command(): after the
        # plain commands, before the sub-groups.
        names = super().list_commands(ctx)
        groups = [name for name in names if isinstance(self.commands[name], TyperGroup)]
        return [*(name for name in names if name not in groups), *_TOOLS, *groups]

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        if cmd_name not in _TOOLS:
            return super().get_command(ctx, cmd_name)
        module, function = _TOOLS[cmd_name]
        callback = getattr(importlib.import_module(module), function)
        # What cli.command(cmd_name)(callback) would have built.
        return get_command_from_info(
            CommandInfo(name=cmd_name, callback=callback),
            pretty_exceptions_short=cli.pretty_exceptions_short,
            rich_markup_mode=self.rich_markup_mode,
        )

    def resolve_command(self, ctx: Context, args: list[str]) -> tuple[str | None, Command | None, list[str]]:
        # typer's "Did you mean ...?" looks only in self.commands, where the tools are not: it is
        # made here instead, from every name (typer without suggest_commands made none).
        suggest = getattr(self, "suggest_commands", False)
        self.suggest_commands = False
        try:
            return super().resolve_command(ctx, args)
        except UsageError as exc:
            near = get_close_matches(args[0], self.list_commands(ctx)) if suggest and args else []
            if near:
                exc.message = f"{exc.message.rstrip('.')}. Did you mean {', '.join(map(repr, near))}?"
            raise
        finally:
            self.suggest_commands = suggest


# Plain (click-style) help: rich's panels print a `<bool>` type for every flag, keep the
# docstrings' line breaks and cut long option names at 80 columns.
cli = typer.Typer(
    cls=_ToolGroup,
    name="lehnz",
    help="lehnz-server: a self-hostable recommendation API server.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
org_cli = typer.Typer(help="Organisations (tenants).", no_args_is_help=True, rich_markup_mode=None)
keys_cli = typer.Typer(help="API key pairs of an organisation.", no_args_is_help=True, rich_markup_mode=None)
dead_letter_cli = typer.Typer(help="Jobs the worker could not persist (never dropped).", no_args_is_help=True,
                              rich_markup_mode=None)
cli.add_typer(org_cli, name="org")
cli.add_typer(keys_cli, name="keys")
cli.add_typer(dead_letter_cli, name="dead-letter")

console = Console(stderr=True, soft_wrap=True)  # a message is one line, however narrow the terminal
out = Console()

_Org = Annotated[str, typer.Option(help="the organisation: its slug (tenant id) or its org_id")]
_Json = Annotated[bool, typer.Option("--json", help="print JSON only (for scripts); nothing is cut")]
# The real defaults are the settings' (LEHNZ_HOST, LEHNZ_PORT), so the help names them.
_Host = Annotated[str | None, typer.Option(
    help="interface to listen on  [default: LEHNZ_HOST, else 127.0.0.1]")]
_Port = Annotated[int | None, typer.Option(
    min=1, max=65535, help="port to listen on  [default: LEHNZ_PORT, else 8000]")]
_Init = Annotated[bool, typer.Option(
    "--init", help="create a new embedded database in the data dir if there is none (`lehnz serve` does)")]


def _fail(message: str, *, code: int = 1) -> NoReturn:
    console.print(f"[red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code=code)


def _note(message: str) -> None:
    console.print(escape(message), style="dim", highlight=False)


def _print_json(value: Any) -> None:
    out.print_json(orjson.dumps(value).decode())


# --- finding the servers, opening the handles --------------------------------------------------


@contextlib.contextmanager
def connected_settings(*, init: bool = False, can_init: bool = False) -> Iterator[Settings]:
    """Settings with both URLs filled: the configured ones, else embedded servers (joined or
    started), those of the running `lehnz serve` when this folder has none (app/resources.py)."""
    with connected(get_settings(), init=init, can_init=can_init, notify=_note) as settings:
        yield settings


def _migrate(settings: Settings) -> Upgrade:
    async def check_and_migrate() -> Upgrade:
        async with open_resources(settings, database=True, migrate=True) as resources:
            assert resources.upgrade is not None
            return resources.upgrade

    return asyncio.run(check_and_migrate())


def _run(
    action: Callable[[Resources], Awaitable[T]], *, database: bool = True, redis: bool = False,
    init: bool = False, can_init: bool = False,
) -> T:
    """Run `action` with the resources it needs; the migrations are applied first when it uses
    the database (as every command always did)."""

    async def main(settings: Settings) -> T:
        async with open_resources(settings, database=database, redis=redis, migrate=database) as resources:
            return await action(resources)

    with connected_settings(init=init, can_init=can_init) as settings:
        return asyncio.run(main(settings))


async def _find_org(resources: Resources, ref: str) -> Any:
    from app.storage import orgs

    async with resources.sessions() as session:
        return await orgs.find_org(session, ref)


# --- the roles --------------------------------------------------------------------------------

# A wildcard address is listened on, not connected to: the readiness probe uses loopback.
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host  # an IPv6 literal


def _child_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env["LEHNZ_DATABASE_URL"] = settings.database_url or ""
    env["LEHNZ_REDIS_URL"] = settings.redis_url or ""
    env["LEHNZ_DATA_DIR"] = str(settings.data_dir.resolve())
    env["LEHNZ_MODEL_DIR"] = str(settings.models_path)
    return env


@cli.command()
def serve(
    host: _Host = None,
    port: _Port = None,
) -> None:
    """Everything in one process tree: api + worker (+ embedded Postgres and Redis when no URLs
    are set). A crashed api or worker is restarted; a crash loop stops everything (exit 1)."""
    from app.embedded import ServePointer, write_pointer
    from app.supervisor import Child, CrashPolicy, Supervisor, child_env

    base = get_settings()
    logs.configure(base.log_level)
    bind_host, bind_port = host or base.host, port or base.port
    # Before anything starts: a busy port would otherwise only show up once the api tries it.
    problem = _port_problem(bind_host, bind_port)
    if problem:
        _fail(f"cannot listen on {bind_host}:{bind_port}: {problem}. Is another `lehnz serve` running? "
              "Stop it, or pick another --port.", code=2)
    with connected_settings(init=True) as settings:
        upgrade = _migrate(settings)
        if upgrade.applied:
            _note(_describe_upgrade(upgrade))
        listen = f"http://{_url_host(bind_host)}:{bind_port}"
        probe = f"http://{_url_host(_LOOPBACK.get(bind_host, bind_host))}:{bind_port}/healthz"
        env = child_env({**_child_env(settings), "LEHNZ_HOST": bind_host, "LEHNZ_PORT": str(bind_port)})
        children = [Child(role, [sys.executable, "-m", "app.cli", role], env) for role in ("worker", "api")]
        policy = CrashPolicy(
            backoff_s=settings.serve_restart_backoff_s,
            backoff_max_s=settings.serve_restart_backoff_max_s,
            crash_loop_crashes=settings.serve_crash_loop_crashes,
            crash_loop_window_s=settings.serve_crash_loop_window_s,
        )

        def announce() -> None:
            console.print(f"[bold green]lehnz serving on {listen}[/] (docs at {listen}/docs); Ctrl-C to stop")

        def gave_up(reason: str) -> None:
            console.print(f"[red]error:[/] {escape(reason)}: lehnz serve stopped everything (when it gives "
                          "up: LEHNZ_SERVE_CRASH_LOOP_CRASHES, LEHNZ_SERVE_CRASH_LOOP_WINDOW_S)",
                          highlight=False)

        # Commands run in other folders find this data through the pointer (app/resources.py).
        pointer = write_pointer(ServePointer(
            pid=os.getpid(), started_at=_process_started_at(), url=listen,
            data_dir=str(settings.data_dir.resolve()), models_path=str(settings.models_path),
            database_url=base.database_url, redis_url=base.redis_url,  # the configured ones only
        ))
        try:
            code = Supervisor(children, policy, ready=lambda: _answers(probe), on_ready=announce,
                              on_crash_loop=gave_up).run()
        finally:
            if pointer is not None:
                with contextlib.suppress(OSError):
                    pointer.unlink()
    if code:
        raise typer.Exit(code=code)


def _process_started_at() -> float:
    import psutil

    return float(psutil.Process().create_time())


def _port_problem(host: str, port: int) -> str | None:
    """Why (host, port) cannot be listened on, or None. SO_REUSEADDR, as uvicorn binds."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"unknown host ({exc.strerror})"
    except OverflowError:
        return "the port must be 0-65535"
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


@cli.command()
def api(
    host: _Host = None,
    port: _Port = None,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes")] = 1,
) -> None:
    """The HTTP api only (compose/production role)."""
    import uvicorn

    from app.supervisor import stop_with_supervisor

    base = get_settings()
    logs.configure(base.log_level, access_log=base.access_log)
    stop_with_supervisor()
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
def worker(
    burst: Annotated[bool, typer.Option("--burst", help="exit when the queues are empty")] = False,
) -> None:
    """The queue worker only: persists ingestion, trains models (compose/production role)."""
    from app.supervisor import stop_with_supervisor
    from workers.main import run

    logs.configure(get_settings().log_level)
    stop_with_supervisor()
    with connected_settings() as settings:
        asyncio.run(run(settings, burst=burst))


@cli.command()
def migrate(init: _Init = False) -> None:
    """Apply database migrations (alembic upgrade head) and say which ones were applied."""
    logs.configure(get_settings().log_level)
    with connected_settings(init=init, can_init=True) as settings:
        upgrade = _migrate(settings)
    console.print(f"[green]{escape(_describe_upgrade(upgrade))}[/]", highlight=False)


def _describe_upgrade(upgrade: Upgrade) -> str:
    if not upgrade.applied:
        return f"the database is already at the latest migration ({upgrade.head})"
    applied = ", ".join(f"{revision} ({doc.splitlines()[0] if doc else 'no description'})"
                        for revision, doc in upgrade.applied)
    start = f"was at {upgrade.before}" if upgrade.before else "a brand-new database: created the schema"
    return f"{start}; applied {applied}; now at the latest migration ({upgrade.head})"


# --- organisations and keys -------------------------------------------------------------


@org_cli.command("create")
def org_create(
    name: Annotated[str, typer.Option(help="display name")],
    slug: Annotated[str | None, typer.Option(
        help="tenant id (lowercase, digits, dashes); made from the name if absent")] = None,
    domain: Annotated[str, typer.Option(help="commerce, content, media, ...")] = "commerce",
    as_json: _Json = False,
    init: _Init = False,
) -> None:
    """Create an organisation and its first key pair (the secret is shown once)."""
    from app.storage import orgs

    if not name.strip():
        _fail("--name must not be empty")
    if slug is not None and not orgs.valid_slug(slug):
        _fail("slug must be 1-64 lowercase letters, digits or dashes, not starting or ending with a dash")

    async def create(resources: Resources) -> dict[str, str]:
        async with resources.transaction() as session:
            chosen = slug or await orgs.unique_slug(session, name)
            org = await orgs.create_org(session, name=name, slug=chosen, domain=domain)
            pair = await orgs.add_key_pair(session, org.id)
        return {
            "org_id": str(org.id),
            "tenant_id": org.slug,
            "publishable_key": pair.publishable_key,
            "secret_key": pair.secret_key,
        }

    created = _run(create, init=init, can_init=True)
    if as_json:
        _print_json(created)
        return
    print_records(out, [Column(key) for key in created], [list(created.values())],
                  title=f"organisation {created['tenant_id']}")
    console.print("[yellow]The secret key is shown only now. Store it safely.[/]")


@org_cli.command("list")
def org_list(as_json: _Json = False) -> None:
    """List organisations: tenant id (slug), org id, name, domain, rate limit, creation time."""
    from app.storage import orgs

    async def listing(resources: Resources) -> list[dict[str, Any]]:
        async with resources.sessions() as session:
            return [
                {"org_id": str(o.id), "tenant_id": o.slug, "name": o.name, "domain": o.domain,
                 "rate_limit": o.rate_limit, "created_at": o.created_at.isoformat()}
                for o in await orgs.list_orgs(session)
            ]

    found = _run(listing)
    if as_json:
        _print_json(found)
        return
    columns = [Column("tenant_id", identifier=True), Column("org_id", identifier=True), Column("name"),
               Column("domain"), Column("rate limit"), Column("created (UTC)")]
    rows = [[o["tenant_id"], o["org_id"], o["name"], o["domain"], o["rate_limit"] or "default",
             o["created_at"][:16].replace("T", " ")] for o in found]
    print_table(out, columns, rows, note=console)


@org_cli.command("delete")
def org_delete(
    org: _Org,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False,
) -> None:
    """Delete an organisation and all its data: keys, accounts, catalog, users, events, models."""
    from redis.exceptions import RedisError

    from app.errors import NotFound
    from app.offboarding import delete_org

    if not yes:
        typer.confirm(f"Delete organisation {org} and all its data? This cannot be undone", abort=True)

    async def delete(resources: Resources) -> Any:
        try:
            return await delete_org(resources.sessions, resources.redis, resources.models, org)
        except NotFound:
            _fail(f"no organisation {org!r} (`lehnz org list` shows them)")
        except (RedisError, OSError) as exc:
            _fail(f"the organisation may be deleted from Postgres, but Redis or the model store could not "
                  f"be cleaned ({type(exc).__name__}: {exc}); run this again with --org <org_id> once that "
                  "is fixed")

    deleted = _run(delete, redis=True)
    if deleted.slug is None and not deleted.redis_keys and not deleted.model_versions:
        _fail(f"no organisation {org!r} and nothing left of one (`lehnz org list` shows them)")
    name = deleted.slug or "(already removed from Postgres)"
    console.print(
        f"[green]deleted organisation {escape(name)}[/] ({deleted.org_id}): {deleted.items:,} items, "
        f"{deleted.users:,} users, {deleted.events:,} events, {deleted.redis_keys:,} Redis keys"
        + (", its models" if deleted.model_versions else ""),
    )


@org_cli.command("set-limit")
def org_set_limit(
    org: _Org,
    limit: Annotated[str, typer.Option(help='e.g. "5000/15minutes", or "default" for LEHNZ_RATE_LIMIT')],
) -> None:
    """Override the per-org rate limit (shared by all the org's keys)."""
    from app.key_epoch import announce_key_change
    from app.limit_syntax import parse_limit
    from app.storage import orgs

    value = None if limit == "default" else limit
    if value is not None:
        try:
            parse_limit(value)
        except ValueError as exc:
            _fail(str(exc))

    async def set_limit(resources: Resources) -> str:
        async with resources.transaction() as session:
            found = await orgs.find_org(session, org)
            await orgs.set_rate_limit(session, found.id, value)
        # Api replicas drop their key cache (which carries each org's limit) within a second.
        await announce_key_change(resources.redis)
        return str(found.slug)

    slug = _run(set_limit, redis=True)
    console.print(f"[green]rate limit of {escape(slug)}: {escape(value or 'default')}[/]")


@keys_cli.command("create")
def keys_create(org: _Org, as_json: _Json = False) -> None:
    """Make a new key pair (the secret is shown once)."""
    from app.storage import orgs

    async def create(resources: Resources) -> dict[str, str]:
        async with resources.transaction() as session:
            found = await orgs.find_org(session, org)
            pair = await orgs.add_key_pair(session, found.id)
        return {"key_id": str(pair.pair_id), "publishable_key": pair.publishable_key,
                "secret_key": pair.secret_key}

    created = _run(create)
    if as_json:
        _print_json(created)
        return
    print_records(out, [Column(key) for key in created], [list(created.values())])
    console.print("[yellow]The secret key is shown only now. Store it safely.[/]")


@keys_cli.command("list")
def keys_list(org: _Org, as_json: _Json = False) -> None:
    """List key pairs (ids and display prefixes; keys are stored only as hashes)."""
    from app.storage import orgs

    async def listing(resources: Resources) -> list[dict[str, Any]]:
        async with resources.sessions() as session:
            found = await orgs.find_org(session, org)
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

    pairs = _run(listing)
    if as_json:
        _print_json(pairs)
        return
    columns = [Column("key_id", identifier=True), Column("state"), Column("publishable"), Column("secret"),
               Column("created (UTC)")]
    rows = [[p["key_id"], f"revoked {_minute(p['revoked_at'])}" if p["revoked_at"] else "live",
             p["publishable_key_prefix"] + "…", p["secret_key_prefix"] + "…", _minute(p["created_at"])]
            for p in pairs]
    print_table(out, columns, rows, note=console)


def _minute(iso: str) -> str:
    return iso[:16].replace("T", " ")


@keys_cli.command("revoke")
def keys_revoke(
    org: _Org,
    key_id: Annotated[str, typer.Option(help="the pair's key_id (from `lehnz keys list`)")],
) -> None:
    """Revoke a key pair; every api replica refuses it within a second."""
    import uuid

    from app.key_epoch import announce_key_change
    from app.storage import orgs

    try:
        pair_id = uuid.UUID(key_id)
    except ValueError:
        _fail("key_id must be a UUID (see `lehnz keys list`)")

    async def revoke(resources: Resources) -> bool:
        async with resources.transaction() as session:
            found = await orgs.find_org(session, org)
            revoked = await orgs.revoke_key_pair(session, found.id, pair_id)
        if revoked:
            await announce_key_change(resources.redis)
        return revoked

    if not _run(revoke, redis=True):
        _fail(f"no live key pair {key_id} in {org} (`lehnz keys list --org {org}` shows them)")
    console.print(f"[green]revoked key pair {key_id}[/]")


# --- training ------------------------------------------------------------------------------

_PROGRESS_EVERY_S = 10.0


@cli.command()
def train(
    org: _Org,
    wait: Annotated[bool, typer.Option("--wait", help="wait until the worker has finished the train, then "
                                                      "print its result")] = False,
    inline: Annotated[bool, typer.Option("--inline", help="train in this process instead of queueing it for "
                                                          "a worker")] = False,
    timeout: Annotated[float, typer.Option(min=1, help="seconds to wait with --wait")] = 600,
) -> None:
    """Train an organisation's models now (queued for the worker, or --inline)."""
    logs.configure(get_settings().log_level)

    async def run(resources: Resources) -> dict[str, Any]:
        return await _train(resources, org, wait=wait, inline=inline, timeout=timeout)

    result = _run(run, redis=True)
    if result.get("status") == "failed":
        _fail(f"training failed: {result.get('error')}")
    _print_json(result)


async def _train(
    resources: Resources, ref: str, *, wait: bool, inline: bool, timeout: float
) -> dict[str, Any]:
    from app.storage import training_runs

    org = await _find_org(resources, ref)
    org_id = str(org.id)
    if inline:
        return await _train_inline(resources.settings, org_id)
    if not await resources.queue.train_worker_alive():
        raise CommandError("no worker is consuming the train queue, so nothing was queued: start "
                           "`lehnz serve` (or `lehnz worker`) for this database, or train here with --inline")
    async with resources.sessions() as session:
        before = await training_runs.latest(session, org.id)
    job_id = await resources.queue.enqueue_train(org_id, reason="cli", asked=True)
    if not wait:
        return {"status": "queued", "job_id": job_id}
    _note(f"queued the train of {org.slug}; waiting up to {timeout:g} s for the worker "
          "(Ctrl-C stops waiting, not the train)")
    return await _wait_for_train(resources, org.id, after=before.id if before else None, timeout=timeout)


async def _wait_for_train(
    resources: Resources, org_id: Any, *, after: int | None, timeout: float
) -> dict[str, Any]:
    """Until a train newer than run `after` is recorded; progress on stderr while it is queued or runs."""
    from app.storage import training_runs

    started = time.monotonic()
    said, said_at = "", 0.0
    while (waited := time.monotonic() - started) < timeout:
        async with resources.sessions() as session:
            run = await training_runs.latest(session, org_id)
        if run is not None and run.id != after:
            result: dict[str, Any] = {
                "status": run.status, "version": run.version, "duration_ms": run.duration_ms,
                "items": run.items, "users": run.users, "interactions": run.interactions, "error": run.error,
            }
            if getattr(run, "quality", None) is not None:  # the model search's findings, when it ran
                result["quality"] = run.quality
            return result
        state = "training" if await resources.queue.is_training(str(org_id)) else "queued"
        if state == "queued" and not await resources.queue.train_worker_alive():
            return {"status": "failed", "error": "the worker stopped consuming the train queue while we "
                                                 "waited (the train stays queued for the next worker)"}
        if state != said or waited - said_at >= _PROGRESS_EVERY_S:
            _note(f"{state} ({waited:.0f} s)")
            said, said_at = state, waited
        await asyncio.sleep(0.5)
    return {"status": "failed", "error": f"the worker did not finish the train within {timeout:g} s; it goes "
                                         "on (GET /v1/models/status shows it)"}


async def _train_inline(settings: Settings, org_id: str) -> dict[str, Any]:
    """The worker's own train job, run here with a worker context of its own."""
    from workers import training
    from workers.main import close_context, open_context

    ctx, _, _ = await open_context(settings)
    try:
        return await training.train_org(ctx, org_id=org_id, reason="cli")
    finally:
        await close_context(ctx)


# --- the dead-letter list ----------------------------------------------------------------


@dead_letter_cli.command("list")
def dead_letter_list(
    limit: Annotated[int, typer.Option(min=1, help="entries to show")] = 20, as_json: _Json = False
) -> None:
    """Show parked jobs: function, org, error, tries (not the payloads)."""

    async def listing(resources: Resources) -> list[dict[str, Any]]:
        return await resources.queue.dead_letters(limit=limit)

    entries = _run(listing, database=False, redis=True)
    summaries = []
    for entry in entries:
        kwargs = entry.get("kwargs", {})
        summaries.append({"job_id": str(entry.get("job_id")), "function": entry.get("function", ""),
                          "org_id": str(kwargs.get("org_id", "")),
                          "records": len(kwargs.get("records") or kwargs.get("rows") or []),
                          "tries": entry.get("tries"), "error": entry.get("error", "")})
    if as_json:
        _print_json(summaries)
        return
    if not summaries:
        console.print("[green]the dead-letter list is empty[/]")
        return
    columns = [Column("job", identifier=True), Column("org", identifier=True), Column("function"),
               Column("records", justify="right"), Column("tries", justify="right"), Column("error")]
    rows = [[s["job_id"], s["org_id"], s["function"], str(s["records"]), str(s["tries"]), str(s["error"])]
            for s in summaries]
    print_table(out, columns, rows, note=console)


@dead_letter_cli.command("replay")
def dead_letter_replay(limit: Annotated[int, typer.Option(min=1, help="jobs to re-queue")] = 1000) -> None:
    """Re-queue parked jobs, oldest first (once whatever made them fail is fixed)."""

    async def replay(resources: Resources) -> int:
        return await resources.queue.replay_dead_letters(limit=limit)

    count = _run(replay, database=False, redis=True)
    console.print(f"[green]re-queued {count} job(s)[/]")


@dead_letter_cli.command("discard")
def dead_letter_discard(
    org: Annotated[str | None, typer.Option(
        help="only the jobs of this org: its org_id (also of a deleted org) or its slug")] = None,
    everything: Annotated[bool, typer.Option("--all", help="every parked job")] = False,
    save: Annotated[Path | None, typer.Option(help="first append them to this JSONL file")] = None,
) -> None:
    """Remove parked jobs for good (after saving them with --save, if they may be needed)."""
    import uuid

    if (org is None) == (not everything):
        _fail("give --org ORG or --all")
    org_id: str | None = None
    if org is not None:
        try:
            org_id = str(uuid.UUID(org))  # a deleted org's jobs are found by id: no database needed
        except ValueError:
            org_id = None

    def keep_copy(entries: list[dict[str, Any]]) -> None:
        assert save is not None
        with save.open("ab") as fh:  # all written (and closed) before any entry is removed
            fh.writelines(orjson.dumps(entry) + b"\n" for entry in entries)

    async def discard(resources: Resources) -> int:
        chosen = org_id
        if org is not None and chosen is None:
            chosen = str((await _find_org(resources, org)).id)
        copy = keep_copy if save is not None else None
        return int(await resources.queue.discard_dead_letters(org_id=chosen, keep_copy=copy))

    if save is not None and not save.parent.is_dir():
        _fail(f"cannot save to {save}: {save.parent} is not a directory")
    removed = _run(discard, database=org is not None and org_id is None, redis=True)
    where = f" (saved to {save})" if save is not None else ""
    console.print(f"[green]discarded {removed} parked job(s){escape(where)}[/]")


# --- the entry point -----------------------------------------------------------------------


def main(args: list[str] | None = None) -> None:
    """`lehnz`: a user error is one line on stderr and a non-zero exit; only a bug has a traceback."""
    try:
        code = cli(args=args, standalone_mode=False)
    except ClickException as exc:  # a usage error: wrong option, missing file, bad value
        help_command = f"lehnz {_command_words(args)} --help"
        console.print(f"[red]error:[/] {escape(exc.format_message())} (see `{help_command}`)",
                      highlight=False)
        code = exc.exit_code
    except typer.Abort:
        console.print("aborted", highlight=False)
        code = 1
    except BaseException as exc:  # only user errors are said in one line; the rest is re-raised
        message = _user_error(exc)
        if message is None:
            raise
        console.print(f"[red]error:[/] {escape(message)}", highlight=False)
        code = 1
    sys.exit(code if isinstance(code, int) else 0)


def _command_words(args: list[str] | None) -> str:
    words = []
    for arg in sys.argv[1:] if args is None else args:
        if arg.startswith("-"):
            break
        words.append(arg)
    return " ".join(words[:2]) or "lehnz"


def _user_error(exc: BaseException) -> str | None:
    """The one line to say for an error the user can fix, or None for a bug."""
    from pydantic import ValidationError
    from redis.exceptions import RedisError
    from sqlalchemy.exc import DBAPIError

    from app.errors import AppError

    if isinstance(exc, CommandError):
        return str(exc)
    if isinstance(exc, AppError):
        return exc.message
    if isinstance(exc, ValidationError) and exc.title == "Settings":
        return "; ".join(f"invalid setting LEHNZ_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}"
                         for e in exc.errors())
    if isinstance(exc, (RedisError, DBAPIError, OSError)):  # a server went away in the middle
        return f"lost the connection to a server ({root_cause(exc)})"
    return None


if __name__ == "__main__":
    main()
