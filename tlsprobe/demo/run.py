"""`tlsprobe demo`: a self-contained fleet of loopback SMTP servers and the exporter watching it.

At start it builds a throwaway PKI (root, intermediate, leaves), starts one small STARTTLS
server per scenario on 127.0.0.1, writes the root as the demo trust store, and runs the
exporter against them with a demo tenant. Nothing leaves loopback. The SMTP server here is
deliberately tiny: greeting, EHLO, STARTTLS, QUIT, with bounded reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ssl
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tlsprobe.exporter.app import Exporter, StartupError
from tlsprobe.exporter.config import Config, ConfigError, parse_config, parse_duration

DEMO_TENANT = "demo-contoso"
DEMO_DOMAIN = "contoso.test"
Key = ec.EllipticCurvePrivateKey


@dataclass(frozen=True, slots=True)
class Issued:
    cert: x509.Certificate
    key: Key


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tlsprobe demo"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def issue(
    common_name: str,
    *,
    issuer: Issued | None = None,
    ca: bool = False,
    names: Sequence[str] = (),
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> Issued:
    """One certificate, signed by `issuer` (self-signed when None)."""
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    signer = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer.cert.subject if issuer else _name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(days=30))
        .not_valid_after(not_after or now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    if ca:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
    else:
        usage = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    builder = builder.add_extension(usage, critical=True)
    if names:
        san = x509.SubjectAlternativeName([x509.DNSName(n) for n in names])
        builder = builder.add_extension(san, critical=False)
    return Issued(builder.sign(signer, hashes.SHA256()), key)


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    host: str
    chain: tuple[Issued, ...]
    """Leaf first, as the server sends it; empty for a server without STARTTLS."""
    certificate_domain: str | None = None
    description: str = ""


def scenarios() -> tuple[Issued, list[Scenario]]:
    """The demo root (the trust store) and the scenarios it serves."""
    now = dt.datetime.now(dt.UTC)
    root = issue("tlsprobe demo root CA", ca=True, not_after=now + dt.timedelta(days=3650))
    inter = issue("tlsprobe demo issuing CA", issuer=root, ca=True)
    private_root = issue("Contoso private root", ca=True)

    def leaf(
        host: str,
        issuer: Issued = inter,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> Issued:
        return issue(host, issuer=issuer, names=[host], not_before=not_before, not_after=not_after)

    expired_at, issued_at = now - dt.timedelta(days=3), now - dt.timedelta(days=400)
    return root, [
        Scenario("healthy", "relay.contoso.test", (leaf("relay.contoso.test"), inter),
                 description="full chain, right name, accepted domain"),
        Scenario("expiring", "relay2.contoso.test",
                 (leaf("relay2.contoso.test", not_before=now - dt.timedelta(days=78),
                       not_after=now + dt.timedelta(days=12)), inter),
                 description="a 90-day leaf with 12 days left: renewal overdue (warning)"),
        Scenario("expired", "old.contoso.test",
                 (leaf("old.contoso.test", not_before=issued_at, not_after=expired_at), inter),
                 description="expired 3 days ago"),
        Scenario("untrusted", "selfsigned.contoso.test",
                 (leaf("selfsigned.contoso.test", issuer=private_root), private_root),
                 description="issued by a private root"),
        Scenario("wrong-name", "mail.contoso.test", (leaf("www.fabrikam.example"), inter),
                 description="certificate for another name"),
        Scenario("missing-intermediate", "edge.contoso.test", (leaf("edge.contoso.test"),),
                 description="leaf sent without its intermediate"),
        Scenario("not-accepted", "relay.fabrikam.test", (leaf("relay.fabrikam.test"), inter),
                 certificate_domain="*.fabrikam.test",
                 description="connector domain fabrikam.test is not an accepted domain"),
        Scenario("no-starttls", "legacy.contoso.test", (),
                 description="server does not offer STARTTLS"),
    ]  # fmt: skip


# --- a tiny SMTP server ----------------------------------------------------------------------


def _server_context(chain: Sequence[Issued], directory: Path, name: str) -> ssl.SSLContext:
    cert_file = directory / f"{name}.pem"
    key_file = directory / f"{name}.key"
    cert_file.write_bytes(pem(*(i.cert for i in chain)))
    key_file.write_bytes(
        chain[0].key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


async def _session(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    host: str,
    tls: ssl.SSLContext | None,
) -> None:
    writer.write(f"220 {host} ESMTP tlsprobe demo\r\n".encode())
    secure = False
    for _ in range(20):  # a demo session never needs more commands than this
        line = await asyncio.wait_for(reader.readline(), timeout=30)
        verb = line[:4].upper()
        if not line:
            return
        if verb in (b"EHLO", b"HELO"):
            offer = b"250-STARTTLS\r\n" if tls is not None and not secure else b""
            writer.write(f"250-{host}\r\n".encode() + offer + b"250 8BITMIME\r\n")
        elif verb == b"STAR" and tls is not None and not secure:
            writer.write(b"220 2.0.0 Ready to start TLS\r\n")
            await writer.drain()
            await writer.start_tls(tls)
            secure = True
        elif verb == b"QUIT":
            writer.write(b"221 2.0.0 Bye\r\n")
            await writer.drain()
            return
        else:
            writer.write(b"502 5.5.2 Command not implemented\r\n")
        await writer.drain()


async def start_smtp(
    scenario: Scenario, directory: Path, host: str = "127.0.0.1"
) -> asyncio.Server:
    tls = _server_context(scenario.chain, directory, scenario.name) if scenario.chain else None

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, TimeoutError, ssl.SSLError, ValueError):
            await _session(reader, writer, scenario.host, tls)
        writer.close()

    return await asyncio.start_server(handle, host, 0, limit=4096)


# --- the demo exporter -----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def fleet(directory: Path) -> AsyncIterator[tuple[Path, list[tuple[Scenario, int]]]]:
    """Start every scenario's server; yields the trust store file and (scenario, port) pairs."""
    servers: list[asyncio.Server] = []
    started: list[tuple[Scenario, int]] = []
    root, planned = scenarios()
    root_path = directory / "demo-root.pem"
    root_path.write_bytes(pem(root.cert))
    try:
        for scenario in planned:
            server = await start_smtp(scenario, directory)
            servers.append(server)
            started.append((scenario, server.sockets[0].getsockname()[1]))
        yield root_path, started
    finally:
        for server in servers:
            server.close()
        for server in servers:
            await server.wait_closed()


