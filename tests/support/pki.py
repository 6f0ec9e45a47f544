"""A small certificate factory for tests: roots, intermediates and leaves, good and broken.

Tests build the certificates they need in the test itself (no fixture files that silently
expire): a root and an intermediate with proper CA extensions, so that
`cryptography.x509.verification` accepts a good chain, and leaves whose names, validity, key
and signature hash are each chosen by the test. Keys are the slow part, so they are cached per
process by (kind, label): every CA name gets its own key (two roots must never share one, or a
leaf signed by one would verify against the other), while leaves share a few.

Run as a script it writes a CA, an intermediate and a leaf for a real server (the Postfix
harness uses it): `python3 tests/support/pki.py --out DIR --name mail.tlsprobe.test`.
"""

from __future__ import annotations

import argparse
import base64
import enum
import functools
import hashlib
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

# Backdating by an hour keeps "valid now" certificates valid despite small clock differences.
_BACKDATE = timedelta(hours=1)


class KeyKind(enum.Enum):
    RSA2048 = "rsa2048"
    RSA1024 = "rsa1024"
    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"


_HASHES: dict[str, hashes.SHA256 | hashes.SHA384] = {
    "sha256": hashes.SHA256(),
    "sha384": hashes.SHA384(),
}

# AlgorithmIdentifier DER of sha256WithRSAEncryption and sha1WithRSAEncryption: same length, so
# one can replace the other inside a to-be-signed certificate without re-encoding it.
_ALG_SHA256_RSA = bytes.fromhex("300d06092a864886f70d01010b0500")
_ALG_SHA1_RSA = bytes.fromhex("300d06092a864886f70d0101050500")


@functools.cache
def pooled_key(kind: KeyKind, label: str = "leaf") -> PrivateKey:
    """One key per (kind, label) per process: RSA generation dominates test set-up time."""
    if kind is KeyKind.RSA2048:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind is KeyKind.RSA1024:
        return rsa.generate_private_key(public_exponent=65537, key_size=1024)
    curve = ec.SECP256R1() if kind is KeyKind.EC_P256 else ec.SECP384R1()
    return ec.generate_private_key(curve)


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: PrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return key_pem(self.key)

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def sha256(self) -> str:
        """Lower-case hex fingerprint, as `CertFacts.sha256` reports it."""
        return hashlib.sha256(self.der).hexdigest()


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str | None, organization: str = "tlsprobe tests") -> x509.Name:
    """O= (none when `organization` is ""), then CN= when given."""
    attributes = []
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    if common_name is not None:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _validity(
    not_before: datetime | None, not_after: datetime | None, days: float
) -> tuple[datetime, datetime]:
    start = not_before if not_before is not None else datetime.now(UTC) - _BACKDATE
    end = not_after if not_after is not None else start + timedelta(days=days)
    return start, end


def _builder(
    subject: x509.Name,
    issuer_name: x509.Name,
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    issuer_public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    validity: tuple[datetime, datetime],
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public_key), critical=False
        )
    )


def _ca_extensions(
    builder: x509.CertificateBuilder, path_length: int | None
) -> x509.CertificateBuilder:
    return builder.add_extension(
        x509.BasicConstraints(ca=True, path_length=path_length), critical=True
    ).add_extension(
        x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=True,
            crl_sign=True,
            encipher_only=False,
            decipher_only=False,
        ),
        critical=True,
    )


def make_root(
    common_name: str = "tlsprobe Test Root CA",
    *,
    key: KeyKind = KeyKind.RSA2048,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    organization: str = "tlsprobe tests",
) -> Issued:
    """A self-signed root CA. Its key is per common name, so distinct roots never share one."""
    private = pooled_key(key, f"ca:{common_name}")
    name = _name(common_name, organization)
    builder = _builder(
        name,
        name,
        private.public_key(),
        private.public_key(),
        _validity(not_before, not_after, days=3650),
    )
    cert = _ca_extensions(builder, path_length=None).sign(private, hashes.SHA256())
    return Issued(cert, private)


