"""Least-privilege ClickHouse users for servers without SQL access control (ClickHouse < 20.4, e.g. 18.16).

Servers with RBAC get roles from a migration (``schemas/clickhouse/migrations/009_roles.sql``) and
users holding them from :func:`rbac_user_statements` (``spyglass db users``); Grafana users confined to
one tenant by row policies from :func:`tenant_grafana_statements` (migration 013). 18.16 has no
``CREATE USER``/``GRANT``, so its users live in a ``users.d`` XML file that the local stack writes
(``streams/stack/clickhouse.py``) and that operators can copy for their own servers. Only sha256
hashes of the passwords go into the file.

What 18.16 can enforce, and what it cannot (checked on the real server by the integration tests):

- ``spyglass_writer`` (the worker): only its database (``allow_databases``; ``system`` is always
  readable), no DDL at all (``allow_ddl = 0``, which it cannot switch back on). 18.16 has no
  table-level grants or row policies, so inside its database it can read every table, not only
  ``engine_checkpoints``; on RBAC servers the role grants exactly what it needs. Nor can 18.16 confine
  a Grafana user to one tenant (docs/dashboard-security.md).
- ``spyglass_grafana`` (dashboards): ``readonly = 1`` (no INSERT, ALTER, DROP, CREATE or SET), only
  its database, ``max_execution_time`` and ``max_memory_usage`` per query.
"""

from __future__ import annotations

import hashlib
import re
from xml.sax.saxutils import escape

WRITER = "spyglass_writer"
GRAFANA = "spyglass_grafana"
TENANT_GRAFANA = "spyglass_tenant_grafana"  # a Grafana user of one tenant (migration 013)
# Tables with a tenant column, each with row policies on servers that have them (migration 013)
TENANT_TABLES = ("events", "alerts", "alert_status", "events_minute", "entity_risk_minute")
# Users on servers with SQL access control, each holding the role of the same purpose (migration 009).
RBAC_USERS = {"worker": WRITER, "grafana": GRAFANA}
GRAFANA_MAX_EXECUTION_TIME_S = 60
GRAFANA_MAX_MEMORY_USAGE = 2_000_000_000
WRITER_MAX_MEMORY_USAGE = 4_000_000_000

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def password_sha256(password: str) -> str:
    """The hex sha256 ClickHouse's ``<password_sha256_hex>`` expects."""
    return hashlib.sha256(password.encode("utf-8")).hexdigest()


def users_xml(database: str, passwords: dict[str, str], *, networks: tuple[str, ...] = ("127.0.0.1", "::1"),
              writer: str = WRITER, grafana: str = GRAFANA) -> str:
    """A ``users.d`` file defining the writer and the read-only Grafana user of ``database``.

    ``passwords`` maps ``writer``/``grafana`` to the plain passwords; only their hashes are written.
    """
    for name in (database, writer, grafana):
        if not _NAME.match(name):
            raise ValueError(f"not a valid ClickHouse name: {name!r}")
    nets = "".join(f"<ip>{escape(n)}</ip>" for n in networks)

    def user(name: str) -> str:
        return (f"        <{name}>\n"
                f"            <password_sha256_hex>{password_sha256(passwords[name])}</password_sha256_hex>\n"
                f"            <networks>{nets}</networks>\n"
                f"            <profile>{name}</profile>\n"
                f"            <quota>default</quota>\n"
                f"            <allow_databases><database>{database}</database></allow_databases>\n"
                f"        </{name}>\n")

    return f"""<?xml version="1.0"?>
<!-- Written by spyglass stack (schemas/users.py): least-privilege users of database {database}.
     Only sha256 hashes of the passwords are here; the passwords come from the environment or
     the stack's credentials file (mode 0600). -->
<yandex>
    <profiles>
        <{writer}>
            <allow_ddl>0</allow_ddl>
            <max_memory_usage>{WRITER_MAX_MEMORY_USAGE}</max_memory_usage>
        </{writer}>
        <{grafana}>
            <readonly>1</readonly>
            <max_execution_time>{GRAFANA_MAX_EXECUTION_TIME_S}</max_execution_time>
            <max_memory_usage>{GRAFANA_MAX_MEMORY_USAGE}</max_memory_usage>
        </{grafana}>
    </profiles>
    <users>
{user(writer)}{user(grafana)}    </users>
</yandex>
"""


def rbac_user_statements(database: str, passwords: dict[str, str]) -> list[str]:
    """Create (or update) the :data:`RBAC_USERS` on a server with SQL access control, each with its role.

    ``passwords`` maps ``writer``/``grafana`` (the roles' purposes, as :func:`users_xml` takes them) to
    the plain passwords; only their sha256 hashes appear in the statements. Running them again sets
    the passwords again, so a changed password takes effect.
    """
    if not _NAME.match(database):
        raise ValueError(f"not a valid ClickHouse name: {database!r}")
    out = []
    for user, role in RBAC_USERS.items():
        out += _user_statements(database, user, role, passwords[role])
    return out


def _user_statements(database: str, user: str, role: str, password: str) -> list[str]:
    """Create or update ``user`` with ``password`` (its sha256 only) and ``role`` as its default role."""
    auth = f"IDENTIFIED WITH sha256_hash BY '{password_sha256(password)}' DEFAULT DATABASE {database}"
    return [f"CREATE USER IF NOT EXISTS {user} {auth}", f"ALTER USER {user} {auth}",
            f"GRANT {role} TO {user}", f"ALTER USER {user} DEFAULT ROLE {role}"]


def sql_string(value: str) -> str:
    """``value`` as a ClickHouse string literal: quoted, with ``\\`` and ``'`` escaped (both, on every release).

    Examples
    --------
    >>> print(sql_string("it's \\ here"))
    'it\\'s \\\\ here'
    """
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def tenant_grafana_statements(database: str, tenant: str, user: str, password: str) -> list[str]:
    """Create (or update) ``user``, a Grafana user that sees only ``tenant``'s rows, on a server with row policies.

    The user holds :data:`TENANT_GRAFANA` (the Grafana grants and limits) and one row policy per table of
    :data:`TENANT_TABLES`, ``tenant = <tenant>``; migration 013 keeps every other user seeing all rows. Point a
    tenant's Grafana data source (or organisation) at this user: the dashboards' tenant variable then only
    narrows what the policy already allows. Only the password's sha256 appears in the statements.
    """
    for name in (database, user):
        if not _NAME.match(name):
            raise ValueError(f"not a valid ClickHouse name: {name!r}")
    if not tenant:
        raise ValueError("a tenant user needs a tenant")
    out = _user_statements(database, user, TENANT_GRAFANA, password)
    out += [f"CREATE ROW POLICY OR REPLACE spyglass_tenant_{user} ON {database}.{table} FOR SELECT "
            f"USING tenant = {sql_string(tenant)} TO {user}" for table in TENANT_TABLES]
    return out
