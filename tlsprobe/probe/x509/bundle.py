"""Read a PEM trust bundle certificate by certificate: keep what loads, count what does not.

System bundles carry roots that `cryptography` loads only with a deprecation warning (serial
number 0) and, now and then, one it cannot load at all. Loading the bundle in one call printed
the warning on every `tlsprobe check` and let one bad block decide for the whole file. Here
each block is loaded on its own with the library's warnings silenced; a block that cannot be
loaded, or whose subject cannot be read (it could never be found as an issuer), is skipped and
counted.
"""

from __future__ import annotations

import base64
import binascii
import re

from cryptography import x509

from tlsprobe.probe.x509 import facts as certs

MAX_BUNDLE_BYTES = 16 << 20
"""A trust bundle larger than this is not a trust bundle (the Mozilla one is about 220 KB)."""

_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.DOTALL)


def read_bundle(pem: bytes) -> tuple[list[x509.Certificate], int]:
    """(certificates that load and can be indexed, number of certificate blocks skipped)."""
    loaded: list[x509.Certificate] = []
    skipped = 0
    for match in _BLOCK.finditer(pem):
        cert = _load_block(match.group(1))
        if cert is None:
            skipped += 1
        else:
            loaded.append(cert)
    return loaded, skipped


def _load_block(body: bytes) -> x509.Certificate | None:
    try:
        der = base64.b64decode(b"".join(body.split()), validate=True)
        cert = certs.load(der)
        certs.quiet(lambda: cert.subject)  # the index needs it; warnings were recorded as facts
    except (binascii.Error, *certs.READ_ERRORS):
        return None
    return cert
