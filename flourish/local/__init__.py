"""The local stack launcher's common ground: status records, errors, pid files and process control.

The public API lives in `flourish.local.stack` (ensure_stack, stop_stack, stack_status, restarts);
`kafka` and `postgres` each manage one server. This module holds what both of them need.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fcntl
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psutil

T = TypeVar("T")


class InfraError(RuntimeError):
    """A component could not be started, reached or stopped; the message says what to do."""


@dataclass(frozen=True)
class ComponentStatus:
    """What one component of the stack is, where it runs and whether it answers."""

    name: str
    address: str
    managed: bool  # True when this launcher started it (and `down` will stop it)
    pid: int | None
    running: bool
    healthy: bool
    detail: str = ""

    @property
    def managed_by(self) -> str:
        return "flourish" if self.managed else "external"


def progress(component: str, message: str) -> None:
    """Tell the person waiting what is happening; stderr keeps stdout clean for scripted use."""
    print(f"{component}: {message}", file=sys.stderr, flush=True)


def split_host_port(address: str, default_port: int) -> tuple[str, int]:
    """'host:port' (the first of a comma-separated list) as a tuple."""
    first = address.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if not host:
        return first, default_port
    return host.strip("[]"), int(port)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port_closed(host: str, port: int, timeout: float = 10.0) -> None:
    """After a kill: a process's listening socket closes only once its last thread has exited,
    which can be a moment after its main thread is gone."""
    deadline = time.monotonic() + timeout
    while port_open(host, port, timeout=0.2) and time.monotonic() < deadline:
        time.sleep(0.1)


def run_sync(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine from sync code, even when the caller is itself inside an event loop
    (an async test calling ensure_stack): then a worker thread gets its own loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def tail(path: Path, lines: int = 40) -> str:
    """The end of a log file, for error messages."""
    if not path.exists():
        return f"({path} does not exist)"
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return f"--- last {len(text)} lines of {path} ---\n" + "\n".join(text)


def process_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (a child we started but never reaped
    still 'exists' after it died)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def cmdline_contains(pid: int, needle: str) -> bool:
    """Whether the process still is the one we started (pids get reused after a reboot)."""
    try:
        return any(needle in part for part in psutil.Process(pid).cmdline())
    except psutil.Error:
        return False


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def stop_process(
    pid: int,
    *,
    first_signal: signal.Signals = signal.SIGTERM,
    timeout: float = 30.0,
) -> bool:
    """Ask the process to exit, then kill it if it has not after `timeout`. True if it had
    to be killed."""
    try:
        os.kill(pid, first_signal)
    except ProcessLookupError:
        return False
    if _wait_gone(pid, timeout):
        return False
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    _wait_gone(pid, 10.0)
    return True


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not process_alive(pid):
            return True
        time.sleep(0.1)
    return not process_alive(pid)


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our own child, so it does not linger as a zombie."""
    with suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Serialise launches across processes (two test sessions starting the stack at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
