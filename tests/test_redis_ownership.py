"""Shared state has one owner (STYLE.md rule 11, issue #16): only the module that owns a kind of
Redis state names its keys. Every other module of app/ and workers/ calls the owner's typed
functions, which take a client or a pipeline, so the caller keeps its transaction. Read from
the source (ast), so an import inside a function counts as much as one at the top."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
KEYS_MODULE = "app.redis_keys"

# The modules that may import app.redis_keys: each owns the state it names. A package entry
# covers its modules. A kind of state without an owner gets a module in app/storage/redis_state/,
# not a line here.
OWNERS = {
    "app.storage.redis_state": "org signals, version pointers, train flags, erasure tombstones, "
    "ingest counters, deleting an org's keys",
    "app.queue": "the job queues, the pending ingest jobs, the dead-letter list",
    "app.recommend.realtime": "recent activity and the alias map (one Lua script reads both)",
    "app.key_epoch": "the key-cache epoch",
    "app.api.rate_limit": "rate-limit window counters",
    "app.api.sessions": "signed-out dashboard sessions",
    "app.api.key_usage": "when each key pair was last used",
}
# Deletes every key of an org by name (lehnz org delete): not the place to send anyone.
FORGETS_EVERY_KIND = "app.storage.redis_state.forget"


def _modules() -> dict[str, ast.Module]:
    """Dotted module name -> parsed source, for every module of app/ and workers/."""
    modules = {}
    for top in ("app", "workers"):
        for path in sorted((REPO_ROOT / top).rglob("*.py")):
            parts = path.relative_to(REPO_ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return modules


def _absolute(module: str, node: ast.ImportFrom, *, is_package: bool) -> str:
    """The absolute module an ImportFrom reads from (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def _key_names_used(module: str, tree: ast.Module, *, is_package: bool) -> set[str] | None:
    """The redis_keys names the module uses, or None when it does not import app.redis_keys."""
    aliases: set[str] = set()  # local names bound to the redis_keys module
    names: set[str] = set()
    imported = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == KEYS_MODULE:
                    imported = True
                    aliases.add(alias.asname or KEYS_MODULE)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node, is_package=is_package)
            for alias in node.names:
                if source == KEYS_MODULE:
                    imported = True
                    names.add(alias.name)
                elif f"{source}.{alias.name}" == KEYS_MODULE:
                    imported = True
                    aliases.add(alias.asname or alias.name)
    if not imported:
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and ast.unparse(node.value) in aliases:
            names.add(node.attr)
    return names


def _owner(module: str) -> str | None:
    return next((o for o in OWNERS if module == o or module.startswith(o + ".")), None)


def _uses() -> dict[str, set[str]]:
    modules = _modules()
    uses = {}
    for name, tree in modules.items():
        is_package = any(other.startswith(name + ".") for other in modules)
        used = _key_names_used(name, tree, is_package=is_package)
        if used is not None and name != KEYS_MODULE:
            uses[name] = used
    return uses


def test_only_the_owners_of_shared_state_import_redis_keys() -> None:
    uses = _uses()
    owners_of: dict[str, set[str]] = defaultdict(set)  # key name -> the owner modules that use it
    for module, names in uses.items():
        if _owner(module) is not None and module != FORGETS_EVERY_KIND:
            for key in names:
                owners_of[key].add(module)
    problems = []
    for module, names in sorted(uses.items()):
        if _owner(module) is not None:
            continue
        where = "; ".join(
            f"{key}: " + (", ".join(sorted(owners_of[key])) if owners_of[key]
                          else "no owner yet (give it a module in app/storage/redis_state/)")
            for key in sorted(names)
        )
        problems.append(f"{module} imports {KEYS_MODULE}; call the owner's functions instead ({where})")
    assert not problems, "\n".join(problems)


def test_every_listed_owner_still_names_keys() -> None:
    """An owner that no longer imports redis_keys leaves the list, so the list stays short."""
    owners_in_use = {_owner(module) for module in _uses()}
    assert set(OWNERS) <= owners_in_use, f"listed but naming no key: {sorted(set(OWNERS) - owners_in_use)}"
