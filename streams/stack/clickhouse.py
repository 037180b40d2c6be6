"""The ClickHouse server of the local stack, and the embedded chDB store.

The server is the one from Debian's ``clickhouse-server`` package (18.16 on bookworm),
run with a minimal config of our own under ``SPYGLASS_STACK_DIR/clickhouse``: it
listens on 127.0.0.1 only and its ``default`` user has no password, so it is a local
development server, never a shared one.

In secure mode (``spyglass stack up --secure``) the native port serves TLS only (``tcp_port_secure``) and
the HTTP port HTTPS only, with a certificate for 127.0.0.1/localhost signed by a CA made for this server
(:mod:`streams.stack.tls`, under ``clickhouse/secure``, directory 0700), and the ``default`` user has a random
password kept in ``clickhouse/secure/default.password`` (0600; the server's config holds only its SHA-256).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import time
from pathlib import Path
from xml.sax.saxutils import escape

from pydantic import SecretStr

from schemas.errors import StackError
from streams.settings import Settings, StoreURL
from streams.stack.base import (
    LOOPBACK,
    ServiceStatus,
    pid_alive,
    pid_matches,
    port_listening,
    port_open,
    read_pid,
    spawn,
    stop_pid_file,
    tail,
    wipe,
)
from streams.stack.tls import CA_CERT, issue_server_certificate, private_dir, write_secret

_CONFIG = """<?xml version="1.0"?>
<!-- Written by spyglass stack on every start; edit the SPYGLASS_CLICKHOUSE_* settings instead. -->
<yandex>
    <logger>
        <level>warning</level>
        <log>{log}</log>
        <errorlog>{errorlog}</errorlog>
        <size>10M</size>
        <count>3</count>
    </logger>
    <listen_host>{host}</listen_host>
{ports}    <path>{path}/</path>
    <tmp_path>{tmp_path}/</tmp_path>
    <user_files_path>{user_files}/</user_files_path>
    <format_schema_path>{format_schemas}/</format_schema_path>
    <users_config>{users}</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mark_cache_size>268435456</mark_cache_size>
    <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
"""

_PLAIN_PORTS = """    <tcp_port>{tcp_port}</tcp_port>
    <http_port>{http_port}</http_port>
"""

_TLS_PORTS = """    <tcp_port_secure>{tcp_port}</tcp_port_secure>
    <https_port>{http_port}</https_port>
    <openSSL>
        <server>
            <certificateFile>{cert}</certificateFile>
            <privateKeyFile>{key}</privateKeyFile>
            <verificationMode>none</verificationMode>
            <loadDefaultCAFile>false</loadDefaultCAFile>
            <cacheSessions>true</cacheSessions>
            <disableProtocols>sslv2,sslv3,tlsv1,tlsv1_1</disableProtocols>
            <preferServerCiphers>true</preferServerCiphers>
        </server>
    </openSSL>
"""

_USERS = """<?xml version="1.0"?>
<!-- Written by spyglass stack: the default user is reachable from 127.0.0.1 only. -->
<yandex>
    <profiles>
        <default>
            <max_memory_usage>2000000000</max_memory_usage>
            <load_balancing>random</load_balancing>
        </default>
    </profiles>
    <users>
        <default>
            {password}
            <networks>
                <ip>127.0.0.1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
