"""One frozen settings object, read from ``SPYGLASS_*`` environment variables.

Built once in ``main()`` and passed down; nothing else reads the environment.
Every field below is documented in the README's configuration table (a unit test
checks the table and this class agree).
"""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, IPvAnyAddress, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.errors import ConfigError

if TYPE_CHECKING:
    from detectors.engine import EngineConfig


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "spyglass"


class Settings(BaseSettings):
    """Spyglass configuration (env prefix ``SPYGLASS_``)."""

    model_config = SettingsConfigDict(env_prefix="SPYGLASS_", frozen=True, extra="ignore")

    # --- Kafka -------------------------------------------------------------------------
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,host:port]")
    topic_api_usage: str = Field("spyglass.api-usage", description="Topic of api_usage events")
    topic_data_access: str = Field("spyglass.data-access", description="Topic of data_access events")
    topic_agent_execution: str = Field("spyglass.agent-execution", description="Topic of agent_execution events")
    topic_alerts: str = Field("spyglass.alerts", description="Topic the alerts are published to")
    topic_dead_letter: str = Field("spyglass.dead-letter", description="Topic of records that failed decoding")
    topic_risk_evidence: str = Field("spyglass.risk-evidence", description="Topic of the worker's risk evidence "
                                     "(one record per engine alert with a principal, for cross-kind correlation)")
    topic_feedback: str = Field("spyglass.feedback", description="Topic of analysts' marks on alerts (`spyglass "
                                "alerts set-status`), read by the worker whose engine raised the alert; created "
                                "with as many partitions as the event topics")
    topic_partitions: int = Field(4, ge=1, le=1024, description="Partitions per topic when Spyglass creates them")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How every Kafka client of Spyglass connects: PLAINTEXT, SSL, SASL_PLAINTEXT or "
        "SASL_SSL")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "SCRAM-SHA-512", description="SASL mechanism (SASL_* protocols): PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
    kafka_sasl_username: str | None = Field(None, description="SASL user name (SASL_* protocols)")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password (or kafka_sasl_password_file)")
    kafka_sasl_password_file: Path | None = Field(
        None, description="File holding the SASL password (one line), instead of kafka_sasl_password")
    kafka_ssl_ca_file: Path | None = Field(
        None, description="PEM file of the CA(s) the broker's certificate is verified against (SSL, SASL_SSL); "
        "default: the system's CAs")
    kafka_ssl_cert_file: Path | None = Field(None, description="PEM client certificate (mutual TLS)")
    kafka_ssl_key_file: Path | None = Field(None, description="PEM private key of the client certificate")
    kafka_ssl_key_password: SecretStr | None = Field(None, description="Password of the client certificate's key")
    kafka_ssl_check_hostname: bool = Field(
        True, description="Whether the broker's certificate must name the host connected to")

    # --- Events ------------------------------------------------------------------------
    default_tenant: str = Field(
        "default", min_length=1, max_length=128, description="Tenant given to events that carry none"
    )

    event_max_future_s: float = Field(
        3600.0, ge=0, description="Events dated more than this many seconds ahead of the worker's wall clock are "
        "dead-lettered (field ts), and no engine's watermark moves past the wall clock plus this (0: off)")
    event_max_age_days: float = Field(
        30.0, ge=0, description="Events dated more than this many days before the worker's wall clock are "
        "dead-lettered (field ts); 0: off (a backfill of older events through the topics). Replay and eval never "
        "check it")

    # --- Store -------------------------------------------------------------------------
    clickhouse_url: SecretStr = Field(
        SecretStr("chdb://.stack/chdb"),
        description=(
            "Store URL: clickhouse://user:password@host:9000/database (server, native protocol) "
            "or chdb:///path/to/dir (embedded engine; a relative path is relative to the working dir); "
            "clickhouses://...:9440/database?ca_certs=/path/ca.pem for TLS (docs/clickhouse-tls.md)"
        ),
    )
    clickhouse_password_file: Path | None = Field(
        None, description="File whose first line is the password of the store URL's user (instead of one in "
        "SPYGLASS_CLICKHOUSE_URL)")

    clickhouse_writer_password: SecretStr | None = Field(
        None, description="Password of the worker's ClickHouse user (local server: generated into the stack dir "
        "if unset; `db users`: required)"
    )
    clickhouse_grafana_password: SecretStr | None = Field(
        None, description="Password of Grafana's ClickHouse user (local server: generated into the stack dir "
        "if unset; `db users`: required)"
    )
    retention_events_days: int = Field(
        30, ge=1, le=36500, description="Days raw events are kept (TTL where the server has it, else db prune)"
    )
    retention_aggregates_days: int = Field(
        180, ge=1, le=36500,
        description="Days the per-minute aggregates and pipeline health are kept (TTL, or `spyglass db prune`)",
    )

    # --- Worker ------------------------------------------------------------------------
    worker_group: str = Field("spyglass-worker", min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$",
                              description="Consumer group (Faust app id) the workers share")
    worker_batch_max: int = Field(5_000, ge=1, le=100_000, description="Records per scoring batch, at most")
    worker_fetch_max_wait_ms: int = Field(
        100, ge=1, le=1500,
        description="How long the broker may hold a fetch for partitions with nothing new (Faust sets 1500). One "
        "fetch is in flight per broker, so while it waits on caught-up partitions the others cannot be fetched: "
        "a worker catching up stalled up to this long, several times a run")
    worker_write_ahead: int = Field(8, ge=1, le=64, description="Scored batches that may wait for the store "
                                    "(beyond that, scoring and fetching wait: backpressure)")
    worker_insert_min_rows: int = Field(100_000, ge=1, le=1_000_000,
                                        description="Scored events held back for one `events` insert, at most "
                                        "(fewer when worker_insert_linger_s passes or a checkpoint is due)")
    worker_insert_linger_s: float = Field(1.0, ge=0, le=60, description="How long scored events may wait for "
                                          "more before they are inserted (alerts never wait); ClickHouse advises "
                                          "about one insert a second per table")
    worker_checkpoint_s: float = Field(5.0, gt=0, le=3600,
                                       description="Checkpoint each partition's state (and commit) this often")
    worker_session_timeout_s: float = Field(10.0, ge=6, le=300,
                                            description="Consumer session timeout: how soon a dead worker's "
                                                        "partitions move")
    worker_web_port: int = Field(6066, ge=0, le=65535, description="Worker /health and /metrics port (0: none)")
    worker_web_host: IPvAnyAddress = Field(IPv4Address("127.0.0.1"),
                                           description="Address /health and /metrics listen on "
                                           "(0.0.0.0 in a container, "
                                           "for Prometheus)")
    engine_max_entities: int = Field(1_000_000, ge=0, description="Entities each engine (one per topic partition) "
                                     "tracks at most; least recently seen are forgotten first (0: no cap)")
    engine_idle_evict_days: float = Field(30.0, ge=0, description="Entities unseen this long (event time) are "
                                          "forgotten (0: never)")
    engine_alert_budget_per_100k: float = Field(1.0, ge=0, description="Each detector's false-alarm budget: "
                                                "alerts per 100k of a tenant's events above which its weaker "
                                                "findings become info (0: no budget)")
    engine_learning_hours: float = Field(24.0, ge=0, description="A tenant's learning period from its first event "
                                         "(event time): the engine learns and scores, and raises nothing above "
                                         "info (0: none)")
    correlation_window_hours: float = Field(6.0, gt=0, le=168, description="risk.cross_kind: fixed event-time "
                                            "window in which one principal's alerts of two kinds correlate")
    correlation_horizon_days: float = Field(7.0, gt=0, description="risk.cross_kind: evidence this far (event "
                                            "time) behind the newest of its partition is dropped")
    worker_checkpoint_out_of_range: Literal["cold", "fail"] = Field(
        "cold", description="What a worker does with a checkpoint outside its partition's log (past its end: the "
        "topic was deleted and recreated; before its start: records deleted unscored), always logged as an error: "
        "cold (the partition restarts from the log start without state) or fail (the worker stops)")
    checkpoint_key: SecretStr | None = Field(
        None, description="HMAC key signing engine checkpoints, at least 32 bytes; every worker of a group needs "
        "the same one. Required when the store is a server; for the embedded store one is generated in the stack "
        "dir if unset")

    # --- OpenTelemetry GenAI spans (docs/opentelemetry.md) -----------------------------
    topic_otlp_spans: str = Field(
        "otlp_spans", max_length=249, description="Topic the OpenTelemetry Collector's Kafka exporter writes spans "
        "to (otlp_proto or otlp_json); the workers map its GenAI spans to events (empty: not consumed)")
    otlp_mapping_file: Path | None = Field(
        None, description="YAML file completing what GenAI spans do not carry: each tool's target, privilege, risk "
        "and approval, the tools returning untrusted content, the resource attribute naming the API key "
        "(docs/opentelemetry.md)")

    # --- Local stack -------------------------------------------------------------------
    stack_dir: Path = Field(Path(".stack"), description="Where the local stack keeps data, logs and pids")
    cache_dir: Path = Field(
        default_factory=_default_cache_dir,
        description="Download cache outside the repo (Kafka jars); default ~/.cache/spyglass",
    )
    kafka_version: str = Field("3.9.1", description="Apache Kafka version the local stack runs")
    kafka_port: int = Field(9092, ge=1, le=65535, description="Local broker listener port")
    kafka_controller_port: int = Field(9093, ge=1, le=65535, description="Local KRaft controller port")
    kafka_heap: str = Field("512m", description="Local broker JVM heap (-Xmx)")
    clickhouse_tcp_port: int = Field(9000, ge=1, le=65535, description="Local ClickHouse server native port")
    clickhouse_http_port: int = Field(8123, ge=1, le=65535, description="Local ClickHouse server HTTP port")
    suppressions_file: Path = Field(Path("suppressions.yaml"), description="Suppression rules as code (YAML, "
                                    "docs/analysts.md): alerts they match are stored, never published or routed; the "
                                    "worker re-reads the file when it changes. Missing: no rules")
    detectors_file: Path = Field(Path("detectors.yaml"), description="Detector configuration as code (YAML, "
                                 "docs/analysts.md): per detector and tenant its mode (enforce, shadow, off) and "
                                 "parameters; read when the worker starts. Missing: every detector enforced with "
                                 "the engine's parameters")

    # --- Alert delivery (Alertmanager) ---------------------------------------------------
    alertmanager_version: str = Field("0.31.1", pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$",
                                      description="Alertmanager version the local stack builds with go install "
                                      "(later ones do not build that way: their UI assets are not in the module)")
    alertmanager_port: int = Field(9193, ge=1, le=65535, description="Local Alertmanager HTTP port")
    alertmanager_config: Path | None = Field(
        None, description="Routing config the local Alertmanager runs; default: the example shipped in "
        "streams/stack/alertmanager.yml")
    alertmanager_url: str | None = Field(
        None, pattern=r"^https?://[^\s]+$", description="Alertmanager `spyglass notify` posts to; default: the "
        "local stack's, http://127.0.0.1:<alertmanager_port>")
    notify_group: str = Field("spyglass-notify", min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$",
                              description="Consumer group of `spyglass notify` on the alerts topic")
    notify_min_severity: Literal["info", "low", "medium", "high", "critical"] = Field(
        "low", description="Alerts below this severity are not sent to Alertmanager (they are stored all the same)")
    notify_refresh_s: float = Field(60.0, gt=0, le=3600, description="How often `spyglass notify` re-posts "
                                    "firing alerts (and checks analysts' statuses and episode ends)")
    grafana_url: str = Field("http://localhost:3000", pattern=r"^https?://[^\s]+$",
                             description="Grafana's base URL, for the investigation link in notifications")
    notify_web_port: int = Field(0, ge=0, le=65535, description="Port `spyglass notify` serves Prometheus /metrics "
                                 "on, at SPYGLASS_WORKER_WEB_HOST (0: none)")

    @field_validator("clickhouse_url")
    @classmethod
    def _check_url(cls, v: SecretStr) -> SecretStr:
        StoreURL.parse(v.get_secret_value())
        return v

    @model_validator(mode="after")
    def _check_kafka_security(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL_"):
            if not self.kafka_sasl_username:
                raise ConfigError(f"SPYGLASS_KAFKA_SASL_USERNAME is required with {self.kafka_security_protocol}")
            if (self.kafka_sasl_password is None) == (self.kafka_sasl_password_file is None):
                raise ConfigError("set one of SPYGLASS_KAFKA_SASL_PASSWORD and SPYGLASS_KAFKA_SASL_PASSWORD_FILE "
                                  f"with {self.kafka_security_protocol}")
            self.kafka_sasl_secret()  # a missing or unreadable file fails here, not at the first connection
        if self.kafka_ssl_key_file is not None and self.kafka_ssl_cert_file is None:
            raise ConfigError("SPYGLASS_KAFKA_SSL_KEY_FILE needs SPYGLASS_KAFKA_SSL_CERT_FILE")
        self.store()  # a store password file that is missing or doubles the URL's fails here
        return self

    def kafka_sasl_secret(self) -> SecretStr | None:
        """The SASL password: ``kafka_sasl_password``, or the first line of ``kafka_sasl_password_file``."""
        if self.kafka_sasl_password is not None or self.kafka_sasl_password_file is None:
            return self.kafka_sasl_password
        return _secret_file(self.kafka_sasl_password_file, "SPYGLASS_KAFKA_SASL_PASSWORD_FILE")

    def alertmanager_base(self) -> str:
        """The Alertmanager ``spyglass notify`` posts to, without a trailing slash."""
        return (self.alertmanager_url or f"http://127.0.0.1:{self.alertmanager_port}").rstrip("/")

    @classmethod
    def topic_names(cls, prefix: str) -> dict[str, str]:
        """Every topic setting, named under ``prefix`` (``{prefix}.api-usage``, ``{prefix}.alerts``, ...): the
        topics of one run of its own (a test, a benchmark), as ``model_copy``/``child_env`` updates.

        >>> Settings.topic_names("t-1")["topic_dead_letter"]
        't-1.dead-letter'
        """
        return {name: f"{prefix}.{name.removeprefix('topic_').replace('_', '-')}"
                for name, field in cls.model_fields.items() if name.startswith("topic_") and field.annotation is str}

    def topics(self) -> dict[str, str]:
        """Event kind -> topic."""
        return {
            "api_usage": self.topic_api_usage,
            "data_access": self.topic_data_access,
            "agent_execution": self.topic_agent_execution,
        }

    def retention(self) -> dict[str, int]:
        """Days kept per retention class (see ``schemas.migrate.RETENTION_TABLES``)."""
        return {"events": self.retention_events_days, "aggregates": self.retention_aggregates_days}

    def store(self) -> StoreURL:
        """The store URL, with the password of ``clickhouse_password_file`` when that is set."""
        url = StoreURL.parse(self.clickhouse_url.get_secret_value())
        if self.clickhouse_password_file is None or url.scheme == "chdb":
            return url
        password = _secret_file(self.clickhouse_password_file, "SPYGLASS_CLICKHOUSE_PASSWORD_FILE")
        if url.password.get_secret_value() not in ("", password.get_secret_value()):
            raise ConfigError("set the ClickHouse password in one place: SPYGLASS_CLICKHOUSE_URL has another one "
                              "than SPYGLASS_CLICKHOUSE_PASSWORD_FILE")
        return url.with_password(password)

    def child_env(self, **updates: object) -> dict[str, str]:
        """``SPYGLASS_*`` variables that give a child process these settings, with ``updates``.

        Secrets travel in the environment, never in process arguments.
        """
        s = self.model_copy(update=updates) if updates else self
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            v = getattr(s, name)
            if v is None:
                continue
            out[f"SPYGLASS_{name.upper()}"] = v.get_secret_value() if isinstance(v, SecretStr) else str(v)
        return out


    def engine_config(self) -> EngineConfig:
        """The engine configuration these settings give (bounded state, the learning period); every other threshold
        is the engine's."""
        from detectors.engine import EngineConfig

        return EngineConfig(max_entities=self.engine_max_entities, idle_evict_days=self.engine_idle_evict_days,
                            learning_hours=self.engine_learning_hours,
                            alert_budget_per_100k=self.engine_alert_budget_per_100k)


def _secret_file(path: Path, variable: str) -> SecretStr:
    """The first line of a secret file; a missing, unreadable or empty file names ``variable``."""
    path = path.expanduser()
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot read {path} ({exc.strerror})") from None
    if not lines or not lines[0]:
        raise ConfigError(f"{variable}: {path} is empty")
    return SecretStr(lines[0])


_TLS_PARAMS = ("secure", "ca_certs", "certfile", "keyfile")


class StoreURL:
    """A parsed ``SPYGLASS_CLICKHOUSE_URL``; its ``repr`` never shows the password.

    ``clickhouses://`` (or ``clickhouse://...?secure=true``) is the native protocol over TLS, default port
    9440, the server's certificate always verified (chain and host name) against ``ca_certs`` (a PEM file;
    the system's CAs when absent); ``certfile``/``keyfile`` give a client certificate for servers that ask.
    """

    __slots__ = ("scheme", "host", "port", "user", "password", "database", "path", "secure", "ca_certs",
                 "certfile", "keyfile")

    def __init__(
        self,
        scheme: str,
        *,
        host: str = "",
        port: int = 0,
        user: str = "default",
        password: SecretStr | None = None,
        database: str = "default",
        path: Path | None = None,
        secure: bool = False,
        ca_certs: Path | None = None,
        certfile: Path | None = None,
        keyfile: Path | None = None,
    ) -> None:
        self.scheme = scheme
        self.host = host
        self.port = port
        self.user = user
        self.password = password or SecretStr("")
        self.database = database
        self.path = path
        self.secure = secure
        self.ca_certs = ca_certs
        self.certfile = certfile
        self.keyfile = keyfile

    @classmethod
    def parse(cls, url: str) -> StoreURL:
        """Parse a store URL.

        Examples
        --------
        >>> StoreURL.parse("clickhouse://writer:s3cret@127.0.0.1:9000/spyglass")
        StoreURL(clickhouse://writer:***@127.0.0.1:9000/spyglass)
        >>> StoreURL.parse("clickhouses://writer@db.internal/spyglass?ca_certs=/etc/spyglass/ca.pem")
        StoreURL(clickhouses://writer@db.internal:9440/spyglass?ca_certs=/etc/spyglass/ca.pem)
        >>> StoreURL.parse("chdb:///var/lib/spyglass").path
        PosixPath('/var/lib/spyglass')
        """
        parts = urlsplit(url)
        if parts.scheme == "chdb":
            raw = unquote(parts.netloc + parts.path)
            if not raw:
                raise ConfigError("SPYGLASS_CLICKHOUSE_URL: chdb URL needs a directory, e.g. chdb:///var/lib/spyglass")
            return cls("chdb", path=Path(raw))
        if parts.scheme in ("clickhouse", "clickhouses"):
            database = parts.path.lstrip("/") or "default"
            if not database.replace("_", "").isalnum():
                raise ConfigError(f"SPYGLASS_CLICKHOUSE_URL: database name {database!r} must be [A-Za-z0-9_]")
            tls = _tls_params(parts.query, secure=parts.scheme == "clickhouses")
            try:
                port = parts.port or (9440 if tls["secure"] else 9000)
            except ValueError as exc:
                raise ConfigError(f"SPYGLASS_CLICKHOUSE_URL: bad port ({exc})") from None
            return cls(
                "clickhouse",
                host=parts.hostname or "127.0.0.1",
                port=port,
                user=unquote(parts.username or "default"),
                password=SecretStr(unquote(parts.password or "")),
                database=database,
                **tls,
            )
        raise ConfigError(
            f"SPYGLASS_CLICKHOUSE_URL: scheme {parts.scheme!r} is not supported; use clickhouse://, clickhouses:// "
            "or chdb://"
        )

    def with_database(self, database: str) -> StoreURL:
        """The same server, credentials and TLS, another database."""
        return StoreURL(self.scheme, host=self.host, port=self.port, user=self.user, password=self.password,
                        database=database, path=self.path, secure=self.secure, ca_certs=self.ca_certs,
                        certfile=self.certfile, keyfile=self.keyfile)

    def with_password(self, password: SecretStr) -> StoreURL:
        """The same URL with another password."""
        out = self.with_database(self.database)
        out.password = password
        return out

    def driver_options(self) -> dict[str, object]:
        """Keyword arguments of ``clickhouse_driver.Client`` for this server: address, user, password, TLS.

        With TLS the certificate is always verified (``verify=True``, host name checked).
        """
        options: dict[str, object] = {"host": self.host, "port": self.port, "user": self.user,
                                      "password": self.password.get_secret_value()}
        if self.secure:
            options.update(secure=True, verify=True, check_hostname=True)
            for name in ("ca_certs", "certfile", "keyfile"):
                value = getattr(self, name)
                if value is not None:
                    options[name] = str(value)
        return options

    def _query(self) -> str:
        from urllib.parse import quote

        params = [f"{name}={quote(str(getattr(self, name)), safe='/')}" for name in _TLS_PARAMS[1:]
                  if getattr(self, name) is not None]
        return "?" + "&".join(params) if params else ""

    def secret_url(self) -> str:
        """The URL with its password: for a child process's environment, never for logs or arguments."""
        if self.scheme == "chdb":
            return f"chdb://{self.path}"
        from urllib.parse import quote

        pw = self.password.get_secret_value()
        auth = quote(self.user, safe="") + (":" + quote(pw, safe="") if pw else "")
        scheme = "clickhouses" if self.secure else "clickhouse"
        return f"{scheme}://{auth}@{self.host}:{self.port}/{self.database}{self._query()}"

    def __repr__(self) -> str:
        if self.scheme == "chdb":
            return f"StoreURL(chdb://{self.path})"
        pw = ":***" if self.password.get_secret_value() else ""
        scheme = "clickhouses" if self.secure else "clickhouse"
        return f"StoreURL({scheme}://{self.user}{pw}@{self.host}:{self.port}/{self.database}{self._query()})"

    __str__ = __repr__


def _tls_params(query: str, *, secure: bool) -> dict:
    """The TLS parameters of a ``clickhouse(s)://`` URL's query; an unknown or bad one names itself."""
    from urllib.parse import parse_qsl

    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ConfigError(f"SPYGLASS_CLICKHOUSE_URL: cannot parse the query {query!r}") from None
    out: dict = {"secure": secure, "ca_certs": None, "certfile": None, "keyfile": None}
    seen: set[str] = set()
    for name, value in pairs:
        if name not in _TLS_PARAMS:
            raise ConfigError(f"SPYGLASS_CLICKHOUSE_URL: unknown parameter {name!r}; known: {', '.join(_TLS_PARAMS)}")
        if name in seen:
            raise ConfigError(f"SPYGLASS_CLICKHOUSE_URL: parameter {name!r} given twice")
        seen.add(name)
        if name == "secure":
            if value.lower() not in ("true", "1", "false", "0"):
                raise ConfigError(f"SPYGLASS_CLICKHOUSE_URL: secure={value!r} must be true or false")
            if secure and value.lower() in ("false", "0"):
                raise ConfigError("SPYGLASS_CLICKHOUSE_URL: clickhouses:// with secure=false; use clickhouse://")
            out["secure"] = value.lower() in ("true", "1")
        elif not value:
            raise ConfigError(f"SPYGLASS_CLICKHOUSE_URL: parameter {name!r} needs a file path")
        else:
            out[name] = Path(value)
    if not out["secure"] and any(out[n] is not None for n in _TLS_PARAMS[1:]):
        raise ConfigError("SPYGLASS_CLICKHOUSE_URL: ca_certs, certfile and keyfile need TLS (clickhouses:// or "
                          "secure=true)")
    if out["keyfile"] is not None and out["certfile"] is None:
        raise ConfigError("SPYGLASS_CLICKHOUSE_URL: keyfile needs certfile")
    return out
