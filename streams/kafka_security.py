"""How every Kafka client of Spyglass connects: the ``SPYGLASS_KAFKA_SECURITY_*``/``SASL_*``/``SSL_*`` settings
turned into each client library's configuration.

Three libraries talk to the broker: Faust (the worker's app, on aiokafka), aiokafka itself (benchmarks)
and kafka-python (simulator, ingest, admin and stack tooling, the worker's alert scan). Every construction
site calls :func:`kafka_client_config` and passes what it returns, so a broker that requires TLS or SASL
is reached the same way by all of them and no site can be forgotten by accident. The TLS side is one
:class:`ssl.SSLContext` built from the settings and given to every library (all three accept one), so
verification (CA, hostname, client certificate) is the same everywhere.

The password is read from the settings (environment or ``SPYGLASS_KAFKA_SASL_PASSWORD_FILE``) when the
configuration is built and travels only inside it: it is never logged and never a process argument.
"""

from __future__ import annotations

import ssl
from typing import Any, Literal

from streams.settings import Settings

KafkaClientLibrary = Literal["kafka-python", "aiokafka", "faust"]


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext:
    """A client TLS context: the CA file (or the system's CAs), hostname check, the client certificate if any."""
    cafile = str(settings.kafka_ssl_ca_file.expanduser()) if settings.kafka_ssl_ca_file else None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = settings.kafka_ssl_check_hostname  # the chain is verified either way
    if settings.kafka_ssl_cert_file is not None:
        key_password = settings.kafka_ssl_key_password
        context.load_cert_chain(
            str(settings.kafka_ssl_cert_file.expanduser()),
            str(settings.kafka_ssl_key_file.expanduser()) if settings.kafka_ssl_key_file else None,
            key_password.get_secret_value() if key_password else None,
        )
    return context


def kafka_client_config(settings: Settings, library: KafkaClientLibrary = "kafka-python") -> dict[str, Any]:
    """Keyword arguments that make a client of ``library`` connect as the settings say.

    ``kafka-python`` and ``aiokafka``: ``security_protocol`` and, as needed, ``ssl_context`` and ``sasl_*``
    (their producers, consumers and admin clients take the same names). ``faust``: the app's
    ``broker_credentials`` (nothing for PLAINTEXT). Bootstrap servers are not included: each site passes
    its own.

    Examples
    --------
    >>> kafka_client_config(Settings(kafka_security_protocol="PLAINTEXT"))
    {'security_protocol': 'PLAINTEXT'}
    >>> kafka_client_config(Settings(kafka_security_protocol="PLAINTEXT"), "faust")
    {}
    """
    protocol = settings.kafka_security_protocol
    uses_tls = protocol in ("SSL", "SASL_SSL")
    context = kafka_ssl_context(settings) if uses_tls else None
    password = settings.kafka_sasl_secret()
    if library == "faust":
        import faust

        if protocol.startswith("SASL_"):
            return {"broker_credentials": faust.SASLCredentials(
                username=settings.kafka_sasl_username, password=password.get_secret_value() if password else None,
                ssl_context=context, mechanism=settings.kafka_sasl_mechanism)}
        return {"broker_credentials": faust.SSLCredentials(context)} if context is not None else {}
    config: dict[str, Any] = {"security_protocol": protocol}
    if context is not None:
        config["ssl_context"] = context
    if protocol.startswith("SASL_"):
        config.update(sasl_mechanism=settings.kafka_sasl_mechanism, sasl_plain_username=settings.kafka_sasl_username,
                      sasl_plain_password=password.get_secret_value() if password else None)
    return config
