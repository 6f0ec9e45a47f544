"""The exporter-toolkit `web-config.yml`: TLS and basic auth for the exporter's HTTP server.

Same keys as Prometheus' exporter-toolkit, so a file that already protects node_exporter protects
tlsprobe too: `tls_server_config` (cert_file, key_file, client_auth_type, client_ca_file,
min_version, max_version), `basic_auth_users` (user: bcrypt hash) and `http_server_config`
(headers). Passwords are checked with bcrypt; a successful check is cached under a keyed
digest, so scrapes do not pay bcrypt's cost each time. An unknown user runs bcrypt against a
dummy hash of the configured cost, so a wrong user name costs what a wrong password costs. At
most `BCRYPT_SLOTS` checks run at once and a check beyond them fails at once: a flood of wrong
passwords then costs two cores' worth of bcrypt, not every worker thread, and scrapes with
cached credentials keep their answers fast. The file is read by the shared bounded reader
(`yamlfile`: size cap, safe loader, duplicate keys refused). Nothing read from the file is ever
echoed in an error message (a YAML error names its line and column only, a duplicate key is not
quoted), because the file holds hashes and, by mistake, sometimes passwords.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import ssl
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt

from tlsprobe.exporter.config.yamlfile import MAX_YAML_BYTES, YamlFileError, read_yaml
from tlsprobe.probe import files
from tlsprobe.probe.x509.bundle import MAX_BUNDLE_BYTES

_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# Python's server side cannot ask for a certificate without verifying it. Nothing here uses
# an unverified certificate, so RequestClientCert is NoClientCert, and RequireAnyClientCert
# (which would have to verify, against no CA, and so refuse every client) is refused at load.
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_UNSUPPORTED_CLIENT_AUTH = {
    "RequireAnyClientCert": "use RequireAndVerifyClientCert with client_ca_file",
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
_BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
_USER_NAME = re.compile(r"[^\s:]{1,128}")
MAX_FILE_BYTES = MAX_YAML_BYTES
_TLS_FILE_BYTES = {
    "cert_file": files.MAX_PEM_BYTES,
    "key_file": files.MAX_PEM_BYTES,
    "client_ca_file": MAX_BUNDLE_BYTES,
}
"""The bound of each file tls_server_config names (read by `tlsprobe.probe.files`)."""
BCRYPT_SLOTS = 2
"""bcrypt checks running at once, process-wide; one more fails at once (401)."""
_slots = threading.BoundedSemaphore(BCRYPT_SLOTS)
# exporter-toolkit accepts only these response headers (and only these values where listed).
_HEADERS: dict[str, frozenset[str] | None] = {
    "strict-transport-security": None,
    "x-content-type-options": frozenset({"nosniff"}),
    "x-frame-options": frozenset({"deny", "sameorigin"}),
    "x-xss-protection": None,
    "content-security-policy": None,
}


class WebConfigError(ValueError):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")


@dataclass(frozen=True)
class WebConfig:
    tls: ssl.SSLContext | None = None
    users: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    headers: Mapping[str, str] = field(default_factory=dict)
    tls_source: str = field(default="", repr=False)
    """Digest of the TLS section and the files it names: tells a reload whether TLS changed."""
    _cache_key: bytes = field(default_factory=lambda: os.urandom(32), repr=False)
    _good: set[bytes] = field(default_factory=set, repr=False, compare=False)
    _dummy: bytes = field(default=b"", repr=False, compare=False)
    """What unknown users are checked against: a hash of the configured users' cost."""

    def __post_init__(self) -> None:
        if self.users and not self._dummy:
            object.__setattr__(self, "_dummy", _dummy_hash(self.users.values()))

    def with_tls(self, tls: ssl.SSLContext | None, tls_source: str) -> WebConfig:
        """This configuration's users and headers with another TLS setting."""
        return WebConfig(tls=tls, users=self.users, headers=self.headers, tls_source=tls_source)

    @property
    def auth_required(self) -> bool:
        return bool(self.users)

    def check_password(self, user: str, password: str) -> bool:
        """bcrypt check with a cache of successes; unknown users run bcrypt on a dummy hash.

        Blocking (tens of milliseconds by design): call it off the event loop.
        """
        if self.check_cached(user, password):
            return True
        hashed = self.users.get(user)
        digest = self._digest(user, password)
        if not _slots.acquire(blocking=False):
            return False  # a flood of checks is under way: refuse rather than queue
        try:
            ok = bcrypt.checkpw(password.encode(), hashed or self._dummy) and hashed is not None
        except ValueError:
            ok = False  # bcrypt refuses passwords over 72 bytes; none can match
        finally:
            _slots.release()
        if ok and len(self._good) < 1024:
            self._good.add(digest)
        return ok

    def check_cached(self, user: str, password: str) -> bool:
        """True when this pair passed bcrypt before: cheap, safe on the event loop."""
        if user not in self.users:
            return False
        digest = self._digest(user, password)
        return any(hmac.compare_digest(digest, d) for d in self._good)

    def _digest(self, user: str, password: str) -> bytes:
        # Length-prefixed, so that no (user, password) pair can collide with another.
        encoded = user.encode()
        message = len(encoded).to_bytes(4, "big") + encoded + password.encode()
        return hmac.new(self._cache_key, message, hashlib.sha256).digest()


def _dummy_hash(hashes: Iterable[bytes]) -> bytes:
    cost = max(int(h[4:6]) for h in hashes)
    return bcrypt.hashpw(b"tlsprobe-dummy", bcrypt.gensalt(rounds=cost))


