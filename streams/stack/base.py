"""The ``Service`` protocol of the local stack and helpers for detached processes.

Every service of ``spyglass stack`` is a real process on 127.0.0.1 (no Docker).  A
service is started detached (own session, output to a log file, stdin closed) and
remembered by a pid file in its directory under ``SPYGLASS_STACK_DIR``, so a later
``spyglass stack status`` or ``down`` in another process can find it again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from schemas.errors import StackError

LOOPBACK = "127.0.0.1"

# Popen objects of the processes this interpreter started, by pid: kept so that they are
# reaped (no zombies) when stopped, and not garbage-collected while still running.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class ServiceStatus:
    """What ``spyglass stack status`` shows for one service."""

    name: str
    running: bool
    pid: int | None
    endpoint: str
    detail: str = ""


@runtime_checkable
class Service(Protocol):
    """One service of the local stack."""

    name: str

    def provision(self) -> None:
        """Install, download or prepare what the service needs; idempotent and cached."""

    def start(self) -> None:
        """Start the service detached; returns without waiting for it to be ready."""

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the service: SIGTERM, then SIGKILL after ``timeout`` seconds."""

    def status(self) -> ServiceStatus:
        """Report whether the service runs, its pid and endpoint."""

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Block until the service answers requests; return the seconds it took."""

    def ports(self) -> dict[str, int]:
        """Ports the service listens on, keyed by the environment variable that sets each."""

    def reset(self) -> None:
        """Delete the service's data (it must be stopped)."""


# --- ports -------------------------------------------------------------------------------


_TCP_LISTEN = "0A"  # the LISTEN state in /proc/net/tcp


def port_listening(port: int) -> bool | None:
    """Whether a socket on this host listens on TCP ``port`` (any address), from ``/proc/net/tcp*``;
    ``None`` where the kernel does not expose those tables."""
    found = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f, None)  # header
                for line in f:
                    fields = line.split(None, 4)
                    if fields[3] == _TCP_LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        return True
            found = True
        except (OSError, IndexError, ValueError):
            continue
    return False if found else None


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``.

    Nothing connects while no socket listens on the port: a connect to a local port in the ephemeral
    range can be given that same port as its source and connect to itself (a TCP simultaneous open),
    and the port then stays taken (TIME_WAIT) so the server about to start cannot bind it.
    """
    if port_listening(port) is False:
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on ``host`` right now."""
    return free_ports(1, host)[0]


def free_ports(n: int, host: str = LOOPBACK) -> list[int]:
    """``n`` distinct TCP ports that are free on ``host`` right now."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# --- processes ---------------------------------------------------------------------------


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    pid_path: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Start ``argv`` detached (own session, output appended to ``log_path``); write and return its pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            start_new_session=True,
            close_fds=True,
        )
    _CHILDREN[proc.pid] = proc
    tmp = pid_path.with_suffix(".tmp")
    tmp.write_text(f"{proc.pid}\n")
    os.replace(tmp, pid_path)
    return proc.pid


def read_pid(pid_path: Path) -> int | None:
    """The pid in ``pid_path``, or None if the file is missing or garbled."""
    try:
        return int(pid_path.read_text().strip())
    except (OSError, ValueError):
        return None


def process_cmdline(pid: int) -> str | None:
    """The command line of ``pid`` (arguments joined by spaces), or None if unknown."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()


def pid_alive(pid: int | None) -> bool:
    """Whether ``pid`` is a live process (zombies count as dead and are reaped if ours)."""
    if pid is None or pid <= 0:
        return False
    proc = _CHILDREN.get(pid)
    if proc is not None:
        return proc.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # state is the field after the parenthesised command name
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def pid_matches(pid: int | None, *needles: str) -> bool:
    """Whether ``pid`` is alive and its command line contains every needle (guards against pid reuse)."""
    if not pid_alive(pid):
        return False
    assert pid is not None
    cmdline = process_cmdline(pid)
    if cmdline is None:  # no /proc: trust the pid file
        return True
    return all(n in cmdline for n in needles)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)  # started with start_new_session: pgid == pid
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _wait_gone(pid: int, timeout: float) -> bool:
    proc = _CHILDREN.get(pid)
    if proc is not None:
        try:
            proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return not pid_alive(pid)


def terminate(pid: int, timeout: float = 20.0) -> bool:
    """SIGTERM the process group of ``pid``, SIGKILL it after ``timeout`` s; return False if it needed SIGKILL."""
    graceful = True
    if pid_alive(pid):
        _signal_group(pid, signal.SIGTERM)
        if not _wait_gone(pid, timeout):
            graceful = False
            _signal_group(pid, signal.SIGKILL)
            _wait_gone(pid, 10.0)
    proc = _CHILDREN.pop(pid, None)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=1.0)
    return graceful


def stop_pid_file(pid: int | None, pid_file: Path, timeout: float) -> None:
    """Stop a service known by its pid file: ``terminate`` its process if it runs (``pid``), then drop the file."""
    if pid is not None:
        terminate(pid, timeout)
    pid_file.unlink(missing_ok=True)


def wipe(running: bool, name: str, *dirs: Path) -> None:
    """Delete a stopped service's data ``dirs``; refuse (``StackError``) while it runs."""
    if running:
        raise StackError(f"stop {name} before wiping its data")
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a text file ('' if it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def wait_port_closed(host: str, port: int, timeout: float = 5.0) -> bool:
    """Wait until nothing listens on ``host:port`` any more; return whether it closed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not port_open(host, port, timeout=0.2):
            return True
        time.sleep(0.05)
    return not port_open(host, port, timeout=0.2)
