"""DER bytes to certificate facts: names, dates, key, signature, fingerprints.

Parsing never judges: a certificate that is expired, weak or malformed in its extensions still
yields facts, so the report shows exactly what the server sent. Only DER that is not a
certificate at all raises `CertificateParseError`.
"""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from tlsprobe.model import CertFacts
from tlsprobe.probe.bytecache import ByteLRU


class CertificateParseError(ValueError):
    """The bytes are not a DER certificate."""


def load(der: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise CertificateParseError(f"not a DER certificate: {exc}") from exc


def facts(cert: x509.Certificate) -> CertFacts:
    """Facts of one certificate. Cached by DER: fleets serve the same chain many times."""
    return facts_from_der(cert.public_bytes(Encoding.DER))


FACTS_CACHE_BYTES = 32 << 20
"""Bytes of certificates whose facts are remembered (DER plus the parsed facts, estimated)."""
_FACTS: ByteLRU[bytes, CertFacts] = ByteLRU(max_bytes=FACTS_CACHE_BYTES, max_entries=4096)


def facts_from_der(der: bytes) -> CertFacts:
    return _FACTS.memoize(der, lambda: _facts(der), 2 * len(der) + 1024)


def _facts(der: bytes) -> CertFacts:
    cert = load(der)
    key_type, key_bits = key_description(cert)
    sig_hash = cert.signature_hash_algorithm
    subject = cert.subject.rfc4514_string()
    issuer = cert.issuer.rfc4514_string()
    return CertFacts(
        der=der,
        subject=subject,
        issuer=issuer,
        serial=f"{cert.serial_number:X}",
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        sha256=hashlib.sha256(der).hexdigest(),
        dns_names=dns_names(cert),
        common_names=common_names(cert),
        key_type=key_type,
        key_bits=key_bits,
        signature_algorithm=_signature_name(cert),
        signature_hash=sig_hash.name if sig_hash is not None else None,
        is_ca=is_ca(cert),
        self_issued=cert.subject == cert.issuer,
        exchange_name=exchange_name(cert),
    )


def dns_names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    except ValueError:
        # A malformed SAN extension is reported as "no SAN" rather than aborting the report.
        return ()
    return tuple(san.get_values_for_type(x509.DNSName))


def common_names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        return ()
    return tuple(str(a.value) for a in attrs)


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except (x509.ExtensionNotFound, ValueError):
        return False


def key_description(cert: x509.Certificate) -> tuple[str, int]:
    try:
        key = cert.public_key()
    except (ValueError, TypeError):
        return "unknown", 0
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "EC", key.curve.key_size
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", 256
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", 456
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA", key.key_size
    return "unknown", 0


def _signature_name(cert: x509.Certificate) -> str:
    oid = cert.signature_algorithm_oid
    return getattr(oid, "_name", None) or oid.dotted_string


def exchange_name(cert: x509.Certificate) -> str:
    """Exchange's `<I>issuer<S>subject` form (Set-SendConnector -TlsCertificateName).

    Exchange writes distinguished names most-specific first with ", " separators
    (CN=R3, O=Let's Encrypt, C=US), which is the RFC 4514 order.
    """
    return f"<I>{_exchange_dn(cert.issuer)}<S>{_exchange_dn(cert.subject)}"


def _exchange_dn(name: x509.Name) -> str:
    return ", ".join(rdn.rfc4514_string() for rdn in reversed(list(name.rdns)))
