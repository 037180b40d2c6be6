"""A single-node KRaft Kafka broker from Maven Central jars, plus topic provisioning.

The jars (``org.apache.kafka:kafka_2.13`` and its dependencies, ~46 MB) are resolved
once by ``mvn dependency:copy-dependencies`` into ``SPYGLASS_CACHE_DIR/kafka/<version>/libs``
(outside the repo) and shared by every stack directory.  Data, config and logs live
under ``SPYGLASS_STACK_DIR/kafka``.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schemas.errors import StackError
from streams.kafka_security import kafka_client_config
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
from streams.stack.kafka_secure import ADMIN_USER, SecureMaterial

if TYPE_CHECKING:
    from kafka.admin import KafkaAdminClient

SLF4J_BINDING = ("org.slf4j", "slf4j-reload4j", "1.7.36")
CLIENT_ID = "spyglass-stack"

_POM = """<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by `spyglass stack fetch`: resolves the Kafka broker's jars. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.spyglass.stack</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>{slf4j_group}</groupId>
      <artifactId>{slf4j_artifact}</artifactId>
      <version>{slf4j_version}</version>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J = """# Written by spyglass stack: broker logs go to a rolling file, warnings and up.
log4j.rootLogger=WARN, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File={log_file}
log4j.appender.file.MaxFileSize=10MB
log4j.appender.file.MaxBackupIndex=3
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
"""


def _server_properties(settings: Settings, data_dir: Path, secure: SecureMaterial | None = None) -> str:
    port, ctrl = settings.kafka_port, settings.kafka_controller_port
    listener = "SASL_SSL" if secure is not None else "PLAINTEXT"
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{LOOPBACK}:{ctrl}",
        "listeners": f"{listener}://{LOOPBACK}:{port},CONTROLLER://{LOOPBACK}:{ctrl}",
        "advertised.listeners": f"{listener}://{LOOPBACK}:{port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": str(settings.topic_partitions),
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
        "delete.topic.enable": "true",
    }
    if secure is not None:
        props.update(secure.server_properties())
    lines = ["# Written by spyglass stack on every start; edit the SPYGLASS_KAFKA_* settings instead."]
    lines += [f"{k}={v}" for k, v in props.items()]
    return "\n".join(lines) + "\n"


