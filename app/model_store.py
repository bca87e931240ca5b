"""The only reader/writer of model artifacts: <root>/<org_id>/<version>/{arrays/*.npy, manifest.json}.

A version directory appears whole or not at all: it is written under a temporary name next to
its final place, fsynced, then renamed. LATEST (written the same way, after the rename) names
the newest version by trained_at, so readers never see a half-written bundle.

Each array is its own .npy file, loaded memory-mapped (read-only): a version is "loaded" without
reading it, the api's memory holds only the pages requests touch (a million items' neighbour
tables are gigabytes, a request reads a few rows), api processes on one host share those pages,
and nothing can write into a served model. Versions written before this layout (one
models.npz) still load, into memory.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from app.ml.artifacts import OrgModels

ARRAYS_DIR = "arrays"
MODELS_FILE = "models.npz"  # the single-file layout of older versions (still read)
MANIFEST_FILE = "manifest.json"
LATEST_FILE = "LATEST"
_TEMP_PREFIX = ".tmp-"
# A temporary directory older than this belongs to a crashed save, not to one in progress.
_STALE_TEMP_S = 3600.0
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def new_version(trained_at: float) -> str:
    """e.g. 20261126T104500Z-3fa9c1: sorts by time; the suffix separates runs in one second."""
    stamp = datetime.fromtimestamp(trained_at, tz=UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


# Arrays at least this big are memory-mapped, smaller ones read into memory. A memory map holds
# an open file descriptor for its lifetime (CPython's mmap keeps a dup of it): mapping every array
# of every cached org would run a process out of descriptors, and a small array gains nothing.
MMAP_MIN_BYTES = 1 << 20


def _load_array(path: Path, mmap_min_bytes: int) -> np.ndarray:
    if path.stat().st_size >= mmap_min_bytes:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    array = np.load(path, allow_pickle=False)
    array.flags.writeable = False  # a served model is read-only, mapped or not
    return array


class ModelStore:
    def __init__(self, root: Path, *, mmap_min_bytes: int = MMAP_MIN_BYTES) -> None:
        self.root = Path(root)
        self.mmap_min_bytes = mmap_min_bytes

    def save(self, org_id: str, models: OrgModels) -> Path:
        """Write the bundle as a new version directory and point LATEST at it if it is newest."""
        org_dir = self._org_dir(org_id)
        final = org_dir / _checked(models.version)
        if final.exists():
            raise FileExistsError(f"model version {models.version} already exists for {org_id}")
        org_dir.mkdir(parents=True, exist_ok=True)
        temp = org_dir / f"{_TEMP_PREFIX}{models.version}-{secrets.token_hex(4)}"
        temp.mkdir()
        try:
            manifest = models.manifest()
            arrays = models.to_arrays()
            manifest["arrays"] = sorted(arrays)
            (temp / ARRAYS_DIR).mkdir()
            for name, array in arrays.items():
                with open(temp / ARRAYS_DIR / f"{_checked(name)}.npy", "wb") as fh:
                    np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
                    _flush(fh)
            _fsync_dir(temp / ARRAYS_DIR)
            _write_file(temp / MANIFEST_FILE, json.dumps(manifest, indent=2, sort_keys=True).encode())
            _fsync_dir(temp)
            os.rename(temp, final)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        _fsync_dir(org_dir)
        latest = self.latest_version(org_id)
        if latest is None or self._trained_at(org_id, latest) <= models.trained_at:
            self._write_latest(org_id, models.version)
        return final

    def latest_version(self, org_id: str) -> str | None:
        """The LATEST pointer when it names an existing version, else the newest manifest."""
        org_dir = self._org_dir(org_id)
        try:
            pointed = (org_dir / LATEST_FILE).read_text().strip()
        except FileNotFoundError:
            pointed = ""
        if pointed and _SAFE_NAME.match(pointed) and (org_dir / pointed / MANIFEST_FILE).exists():
            return pointed
        versions = self.versions(org_id)
        return versions[-1] if versions else None

    def versions(self, org_id: str) -> list[str]:
        """Complete versions, oldest first (by trained_at, then name)."""
        org_dir = self._org_dir(org_id)
        if not org_dir.is_dir():
            return []
        found = [
            (self._trained_at(org_id, entry.name), entry.name)
            for entry in org_dir.iterdir()
            if entry.is_dir() and not entry.name.startswith(".") and (entry / MANIFEST_FILE).exists()
        ]
        return [name for _, name in sorted(found)]

    def load(self, org_id: str, version: str) -> OrgModels:
        directory = self._org_dir(org_id) / _checked(version)
        manifest = self._manifest(directory)
        if (directory / ARRAYS_DIR).is_dir():
            arrays = {name: _load_array(directory / ARRAYS_DIR / f"{_checked(name)}.npy", self.mmap_min_bytes) for name in manifest["arrays"]}
        else:
            with np.load(directory / MODELS_FILE, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        return OrgModels.from_arrays(arrays, manifest)

    def load_latest(self, org_id: str) -> OrgModels | None:
        version = self.latest_version(org_id)
        return self.load(org_id, version) if version else None

    def prune(self, org_id: str, keep: int = 3) -> list[str]:
        """Delete all but the newest `keep` versions (never the latest); returns what went."""
        versions = self.versions(org_id)
        latest = self.latest_version(org_id)
        doomed = [v for v in versions[: max(len(versions) - keep, 0)] if v != latest]
        org_dir = self._org_dir(org_id)
        for version in doomed:
            shutil.rmtree(org_dir / version, ignore_errors=True)
        self._remove_stale_temps(org_dir)
        return doomed

    def delete_org(self, org_id: str) -> bool:
        """Remove every version of the org (offboarding); returns whether there was any."""
        org_dir = self._org_dir(org_id)
        existed = org_dir.exists()
        shutil.rmtree(org_dir, ignore_errors=True)
        return existed

    def _remove_stale_temps(self, org_dir: Path) -> None:
        if not org_dir.is_dir():
            return
        for entry in org_dir.glob(f"{_TEMP_PREFIX}*"):
            if time.time() - entry.stat().st_mtime <= _STALE_TEMP_S:
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    def _org_dir(self, org_id: str) -> Path:
        return self.root / _checked(org_id)

    def _manifest(self, directory: Path) -> dict[str, Any]:
        return json.loads((directory / MANIFEST_FILE).read_text())

    def _trained_at(self, org_id: str, version: str) -> float:
        return float(self._manifest(self._org_dir(org_id) / version)["trained_at"])

    def _write_latest(self, org_id: str, version: str) -> None:
        org_dir = self._org_dir(org_id)
        temp = org_dir / f"{_TEMP_PREFIX}{LATEST_FILE}-{secrets.token_hex(4)}"
        _write_file(temp, version.encode())
        os.replace(temp, org_dir / LATEST_FILE)
        _fsync_dir(org_dir)


def _checked(name: str) -> str:
    """Org ids and versions become path parts: no separators, no dot-files, no traversal."""
    if not _SAFE_NAME.match(name):
        raise ValueError(f"not a safe path component: {name!r}")
    return name


def _write_file(path: Path, content: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(content)
        _flush(fh)


def _flush(fh: Any) -> None:
    fh.flush()
    os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
