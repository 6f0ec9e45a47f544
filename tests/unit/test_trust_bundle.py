"""Trust bundles are read certificate by certificate, and never make the library talk to users.

System bundles hold roots with serial number 0, which `cryptography` loads only with a
deprecation warning; `tlsprobe check` without `--ca-file` printed it on every run. A bundle is
built here with such a root, a root whose subject the library cannot read, and a truncated
block: the loadable roots are kept, the others skipped and counted, and no warning escapes
(pytest turns warnings into errors), neither in process nor on the command's stderr.
"""

from __future__ import annotations

import base64
import os
import ssl
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.support import der as D
from tests.support.pki import Issued, make_root, pem_bundle
from tests.support.servers import unused_port
from tlsprobe.probe.x509 import trust
from tlsprobe.probe.x509.evaluate import TrustStore, TrustStoreError

ROOT = Path(__file__).resolve().parents[2]


def _with_serial_zero(root: Issued) -> bytes:
    cert = D.Certificate(root.der)
    cert.tbs.children[D.Certificate.SERIAL].value = b"\x00"
    return cert.resign(root.key)


def _with_t61_subject(root: Issued) -> bytes:
    cert = D.Certificate(root.der)
    for part in (D.Certificate.SUBJECT, D.Certificate.ISSUER):
        node = D.name_value_nodes(cert.tbs[part])[-1]
        node.tag, node.value = D.T61_STRING, b"Wurzel M\xfcller"
    return cert.resign(root.key)


def _truncated_block(der: bytes) -> bytes:
    body = base64.encodebytes(der[: len(der) // 2])
    return b"-----BEGIN CERTIFICATE-----\n" + body + b"-----END CERTIFICATE-----\n"


@pytest.fixture(scope="module")
def bundle() -> bytes:
    good = make_root("Bundle Good Root CA")
    serial_zero = make_root("Bundle Serial Zero Root CA")
    legacy = make_root("Bundle Legacy Root CA")
    return (
        pem_bundle([good, _with_serial_zero(serial_zero), _with_t61_subject(legacy)])
        + _truncated_block(good.der)
        + b"-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n"
    )


def test_loadable_roots_are_kept_and_the_rest_counted(bundle: bytes) -> None:
    store = TrustStore.from_pem(bundle, source="bundle")
    subjects = sorted(a.subject.rfc4514_string() for a in store.anchors)
    # The serial-0 root is a usable anchor: it loads, only with a warning nobody sees.
    assert subjects == [
        "CN=Bundle Good Root CA,O=tlsprobe tests",
        "CN=Bundle Serial Zero Root CA,O=tlsprobe tests",
    ]
    assert store.skipped == 3  # the legacy-named root, the truncated block, the garbage block


def test_a_bundle_with_nothing_loadable_says_so() -> None:
    with pytest.raises(TrustStoreError, match="1 could not be loaded"):
        TrustStore.from_pem(_truncated_block(make_root("Bundle Lone Root CA").der), "lone")


def test_the_system_store_is_read_the_same_way(
    bundle: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ca-certificates.crt"
    path.write_bytes(bundle)
    paths = SimpleNamespace(cafile=str(path), openssl_cafile=None)
    monkeypatch.setattr(ssl, "get_default_verify_paths", lambda: paths)
    store = trust._system_store.__wrapped__()
    assert (len(store.anchors), store.skipped, store.source) == (2, 3, str(path))


def test_check_without_ca_file_prints_no_library_warning(bundle: bytes, tmp_path: Path) -> None:
    path = tmp_path / "system.pem"
    path.write_bytes(bundle)
    env = {**os.environ, "SSL_CERT_FILE": str(path), "PYTHONWARNINGS": "default"}
    argv = ["check", f"127.0.0.1:{unused_port()}", "--ehlo-name", "probe.test", "--timeout", "5"]
    process = subprocess.run(
        [sys.executable, "-m", "tlsprobe", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert process.returncode == 3  # refused: unknown, as Nagios expects
    assert process.stdout.startswith("TLSPROBE UNKNOWN")
    assert process.stderr == ""
