"""``port_listening`` reads the kernel's socket tables: a real listener is seen, a closed port is not."""

from __future__ import annotations

import socket
import sys

import pytest

from streams.stack.base import LOOPBACK, free_port, port_listening, port_open

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/net/tcp")


def test_listener_seen_and_gone() -> None:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port = s.getsockname()[1]
        assert port_listening(port) is False  # bound, not listening
        s.listen()
        assert port_listening(port) is True
        assert port_open(LOOPBACK, port)
    assert port_listening(port) is False
    assert not port_open(LOOPBACK, port)


def test_ipv6_listener_seen() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    with s:
        s.listen()
        assert port_listening(s.getsockname()[1]) is True


def test_closed_port_not_connected_to() -> None:
    # With no listener, port_open answers False and leaves the port free for the server to bind.
    port = free_port()
    assert port_open(LOOPBACK, port) is False
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((LOOPBACK, port))  # still free to bind afterwards
        s.listen()
        assert port_open(LOOPBACK, port)