def make_intermediate(
    issuer: Issued,
    common_name: str = "tlsprobe Test Intermediate CA",
    *,
    key: KeyKind = KeyKind.RSA2048,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    organization: str = "tlsprobe tests",
) -> Issued:
    """An intermediate CA signed by `issuer` (path length 0: it signs leaves only); its
    subject is O=`organization` (none when ""), CN=`common_name`."""
    private = pooled_key(key, f"ca:{common_name}")
    builder = _builder(
        _name(common_name, organization),
        issuer.cert.subject,
        private.public_key(),
        issuer.key.public_key(),
        _validity(not_before, not_after, days=1825),
    )
    cert = _ca_extensions(builder, path_length=0).sign(issuer.key, hashes.SHA256())
    return Issued(cert, private)


def make_leaf(
    issuer: Issued | None,
    names: Sequence[str] = ("mail.contoso.test",),
    *,
    common_name: str | None = None,
    key: KeyKind = KeyKind.RSA2048,
    signature_hash: str = "sha256",
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    days: float = 90,
    client_auth: bool = True,
) -> Issued:
    """A server (and client) certificate; `issuer=None` makes it self-signed.

    `client_auth=False` leaves clientAuth out of the EKU (serverAuth only), as public CAs issue
    server certificates from 2026.

    `names` become SAN dNSName entries (IP literals become iPAddress entries); an empty `names`
    leaves the SAN extension out, so the certificate carries its name in the CN only.
    `common_name` defaults to the first name.
    """
    private = pooled_key(key, "self-signed" if issuer is None else "leaf")
    cn = common_name if common_name is not None else (names[0] if names else None)
    subject = _name(cn, organization="tlsprobe test server")
    signer = issuer.key if issuer is not None else private
    builder = _builder(
        subject,
        issuer.cert.subject if issuer is not None else subject,
        private.public_key(),
        signer.public_key(),
        _validity(not_before, not_after, days=days),
    ).add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    builder = builder.add_extension(_leaf_key_usage(private), critical=True).add_extension(
        x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH]
            + ([ExtendedKeyUsageOID.CLIENT_AUTH] if client_auth else [])
        ),
        critical=False,
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(_san(names)), critical=False)
    if signature_hash == "sha1":
        return Issued(_sign_sha1(builder, signer), private)
    return Issued(builder.sign(signer, _HASHES[signature_hash]), private)


def _sign_sha1(builder: x509.CertificateBuilder, signer: PrivateKey) -> x509.Certificate:
    """Sign with sha1WithRSAEncryption, which `cryptography` no longer does for certificates.

    Signs with SHA-256, swaps the algorithm identifier in the TBS bytes, signs those with
    SHA-1 at the low level and assembles the DER by hand.
    """
    if not isinstance(signer, rsa.RSAPrivateKey):
        raise ValueError("SHA-1 test certificates need an RSA issuer")
    tbs = builder.sign(signer, hashes.SHA256()).tbs_certificate_bytes
    if tbs.count(_ALG_SHA256_RSA) != 1:
        raise ValueError("unexpected TBS layout")
    tbs = tbs.replace(_ALG_SHA256_RSA, _ALG_SHA1_RSA)
    signature = signer.sign(tbs, padding.PKCS1v15(), hashes.SHA1())
    bit_string = _der(0x03, b"\x00" + signature)
    return x509.load_der_x509_certificate(_der(0x30, tbs + _ALG_SHA1_RSA + bit_string))


def _der(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(encoded)]) + encoded + content


def _leaf_key_usage(private: PrivateKey) -> x509.KeyUsage:
    # RSA key exchange (non-ECDHE TLS 1.2 suites) needs keyEncipherment; EC keys must not have it.
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=isinstance(private, rsa.RSAPrivateKey),
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _san(names: Iterable[str]) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return entries