"""


def find_server_binary() -> list[str]:
    """The command that runs the ClickHouse server, e.g. ``['/usr/sbin/clickhouse-server']``."""
    found = shutil.which("clickhouse-server")
    if found:
        return [found]
    if Path("/usr/sbin/clickhouse-server").is_file():
        return ["/usr/sbin/clickhouse-server"]
    multi = shutil.which("clickhouse")
    if multi:
        return [multi, "server"]
    raise StackError(
        "the ClickHouse server binary is not installed (no clickhouse-server or clickhouse on PATH); "
        "install Debian's package: `sudo apt-get install clickhouse-server`"
    )


class ClickHouseServerService:
    """A ClickHouse server process on 127.0.0.1 (native and HTTP ports)."""

    name = "clickhouse"

    def __init__(self, settings: Settings, secure: bool | None = None) -> None:
        self.settings = settings
        self.home = settings.stack_dir.expanduser().resolve() / "clickhouse"
        self.secure_dir = self.home / "secure"
        self.secure = self.tls_material_exists() if secure is None else secure
        self.data_dir = self.home / "data"
        self.logs_dir = self.home / "logs"
        self.config_file = self.home / "config.xml"
        self.users_file = self.home / "users.xml"
        # least-privilege users (schemas/users.py): merged by the server from users.d next to users.xml
        self.users_d_file = self.home / "users.d" / "spyglass.xml"
        self.credentials_file = self.home / "credentials.env"
        self.pid_file = self.home / "clickhouse.pid"
        self.stdout_log = self.logs_dir / "stdout.log"
        self.error_log = self.logs_dir / "clickhouse-server.err.log"
        self._version: str | None = None

    @property
    def endpoint(self) -> str:
        """The server's native-protocol URL (no credentials)."""
        scheme = "clickhouses" if self.secure else "clickhouse"
        return f"{scheme}://{LOOPBACK}:{self.settings.clickhouse_tcp_port}"

    @property
    def ca_file(self) -> Path:
        """The CA certificate that verifies the server in secure mode."""
        return self.secure_dir / CA_CERT

    @property
    def password_file(self) -> Path:
        """The ``default`` user's password in secure mode (mode 0600)."""
        return self.secure_dir / "default.password"

    def tls_material_exists(self) -> bool:
        """Whether the secure mode's CA, certificate, key and password are all there."""
        return all(p.is_file() for p in (self.ca_file, self.secure_dir / "server.crt",
                                         self.secure_dir / "server.key", self.password_file))

    def make_tls_material(self) -> None:
        """Make the CA, the server's certificate and the ``default`` user's password (kept if complete)."""
        if self.tls_material_exists():
            return
        private_dir(self.secure_dir)
        write_secret(self.password_file, secrets.token_hex(24) + "\n")
        issue_server_certificate(self.secure_dir, ca_name="Spyglass local ClickHouse CA",
                                 server_cn="spyglass-clickhouse", stem="server")

    def url(self, database: str = "default") -> StoreURL:
        """The store URL of the server's ``default`` user: in secure mode TLS with the stack's CA and its
        password (a secret: for clients and child environments, never for logs)."""
        if not self.secure:
            return StoreURL("clickhouse", host=LOOPBACK, port=self.settings.clickhouse_tcp_port, database=database)
        return StoreURL("clickhouse", host=LOOPBACK, port=self.settings.clickhouse_tcp_port, database=database,
                        password=SecretStr(self.password_file.read_text().strip()), secure=True,
                        ca_certs=self.ca_file)

    def client_env(self, database: str = "default") -> dict[str, str]:
        """The ``SPYGLASS_CLICKHOUSE_*`` variables that connect a Spyglass process as ``default`` (no secret:
        in secure mode the password is read from :attr:`password_file`)."""
        env = {"SPYGLASS_CLICKHOUSE_URL": self.url(database).with_password(SecretStr("")).secret_url()}
        if self.secure:
            env["SPYGLASS_CLICKHOUSE_PASSWORD_FILE"] = str(self.password_file)
        return env

    def ports(self) -> dict[str, int]:
        """Ports the server listens on, keyed by the environment variable that sets each."""
        return {
            "SPYGLASS_CLICKHOUSE_TCP_PORT": self.settings.clickhouse_tcp_port,
            "SPYGLASS_CLICKHOUSE_HTTP_PORT": self.settings.clickhouse_http_port,
        }

    def provision(self) -> None:
        """Check the server binary is installed (never installs it: that needs root and apt); in secure mode
        make the TLS material."""
        find_server_binary()
        if self.secure:
            self.make_tls_material()

    def write_config(self) -> None:
        """Write config.xml and users.xml for the current settings."""
        for sub in ("data", "tmp", "user_files", "format_schemas", "logs"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(
            _CONFIG.format(
                log=escape(str(self.logs_dir / "clickhouse-server.log")),
                errorlog=escape(str(self.error_log)),
                host=LOOPBACK,
                ports=(_TLS_PORTS if self.secure else _PLAIN_PORTS).format(
                    tcp_port=self.settings.clickhouse_tcp_port, http_port=self.settings.clickhouse_http_port,
                    cert=escape(str(self.secure_dir / "server.crt")), key=escape(str(self.secure_dir / "server.key"))),
                path=escape(str(self.data_dir)),
                tmp_path=escape(str(self.home / "tmp")),
                user_files=escape(str(self.home / "user_files")),
                format_schemas=escape(str(self.home / "format_schemas")),
                users=escape(str(self.users_file)),
            )
        )
        if self.secure:
            digest = hashlib.sha256(self.password_file.read_text().strip().encode()).hexdigest()
            password = f"<password_sha256_hex>{digest}</password_sha256_hex>"
        else:
            password = "<password></password>"  # noqa: S105 - the plain local mode: passwordless, loopback only
        self.users_file.write_text(_USERS.format(password=password))
        self.write_users()

    @property
    def users_database(self) -> str:
        """The database the least-privilege users may use: SPYGLASS_CLICKHOUSE_URL's, else ``spyglass``."""
        store = self.settings.store()
        return store.database if store.scheme == "clickhouse" and store.database != "default" else "spyglass"

    def credentials(self) -> dict[str, str]:
        """User -> password of the writer and Grafana users.

        From SPYGLASS_CLICKHOUSE_WRITER_PASSWORD / SPYGLASS_CLICKHOUSE_GRAFANA_PASSWORD when set;
        otherwise generated once into ``credentials.env`` (mode 0600) and reused on later starts.
        Never passed on a command line.
        """
        from schemas.users import GRAFANA, WRITER

        env_names = {WRITER: "SPYGLASS_CLICKHOUSE_WRITER_PASSWORD", GRAFANA: "SPYGLASS_CLICKHOUSE_GRAFANA_PASSWORD"}
        given = {WRITER: self.settings.clickhouse_writer_password, GRAFANA: self.settings.clickhouse_grafana_password}
        stored: dict[str, str] = {}
        if self.credentials_file.is_file():
            for line in self.credentials_file.read_text().splitlines():
                key, sep, value = line.partition("=")
                if sep:
                    stored[key.strip()] = value.strip()
        out = {}
        for user, env in env_names.items():
            secret = given[user]
            out[user] = secret.get_secret_value() if secret is not None else stored.get(env) or secrets.token_hex(16)
        generated = {env: out[user] for user, env in env_names.items() if given[user] is None}
        if generated and any(stored.get(k) != v for k, v in generated.items()):
            self.credentials_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.credentials_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write("# Generated by spyglass stack: passwords of the local ClickHouse server's users.\n")
                f.writelines(f"{k}={v}\n" for k, v in generated.items())
        if self.credentials_file.exists():
            os.chmod(self.credentials_file, 0o600)
        return out

    def write_users(self) -> None:
        """Write users.d/spyglass.xml (password hashes only, mode 0600) for :attr:`users_database`."""
        from schemas.users import users_xml

        self.users_d_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.users_d_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(users_xml(self.users_database, self.credentials(), networks=(LOOPBACK,)))
        os.chmod(self.users_d_file, 0o600)

    def pid(self) -> int | None:
        """The server's pid if it runs (and is ours), else None."""
        pid = read_pid(self.pid_file)
        return pid if pid_matches(pid, str(self.config_file)) else None

    def start(self) -> None:
        """Write the config and launch the server detached."""
        cmd = find_server_binary()
        self.write_config()
        spawn(
            [*cmd, f"--config-file={self.config_file}"],
            log_path=self.stdout_log,
            pid_path=self.pid_file,
            cwd=self.home,
        )

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server (SIGTERM, SIGKILL after ``timeout`` s)."""
        stop_pid_file(self.pid(), self.pid_file, timeout)
        self._version = None

    def reset(self) -> None:
        """Delete the server's databases and tables."""
        wipe(self.pid() is not None, "ClickHouse", self.data_dir, self.home / "tmp",
             self.secure_dir)  # a wipe makes a new CA and password

    def _query_version(self, connect_timeout: float = 1.0) -> str:
        from clickhouse_driver import Client

        port = self.settings.clickhouse_tcp_port
        if port_listening(port) is False:  # no connect before the server listens: see port_open (self-connects)
            raise ConnectionRefusedError(f"nothing listens on port {port} yet")
        client = Client(
            **self.url().driver_options(),
            connect_timeout=connect_timeout,
            send_receive_timeout=5,
            sync_request_timeout=5,
        )
        try:
            return str(client.execute("SELECT version()")[0][0])
        finally:
            client.disconnect()

    def status(self) -> ServiceStatus:
        """Running if our server process is alive and answers ``SELECT version()``."""
        pid = self.pid()
        port = self.settings.clickhouse_tcp_port
        if pid is None:
            detail = f"port {port} is used by another process" if port_open(LOOPBACK, port) else "stopped"
            return ServiceStatus(self.name, False, None, self.endpoint, detail)
        running_secure = "<tcp_port_secure>" in self.config_file.read_text()
        if running_secure != self.secure:  # never reused in the other mode: `stack down` (or --fresh) first
            mode = "TLS-only" if running_secure else "plain"
            return ServiceStatus(self.name, False, None, self.endpoint,
                                 f"runs in {mode} mode (pid {pid}); `spyglass stack down` first to switch")
        if self._version is None:
            # query directly rather than probing the port: a bare probe logs a warning in the server log
            try:
                self._version = self._query_version()
            except Exception as exc:  # noqa: BLE001 - shown, not raised
                return ServiceStatus(self.name, False, pid, self.endpoint, f"not answering yet: {exc}")
        tls = ", TLS only" if self.secure else ""
        return ServiceStatus(self.name, True, pid, self.endpoint, f"ClickHouse {self._version}{tls}")

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Block until ``SELECT version()`` answers; return the seconds waited."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        last: Exception | str = "no answer"
        while time.monotonic() < deadline:
            if not pid_alive(read_pid(self.pid_file)):
                raise StackError(
                    f"the ClickHouse server exited during start-up; last log lines ({self.error_log}):\n"
                    + (tail(self.error_log, 10) + "\n" + tail(self.stdout_log, 10)).strip()
                )
            try:
                self._version = self._query_version()
                return time.monotonic() - t0
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
                last = exc
            time.sleep(0.1)
        raise StackError(
            f"the ClickHouse server on {self.endpoint} was not ready after {timeout:.0f} s ({last}); "
            f"see {self.error_log}"
        )


class ChdbService:
    """The embedded chDB store: a directory, not a process.

    chDB runs the ClickHouse engine inside the Spyglass process itself, so there is
    nothing to start or stop; ``start``/``stop`` are no-ops and ``provision`` only makes
    the data directory of a ``chdb://`` store URL.
    """

    name = "chdb"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        store = settings.store()
        self.path: Path | None = store.path.expanduser().resolve() if store.scheme == "chdb" and store.path else None

    def ports(self) -> dict[str, int]:
        """No ports: chDB is in-process."""
        return {}

    def provision(self) -> None:
        """Make the chDB data directory if the store URL is ``chdb://``; otherwise nothing."""
        if self.path is not None:
            self.path.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        """No-op: the engine starts inside whichever Spyglass process opens the store."""

    def stop(self, timeout: float = 20.0) -> None:
        """No-op: there is no separate process to stop."""

    def reset(self) -> None:
        """Delete the chDB data directory."""
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)

    def wait_ready(self, timeout: float = 0.0) -> float:
        """Always ready (nothing to wait for)."""
        return 0.0

    def status(self) -> ServiceStatus:
        """Ready when the data directory exists; shows its path."""
        if self.path is None:
            return ServiceStatus(self.name, False, None, "-", "not used: SPYGLASS_CLICKHOUSE_URL is clickhouse://")
        ready = self.path.is_dir()
        detail = "embedded, in-process" if ready else "directory not created yet (run `spyglass stack up`)"
        return ServiceStatus(self.name, ready, None, f"chdb://{self.path}", detail)
