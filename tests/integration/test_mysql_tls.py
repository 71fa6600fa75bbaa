"""TLS to Lookout's MySQL against a real server: a test-owned MariaDB with a certificate from a
test CA, reached under a host name (not loopback), so the defaults are the ones a VPC sees."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.keysync import source_mysql
from chalicelib.keysync.source_mysql import SourceUnavailable, connect

MARIADBD = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
INSTALL_DB = shutil.which("mariadb-install-db") or "/usr/bin/mariadb-install-db"
HOST = "lookout-db.test"  # resolves to 127.0.0.1 in these tests only
pytestmark = pytest.mark.skipif(not Path(MARIADBD).exists(), reason="MariaDB server not installed")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _certificates(directory: Path) -> None:
    """A test CA, and a server certificate it signed for HOST."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Lookout test CA",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=directory)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={HOST}", "-keyout", "server.key",
             "-out", "server.csr", cwd=directory)  # fmt: skip
    (directory / "san.ext").write_text(  # what Python's strict X.509 checks ask of a server certificate
        f"subjectAltName=DNS:{HOST}\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n"
    )
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", "san.ext", "-out", "server.pem", cwd=directory)  # fmt: skip


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """mariadbd with TLS on its own port and data directory, stopped at the end."""
    base = tmp_path_factory.mktemp("mariadb-tls")
    _certificates(base)
    data = base / "data"
    subprocess.run(
        [INSTALL_DB, "--no-defaults", "--user=root", f"--datadir={data}", "--auth-root-authentication-method=normal",
         "--skip-test-db"],
        check=True, capture_output=True, timeout=180,
    )  # fmt: skip
    port = _free_port()
    server = subprocess.Popen(
        [MARIADBD, "--no-defaults", "--user=root", f"--datadir={data}", f"--port={port}",
         "--bind-address=127.0.0.1", f"--socket={base / 'mysql.sock'}", f"--pid-file={base / 'mysql.pid'}",
         f"--ssl-ca={base / 'ca.pem'}", f"--ssl-cert={base / 'server.pem'}", f"--ssl-key={base / 'server.key'}",
         "--skip-grant-tables", "--innodb-buffer-pool-size=16M", "--skip-log-bin"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(
                    f"test MariaDB did not start: {server.stderr.read().decode()[-800:] if server.stderr else ''}"
                )
            time.sleep(0.2)
    try:
        yield {"port": port, "ca": base / "ca.pem"}
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def resolve_test_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """HOST is 127.0.0.1 (nothing leaves the machine), but not a loopback *name* to the code."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == HOST else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def cipher(connection: Any) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        row = cursor.fetchone()
    connection.close()
    return row["Value"]


def test_a_database_host_gets_verified_tls_by_default(
    tls_server: dict[str, Any], resolve_test_host: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No option in the URL: TLS, verified against the RDS bundle shipped with the code (here
    standing in for RDS: the test CA in its place)."""
    url = f"mysql://root:@{HOST}:{tls_server['port']}/mysql"
    with pytest.raises(SourceUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        connect(url, streaming=False)  # the test CA is neither a system CA nor in the RDS bundle
    monkeypatch.setattr(source_mysql, "RDS_CA_BUNDLE", tls_server["ca"])
    assert cipher(connect(url, streaming=False)) != ""


def test_the_certificate_must_name_the_host(tls_server: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(source_mysql, "RDS_CA_BUNDLE", tls_server["ca"])
    real = socket.getaddrinfo
    monkeypatch.setattr(
        socket, "getaddrinfo", lambda host, *a, **k: real("127.0.0.1" if host == "other.test" else host, *a, **k)
    )
    with pytest.raises(SourceUnavailable, match=r"match|CERTIFICATE_VERIFY_FAILED"):
        connect(f"mysql://root:@other.test:{tls_server['port']}/mysql", streaming=False)


def test_ssl_false_in_the_url_is_the_only_way_to_plain_text(
    tls_server: dict[str, Any], resolve_test_host: None
) -> None:
    plain = connect(f"mysql://root:@{HOST}:{tls_server['port']}/mysql?ssl=false", streaming=False)
    assert cipher(plain) == ""
    own_ca = f"mysql://root:@{HOST}:{tls_server['port']}/mysql?ssl_ca={tls_server['ca']}"
    assert cipher(connect(own_ca, streaming=False)) != ""


def test_loopback_is_not_verified_unless_asked(tls_server: dict[str, Any]) -> None:
    """127.0.0.1 (a tunnel, the local stack): no verification by default, so the untrusted
    test certificate does not stop it; ssl=true verifies there too."""
    assert connect(f"mysql://root:@127.0.0.1:{tls_server['port']}/mysql", streaming=False).open
    with pytest.raises(SourceUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        connect(f"mysql://root:@127.0.0.1:{tls_server['port']}/mysql?ssl=true", streaming=False)