def demo_config(
    started: Sequence[tuple[Scenario, int]],
    root_pem_path: Path,
    state_dir: Path,
    listen: str,
    interval: str = "30s",
) -> Config:
    targets = []
    for scenario, port in started:
        target: dict[str, object] = {
            "name": scenario.name,
            "host": scenario.host,
            "port": port,
            "address": "127.0.0.1",
            "ehlo_name": "tlsprobe-demo.localdomain",
        }
        if scenario.certificate_domain:
            target["certificate_domain"] = scenario.certificate_domain
        targets.append(target)
    # The timeout must stay below the interval (the config insists), so a short demo interval
    # such as `--interval 2s` shortens it too; loopback answers in milliseconds anyway.
    timeout = min(5.0, parse_duration(interval) / 2)
    data = {
        "state_dir": str(state_dir),
        "web": {"listen": listen},
        "defaults": {"interval": interval, "timeout": timeout, "ca_file": str(root_pem_path)},
        "tenants": {
            DEMO_TENANT: {
                "accepted_domains": [DEMO_DOMAIN],
                "certificate_domain": f"*.{DEMO_DOMAIN}",
                "targets": targets,
            }
        },
    }
    return parse_config(data, base_dir=state_dir)


async def run_demo(listen: str, state_dir: Path | None, interval: str = "30s") -> int:
    with tempfile.TemporaryDirectory(prefix="tlsprobe-demo-") as tmp:
        directory = Path(tmp)
        async with fleet(directory) as (root_path, started):
            try:
                config = demo_config(
                    started, root_path, state_dir or directory / "state", listen, interval
                )
            except (ConfigError, ValueError) as exc:
                print(f"tlsprobe demo: {exc}", file=sys.stderr)
                return 2
            exporter = Exporter(config)
            try:
                await exporter.start()
            except StartupError as exc:
                print(f"tlsprobe demo: {exc}", file=sys.stderr)
                return 2
            _announce(exporter.url, started)
            await exporter.run_until_signalled()
    return 0


def _announce(url: str, started: Sequence[tuple[Scenario, int]]) -> None:
    lines = [
        "tlsprobe demo: SMTP endpoints on 127.0.0.1 with certificates made just now",
        "",
    ]
    for scenario, port in started:
        lines.append(f"  {scenario.name:<22} 127.0.0.1:{port:<6} {scenario.description}")
    lines += [
        "",
        f"  status page  {url}/",
        f"  metrics      {url}/metrics",
        f"  probe now    {url}/probe?target=healthy&debug=true",
        "",
        "Ctrl-C stops the demo.",
    ]
    print("\n".join(lines), flush=True)
