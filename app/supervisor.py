"""Process supervision for `lehnz serve`, and children that never outlive their parent.

- `Supervisor` runs the api and worker as child processes and keeps them running: a child that
  exits while serve is not stopping (a crash, the OOM killer's SIGKILL) is logged with its role,
  pid and exit code or signal, and started again after a backoff that doubles with each recent
  crash (capped). A crash loop, `crash_loop_crashes` crashes of one role within
  `crash_loop_window_s`, stops everything: serve exits 1 and says why. SIGTERM/SIGINT stop the
  children gracefully. The embedded PostgreSQL and Redis belong to serve, not to a child, so
  they stay up while a child is restarted.
- `stop_with_supervisor()`, in a child of serve: stop gracefully once serve is gone, even when
  serve was killed without a chance to stop its children (kill -9, the OOM killer).
- `exit_with_parent()`, the initializer of the worker's training pool: the pool's process dies
  with the worker instead of lingering as an orphan (and with it multiprocessing's resource
  tracker, which exits when the last process holding its pipe is gone).
"""

from __future__ import annotations

import collections
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("lehnz.serve")

SUPERVISOR_ENV = "LEHNZ_SUPERVISOR_PID"
_ORPHAN_GRACE_S = 30.0  # a child of a vanished serve that has not stopped by then is killed
_STOP_GRACE_S = 30.0  # the children's graceful stop (api: 10 s for requests, worker: 10 s for jobs)
_POLL_S = 0.1
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@dataclass(frozen=True)
class CrashPolicy:
    """How serve restarts a crashed child, and when it gives up (LEHNZ_SERVE_* settings)."""

    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    crash_loop_crashes: int = 5
    crash_loop_window_s: float = 120.0

    def delay(self, recent_crashes: int) -> float:
        """Wait before the next start: backoff_s after the first recent crash, doubling, capped."""
        return float(min(self.backoff_s * 2 ** max(recent_crashes - 1, 0), self.backoff_max_s))


@dataclass
class Child:
    """One supervised role: how to start it, the running process, and its recent crashes."""

    role: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    restart_at: float | None = None  # set while it waits out its backoff
    crashes: collections.deque[float] = field(default_factory=collections.deque)

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, env=self.env)
        self.restart_at = None


class CrashLoop(Exception):
    """A child kept crashing: serve stops everything."""


def describe_exit(returncode: int) -> str:
    """`killed by SIGKILL` or `exited with code 3` (Popen's negative return code is a signal)."""
    if returncode < 0:
        return f"killed by {_signal_name(-returncode)}"
    return f"exited with code {returncode}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class Supervisor:
    def __init__(
        self,
        children: list[Child],
        policy: CrashPolicy,
        *,
        ready: Callable[[], bool] | None = None,
        on_ready: Callable[[], None] | None = None,
        on_crash_loop: Callable[[str], None] | None = None,
    ) -> None:
        self.children = children
        self.policy = policy
        self._ready = ready
        self._on_ready = on_ready
        self._on_crash_loop = on_crash_loop
        self._stopping = False

    def run(self) -> int:
        """Start the children and keep them running until asked to stop (exit code 0) or a
        crash loop (exit code 1). Every child is stopped before this returns."""
        signal.signal(signal.SIGTERM, self._ask_stop)
        signal.signal(signal.SIGINT, self._ask_stop)
        announced = self._ready is None
        try:
            for child in self.children:
                child.start()
            while not self._stopping:
                for child in self.children:
                    self._tend(child)
                if not announced and self._ready is not None and self._ready():
                    announced = True
                    if self._on_ready is not None:
                        self._on_ready()
                time.sleep(_POLL_S)
        except CrashLoop as loop:
            log.critical("%s; stopping lehnz serve", loop)
            if self._on_crash_loop is not None:
                self._on_crash_loop(str(loop))
            return 1
        finally:
            self._stop_all()
        return 0

    def _ask_stop(self, signum: int, frame: object) -> None:
        self._stopping = True

    def _tend(self, child: Child) -> None:
        """Restart a child whose backoff is over; notice a child that has exited."""
        now = time.monotonic()
        if child.process is None:
            if child.restart_at is not None and now >= child.restart_at:
                child.start()
                assert child.process is not None
                log.info("started %s again (pid %d)", child.role, child.process.pid,
                         extra={"role": child.role, "pid": child.process.pid})
            return
        code = child.process.poll()
        if code is None or self._stopping:
            return
        pid = child.process.pid
        child.process = None
        while child.crashes and now - child.crashes[0] > self.policy.crash_loop_window_s:
            child.crashes.popleft()
        child.crashes.append(now)
        how = describe_exit(code)
        recent = len(child.crashes)
        details = {"role": child.role, "pid": pid, "exit_code": code if code >= 0 else None,
                   "signal": _signal_name(-code) if code < 0 else None, "crashes_in_window": recent}
        if recent >= self.policy.crash_loop_crashes:
            log.error("%s (pid %d) %s", child.role, pid, how, extra=details)
            raise CrashLoop(
                f"the {child.role} crashed {recent} times within {self.policy.crash_loop_window_s:g} s "
                f"(last: pid {pid} {how}): a crash loop"
            )
        delay = self.policy.delay(recent)
        child.restart_at = now + delay
        log.error("%s (pid %d) %s; restarting it in %g s", child.role, pid, how, delay,
                  extra={**details, "restart_in_s": delay})

    def _stop_all(self) -> None:
        running = [c.process for c in self.children if c.process is not None and c.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE_S
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def child_env(env: dict[str, str]) -> dict[str, str]:
    """The environment of a supervised child: it stops if this process dies."""
    return {**env, SUPERVISOR_ENV: str(os.getpid())}


def stop_with_supervisor() -> None:
    """In a child of `lehnz serve`: stop gracefully (as on SIGTERM) once serve is gone, even
    when it was killed without a chance to stop us (kill -9, the OOM killer)."""
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if not supervisor or not supervisor.isdigit():
        return

    def watch() -> None:
        while os.getppid() == int(supervisor):
            time.sleep(0.5)
        logging.getLogger("lehnz.serve").warning("lehnz serve (pid %s) is gone; stopping", supervisor)
        os.kill(os.getpid(), signal.SIGTERM)
        # A graceful stop takes seconds; a SIGTERM that landed before the process installed its
        # handler (serve died during start-up) must not leave an orphan behind either.
        time.sleep(_ORPHAN_GRACE_S)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="lehnz-supervisor-watch", daemon=True).start()


def exit_with_parent(parent_pid: int) -> None:
    """Initializer of a multiprocessing child: die as soon as `parent_pid` does.

    On Linux the kernel sends SIGKILL when the parent goes (PR_SET_PDEATHSIG); elsewhere a
    thread watches the parent pid. Either way, a parent that died before this ran is noticed.
    (The signal comes when the parent *thread* that started us ends; the pool's processes are
    started by threads that live as long as the pool, which the worker stops before it exits.)
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            _watch_parent(parent_pid)
    else:
        _watch_parent(parent_pid)
    if os.getppid() != parent_pid:  # it died before the death signal was armed
        os._exit(1)


def _watch_parent(parent_pid: int) -> None:
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="lehnz-parent-watch", daemon=True).start()