def load_web_config(path: str | Path) -> WebConfig:
    file = Path(path)
    name = str(file)
    try:
        data = read_yaml(file, max_bytes=MAX_FILE_BYTES) or {}
    except YamlFileError as exc:
        raise WebConfigError(name, _yaml_problem(exc)) from None
    if not isinstance(data, dict):
        raise WebConfigError(name, "must be a mapping")
    _only(data, {"tls_server_config", "basic_auth_users", "http_server_config"}, name)
    base = file.parent
    tls = _tls(data.get("tls_server_config"), base, f"{name}: tls_server_config")
    users = _users(data.get("basic_auth_users"), f"{name}: basic_auth_users")
    headers = _headers(data.get("http_server_config"), f"{name}: http_server_config")
    source = _tls_source(data.get("tls_server_config"), base)
    return WebConfig(tls=tls, users=users, headers=headers, tls_source=source)


def _tls_source(section: Any, base: Path) -> str:
    if section is None:
        return ""
    digest = hashlib.sha256(repr(sorted(section.items())).encode())
    for key, limit in _TLS_FILE_BYTES.items():
        if key in section:
            try:
                digest.update(files.read(base / str(section[key]), limit))
            except files.FileError:
                digest.update(b"unreadable")
    return digest.hexdigest()


def _yaml_problem(exc: YamlFileError) -> str:
    """Where the YAML breaks, without PyYAML's snippet of the line (it may hold a secret)."""
    if not exc.syntax:
        return exc.message
    place = f" at {exc.where}" if exc.where else ""
    return f"not valid YAML{place}: {exc.problem}" if exc.problem else f"not valid YAML{place}"


def _only(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    for number, key in enumerate(data, 1):
        if key not in allowed:
            # Not echoed: a key of this file may be a secret pasted on the wrong line.
            expected = ", ".join(sorted(allowed))
            raise WebConfigError(
                where, f"key number {number} is unknown (expected one of: {expected})"
            )


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
    for name in ("cert_file", "key_file", "client_ca_file", "client_auth_type"):
        if name in section and not isinstance(section[name], str):
            raise WebConfigError(f"{where}.{name}", "must be a string")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _version(section.get("min_version", "TLS12"), f"{where}.min_version")
    if "max_version" in section:
        ctx.maximum_version = _version(section["max_version"], f"{where}.max_version")
        if ctx.maximum_version < ctx.minimum_version:
            raise WebConfigError(where, "max_version is lower than min_version")
    # OpenSSL opens these two by name; they are checked first as every named file is.
    _check_file(base / str(cert), "cert_file", where)
    _check_file(base / str(key), "key_file", where)
    try:
        ctx.load_cert_chain(base / str(cert), base / str(key))
    except (OSError, ssl.SSLError) as exc:
        raise WebConfigError(where, f"cannot load cert_file/key_file: {exc}") from exc
    _client_auth(ctx, section, base, where)
    return ctx


def _client_auth(ctx: ssl.SSLContext, section: dict[str, Any], base: Path, where: str) -> None:
    auth = section.get("client_auth_type", "NoClientCert")
    if auth in _UNSUPPORTED_CLIENT_AUTH:
        hint = _UNSUPPORTED_CLIENT_AUTH[auth]
        raise WebConfigError(f"{where}.client_auth_type", f"{auth} is not supported: {hint}")
    if auth not in _CLIENT_AUTH:
        expected = ", ".join(_CLIENT_AUTH)
        raise WebConfigError(f"{where}.client_auth_type", f"must be one of {expected}")
    ctx.verify_mode = _CLIENT_AUTH[auth]
    if auth in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert"):
        ca = section.get("client_ca_file")
        if not ca:
            raise WebConfigError(where, f"client_ca_file is required with {auth}")
        _check_file(base / str(ca), "client_ca_file", where)
        try:
            ctx.load_verify_locations(base / str(ca))
        except (OSError, ssl.SSLError) as exc:
            raise WebConfigError(where, f"cannot load client_ca_file: {exc}") from exc


def _check_file(path: Path, key: str, where: str) -> None:
    try:
        files.check(path, _TLS_FILE_BYTES[key])
    except files.FileError as exc:
        raise WebConfigError(f"{where}.{key}", str(exc)) from None


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
    for number, (user, hashed) in enumerate(section.items(), 1):
        name = str(user)
        if not _USER_NAME.fullmatch(name):
            # `user password:` makes the password part of the key: never echo such a key.
            raise WebConfigError(
                f"{where} (user number {number})",
                "a user name is one word without spaces or ':' (is a password in the key?)",
            )
        if not isinstance(hashed, str) or not _BCRYPT_HASH.fullmatch(hashed):
            # Never echo the value: it may be a plaintext password typed by mistake.
            raise WebConfigError(f"{where}.{name}", "must be a bcrypt hash ($2a$/$2b$/$2y$)")
        users[name] = hashed.encode()
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
    for name, value in headers.items():
        _check_header(str(name), value, f"{where}.headers")
    return {str(k): v for k, v in headers.items()}


def _check_header(name: str, value: Any, where: str) -> None:
    """exporter-toolkit's list; values are one-line strings (a CR or LF would split the reply)."""
    if name.lower() not in _HEADERS:
        raise WebConfigError(where, f"HTTP header {name!r} can not be configured")
    if not isinstance(value, str) or not value.isprintable():
        raise WebConfigError(f"{where}.{name}", "must be a one-line string")
    allowed = _HEADERS[name.lower()]
    if allowed is not None and value.lower() not in allowed:
        raise WebConfigError(f"{where}.{name}", f"must be one of {', '.join(sorted(allowed))}")