def _cluster_id() -> str:
    """A random 22-character url-safe base64 cluster id, the format ``kafka-storage random-uuid`` prints.

    Like Kafka's ``Uuid.randomUuid()`` it never starts with "-" (such ids read as options on a command line).
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
        if not cid.startswith("-"):
            return cid


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


class KafkaService:
    """A single-node KRaft broker (broker and controller in one JVM) on 127.0.0.1.

    ``secure``: a SASL_SSL listener with SCRAM users and ACLs (:mod:`streams.stack.kafka_secure`) instead
    of PLAINTEXT; None: as the stack directory was set up (secure if its secure material exists).
    """

    name = "kafka"

    def __init__(self, settings: Settings, secure: bool | None = None) -> None:
        self.settings = settings
        self.cache = settings.cache_dir.expanduser().resolve() / "kafka" / settings.kafka_version
        self.libs_dir = self.cache / "libs"
        self.home = settings.stack_dir.expanduser().resolve() / "kafka"
        self.config_dir = self.home / "config"
        self.data_dir = self.home / "data"
        self.logs_dir = self.home / "logs"
        self.pid_file = self.home / "kafka.pid"
        self.stdout_log = self.logs_dir / "stdout.log"
        self.server_log = self.logs_dir / "server.log"
        self.secure_material = SecureMaterial(self.home / "secure")
        self.secure = self.secure_material.exists() if secure is None else secure

    @property
    def admin_settings(self) -> Settings:
        """The settings the stack tooling connects with: as the admin (super user) on a secure stack."""
        if not self.secure:
            return self.settings
        return self.secure_material.client_settings(self.settings, ADMIN_USER)

    @property
    def bootstrap(self) -> str:
        """host:port of the local broker."""
        return f"{LOOPBACK}:{self.settings.kafka_port}"

    @property
    def server_properties(self) -> Path:
        return self.config_dir / "server.properties"

    def ports(self) -> dict[str, int]:
        """Ports the broker listens on, keyed by the environment variable that sets each."""
        return {
            "SPYGLASS_KAFKA_PORT": self.settings.kafka_port,
            "SPYGLASS_KAFKA_CONTROLLER_PORT": self.settings.kafka_controller_port,
        }

    # --- provisioning ------------------------------------------------------------------

    def jars_cached(self) -> bool:
        """Whether the jar cache for this Kafka version is complete."""
        return (self.cache / ".complete").is_file() and self.libs_dir.is_dir()

    def provision(self) -> None:
        """Resolve the broker's jars into the cache once (needs ``mvn`` the first time) and check ``java``."""
        self._java()
        if self.jars_cached():
            return
        with _file_lock(self.cache / ".lock"):
            if self.jars_cached():  # another process finished while we waited
                return
            mvn = shutil.which("mvn")
            if mvn is None:
                raise StackError(
                    "`mvn` (Apache Maven) is not on PATH; it is needed once to download the Kafka "
                    f"{self.settings.kafka_version} jars into {self.libs_dir} (e.g. `apt-get install maven`)"
                )
            pom = self.cache / "pom.xml"
            pom.write_text(
                _POM.format(
                    version=self.settings.kafka_version,
                    slf4j_group=SLF4J_BINDING[0],
                    slf4j_artifact=SLF4J_BINDING[1],
                    slf4j_version=SLF4J_BINDING[2],
                )
            )
            partial = self.cache / "libs.partial"
            shutil.rmtree(partial, ignore_errors=True)
            cmd = [
                mvn, "-B", "-q", "-f", str(pom), "dependency:copy-dependencies",
                f"-DoutputDirectory={partial}",
            ]  # fmt: skip
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
            except subprocess.TimeoutExpired:
                raise StackError("`mvn dependency:copy-dependencies` for the Kafka jars timed out") from None
            if done.returncode != 0 or not any(partial.glob("kafka_2.13-*.jar")):
                out = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
                raise StackError(
                    f"`mvn` could not resolve org.apache.kafka:kafka_2.13:{self.settings.kafka_version} "
                    f"(exit {done.returncode}); is Maven Central reachable?\n{out}"
                )
            shutil.rmtree(self.libs_dir, ignore_errors=True)
            partial.rename(self.libs_dir)
            (self.cache / ".complete").write_text(f"{len(list(self.libs_dir.glob('*.jar')))} jars\n")

    def _java(self) -> str:
        java = shutil.which("java")
        if java is None:
            raise StackError(
                "`java` is not on PATH; the Kafka broker needs a JRE 11+ (e.g. `apt-get install default-jre-headless`)"
            )
        return java

    def _classpath(self) -> str:
        return str(self.libs_dir / "*")

    # --- lifecycle ---------------------------------------------------------------------

    def write_config(self) -> None:
        """Write server.properties and log4j.properties for the current settings."""
        for d in (self.config_dir, self.data_dir, self.logs_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.server_properties.touch(mode=0o600)  # in secure mode it holds the keystore's and admin's passwords
        self.server_properties.chmod(0o600)
        secure = self.secure_material if self.secure else None
        self.server_properties.write_text(_server_properties(self.settings, self.data_dir, secure))
        (self.config_dir / "log4j.properties").write_text(_LOG4J.format(log_file=self.server_log))

    def _jvm(self) -> list[str]:
        return [
            self._java(),
            f"-Xmx{self.settings.kafka_heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{self.config_dir / 'log4j.properties'}",
            f"-Dkafka.logs.dir={self.logs_dir}",
            "-cp",
            self._classpath(),
        ]

    def formatted(self) -> bool:
        """Whether the KRaft storage directory has been formatted."""
        return (self.data_dir / "meta.properties").is_file()

    def format_storage(self) -> None:
        """Format the KRaft log directory with a new cluster id (only if not yet formatted)."""
        if self.formatted():
            return
        # "--cluster-id=ID", not "-t ID": a base64 id can start with "-" and would parse as an option
        args = ["format", f"--cluster-id={_cluster_id()}", f"--config={self.server_properties}"]
        if not self.secure:
            done = subprocess.run([*self._jvm(), "kafka.tools.StorageTool", *args], capture_output=True, text=True,
                                  timeout=120, check=False)
        else:  # the SCRAM users' passwords go in a Java argument file (0600), never on the command line
            argfile = self.secure_material.dir / "format.args"
            argfile.unlink(missing_ok=True)
            fd = os.open(argfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write("\n".join([*args, *self.secure_material.scram_format_args()]) + "\n")
            try:
                done = subprocess.run([*self._jvm(), "kafka.tools.StorageTool", f"@{argfile}"], capture_output=True,
                                      text=True, timeout=120, check=False)
            finally:
                argfile.unlink(missing_ok=True)
        if done.returncode != 0:
            out = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            raise StackError(f"formatting Kafka storage in {self.data_dir} failed (exit {done.returncode}):\n{out}")

    def pid(self) -> int | None:
        """The broker's pid if it runs (and is ours), else None."""
        pid = read_pid(self.pid_file)
        return pid if pid_matches(pid, "kafka.Kafka", str(self.server_properties)) else None

    def start(self) -> None:
        """Write the config, format storage if new, and launch the broker JVM detached."""
        if not self.jars_cached():
            raise StackError(f"Kafka jars are not in {self.libs_dir}; run `spyglass stack fetch` first")
        if self.formatted() and self.secure != self.secure_material.exists():
            mode = "secure" if self.secure_material.exists() else "PLAINTEXT"
            raise StackError(f"the broker in {self.home} was set up {mode}; start it as it was, or wipe it with "
                             "`spyglass stack up --fresh` (add --secure for the secure mode)")
        if self.secure:
            self.secure_material.create()
        self.write_config()
        self.format_storage()
        cmd = [*self._jvm(), "kafka.Kafka", str(self.server_properties)]
        spawn(cmd, log_path=self.stdout_log, pid_path=self.pid_file, cwd=self.home)

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the broker (controlled shutdown on SIGTERM, SIGKILL after ``timeout`` s)."""
        stop_pid_file(self.pid(), self.pid_file, timeout)

    def reset(self) -> None:
        """Delete the broker's data (topics, offsets, cluster id)."""
        wipe(self.pid() is not None, "Kafka", self.data_dir, self.secure_material.dir)  # users live in the data

    def status(self) -> ServiceStatus:
        """Running if our broker process is alive and its port accepts connections."""
        pid = self.pid()
        listening = port_open(LOOPBACK, self.settings.kafka_port)
        if pid is None:
            detail = "stopped" if not listening else f"port {self.settings.kafka_port} is used by another process"
        elif not listening:
            detail = "starting (port not open yet)"
        else:
            detail = f"KRaft, Kafka {self.settings.kafka_version}" + (", SASL_SSL + ACLs" if self.secure else "")
        return ServiceStatus(self.name, pid is not None and listening, pid, self.bootstrap, detail)

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Block until an admin client can list topics; return the seconds waited."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        last: Exception | str = "port not open"
        while time.monotonic() < deadline:
            pid = read_pid(self.pid_file)
            if not pid_alive(pid):
                raise StackError(
                    f"the Kafka broker exited during start-up; last log lines ({self.stdout_log}, {self.server_log}):\n"
                    + (tail(self.server_log, 10) + "\n" + tail(self.stdout_log, 10)).strip()
                )
            if port_open(LOOPBACK, self.settings.kafka_port):
                try:
                    admin = admin_client(self.bootstrap, request_timeout_ms=5000, bootstrap_timeout_ms=3000,
                                         **kafka_client_config(self.admin_settings))
                except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
                    last = exc
                else:
                    try:
                        admin.list_topics()
                        return time.monotonic() - t0
                    except Exception as exc:  # noqa: BLE001
                        last = exc
                    finally:
                        admin.close()
            time.sleep(0.2)
        raise StackError(
            f"the Kafka broker on {self.bootstrap} was not ready after {timeout:.0f} s ({last}); "
            f"see {self.server_log}"
        )


def admin_client(bootstrap: str, **config: Any) -> KafkaAdminClient:
    """A ``KafkaAdminClient`` that does not leak its IO thread when it cannot bootstrap.

    kafka-python 3.x starts the client's IO thread before bootstrapping in ``__init__``; if
    bootstrapping then fails, the half-built client is never returned, so nobody can close it
    and its thread and sockets live on.  Build it in two steps so it can be torn down.
    """
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient.__new__(KafkaAdminClient)
    try:
        admin.__init__(bootstrap_servers=bootstrap, client_id=CLIENT_ID, **config)  # type: ignore[misc]
    except BaseException:
        client, net = getattr(admin, "_client", None), getattr(admin, "_net", None)
        with contextlib.suppress(Exception):
            if client is not None:
                client.close()
        with contextlib.suppress(Exception):
            if net is not None:
                net.stop()
        raise
    return admin


def _admin(settings: Settings, bootstrap: str) -> KafkaAdminClient:
    try:
        return admin_client(bootstrap, request_timeout_ms=15000, **kafka_client_config(settings))
    except Exception as exc:  # noqa: BLE001
        raise StackError(f"cannot reach Kafka at {bootstrap} ({exc}); is `spyglass stack up` running?") from exc


def group_offsets(bootstrap: str, group: str, **client_config: Any) -> dict[tuple[str, int], int]:
    """The committed offset of every (topic, partition) of a consumer group (empty if it has none);
    ``client_config``: how to connect (:func:`streams.kafka_security.kafka_client_config`)."""
    admin = admin_client(bootstrap, **client_config)
    try:
        offs = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    return {(tp.topic, tp.partition): om.offset for tp, om in offs.items()}


def ensure_topics(settings: Settings, partitions: int | None = None, *, bootstrap: str | None = None) -> list[str]:
    """Create the event, alerts, dead-letter, risk-evidence, feedback and OTLP spans topics if missing; return all
    their names.

    ``bootstrap`` defaults to ``settings.kafka_bootstrap``; existing topics are left as they are.
    """
    from kafka.errors import TopicAlreadyExistsError, for_code

    names = [*settings.topics().values(), settings.topic_alerts, settings.topic_dead_letter,
             settings.topic_risk_evidence, settings.topic_feedback,
             *([settings.topic_otlp_spans] if settings.topic_otlp_spans else [])]
    n = partitions or settings.topic_partitions
    server = bootstrap or settings.kafka_bootstrap
    admin = _admin(settings, server)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in names if t not in existing]
        if missing:
            spec = {t: {"num_partitions": n, "replication_factor": 1} for t in missing}
            try:
                result = admin.create_topics(spec, timeout_ms=15000, raise_errors=False)
            except TopicAlreadyExistsError:
                result = {"topics": []}
            for topic in result.get("topics", []):
                code = topic.get("error_code", 0)
                if code not in (0, TopicAlreadyExistsError.errno):
                    err = for_code(code)
                    raise StackError(f"creating Kafka topic {topic.get('name')!r} on {server} failed: {err.__name__}")
            admin.wait_for_topics(missing, timeout_ms=15000)
    finally:
        admin.close()
    return names


def delete_topics(settings: Settings, names: Iterable[str], *, bootstrap: str | None = None) -> list[str]:
    """Delete the named topics that exist; return the names actually deleted."""
    from kafka.errors import UnknownTopicOrPartitionError, for_code

    wanted = list(dict.fromkeys(names))
    if not wanted:
        return []
    server = bootstrap or settings.kafka_bootstrap
    admin = _admin(settings, server)
    try:
        existing = set(admin.list_topics())
        present = [t for t in wanted if t in existing]
        if not present:
            return []
        result = admin.delete_topics(present, timeout_ms=15000, raise_errors=False)
        deleted = []
        for topic in result.get("topics", []):
            code = topic.get("error_code", 0)
            if code == 0:
                deleted.append(topic.get("name"))
            elif code != UnknownTopicOrPartitionError.errno:
                raise StackError(f"deleting Kafka topic {topic.get('name')!r} failed: {for_code(code).__name__}")
        return deleted
    finally:
        admin.close()
