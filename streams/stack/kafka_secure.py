"""The local broker's secure mode (``spyglass stack up --secure``): TLS material, SCRAM users and ACLs.

What it sets up, all under ``SPYGLASS_STACK_DIR/kafka/secure`` (a 0700 directory, secrets 0600):

- a CA made for this stack (``ca.crt``; its key is deleted once the broker's certificate is signed) and the
  broker's certificate for 127.0.0.1 and localhost in a PKCS#12 keystore, made with the ``openssl`` CLI;
- three SCRAM-SHA-512 users, created by the broker's own ``kafka-storage format --add-scram`` (read from a
  Java argument file, so no password is ever a process argument), their passwords in ``<user>.password``:
  ``spyglass-admin`` (super user: the tooling), ``spyglass-worker`` and ``spyglass-emitter``;
- the StandardAuthorizer, no access without an ACL, and the pipeline's ACLs (:func:`grant_pipeline_acls`).

The client listener is SASL_SSL only. The controller listener, on loopback, is TLS with client certificates
required: the broker authenticates to its controller with its own certificate, so the controller port lets
no one else in either.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from schemas.errors import StackError
from streams.kafka_security import kafka_client_config
from streams.settings import Settings
from streams.stack.tls import CA_CERT, issue_server_certificate, openssl, private_dir, write_secret

if TYPE_CHECKING:
    from kafka.admin import ACL

ADMIN_USER = "spyglass-admin"
WORKER_USER = "spyglass-worker"
EMITTER_USER = "spyglass-emitter"
USERS = (ADMIN_USER, WORKER_USER, EMITTER_USER)
MECHANISM = "SCRAM-SHA-512"
BROKER_CN = "spyglass-broker"  # the broker's certificate; its principal on the controller listener
KEYSTORE = "broker.p12"
KEYSTORE_PASSWORD = "keystore.password"  # noqa: S105 - a file name, not a password

class SecureMaterial:
    """The secure stack's files: CA, broker keystore, user passwords."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    @property
    def ca_file(self) -> Path:
        return self.dir / CA_CERT

    def password_file(self, user: str) -> Path:
        return self.dir / f"{user}.password"

    def exists(self) -> bool:
        """Whether the material is complete (certificates made and every user's password written)."""
        return (self.ca_file.is_file() and (self.dir / KEYSTORE).is_file()
                and all(self.password_file(u).is_file() for u in USERS))

    def create(self) -> None:
        """Make the CA, the broker's keystore and a random password per user (idempotent: kept if complete)."""
        if self.exists():
            return
        d = private_dir(self.dir)
        write_secret(d / KEYSTORE_PASSWORD, secrets.token_hex(24) + "\n")
        for user in USERS:
            write_secret(self.password_file(user), secrets.token_hex(24) + "\n")
        try:
            issue_server_certificate(d, ca_name="Spyglass local stack CA", server_cn=BROKER_CN, stem="broker")
            openssl("pkcs12", "-export", "-in", "broker.crt", "-inkey", "broker.key", "-certfile", CA_CERT,
                    "-name", "broker", "-out", KEYSTORE, "-passout", f"file:{KEYSTORE_PASSWORD}", cwd=d)
        finally:  # only the CA certificate, the keystore and the passwords stay
            for name in ("broker.key", "broker.crt"):
                (d / name).unlink(missing_ok=True)
        for path in d.iterdir():
            path.chmod(0o644 if path.name == CA_CERT else 0o600)

    def password(self, user: str) -> str:
        return self.password_file(user).read_text().strip()

    def server_properties(self) -> dict[str, str]:
        """The broker properties of secure mode (they hold secrets: the file is written 0600)."""
        admin_jaas = (f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{ADMIN_USER}" '
                      f'password="{self.password(ADMIN_USER)}";')
        keystore_password = (self.dir / KEYSTORE_PASSWORD).read_text().strip()
        return {
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SSL",
            "inter.broker.listener.name": "SASL_SSL",
            "sasl.enabled.mechanisms": MECHANISM,
            "sasl.mechanism.inter.broker.protocol": MECHANISM,
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": admin_jaas,
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(self.dir / KEYSTORE),
            "ssl.keystore.password": keystore_password,
            "ssl.key.password": keystore_password,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca_file),
            "listener.name.controller.ssl.client.auth": "required",
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found": "false",
            "super.users": f"User:{ADMIN_USER};User:CN={BROKER_CN}",
        }

    def scram_format_args(self) -> list[str]:
        """``kafka-storage format`` arguments creating the users (secrets: put them in an argument file)."""
        out: list[str] = []
        for user in USERS:
            out += ["--add-scram", f"{MECHANISM}=[name={user},password={self.password(user)}]"]
        return out

    def client_settings(self, settings: Settings, user: str) -> Settings:
        """``settings`` connecting to this stack's broker as ``user`` (SASL_SSL, SCRAM, the stack's CA)."""
        return settings.model_copy(update={
            "kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": MECHANISM,
            "kafka_sasl_username": user, "kafka_sasl_password": None,
            "kafka_sasl_password_file": self.password_file(user), "kafka_ssl_ca_file": self.ca_file,
            "kafka_ssl_cert_file": None, "kafka_ssl_key_file": None, "kafka_ssl_key_password": None,
            "kafka_ssl_check_hostname": True,
        })

    def client_env(self, user: str) -> dict[str, str]:
        """The ``SPYGLASS_KAFKA_*`` variables that make a Spyglass process connect as ``user`` (no secret)."""
        return {
            "SPYGLASS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "SPYGLASS_KAFKA_SASL_MECHANISM": MECHANISM,
            "SPYGLASS_KAFKA_SASL_USERNAME": user,
            "SPYGLASS_KAFKA_SASL_PASSWORD_FILE": str(self.password_file(user)),
            "SPYGLASS_KAFKA_SSL_CA_FILE": str(self.ca_file),
        }


