"""Shared fixtures: a session-wide test PKI and the trust store that anchors it.

Certificates are generated here, per session, never read from fixture files that expire. The
keys behind them are cached by `tests.support.pki`, so the whole PKI costs well under a second.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# `tests.support` is imported as a package of the repository root. `python -m pytest` puts the
# root on sys.path but the plain `pytest` script does not, and tests/ has no __init__.py.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.support.pki import Hierarchy, fixed_hierarchy, make_hierarchy  # noqa: E402
from tlsprobe.probe.x509.evaluate import TrustStore  # noqa: E402


@pytest.fixture(scope="session")
def pki() -> Hierarchy:
    """The "public" CA of the tests: a root (the trust anchor) and an intermediate."""
    return make_hierarchy("Contoso Test")


@pytest.fixture(scope="session")
def ca() -> Hierarchy:
    """The CA of the tests that judge at `tests.support.pki.FIXED_NOW`, never the real date."""
    return fixed_hierarchy()


@pytest.fixture(scope="session")
def trust(pki: Hierarchy) -> TrustStore:
    """A trust store holding only the test root."""
    return TrustStore.from_pem(pki.ca_pem, source="test root")


@pytest.fixture(scope="session")
def ca_file(pki: Hierarchy, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test root as a PEM file, for `tlsprobe check --ca-file`."""
    path = tmp_path_factory.mktemp("ca") / "root.pem"
    path.write_bytes(pki.ca_pem)
    return path
