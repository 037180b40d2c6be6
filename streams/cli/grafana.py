"""``spyglass grafana provision``: push the data source, dashboards and alert rules through Grafana's HTTP API.

For teams that do not use file provisioning (``grafana/provisioning``, mounted by docker-compose.yml). It
pushes exactly the committed, generated files: grafana/dashboards/*.json and
grafana/provisioning/alerting/*.yaml, and the data source of grafana/provisioning/datasources/clickhouse.yaml
(and the Prometheus one of prometheus.yaml when ``--prometheus-url`` says where Grafana reaches Prometheus).

Secrets never travel in process arguments (any local user can read them with ``ps``): the API token comes
from an environment variable (``SPYGLASS_GRAFANA_TOKEN``, or the one ``--token-env`` names) or an
interactive prompt; the ClickHouse read-only user's password from ``SPYGLASS_GRAFANA_CH_PASSWORD``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.errors import ConfigError, SpyglassError


def _grafana_dir() -> Path:
    """The committed ``grafana/`` files: the checkout's, or the copy a wheel carries in ``streams/_grafana``."""
    checkout = Path(__file__).resolve().parents[2] / "grafana"
    packaged = Path(__file__).resolve().parents[1] / "_grafana"
    return packaged if packaged.is_dir() else checkout


GRAFANA_DIR = _grafana_dir()
TOKEN_ENV = "SPYGLASS_GRAFANA_TOKEN"  # noqa: S105 - the name of the variable, not a token
_ENV_REF = re.compile(r"\$\{(\w+)\}")


class ProvisionError(SpyglassError):
    """Grafana refused a provisioning call; the message names the object and Grafana's answer."""


@dataclass
class Pushed:
    datasources: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    dashboards: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    contact_points: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)


def read_token(env_name: str, *, interactive: bool) -> str:
    """The API token from ``env_name`` or, on a terminal, a prompt that does not echo."""
    token = os.environ.get(env_name, "").strip()
    if token:
        return token
    if interactive:
        token = getpass.getpass(f"Grafana API token ({env_name} is not set): ").strip()
        if token:
            return token
    raise ConfigError(f"no Grafana API token: set {env_name} (a service-account token) or run on a terminal "
                      "to be prompted; tokens are never taken as command-line values")


def _env(value: Any, *, required: bool, defaults: dict[str, str] | None = None) -> Any:
    """Resolve ``${VAR}`` references as Grafana's file provisioning does (``defaults`` for unset ones)."""
    if isinstance(value, dict):
        return {k: _env(v, required=required, defaults=defaults) for k, v in value.items()}
    if isinstance(value, list):
        return [_env(v, required=required, defaults=defaults) for v in value]
    if not isinstance(value, str):
        return value
    fallback = defaults or {}

    def sub(m: re.Match[str]) -> str:
        if m.group(1) not in os.environ and m.group(1) not in fallback and required:
            raise ConfigError(f"{m.group(1)} is not set (referenced by the Grafana provisioning files)")
        return os.environ.get(m.group(1), fallback.get(m.group(1), ""))

    return _ENV_REF.sub(sub, value)


def load_datasources(root: Path, *, host: str | None, port: int | None, ca_file: Path | None = None,
                     prometheus_url: str | None = None) -> list[dict]:
    """The data sources of the provisioning files, with ``${VAR}`` resolved, for Grafana's API.

    ``host``, ``port`` and ``ca_file`` apply to ClickHouse. The Prometheus data source's file names the compose
    stack's Prometheus, so it is pushed only with ``prometheus_url`` (the address Grafana reaches it at).

    ``ca_file``: Grafana reaches ClickHouse over TLS (native protocol, port 9440 unless ``port`` says otherwise)
    and verifies the server against this PEM CA certificate.
    """
    import yaml

    ca_pem = None
    if ca_file is not None:
        try:
            ca_pem = ca_file.expanduser().read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--clickhouse-ca-file: cannot read {ca_file} ({exc})") from None
        if "-----BEGIN CERTIFICATE-----" not in ca_pem:
            raise ConfigError(f"--clickhouse-ca-file: {ca_file} holds no PEM certificate")
    out = []
    for f in sorted((root / "provisioning" / "datasources").glob("*.yaml")):
        for ds in yaml.safe_load(f.read_text(encoding="utf-8"))["datasources"]:
            ds = _env(dict(ds), required=True)
            ds.pop("editable", None)
            if ds.get("type") == "prometheus":
                if prometheus_url:
                    out.append({**ds, "url": prometheus_url})
                continue
            if host:
                ds["jsonData"]["host"] = host
            if port:
                ds["jsonData"]["port"] = port
            if ca_pem is not None and ds.get("type") == "grafana-clickhouse-datasource":
                ds["jsonData"].update(secure=True, tlsSkipVerify=False, tlsAuthWithCACert=True, port=port or 9440)
                ds.setdefault("secureJsonData", {})["tlsCACert"] = ca_pem
            out.append(ds)
    return out