@dataclass(frozen=True)
class Hierarchy:
    """A root and an intermediate: the usual shape of a public CA."""

    root: Issued
    intermediate: Issued

    @property
    def ca_pem(self) -> bytes:
        """The trust anchor, as a `--ca-file` / `TrustStore.from_pem` input."""
        return self.root.cert_pem

    def leaf(
        self,
        names: Sequence[str] = ("mail.contoso.test",),
        *,
        common_name: str | None = None,
        key: KeyKind = KeyKind.RSA2048,
        signature_hash: str = "sha256",
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        days: float = 90,
        client_auth: bool = True,
    ) -> Issued:
        """A leaf issued by the intermediate; arguments as for `make_leaf`."""
        return make_leaf(
            self.intermediate,
            names,
            common_name=common_name,
            key=key,
            signature_hash=signature_hash,
            not_before=not_before,
            not_after=not_after,
            days=days,
            client_auth=client_auth,
        )

    def chain(self, leaf: Issued) -> tuple[x509.Certificate, ...]:
        """What a correctly configured server sends: leaf, then intermediate."""
        return (leaf.cert, self.intermediate.cert)


def make_hierarchy(label: str = "tlsprobe Test") -> Hierarchy:
    root = make_root(f"{label} Root CA")
    return Hierarchy(root, make_intermediate(root, f"{label} Intermediate CA"))


FIXED_NOW = datetime(2026, 6, 1, tzinfo=UTC)
"""The clock of the tests that judge at a fixed time, so a verdict cannot drift as time passes."""
FIXED_ROOT_CN = "Fixed Root CA"
FIXED_INTERMEDIATE_CN = "Fixed Intermediate CA"


def fixed_hierarchy() -> Hierarchy:
    """The CA of the fixed-clock tests (the `ca` fixture): root and intermediate valid from a
    year before `FIXED_NOW` to ten and five years after it."""
    year = timedelta(days=365)
    root = make_root(FIXED_ROOT_CN, not_before=FIXED_NOW - year, not_after=FIXED_NOW + 10 * year)
    intermediate = make_intermediate(
        root, FIXED_INTERMEDIATE_CN, not_before=FIXED_NOW - year, not_after=FIXED_NOW + 5 * year
    )
    return Hierarchy(root, intermediate)


def pem_bundle(certs: Iterable[x509.Certificate | Issued | bytes]) -> bytes:
    """Concatenated PEM, in the given order. Bytes are DER, PEM-armoured as they are, so a
    certificate `cryptography` cannot load can still be served (OpenSSL is more lenient)."""
    return b"".join(_pem(c) for c in certs)


def _pem(cert: x509.Certificate | Issued | bytes) -> bytes:
    if isinstance(cert, bytes):
        body = base64.encodebytes(cert).replace(b"\n", b"")
        lines = [body[i : i + 64] for i in range(0, len(body), 64)]
        return (
            b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE-----\n"
        )
    return (cert.cert if isinstance(cert, Issued) else cert).public_bytes(
        serialization.Encoding.PEM
    )


def write_server_files(
    directory: Path,
    key: PrivateKey,
    chain: Sequence[x509.Certificate | bytes],
    stem: str = "server",
) -> tuple[Path, Path]:
    """Write `chain` (leaf first, then exactly what the server should send) and the key.

    Returns (certfile, keyfile) for `ssl.SSLContext.load_cert_chain`; OpenSSL sends the extra
    certificates in file order, so out-of-order chains stay out of order on the wire.
    """
    certfile = directory / f"{stem}-chain.pem"
    keyfile = directory / f"{stem}-key.pem"
    certfile.write_bytes(pem_bundle(chain))
    _write_private(keyfile, key_pem(key))
    return certfile, keyfile


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def write_server_set(out: Path, name: str, key: KeyKind = KeyKind.RSA2048) -> None:
    """Files for a real server: ca.pem, intermediate.pem, leaf.pem, key.pem, chain.pem.

    `key` is the leaf's key (the CAs stay RSA): the one the server signs every handshake with.
    """
    out.mkdir(parents=True, exist_ok=True)
    hierarchy = make_hierarchy("tlsprobe Postfix Test")
    leaf = hierarchy.leaf((name,), key=key, days=365)
    (out / "ca.pem").write_bytes(hierarchy.ca_pem)
    (out / "intermediate.pem").write_bytes(hierarchy.intermediate.cert_pem)
    (out / "leaf.pem").write_bytes(leaf.cert_pem)
    (out / "chain.pem").write_bytes(pem_bundle(hierarchy.chain(leaf)))
    _write_private(out / "key.pem", leaf.key_pem)


