"""``--http-cert``/``--http-key``: the front ends serve HTTPS instead of
HTTP; a certificate that does not load stops the launch with one line.

The certificate is made by ``openssl`` (Debian's openssl, on every
machine this project runs on) for 127.0.0.1, trusted by the test alone.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import urllib.request
from pathlib import Path

import pytest

from mydns_lab.experiments.labprocess import LabProcess, free_port_range
from tests.test_launch_checks import _quick, _refused


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, in ``folder``."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is missing (apt-get install openssl): no certificate to test with")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    key.chmod(0o600)
    return cert, key


@pytest.mark.lab
def test_the_front_ends_serve_https_with_a_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    with LabProcess(tmp_path / "data", "--http-cert", str(cert), "--http-key", str(key),
                    nservers=3, nclerks=2, seed=21) as lab:
        for i in range(2):
            url = f"https://127.0.0.1:{lab.http_port + i}/healthz"
            with urllib.request.urlopen(url, context=trust, timeout=10) as reply:
                assert reply.status == 200 and reply.read() == b"ok\n", url
        with pytest.raises(OSError):  # plain HTTP on the HTTPS port gets no answer it can read
            urllib.request.urlopen(f"http://127.0.0.1:{lab.http_port}/healthz", timeout=10)


def test_a_certificate_that_does_not_load_stops_the_launch(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    wrong = tmp_path / "not-a-key.pem"
    wrong.write_text("not a key\n")
    line = _refused(_quick(tmp_path, free_port_range(2, 39500), "--http-cert", str(cert),
                           "--http-key", str(wrong)), "--http-cert", "does not load")
    assert str(wrong) in line
    _refused(_quick(tmp_path, free_port_range(2, 39500), "--http-cert", str(cert)),
             "--http-cert and --http-key go together")
