"""ClickHouse over TLS on the real server: ``spyglass stack up --secure``'s ClickHouse (Debian's 18.16).

A ClickHouse server of its own is started for this module through the same tooling
(``Stack(..., secure_clickhouse=True)``) on free ports: its native port serves TLS only, with a certificate
signed by a CA made for it, and its ``default`` user has a password kept in a 0600 file. Clients are the
project's own (:func:`streams.sinks.clickhouse.open_store` on a ``clickhouses://`` URL).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas.errors import StackError
from streams.settings import Settings
from streams.sinks.base import StoreError
from streams.sinks.clickhouse import open_store
from streams.stack import Stack


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory: pytest.TempPathFactory, make_stack_settings) -> Iterator[Stack]:
    stack = Stack(make_stack_settings(tmp_path_factory.mktemp("tls-stack")), secure_clickhouse=True)
    try:
        stack.up(("clickhouse",))
        yield stack
    finally:
        stack.down()


def _settings(stack: Stack, **env: str) -> Settings:
    """Settings as a process started with the stack's printed variables (and ``env``) has them."""
    values = {k.removeprefix("SPYGLASS_").lower(): v for k, v in {**stack.clickhouse.client_env(), **env}.items()}
    return Settings(**values)


def _version(settings: Settings) -> str:
    store = open_store(settings.store())
    try:
        return store.version()
    finally:
        store.close()


def test_a_client_with_the_stacks_ca_and_password_file_gets_in_over_tls(tls_stack: Stack):
    env = tls_stack.clickhouse.client_env()
    assert env["SPYGLASS_CLICKHOUSE_URL"].startswith("clickhouses://default@127.0.0.1:")
    settings = _settings(tls_stack)
    assert settings.store().secure
    assert _version(settings)  # answers over TLS
    store = open_store(settings.store().with_database("tls_check"))
    try:
        store.execute("CREATE DATABASE IF NOT EXISTS tls_check")
        store.execute("CREATE TABLE IF NOT EXISTS tls_check.t (x UInt32) ENGINE = Memory")
        assert store.insert("t", {"x": [1, 2, 3]}) == 3  # the worker's columnar insert path
        assert store.query("SELECT sum(x) FROM tls_check.t") == [(6,)]
        store.execute("DROP DATABASE tls_check")
    finally:
        store.close()
    assert "TLS only" in {st.name: st.detail for st in tls_stack.status(("clickhouse",))}["clickhouse"]


def test_a_client_trusting_another_ca_is_refused(tls_stack: Stack, tmp_path: Path):
    other_ca = tmp_path / "other-ca.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tmp_path / "k"),  # noqa: S607
                    "-out", str(other_ca), "-days", "1", "-subj", "/CN=not the stack's CA"],
                   check=True, capture_output=True)
    url = tls_stack.clickhouse.client_env()["SPYGLASS_CLICKHOUSE_URL"].split("?")[0] + f"?ca_certs={other_ca}"
    with pytest.raises(StoreError, match="CERTIFICATE_VERIFY_FAILED"):
        _version(_settings(tls_stack, SPYGLASS_CLICKHOUSE_URL=url))


def test_plaintext_to_the_tls_port_fails(tls_stack: Stack):
    plain = f"clickhouse://default@127.0.0.1:{tls_stack.settings.clickhouse_tcp_port}/default"
    with pytest.raises(StoreError, match=r"Code: 210|Connection reset|Unexpected EOF|timed out"):
        _version(_settings(tls_stack, SPYGLASS_CLICKHOUSE_URL=plain))


def test_without_the_password_the_server_refuses(tls_stack: Stack):
    env = tls_stack.clickhouse.client_env()
    settings = Settings(clickhouse_url=env["SPYGLASS_CLICKHOUSE_URL"])  # TLS right, no password file
    with pytest.raises(StoreError, match="Code: 19[2-4]|[Pp]assword"):
        _version(settings)


def test_the_password_is_in_a_private_file_and_on_no_command_line(tls_stack: Stack):
    ch = tls_stack.clickhouse
    password = ch.password_file.read_text().strip()
    assert len(password) >= 32
    assert ch.password_file.stat().st_mode & 0o777 == 0o600
    assert ch.secure_dir.stat().st_mode & 0o777 == 0o700
    assert (ch.secure_dir / "server.key").stat().st_mode & 0o777 == 0o600
    assert not (ch.secure_dir / "ca.key").exists()  # nothing can sign another certificate the clients trust
    shown = ch.users_file.read_text() + ch.config_file.read_text() + tls_stack.state_file.read_text()
    shown += str(ch.client_env()) + repr(_settings(tls_stack)) + repr(_settings(tls_stack).store())
    assert password not in shown
    pid = ch.pid()
    assert pid is not None
    assert password not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")


def test_a_running_server_is_never_reused_in_the_other_mode(make_stack_settings, tmp_path: Path):
    """`stack up --secure` over a running plain server does not pass it off as TLS; `--fresh` switches it."""
    settings = make_stack_settings(tmp_path / "stack")
    try:
        Stack(settings, secure_clickhouse=False).up(("clickhouse",))
        secure = Stack(settings, secure_clickhouse=True)
        (st,) = secure.status(("clickhouse",))
        assert not st.running and "runs in plain mode" in st.detail
        with pytest.raises(StackError, match="already in use"):
            secure.up(("clickhouse",))
        secure.up(("clickhouse",), fresh=True)
        (st,) = secure.status(("clickhouse",))
        assert st.running and "TLS only" in st.detail
        assert _version(_settings(secure))
    finally:
        Stack(settings).down(("clickhouse",))