def load_dashboards(root: Path) -> list[dict]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted((root / "dashboards").glob("*.json"))]


def load_alerting(root: Path) -> dict:
    import yaml

    doc: dict[str, list] = {"groups": [], "contactPoints": [], "templates": []}
    for f in sorted((root / "provisioning" / "alerting").glob("*.yaml")):
        d = yaml.safe_load(f.read_text(encoding="utf-8"))
        for k in doc:
            doc[k].extend(d.get(k, []))
    return doc


def _status(exc: Exception) -> int | None:
    return getattr(getattr(exc, "response", None), "status_code", None) or getattr(exc, "status_code", None)


def provision(api: Any, root: Path = GRAFANA_DIR, *, folder: str = "Spyglass", folder_uid: str = "spyglass",
              alerting: bool = True, ch_host: str | None = None, ch_port: int | None = None,
              ch_ca_file: Path | None = None, grafana_url: str = "", prometheus_url: str | None = None) -> Pushed:
    """Create or update everything; idempotent (uids are fixed, dashboards overwrite).

    ``grafana_url``: the base of the rules' investigation links where ``SPYGLASS_GRAFANA_URL`` is not set.
    """
    from grafana_client.client import GrafanaClientError

    pushed = Pushed()

    def call(what: str, fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except GrafanaClientError as exc:
            raise ProvisionError(f"{what}: {exc}") from None

    def exists(what: str, get: Any, uid: str) -> bool:
        """Whether Grafana has ``uid`` (a 404 says no; any other error stops the provisioning)."""
        try:
            get(uid)
        except GrafanaClientError as exc:
            if _status(exc) != 404:
                raise ProvisionError(f"{what}: {exc}") from None
            return False
        return True

    def upsert(what: str, found: bool, update: Any, create: Any, uid: str, body: dict) -> None:
        """Update ``uid`` with ``body`` where Grafana has it (``found``), create it otherwise."""
        if found:
            call(what, update, uid, body)
        else:
            call(what, create, body)

    for ds in load_datasources(root, host=ch_host, port=ch_port, ca_file=ch_ca_file, prometheus_url=prometheus_url):
        what = f"data source {ds['uid']}"
        upsert(what, exists(what, api.datasource.get_datasource_by_uid, ds["uid"]),
               api.datasource.update_datasource_by_uid, api.datasource.create_datasource, ds["uid"], ds)
        pushed.datasources.append(ds["uid"])

    if not exists(f"folder {folder_uid}", api.folder.get_folder, folder_uid):
        call(f"folder {folder_uid}", api.folder.create_folder, folder, uid=folder_uid)
    pushed.folders.append(folder_uid)

    for d in load_dashboards(root):
        d = {k: v for k, v in d.items() if k != "id"}
        call(f"dashboard {d['uid']}", api.dashboard.update_dashboard,
             {"dashboard": d, "folderUid": folder_uid, "overwrite": True,
              "message": "spyglass grafana provision (generated by grafana/dashboards_src)"})
        pushed.dashboards.append(d["uid"])

    if not alerting:
        return pushed
    doc = load_alerting(root)
    ap = api.alertingprovisioning
    for t in doc["templates"]:
        call(f"template {t['name']}", ap.create_or_update_template, t["name"],
             {"name": t["name"], "template": t["template"]})
        pushed.templates.append(t["name"])
    existing = {c.get("uid") for c in (call("contact points", ap.get_contactpoints) or [])}
    for cp in doc["contactPoints"]:
        for r in cp["receivers"]:
            body = {"uid": r["uid"], "name": cp["name"], "type": r["type"],
                    "settings": _env(r["settings"], required=True),
                    "disableResolveMessage": r.get("disableResolveMessage", False)}
            upsert(f"contact point {r['uid']}", r["uid"] in existing, ap.update_contactpoint,
                   ap.create_contactpoint, r["uid"], body)
            pushed.contact_points.append(r["uid"])
    for g in doc["groups"]:
        for rule in g["rules"]:
            body = {**_env(rule, required=False, defaults={"SPYGLASS_GRAFANA_URL": grafana_url.rstrip("/")}),
                    "folderUID": folder_uid, "ruleGroup": g["name"], "orgID": g.get("orgId", 1)}
            what = f"alert rule {rule['uid']}"
            upsert(what, exists(what, ap.get_alertrule, rule["uid"]), ap.update_alertrule, ap.create_alertrule,
                   rule["uid"], body)
            pushed.rules.append(rule["uid"])
    return pushed


class _RefuseSecret(argparse.Action):
    """``--token VALUE`` is refused (and the value never echoed): a secret in argv is visible to every local user."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option_string: Any = None):
        parser.error(f"--token takes no value on the command line (process arguments are readable by other "
                     f"users): export {TOKEN_ENV}, or name another variable with --token-env NAME")


def _provision(args: argparse.Namespace, settings: Any) -> int:
    from grafana_client import GrafanaApi

    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", args.token_env):
        raise ConfigError("--token-env takes the NAME of an environment variable, not a token")
    token = read_token(args.token_env, interactive=sys.stdin.isatty())
    api = GrafanaApi.from_url(args.url, credential=token, timeout=args.timeout)
    pushed = provision(api, Path(args.dir), folder=args.folder, folder_uid=args.folder_uid,
                       alerting=not args.no_alerting, ch_host=args.clickhouse_host, ch_port=args.clickhouse_port,
                       ch_ca_file=Path(args.clickhouse_ca_file) if args.clickhouse_ca_file else None,
                       grafana_url=args.url, prometheus_url=args.prometheus_url)
    print(f"provisioned {args.url}: data sources {', '.join(pushed.datasources)}; folder {args.folder_uid}; "
          f"{len(pushed.dashboards)} dashboards; {len(pushed.rules)} alert rules, "
          f"{len(pushed.contact_points)} contact points, {len(pushed.templates)} templates")
    return 0


def register(sub: Any) -> None:
    g = sub.add_parser("grafana", help="Grafana: push the data source, dashboards and alert rules over the HTTP API",
                       description="Work with the Grafana side of Spyglass (dashboards as code live in grafana/).")
    gs = g.add_subparsers(dest="grafana_command", required=True, metavar="ACTION")
    p = gs.add_parser(
        "provision",
        help="create or update the ClickHouse data source, the six dashboards and the on-call alert rules",
        description="Push grafana/provisioning/datasources, grafana/dashboards/*.json and "
        "grafana/provisioning/alerting through Grafana's HTTP API (for teams that do not use file provisioning). "
        "Idempotent: fixed uids, dashboards overwritten.",
        epilog=f"Secrets are never command-line values (other local users can read process arguments): the API "
        f"token (a service-account token with the Editor role, or Admin for alerting) is read from ${TOKEN_ENV}, or "
        f"from the variable --token-env names, or prompted for on a terminal. The data source's ClickHouse user "
        f"and password come from SPYGLASS_GRAFANA_CH_USER and SPYGLASS_GRAFANA_CH_PASSWORD (use the read-only "
        f"Grafana user), the contact point's Alertmanager from SPYGLASS_ALERTMANAGER_URL.",
    )
    p.add_argument("--url", required=True, help="Grafana base URL, e.g. http://localhost:3000")
    p.add_argument("--token-env", default=TOKEN_ENV, metavar="NAME",
                   help=f"environment variable holding the API token (default {TOKEN_ENV}); "
                   "the token itself is never an argument")
    p.add_argument("--token", nargs="?", action=_RefuseSecret, help=argparse.SUPPRESS)
    p.add_argument("--dir", default=str(GRAFANA_DIR),
                   help="the grafana/ directory to push (default: the checkout's, or the copy installed with Spyglass)")
    p.add_argument("--folder", default="Spyglass", help="dashboard and alert-rule folder title (default Spyglass)")
    p.add_argument("--folder-uid", default="spyglass", help="folder uid (default spyglass)")
    p.add_argument("--clickhouse-host", help="ClickHouse host as Grafana reaches it (default: the provisioning "
                   "file's)")
    p.add_argument("--clickhouse-port", type=int, help="ClickHouse native port as Grafana reaches it")
    p.add_argument("--clickhouse-ca-file", metavar="PEM",
                   help="Grafana connects to ClickHouse over TLS (port 9440 unless --clickhouse-port) and verifies "
                   "it against this CA certificate (docs/clickhouse-tls.md)")
    p.add_argument("--prometheus-url", metavar="URL",
                   help="also push the Prometheus data source (the pipeline-health board's live panels), at this "
                   "URL as Grafana reaches it, e.g. http://prometheus:9090")
    p.add_argument("--no-alerting", action="store_true", help="push the data source and dashboards only")
    p.add_argument("--timeout", type=float, default=10.0, help="HTTP timeout in seconds (default 10)")
    p.set_defaults(func=_provision)
