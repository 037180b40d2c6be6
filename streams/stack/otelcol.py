"""The OpenTelemetry Collector Spyglass tests its OTLP span source against: built from source, run on loopback.

``streams/otelcol`` is a minimal Collector (the OTLP receiver and the contrib Kafka exporter, v0.165); it is built
with ``go build`` from the Go module proxy into ``SPYGLASS_CACHE_DIR`` (``make deps`` / ``spyglass stack fetch``),
once per version of its sources, like the Kafka jars: nothing built is kept in the repository.
:class:`Collector` runs it with a config file it writes (OTLP/HTTP in, the local broker out), as the integration
test does.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import yaml

from schemas.errors import StackError
from streams.stack.base import LOOPBACK, free_port, port_open, spawn, tail, terminate

SOURCE = Path(__file__).resolve().parents[1] / "otelcol"
SOURCE_FILES = ("go.mod", "go.sum", "main.go")
BINARY = "spyglass-otelcol"
BUILD_TIMEOUT_S = 1200.0


def source_digest() -> str:
    """A digest of the Collector's sources: a change of a version or of main.go builds it again."""
    h = hashlib.sha256()
    for name in SOURCE_FILES:
        h.update(name.encode() + b"\0" + (SOURCE / name).read_bytes())
    return h.hexdigest()[:16]


def binary_path(cache_dir: Path) -> Path:
    return cache_dir / f"otelcol-{source_digest()}" / BINARY


def go_command() -> str | None:
    """The ``go`` command (PATH, else the official tarball's place), or None."""
    found = shutil.which("go")
    if found:
        return found
    return "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None


def build(cache_dir: Path) -> Path:
    """The Collector binary, built into ``cache_dir`` unless it is there already; raises StackError (no Go, a
    failed build) with what to do."""
    out = binary_path(cache_dir)
    if out.exists():
        return out
    go = go_command()
    if go is None:
        raise StackError("building the OpenTelemetry Collector needs Go (1.24 or newer): install it "
                         "(https://go.dev/doc/install) and run `spyglass stack fetch` again")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{BINARY}.{os.getpid()}")
    # a static binary; no VCS stamp (the sources sit in a subfolder of Spyglass's checkout, or of no checkout)
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": f"{os.environ.get('GOFLAGS', '')} -buildvcs=false".strip()}
    try:
        r = subprocess.run([go, "build", "-trimpath", "-o", str(tmp), "."], cwd=SOURCE, env=env,  # noqa: S603
                           capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise StackError(f"building the OpenTelemetry Collector took over {BUILD_TIMEOUT_S:.0f} s") from None
    if r.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise StackError(f"building the OpenTelemetry Collector failed:\n{r.stderr[-3000:]}")
    os.replace(tmp, out)
    return out


def config(*, otlp_http_port: int, brokers: str, topic: str, encoding: str = "otlp_proto") -> dict:
    """A Collector config: OTLP/HTTP on loopback in, spans to ``topic`` of ``brokers`` out as ``encoding``
    (``otlp_proto`` or ``otlp_json``); its own metrics off (no port of its own)."""
    return {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"{LOOPBACK}:{otlp_http_port}"}}}},
        "exporters": {"kafka": {
            "brokers": brokers.split(","),
            "traces": {"topic": topic, "encoding": encoding},
            "partition_traces_by_id": True,  # one trace's spans go together (and to one partition)
        }},
        "service": {
            "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["kafka"]}},
            "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "info"}},
        },
    }


class Collector:
    """One Collector process on loopback, with its config and log in ``workdir``."""

    def __init__(self, binary: Path, workdir: Path, *, brokers: str, topic: str, encoding: str = "otlp_proto") -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.config_path = workdir / "otelcol.yaml"
        self.log_path = workdir / "otelcol.log"
        self.pid_path = workdir / "otelcol.pid"
        self.pid: int | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(config(otlp_http_port=self.port, brokers=brokers, topic=topic,
                                                          encoding=encoding)))

    @property
    def traces_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/v1/traces"

    def start(self, timeout: float = 60.0) -> Collector:
        """Start it and wait until its OTLP/HTTP port answers."""
        self.pid = spawn([str(self.binary), "--config", str(self.config_path)], log_path=self.log_path,
                         pid_path=self.pid_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if port_open(LOOPBACK, self.port):
                return self
            if not _alive(self.pid):
                break
            time.sleep(0.2)
        self.stop()
        raise StackError(f"the OpenTelemetry Collector did not start:\n{tail(self.log_path, 30)}")

    def stop(self) -> None:
        if self.pid is not None:
            terminate(self.pid, timeout=10.0)
            self.pid = None

    def log(self) -> str:
        return tail(self.log_path, 40)


def _alive(pid: int) -> bool:
    from streams.stack.base import pid_alive

    return pid_alive(pid)