_SERVER_SET = ("ca.pem", "intermediate.pem", "leaf.pem", "chain.pem", "key.pem")


def server_set_current(out: Path, name: str, keep_days: float) -> bool:
    """Whether `out` already holds a full set for `name`, valid for `keep_days` more days."""
    if not all((out / file).is_file() for file in _SERVER_SET):
        return False
    leaf = x509.load_pem_x509_certificate((out / "leaf.pem").read_bytes())
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    remaining = leaf.not_valid_after_utc - datetime.now(UTC)
    return name in san.get_values_for_type(x509.DNSName) and remaining > timedelta(keep_days)


RELAY_CASES = ("good", "other", "expired", "fabrikam", "noeku")
"""Client certificates of the send-side relay (.ci/postfix-relay.sh), one per case."""


def write_relay_set(out: Path) -> None:
    """ca.pem, intermediate.pem and `<case>-leaf.pem` / `<case>-key.pem` for every RELAY_CASE.

    good: relay.contoso.test (also the relay's server certificate); other: relay2.contoso.test;
    expired: ended yesterday; fabrikam: relay.fabrikam.test; noeku: serverAuth only.
    """
    out.mkdir(parents=True, exist_ok=True)
    hierarchy = make_hierarchy("tlsprobe Relay Test")
    now = datetime.now(UTC)
    leaves = {
        "good": hierarchy.leaf(("relay.contoso.test",), days=365),
        "other": hierarchy.leaf(("relay2.contoso.test",), days=365),
        "expired": hierarchy.leaf(
            ("relay.contoso.test",),
            not_before=now - timedelta(days=90),
            not_after=now - timedelta(days=1),
        ),
        "fabrikam": hierarchy.leaf(("relay.fabrikam.test",), days=365),
        "noeku": hierarchy.leaf(("relay.contoso.test",), days=365, client_auth=False),
    }
    (out / "ca.pem").write_bytes(hierarchy.ca_pem)
    (out / "intermediate.pem").write_bytes(hierarchy.intermediate.cert_pem)
    for case, leaf in leaves.items():
        (out / f"{case}-leaf.pem").write_bytes(leaf.cert_pem)
        _write_private(out / f"{case}-key.pem", leaf.key_pem)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to write PEM files to")
    parser.add_argument("--name", default="mail.tlsprobe.test", help="leaf DNS name")
    parser.add_argument(
        "--keep-days",
        type=float,
        default=None,
        help="keep existing files when they are for --name and valid this many more days",
    )
    parser.add_argument(
        "--relay-set", action="store_true", help="write the send-side relay's client certificates"
    )
    args = parser.parse_args(argv)
    if args.relay_set:
        write_relay_set(args.out)
        print(f"{args.out}: wrote the relay set ({', '.join(RELAY_CASES)})")
        return 0
    if args.keep_days is not None and server_set_current(args.out, args.name, args.keep_days):
        print(f"{args.out}: certificates for {args.name} are current, kept")
        return 0
    write_server_set(args.out, args.name)
    print(f"{args.out}: wrote {', '.join(_SERVER_SET)} for {args.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
