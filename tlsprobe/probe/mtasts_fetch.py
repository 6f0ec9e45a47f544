"""Fetch an MTA-STS policy over HTTPS exactly as a sender must (RFC 8461 section 3.3).

`https://mta-sts.DOMAIN/.well-known/mta-sts.txt`, certificate verified against the trust store
with the host name checked, no redirects followed, `text/plain` required, the body bounded in
size and the whole fetch in time. Every outcome is data: the body, or the reason a sender
would give up. `addresses` maps a policy host to `IP:PORT` for laboratories and tests (the
loopback policy server of the test suite); without an entry the system resolver is used.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from tlsprobe.probe.mtasts import MAX_POLICY_BYTES

_CHUNK = 16384


@dataclass(frozen=True, slots=True)
class FetchSettings:
    ca_file: Path | None = None
    """PEM trust anchors for the policy host; None means the system store."""
    addresses: Mapping[str, tuple[str, int]] = field(default_factory=lambda: MappingProxyType({}))
    """Policy host -> (IP, port) to connect to instead of resolving it (tests, laboratories)."""


@dataclass(frozen=True, slots=True)
class Fetched:
    body: bytes | None
    error: str = ""


def policy_url(domain: str) -> str:
    return f"https://mta-sts.{domain}/.well-known/mta-sts.txt"


class _MappedResolver(AbstractResolver):
    """Answers from the address map, and from the system resolver for anything else."""

    def __init__(self, addresses: Mapping[str, tuple[str, int]]) -> None:
        self._addresses = addresses
        self._fallback = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        mapped = self._addresses.get(host.lower().rstrip("."))
        if mapped is None:
            return await self._fallback.resolve(host, port, family)
        address, mapped_port = mapped
        inet = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [
            ResolveResult(
                hostname=host, host=address, port=mapped_port, family=inet, proto=0, flags=0
            )
        ]

    async def close(self) -> None:
        await self._fallback.close()


def ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """Full verification, host name included; TLS 1.2 or newer."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


async def fetch_policy(domain: str, settings: FetchSettings, *, timeout: float) -> Fetched:
    """The policy file's bytes, or why a sender would not have it."""
    try:
        async with asyncio.timeout(timeout):
            return await _fetch(domain, settings, timeout)
    except TimeoutError:
        return Fetched(None, f"policy fetch timed out after {timeout:g}s")
    except aiohttp.ClientConnectorCertificateError as exc:
        return Fetched(None, f"certificate of mta-sts.{domain} not valid: {exc.certificate_error}")
    except aiohttp.ClientSSLError as exc:
        return Fetched(None, f"TLS with mta-sts.{domain} failed: {str(exc)[:200]}")
    except (aiohttp.ClientError, OSError, ssl.SSLError, ValueError) as exc:
        return Fetched(None, f"policy fetch failed: {str(exc)[:200] or type(exc).__name__}")


async def _fetch(domain: str, settings: FetchSettings, timeout: float) -> Fetched:
    connector = aiohttp.TCPConnector(
        ssl=ssl_context(settings.ca_file),
        resolver=_MappedResolver(settings.addresses),
        use_dns_cache=False,
        force_close=True,
    )
    async with (
        aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as session,
        session.get(policy_url(domain), allow_redirects=False) as response,
    ):
        if 300 <= response.status < 400:
            where = response.headers.get("Location", "")[:120]
            return Fetched(
                None,
                f"HTTP {response.status} redirect to {where!r}: not followed "
                "(RFC 8461 3.3 forbids redirects)",
            )
        if response.status != 200:
            return Fetched(None, f"HTTP {response.status} for {policy_url(domain)}")
        media = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if media != "text/plain":
            return Fetched(None, f"media type {media[:60]!r}, not text/plain")
        return await _bounded_body(response)


async def _bounded_body(response: aiohttp.ClientResponse) -> Fetched:
    body = bytearray()
    while chunk := await response.content.read(_CHUNK):
        body += chunk
        if len(body) > MAX_POLICY_BYTES:
            return Fetched(None, f"policy larger than {MAX_POLICY_BYTES} bytes: not read further")
    return Fetched(bytes(body))
