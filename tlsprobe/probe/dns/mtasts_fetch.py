"""Fetch an MTA-STS policy over HTTPS exactly as a sender must (RFC 8461 section 3.3).

`https://mta-sts.DOMAIN/.well-known/mta-sts.txt`, certificate verified against the trust store
with the host name checked, no redirects followed, `text/plain` required, the body bounded in
size and the whole fetch in time. Every outcome is data: the body, or the reason a sender
would give up. The policy host is resolved through the resolver the caller hands in, the same
one that answers the MX, TLSA and TXT lookups (the exporter's `dns:` section, the CLI's
`--resolver`), so one view of DNS decides everything; its addresses are tried in turn on port
443, each connection verified for the policy host's name.

One HTTP/1.0 request on an asyncio stream, closed before returning: a policy is one small
file, and a client that closes its own connection leaves nothing open behind a short-lived
event loop (`tlsprobe check` runs one per invocation).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from pathlib import Path

import dns.asyncresolver

from tlsprobe.probe import files
from tlsprobe.probe.dns.discover import resolve_addresses
from tlsprobe.probe.dns.mtasts import MAX_POLICY_BYTES
from tlsprobe.probe.x509.bundle import MAX_BUNDLE_BYTES

PATH = "/.well-known/mta-sts.txt"
_LINE_LIMIT = 8192
"""Longest status or header line read (the stream limit)."""
_MAX_HEADERS = 100
PORT = 443
"""RFC 8461 section 3.3: HTTPS on its standard port; nothing else is a policy host."""


@dataclass(frozen=True, slots=True)
class FetchSettings:
    ca_file: Path | None = None
    """PEM trust anchors for the policy host; None means the system store."""


@dataclass(frozen=True, slots=True)
class Fetched:
    body: bytes | None
    error: str = ""


def policy_url(domain: str) -> str:
    return f"https://mta-sts.{domain}{PATH}"


def ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """Full verification, host name included; TLS 1.2 or newer. OpenSSL reads `ca_file`
    itself, so it is checked first as every configured file is (a FileError is a ValueError)."""
    if ca_file is not None:
        files.check(ca_file, MAX_BUNDLE_BYTES)
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


async def fetch_policy(
    domain: str,
    settings: FetchSettings,
    resolver: dns.asyncresolver.Resolver,
    *,
    timeout: float,
) -> Fetched:
    """The policy file's bytes, or why a sender would not have it."""
    host = f"mta-sts.{domain}"
    try:
        async with asyncio.timeout(timeout):
            found = await resolve_addresses(host, resolver)
            if found.error is not None:
                return Fetched(None, f"policy host {host}: {found.error.message[:200]}")
            return await _fetch_any(host, found.addresses, settings)
    except TimeoutError:
        return Fetched(None, f"policy fetch timed out after {timeout:g}s")
    except ssl.SSLCertVerificationError as exc:
        return Fetched(None, f"certificate of {host} not valid: {exc.verify_message}")
    except ssl.SSLError as exc:
        return Fetched(None, f"TLS with {host} failed: {str(exc)[:200]}")
    except (OSError, ValueError, UnicodeError) as exc:
        return Fetched(None, f"policy fetch failed: {str(exc)[:200] or type(exc).__name__}")


async def _fetch_any(host: str, addresses: tuple[str, ...], settings: FetchSettings) -> Fetched:
    """From the first address that accepts a connection, as a sender would; the last refusal
    is the answer when none does."""
    for address in addresses[:-1]:
        try:
            return await _fetch(host, address, settings)
        except ssl.SSLError:
            raise  # the host answered: its certificate or TLS is the finding
        except OSError:
            continue
    return await _fetch(host, addresses[-1], settings)


async def _fetch(host: str, address: str, settings: FetchSettings) -> Fetched:
    reader, writer = await asyncio.open_connection(
        address, PORT, ssl=ssl_context(settings.ca_file), server_hostname=host, limit=_LINE_LIMIT
    )
    try:
        # HTTP/1.0: one request, no chunking, the server closes after the body.
        writer.write(
            f"GET {PATH} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: tlsprobe\r\n"
            "Accept: text/plain\r\nConnection: close\r\n\r\n".encode("ascii")
        )
        await writer.drain()
        status, headers = await _head(reader)
        return await _body(reader, status, headers, host)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


async def _head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """Status code and headers (lower-case names), bounded in count and line length."""
    parts = (await reader.readline()).decode("latin-1").split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError("not an HTTP response")
    headers: dict[str, str] = {}
    for _ in range(_MAX_HEADERS):
        line = (await reader.readline()).decode("latin-1").strip()
        if not line:
            return int(parts[1]), headers
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    raise ValueError(f"more than {_MAX_HEADERS} response headers")


async def _body(
    reader: asyncio.StreamReader, status: int, headers: dict[str, str], host: str
) -> Fetched:
    if 300 <= status < 400:
        where = headers.get("location", "")[:120]
        return Fetched(
            None,
            f"HTTP {status} redirect to {where!r}: not followed (RFC 8461 3.3 forbids redirects)",
        )
    if status != 200:
        return Fetched(None, f"HTTP {status} for https://{host}{PATH}")
    media = headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "text/plain":
        return Fetched(None, f"media type {media[:60]!r}, not text/plain")
    body = await reader.read(MAX_POLICY_BYTES + 1)
    while len(body) <= MAX_POLICY_BYTES and (chunk := await reader.read(MAX_POLICY_BYTES)):
        body += chunk
    if len(body) > MAX_POLICY_BYTES:
        return Fetched(None, f"policy larger than {MAX_POLICY_BYTES} bytes: not read further")
    return Fetched(body)
