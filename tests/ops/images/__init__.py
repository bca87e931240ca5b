"""The images the container test runs, all built on this machine: nothing is pulled.

Stand-ins for the official images the project names, made of Debian's own packages on a
root filesystem that debootstrap makes (recipes in the folders next to this file):

    lehnz-test/debian:<suite>   debootstrap --variant=minbase, debian/ on top, `docker import`
    lehnz-test/python:3.11      python/    for the Dockerfile's PYTHON_IMAGE (python:3.11-slim)
    lehnz-test/postgres:17      postgres/  for docker-compose.yml's postgres:17-alpine
    lehnz-test/redis:7          redis/     for docker-compose.yml's redis:7.4-alpine

Every image is labelled with a hash of its recipe (its files, its base's hash); one whose label
matches is reused, so a warm run builds none of them. Debootstrap's packages and the finished
root filesystems stay in CACHE_DIR, so a base whose image was removed is imported again, not
bootstrapped again.

Then the project's image: the project's Dockerfile, built with BuildKit, FROM the python
stand-in (`--build-arg PYTHON_IMAGE`); BuildKit's own layer cache keeps that quick when warm.

`python -m tests.ops.images` builds everything (docs/operations.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
RECIPES = Path(__file__).resolve().parent
CACHE_DIR = Path(os.environ.get("LEHNZ_TEST_IMAGE_CACHE") or Path.home() / ".cache" / "lehnz-test-images")
DEBIAN_MIRROR = os.environ.get("LEHNZ_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# pip in the python stand-in trusts this host's CAs too (an intercepting HTTPS proxy's, say).
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
RECIPE_LABEL = "org.lehnz.test.recipe"
PROJECT_IMAGE = "lehnz-test/lehnz-server:latest"
PROJECT_LABEL = "org.lehnz.test.project-image"
EXIT_FILE = "exit"  # written into the log directory when the build is over: its exit code

# Copied over every debootstrapped root filesystem: the apt and dpkg settings of Docker's own
# Debian images (which the official python image is built on).
DEBIAN_OVERLAY = RECIPES / "debian"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BOOTSTRAP_TIMEOUT_S = 1200


class ImageBuildError(RuntimeError):
    """A build step failed; the message ends with the tail of the build log."""


@dataclass(frozen=True)
class DebianBase:
    suite: str

    @property
    def tag(self) -> str:
        return f"lehnz-test/debian:{self.suite}"

    def recipe_hash(self) -> str:
        overlay = {
            str(path.relative_to(DEBIAN_OVERLAY)): [path.stat().st_mode & 0o777, _sha256(path.read_bytes())]
            for path in sorted(DEBIAN_OVERLAY.rglob("*"))
            if path.is_file()
        }
        recipe = {"suite": self.suite, "variant": "minbase", "overlay": overlay, "path": DEFAULT_PATH}
        return _sha256(json.dumps(recipe, sort_keys=True).encode())


@dataclass(frozen=True)
class StandIn:
    tag: str
    recipe: str  # folder next to this file
    base: DebianBase

    def context_files(self) -> dict[str, bytes]:
        files = {p.name: p.read_bytes() for p in sorted((RECIPES / self.recipe).iterdir()) if p.is_file()}
        if self.recipe == "python":
            files["host-ca-bundle.crt"] = HOST_CA_BUNDLE.read_bytes() if HOST_CA_BUNDLE.exists() else b""
        return files

    def recipe_hash(self) -> str:
        digest = hashlib.sha256(self.base.recipe_hash().encode())
        for name, content in sorted(self.context_files().items()):
            digest.update(f"\0{name}\0{len(content)}\0".encode())
            digest.update(content)
        return digest.hexdigest()


BOOKWORM = DebianBase("bookworm")  # Python 3.11, Redis 7
TRIXIE = DebianBase("trixie")  # PostgreSQL 17, the major version docker-compose.yml pins
PYTHON = StandIn("lehnz-test/python:3.11", "python", BOOKWORM)
POSTGRES = StandIn("lehnz-test/postgres:17", "postgres", TRIXIE)
REDIS = StandIn("lehnz-test/redis:7", "redis", BOOKWORM)
STAND_INS = (PYTHON, POSTGRES, REDIS)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- running the tools ----------------------------------------------------------------------


def docker_client() -> str:
    """A docker client that can build with BuildKit (the Dockerfile needs RUN --mount).

    Clients before 23.0 (Debian's docker.io) have BuildKit built in; newer ones need the buildx
    plugin. A newer client without it may come first on PATH, so Debian's is the second choice.
    """
    candidates = dict.fromkeys(
        c for c in (shutil.which("docker"), "/usr/bin/docker") if c and Path(c).exists()
    )
    for client in candidates:
        if _quiet([client, "buildx", "version"]):
            return client
        version = subprocess.run(
            [client, "version", "--format", "{{.Client.Version}}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout.strip()
        if version.split(".")[0].isdigit() and int(version.split(".")[0]) < 23:
            return client
    raise ImageBuildError(
        f"no docker client here can build with BuildKit (tried {', '.join(candidates) or 'none found'}): "
        "install Debian's docker.io, or the buildx plugin for a newer client"
    )


def _quiet(argv: Sequence[str]) -> bool:
    return subprocess.run(argv, capture_output=True, timeout=60, check=False).returncode == 0


def log_tail(log: Path, lines: int = 60) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no build log)"


def _run(argv: Sequence[str | Path], log: Path, *, timeout: float, env: dict[str, str] | None = None) -> None:
    """Run a build step with its output appended to `log`; fail with the log's tail."""
    started = time.monotonic()
    with open(log, "ab") as out:
        out.write(f"\n[{time.strftime('%H:%M:%S')}] $ {' '.join(map(str, argv))}\n".encode())
        out.flush()
        try:
            code = subprocess.run(
                [str(a) for a in argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                timeout=timeout,
                check=False,
            ).returncode
        except subprocess.TimeoutExpired:
            code = None
        took = time.monotonic() - started
        out.write(f"[{time.strftime('%H:%M:%S')}] exit {code} after {took:.0f} s\n".encode())
    if code != 0:
        outcome = "timed out" if code is None else f"exited with {code}"
        raise ImageBuildError(f"{argv[0]} {argv[1]} {outcome}; the end of {log}:\n{log_tail(log)}")


def _image_label(docker: str, tag: str) -> str | None:
    result = subprocess.run(
        [docker, "image", "inspect", "--format", f'{{{{index .Config.Labels "{RECIPE_LABEL}"}}}}', tag],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else None


def buildkit_env() -> dict[str, str]:
    return {**os.environ, "DOCKER_BUILDKIT": "1"}


def build_command(docker: str) -> list[str]:
    # Host networking: the test machine has no bridge networks to give a build.
    return [docker, "build", "--network=host", "--progress=plain"]


# --- the images -----------------------------------------------------------------------------


_BASE_LOCKS = {base.suite: threading.Lock() for base in (BOOKWORM, TRIXIE)}


def ensure_debian(base: DebianBase, *, docker: str, log: Path) -> str:
    recipe_hash = base.recipe_hash()
    with _BASE_LOCKS[base.suite]:  # two stand-ins on one base: one bootstrap
        if _image_label(docker, base.tag) != recipe_hash:
            _make_debian(base, recipe_hash, docker=docker, log=log)
    return base.tag


def _make_debian(base: DebianBase, recipe_hash: str, *, docker: str, log: Path) -> None:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tarball = CACHE_DIR / f"debian-{base.suite}-{recipe_hash[:16]}.tar"
    if not tarball.exists():
        _bootstrap(base, tarball, log)
        for stale in CACHE_DIR.glob(f"debian-{base.suite}-*.tar"):  # of an older recipe
            if stale != tarball:
                stale.unlink(missing_ok=True)
    changes = [f"LABEL {RECIPE_LABEL}={recipe_hash}", f"ENV PATH={DEFAULT_PATH}", 'CMD ["bash"]']
    argv: list[str | Path] = [
        docker,
        "import",
        *(f"--change={change}" for change in changes),
        tarball,
        base.tag,
    ]
    _run(argv, log, timeout=300)


def _bootstrap(base: DebianBase, tarball: Path, log: Path) -> None:
    if shutil.which("debootstrap") is None:
        raise ImageBuildError(
            "debootstrap is not installed (apt-get install debootstrap); it makes the base images"
        )
    if os.geteuid() != 0:
        raise ImageBuildError("debootstrap needs root to make the base images; run the build as root once")
    _remove_abandoned_rootfs(base.suite)
    packages = CACHE_DIR / "debs"
    packages.mkdir(exist_ok=True)
    rootfs = Path(tempfile.mkdtemp(dir=CACHE_DIR, prefix=f"rootfs-{base.suite}-"))
    try:
        options = ["--variant=minbase", f"--cache-dir={packages}"]
        # dpkg without an fsync per file: a third faster, and a failed bootstrap is thrown away.
        unsafe_io = {**os.environ, "DPKG_FORCE": "unsafe-io"}
        argv: list[str | Path] = ["debootstrap", *options, base.suite, rootfs, DEBIAN_MIRROR]
        _run(argv, log, timeout=BOOTSTRAP_TIMEOUT_S, env=unsafe_io)
        for source in DEBIAN_OVERLAY.rglob("*"):
            if source.is_file():
                shutil.copy2(source, rootfs / source.relative_to(DEBIAN_OVERLAY))
        for leftover in [*rootfs.glob("var/cache/apt/archives/*.deb"), *rootfs.glob("var/cache/apt/*.bin")]:
            leftover.unlink()
        partial = tarball.with_name(f"{tarball.name}.{os.getpid()}.partial")
        _run(["tar", "--numeric-owner", "-C", rootfs, "-cf", partial, "."], log, timeout=600)
        partial.replace(tarball)  # atomic: a concurrent build sees a whole tarball or none
    finally:
        _remove_rootfs(rootfs)


def _mounts_inside(rootfs: Path) -> list[str]:
    lines = Path("/proc/mounts").read_text().splitlines()
    return [
        fields[1] for line in lines if len(fields := line.split()) > 1 and fields[1].startswith(f"{rootfs}/")
    ]


def _remove_rootfs(rootfs: Path) -> None:
    # A debootstrap that was stopped mid-way (the session ended, a timeout) leaves /proc mounted
    # inside: unmount it, deepest first, and never delete through a mount.
    for mount in sorted(_mounts_inside(rootfs), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", mount], capture_output=True, timeout=60, check=False)
    if _mounts_inside(rootfs):
        raise ImageBuildError(f"{rootfs} still has file systems mounted inside; unmount them and remove it")
    shutil.rmtree(rootfs, ignore_errors=True)


def _remove_abandoned_rootfs(suite: str) -> None:
    """Root filesystems of bootstraps whose process was killed before its cleanup ran; only ones
    older than any bootstrap can take, so a concurrent session's bootstrap is left alone."""
    for rootfs in CACHE_DIR.glob(f"rootfs-{suite}-*"):
        if time.time() - rootfs.stat().st_mtime > BOOTSTRAP_TIMEOUT_S:
            _remove_rootfs(rootfs)


def ensure_stand_in(image: StandIn, *, docker: str, log: Path) -> str:
    recipe_hash = image.recipe_hash()
    if _image_label(docker, image.tag) == recipe_hash:
        return image.tag
    base = ensure_debian(image.base, docker=docker, log=log)
    with tempfile.TemporaryDirectory(prefix=f"lehnz-{image.recipe}-context-") as context:
        for name, content in image.context_files().items():
            path = Path(context) / name
            path.write_bytes(content)
            path.chmod(0o755 if name.endswith(".sh") else 0o644)
        options = [f"--build-arg=BASE={base}", f"--label={RECIPE_LABEL}={recipe_hash}", f"--tag={image.tag}"]
        argv: list[str | Path] = [*build_command(docker), *options, context]
        _run(argv, log, timeout=1200, env=buildkit_env())
    return image.tag


def build_project_image(*, docker: str, log: Path, python_image: str, tag: str = PROJECT_IMAGE) -> str:
    """The project's Dockerfile as it is, with BuildKit; only the base image is swapped."""
    options = [f"--build-arg=PYTHON_IMAGE={python_image}", f"--label={PROJECT_LABEL}=1", f"--tag={tag}"]
    argv: list[str | Path] = [*build_command(docker), *options, ROOT]
    _run(argv, log, timeout=1800, env=buildkit_env())
    return tag


def build_all(log_dir: Path) -> dict[str, str]:
    """Every image the container test needs, reusing what is already built; recipe -> tag.

    Two lines of work side by side (most of a cold build waits on downloads): the python
    stand-in and then the project's image; the postgres and redis stand-ins. Each image's build
    output goes to its own log in `log_dir`.
    """
    docker = docker_client()
    log_dir.mkdir(parents=True, exist_ok=True)

    def stand_in(image: StandIn) -> str:
        return ensure_stand_in(image, docker=docker, log=log_dir / f"{image.recipe}.log")

    def app() -> str:
        python = stand_in(PYTHON)
        return build_project_image(docker=docker, log=log_dir / "app.log", python_image=python)

    with ThreadPoolExecutor(max_workers=2) as pool:
        app_tag = pool.submit(app)
        services = pool.submit(lambda: {image.recipe: stand_in(image) for image in (POSTGRES, REDIS)})
        tags = {"python": PYTHON.tag, **services.result(), "app": app_tag.result()}
    # The previous builds of these tags, untagged by the new ones (never one a container uses).
    for label in (RECIPE_LABEL, PROJECT_LABEL):
        prune = [docker, "image", "prune", "--force", f"--filter=label={label}"]
        _run(prune, log_dir / "prune.log", timeout=300)
    return tags
