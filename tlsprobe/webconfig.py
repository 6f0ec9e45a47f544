"""The exporter-toolkit `web-config.yml`: TLS and basic auth for the exporter's HTTP server.

Same keys as Prometheus' exporter-toolkit, so a file that already protects node_exporter protects
tlsprobe too: `tls_server_config` (cert_file, key_file, client_auth_type, client_ca_file,
min_version, max_version), `basic_auth_users` (user: bcrypt hash) and `http_server_config`
(headers). Passwords are checked with bcrypt; a successful check is cached under a keyed
digest, so scrapes do not pay bcrypt's cost each time, and unknown users cost the same as known
ones.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml

_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_TLS_KEYS = {
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
    "cipher_suites",
    "prefer_server_cipher_suites",
    "curve_preferences",
}
# A fixed hash to check unknown users against, so a wrong user name costs what a wrong
# password costs (no user enumeration by timing).
_DUMMY_HASH = bcrypt.hashpw(b"tlsprobe-dummy", bcrypt.gensalt(rounds=10))


class WebConfigError(ValueError):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")


@dataclass(frozen=True)
class WebConfig:
    tls: ssl.SSLContext | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    _cache_key: bytes = field(default_factory=lambda: os.urandom(32), repr=False)
    _good: set[bytes] = field(default_factory=set, repr=False, compare=False)

    @property
    def auth_required(self) -> bool:
        return bool(self.users)

    def check_password(self, user: str, password: str) -> bool:
        """bcrypt check with a cache of successes; unknown users run bcrypt on a dummy hash."""
        hashed = self.users.get(user)
        digest = hmac.new(self._cache_key, f"{user}\0{password}".encode(), hashlib.sha256).digest()
        if hashed is not None and any(hmac.compare_digest(digest, d) for d in self._good):
            return True
        try:
            ok = bcrypt.checkpw(password.encode(), hashed or _DUMMY_HASH) and hashed is not None
        except ValueError:
            ok = False
        if ok and len(self._good) < 1024:
            self._good.add(digest)
        return ok


def load_web_config(path: str | Path) -> WebConfig:
    file = Path(path)
    name = str(file)
    try:
        text = file.read_text()
    except OSError as exc:
        raise WebConfigError(name, f"cannot read: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise WebConfigError(name, f"not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise WebConfigError(name, "must be a mapping")
    _only(data, {"tls_server_config", "basic_auth_users", "http_server_config"}, name)
    base = file.parent
    tls = _tls(data.get("tls_server_config"), base, f"{name}: tls_server_config")
    users = _users(data.get("basic_auth_users"), f"{name}: basic_auth_users")
    headers = _headers(data.get("http_server_config"), f"{name}: http_server_config")
    return WebConfig(tls=tls, users=users, headers=headers)


def _only(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    for key in data:
        if key not in allowed:
            expected = ", ".join(sorted(allowed))
            raise WebConfigError(where, f"unknown key {key!r} (expected one of: {expected})")


def _tls(section: Any, base: Path, where: str) -> ssl.SSLContext | None:
    if section is None:
        return None
    if not isinstance(section, dict):
        raise WebConfigError(where, "must be a mapping")
    _only(section, _TLS_KEYS, where)
    if section.get("cipher_suites"):
        raise WebConfigError(where, "cipher_suites: not supported (OpenSSL's defaults are used)")
    cert, key = section.get("cert_file"), section.get("key_file")
    if not cert or not key:
        raise WebConfigError(where, "cert_file and key_file are both required")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _version(section.get("min_version", "TLS12"), f"{where}.min_version")
    if "max_version" in section:
        ctx.maximum_version = _version(section["max_version"], f"{where}.max_version")
    try:
        ctx.load_cert_chain(base / str(cert), base / str(key))
    except (OSError, ssl.SSLError) as exc:
        raise WebConfigError(where, f"cannot load cert_file/key_file: {exc}") from exc
    auth = section.get("client_auth_type", "NoClientCert")
    if auth not in _CLIENT_AUTH:
        raise WebConfigError(f"{where}.client_auth_type", f"unknown value {auth!r}")
    ctx.verify_mode = _CLIENT_AUTH[auth]
    if auth in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert"):
        ca = section.get("client_ca_file")
        if not ca:
            raise WebConfigError(where, f"client_ca_file is required with {auth}")
        try:
            ctx.load_verify_locations(base / str(ca))
        except (OSError, ssl.SSLError) as exc:
            raise WebConfigError(where, f"cannot load client_ca_file: {exc}") from exc
    return ctx


def _version(value: Any, where: str) -> ssl.TLSVersion:
    if value not in _TLS_VERSIONS:
        raise WebConfigError(where, f"must be one of {', '.join(_TLS_VERSIONS)}")
    return _TLS_VERSIONS[value]


def _users(section: Any, where: str) -> dict[str, bytes]:
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise WebConfigError(where, "must be a mapping of user name to bcrypt hash")
    users: dict[str, bytes] = {}
    for user, hashed in section.items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            # Never echo the value: it may be a plaintext password typed by mistake.
            raise WebConfigError(f"{where}.{user}", "must be a bcrypt hash ($2a$/$2b$/$2y$)")
        users[str(user)] = hashed.encode()
    return users


def _headers(section: Any, where: str) -> dict[str, str]:
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise WebConfigError(where, "must be a mapping")
    _only(section, {"headers", "http2"}, where)
    headers = section.get("headers") or {}
    if not isinstance(headers, dict):
        raise WebConfigError(f"{where}.headers", "must be a mapping")
    return {str(k): str(v) for k, v in headers.items()}