def pipeline_acls(settings: Settings, *, worker: str = WORKER_USER, emitter: str = EMITTER_USER) -> list[ACL]:
    """The ACLs of the pipeline on the topics and group ``settings`` name.

    The worker reads the event topics, the OTLP spans topic and the risk evidence (as its group) and writes
    alerts, dead letters and risk evidence; it also reads the alerts topic (a new owner of a partition looks up
    what was published) and the analysts' feedback (written by the tooling's admin: ``spyglass alerts
    set-status``). The emitters (an OpenTelemetry Collector among them) only write the event topics and the
    OTLP spans topic. Nobody else may read or write anything (no ACL, no access; the tooling's admin is a
    super user). WRITE and READ imply DESCRIBE.
    """
    from kafka.admin import ACL, ACLOperation, ACLPermissionType, ResourcePattern, ResourceType

    def allow(user: str, op: ACLOperation, kind: ResourceType, name: str) -> ACL:
        return ACL(f"User:{user}", "*", op, ACLPermissionType.ALLOW, ResourcePattern(kind, name))

    read, write, topic = ACLOperation.READ, ACLOperation.WRITE, ResourceType.TOPIC
    events = list(settings.topics().values())
    spans = [settings.topic_otlp_spans] if settings.topic_otlp_spans else []  # an OpenTelemetry Collector's
    acls = [allow(worker, read, topic, t)
            for t in [*events, settings.topic_risk_evidence, settings.topic_alerts, settings.topic_feedback, *spans]]
    acls += [allow(worker, write, topic, t)
             for t in (settings.topic_alerts, settings.topic_dead_letter, settings.topic_risk_evidence)]
    acls.append(allow(worker, read, ResourceType.GROUP, settings.worker_group))
    acls += [allow(emitter, write, topic, t) for t in [*events, *spans]]
    return acls


def grant_pipeline_acls(admin_settings: Settings, *, bootstrap: str | None = None, worker: str = WORKER_USER,
                        emitter: str = EMITTER_USER) -> int:
    """Create :func:`pipeline_acls` for the topics of ``admin_settings`` (which connect as a super user);
    return how many. Creating an ACL that exists changes nothing."""
    from streams.stack.kafka import admin_client

    server = bootstrap or admin_settings.kafka_bootstrap
    acls = pipeline_acls(admin_settings, worker=worker, emitter=emitter)
    admin = admin_client(server, request_timeout_ms=15000, **kafka_client_config(admin_settings))
    try:
        result = admin.create_acls(acls)
    finally:
        admin.close()
    if result.get("failed"):
        raise StackError(f"creating Kafka ACLs on {server} failed: {result['failed'][:3]}")
    return len(acls)
