"""Certificates for the local stack's secure mode, made with the ``openssl`` CLI.

Each secure service (the Kafka broker, the ClickHouse server) gets a CA made for it alone and a server
certificate for 127.0.0.1 and localhost signed by it; the CA's private key is deleted as soon as the server's
certificate is signed, so nothing on the machine can sign another certificate that the clients would trust.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from schemas.errors import StackError

CA_CERT = "ca.crt"

SERVER_EXTENSIONS = """basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=IP:127.0.0.1,DNS:localhost
"""


def private_dir(directory: Path) -> Path:
    """``directory`` emptied and made again, mode 0700 (only its owner may list or read what goes in)."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, mode=0o700)
    directory.chmod(0o700)  # whatever the umask
    return directory


def write_secret(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600 from the start (never readable by others, even briefly)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def openssl(*args: str, cwd: Path) -> None:
    """Run ``openssl args...`` in ``cwd``; a failure is a :class:`StackError` with openssl's message."""
    binary = shutil.which("openssl")
    if binary is None:
        raise StackError("`openssl` is not on PATH; `spyglass stack up --secure` needs it to make the stack's "
                         "certificates (e.g. `apt-get install openssl`)")
    done = subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise StackError(f"`openssl {args[0]}` failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")


def issue_server_certificate(directory: Path, *, ca_name: str, server_cn: str, stem: str) -> tuple[Path, Path]:
    """Make a CA (``ca.crt``) and a server certificate for 127.0.0.1/localhost signed by it in ``directory``.

    Returns the PEM certificate and key of the server (``<stem>.crt``, ``<stem>.key``, mode 0600); the CA's
    key and the signing leftovers are deleted.
    """
    d = directory
    (d / f"{stem}.ext").write_text(SERVER_EXTENSIONS)
    try:
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", CA_CERT,
                "-days", "3650", "-subj", f"/CN={ca_name}",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{stem}.key", "-out", f"{stem}.csr",
                "-subj", f"/CN={server_cn}", cwd=d)
        openssl("x509", "-req", "-in", f"{stem}.csr", "-CA", CA_CERT, "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{stem}.crt", "-days", "825", "-extfile", f"{stem}.ext", cwd=d)
    finally:
        for name in ("ca.key", "ca.srl", f"{stem}.csr", f"{stem}.ext"):
            (d / name).unlink(missing_ok=True)
    (d / CA_CERT).chmod(0o644)
    for suffix in (".crt", ".key"):
        (d / f"{stem}{suffix}").chmod(0o600)
    return d / f"{stem}.crt", d / f"{stem}.key"
