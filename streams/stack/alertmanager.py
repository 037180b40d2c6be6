"""Prometheus Alertmanager in the local stack: the on-call router ``spyglass notify`` posts alerts to.

Built once from the Go module proxy with ``go install`` into ``SPYGLASS_CACHE_DIR`` (next to the Kafka
jars, outside the repository) and run on 127.0.0.1 with clustering off. Its silences and notification
log live in ``SPYGLASS_STACK_DIR/alertmanager``, so a silence outlives a restart; the alerts themselves
are in its memory only, which is why ``spyglass notify`` re-posts the firing ones (``notify_refresh_s``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from schemas.errors import StackError
from streams.settings import Settings
from streams.stack.base import (
    LOOPBACK,
    ServiceStatus,
    pid_alive,
    pid_matches,
    port_open,
    read_pid,
    spawn,
    stop_pid_file,
    tail,
    wipe,
)

MODULE = "github.com/prometheus/alertmanager/cmd/alertmanager"
EXAMPLE_CONFIG = Path(__file__).with_name("alertmanager.yml")
BUILD_TIMEOUT_S = 1800.0  # a cold build downloads and compiles a few hundred modules on a small machine


def binary_path(settings: Settings) -> Path:
    """Where the built ``alertmanager`` binary of the configured version lives in the cache."""
    return settings.cache_dir.expanduser() / f"alertmanager-v{settings.alertmanager_version}" / "alertmanager"


def build(settings: Settings) -> Path:
    """``go install`` Alertmanager into the cache unless it is there already; return the binary.

    The build goes to a temporary directory beside the final one and is moved into place at the end,
    so an interrupted build never leaves a half-written binary that a later run would trust.
    """
    target = binary_path(settings)
    if target.is_file() and os.access(target, os.X_OK):
        return target
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").is_file() else None)
    if go is None:
        raise StackError(
            "building Alertmanager needs the Go toolchain (go 1.24 or later; Debian's golang-go is too old): "
            "install it from https://go.dev/dl/ and run `spyglass stack fetch` again"
        )
    target.parent.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".alertmanager-build-", dir=target.parent.parent) as tmp:
        env = {**os.environ, "GOBIN": tmp, "CGO_ENABLED": "0"}
        try:
            r = subprocess.run(  # noqa: S603 - fixed argv, the version is validated by the settings
                [go, "install", f"{MODULE}@v{settings.alertmanager_version}"], env=env, cwd=tmp,
                capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise StackError(f"go install {MODULE}@v{settings.alertmanager_version} took over "
                             f"{BUILD_TIMEOUT_S:.0f} s") from None
        built = Path(tmp) / "alertmanager"
        if r.returncode != 0 or not built.is_file():
            raise StackError(f"go install {MODULE}@v{settings.alertmanager_version} failed "
                             f"(exit {r.returncode}):\n" + "\n".join(r.stderr.splitlines()[-15:]))
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(built, target)
    return target


class AlertmanagerService:
    """An Alertmanager process on 127.0.0.1 (HTTP API and UI), clustering off."""

    name = "alertmanager"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.stack_dir.expanduser().resolve() / "alertmanager"
        self.data_dir = self.home / "data"
        self.pid_file = self.home / "alertmanager.pid"
        self.log_file = self.home / "alertmanager.log"

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.settings.alertmanager_port}"

    @property
    def config_file(self) -> Path:
        """The routing config it runs: ``SPYGLASS_ALERTMANAGER_CONFIG``, else the shipped example."""
        given = self.settings.alertmanager_config
        return given.expanduser().resolve() if given is not None else EXAMPLE_CONFIG

    def ports(self) -> dict[str, int]:
        """Ports it listens on, keyed by the environment variable that sets each."""
        return {"SPYGLASS_ALERTMANAGER_PORT": self.settings.alertmanager_port}

    def provision(self) -> None:
        """Build the binary into the cache (once) and check the config file exists."""
        build(self.settings)
        if not self.config_file.is_file():
            raise StackError(f"SPYGLASS_ALERTMANAGER_CONFIG: {self.config_file} does not exist")

    def pid(self) -> int | None:
        """Its pid if it runs (and is ours), else None."""
        pid = read_pid(self.pid_file)
        return pid if pid_matches(pid, str(binary_path(self.settings)), str(self.data_dir)) else None

    def start(self) -> None:
        """Launch it detached on loopback with the routing config."""
        binary = build(self.settings)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        spawn(
            [str(binary), f"--config.file={self.config_file}", f"--storage.path={self.data_dir}",
             f"--web.listen-address={LOOPBACK}:{self.settings.alertmanager_port}",
             "--cluster.listen-address=", "--log.level=warn"],
            log_path=self.log_file, pid_path=self.pid_file, cwd=self.home,
        )

    def stop(self, timeout: float = 20.0) -> None:
        """Stop it (SIGTERM, SIGKILL after ``timeout`` s); its silences are saved on the way out."""
        stop_pid_file(self.pid(), self.pid_file, timeout)

    def reset(self) -> None:
        """Delete its silences and notification log."""
        wipe(self.pid() is not None, "Alertmanager", self.data_dir)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/-/ready", timeout=1.0) as r:  # noqa: S310 - loopback
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def status(self) -> ServiceStatus:
        """Running if our process is alive and ``/-/ready`` answers."""
        pid = self.pid()
        port = self.settings.alertmanager_port
        if pid is None:
            detail = f"port {port} is used by another process" if port_open(LOOPBACK, port) else "stopped"
            return ServiceStatus(self.name, False, None, self.endpoint, detail)
        if not self._ready():
            return ServiceStatus(self.name, False, pid, self.endpoint, "not answering yet")
        return ServiceStatus(self.name, True, pid, self.endpoint,
                             f"Alertmanager {self.settings.alertmanager_version}, config {self.config_file}")

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Block until ``/-/ready`` answers 200; return the seconds waited."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if not pid_alive(read_pid(self.pid_file)):
                raise StackError(f"Alertmanager exited during start-up; last log lines ({self.log_file}):\n"
                                 + tail(self.log_file, 10))
            if self._ready():
                return time.monotonic() - t0
            time.sleep(0.1)
        raise StackError(f"Alertmanager on {self.endpoint} was not ready after {timeout:.0f} s; see {self.log_file}")
