"""Addresses of the exporter's own pages, as users (and alert links) reach them.

`web.external_url` follows Prometheus' `--web.external-url` convention: the URL under which the
exporter is reachable from outside (typically a reverse proxy's). The exporter itself keeps
serving at `/`; the proxy strips any path prefix. Without it, links use this host's name and
the listening port, as Prometheus does. The detail view of one endpoint is addressed by its five
labels, that of a sender by its two (tenant, sender), so an alert can build the link from its
own labels.
"""

from __future__ import annotations

import re
import socket
import urllib.parse
from collections.abc import Sequence

DETAIL_PATH = "/endpoint"
ENDPOINT_PARAMS = ("tenant", "target", "host", "address", "port")
SENDER_PATH = "/sender"
SENDER_PARAMS = ("tenant", "sender")


def parse_external_url(text: str) -> str:
    """An absolute http(s) URL without query or fragment; returned without a trailing slash."""
    parts = urllib.parse.urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            "must be an absolute http:// or https:// URL, e.g. https://tlsprobe.example.com"
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("must not carry a query, a fragment or credentials")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def default_external_url(port: int, *, tls: bool) -> str:
    """What Prometheus would assume: this host's name and the listening port."""
    host = socket.gethostname() or "localhost"
    return f"{'https' if tls else 'http'}://{host}:{port}"


_PLAIN = re.compile(r"[A-Za-z0-9._-]*\Z")


def detail_query(labels: Sequence[str]) -> str:
    """The query string of the detail view for (tenant, target, host, address, port)."""
    # Most values need no quoting; skipping quote_plus for them makes a status page of
    # 18,000 rows several times cheaper.
    return "&".join(
        f"{name}={value if _PLAIN.match(value) else urllib.parse.quote_plus(value)}"
        for name, value in zip(ENDPOINT_PARAMS, labels, strict=True)
    )


def detail_path(labels: Sequence[str]) -> str:
    return f"{DETAIL_PATH}?{detail_query(labels)}"


def sender_path(tenant: str, sender: str) -> str:
    """The detail view of one configured sender (what the sender alerts link to)."""
    return f"{SENDER_PATH}?" + urllib.parse.urlencode({"tenant": tenant, "sender": sender})


def probe_debug_path(tenant: str, target: str) -> str:
    return "/probe?" + urllib.parse.urlencode({"target": target, "tenant": tenant, "debug": "true"})
