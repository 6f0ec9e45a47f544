"""Exchange Online exports read into accepted domains and connectors, strictly and boundedly.

Three shapes are read, each told by its content, never by the file name: the JSON of
`ConvertTo-Json` (a list, or one object where PowerShell unrolled a single result; enums as
names or numbers; multi-valued properties as lists, single strings or comma-joined text), the
CSV of `Export-Csv` (a `#TYPE` first line from Windows PowerShell 5 is skipped) and a
Microsoft365DSC configuration (`dsc`). A BOM (UTF-8 or UTF-16, as `Out-File` writes) is
honoured. Each record is classified by its properties (`DomainName`: an accepted domain;
`TlsSenderCertificateName` and friends: an inbound connector; `SmartHosts`, `TlsSettings`: an
outbound connector), unknown properties are ignored, and a missing or malformed one is one
`ExportError` naming the file, the record and the property, never the value.

Every read is bounded: regular files only, `MAX_EXPORT_BYTES` per file, `MAX_RECORDS` records,
`MAX_ITEMS` values per property, `MAX_TEXT` characters per value.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from tlsprobe.exporter.exchange import dsc
from tlsprobe.exporter.exchange.errors import ExportError
from tlsprobe.model import TlsSettings, is_ip_literal
from tlsprobe.probe.names import is_host_name, normalize_name
from tlsprobe.probe.x509 import o365

MAX_EXPORT_BYTES: Final = 8 << 20
MAX_RECORDS: Final = 5000
MAX_ITEMS: Final = 1000
MAX_TEXT: Final = 512

ACCEPTED, INBOUND, OUTBOUND = "accepted domain", "inbound connector", "outbound connector"

DOMAIN_TYPES: Final = {0: "Authoritative", 1: "ExternalRelay", 2: "InternalRelay"}
"""`AcceptedDomainType` (Microsoft.Exchange.Data.Directory.SystemConfiguration) as
`ConvertTo-Json` writes it without `-EnumsAsStrings`: Authoritative, ExternalRelay,
InternalRelay, numbered from 0."""
CONNECTOR_TYPES: Final = {1: "OnPremises", 2: "Partner"}
"""`TenantConnectorType` (Microsoft.Exchange.Data) as a number: `OnPremises = 1`, then
`Partner` (2)."""
TLS_SETTINGS: Final = {
    1: TlsSettings.ENCRYPTION_ONLY,
    2: TlsSettings.CERTIFICATE_VALIDATION,
    4: TlsSettings.DOMAIN_VALIDATION,
}
"""`TlsAuthLevel` (Microsoft.Exchange.Data) as a number: `EncryptionOnly = 1`,
`CertificateValidation` (2), `DomainValidation = 4`."""

_KINDS = (
    (ACCEPTED, ("domainname",)),
    (INBOUND, ("tlssendercertificatename", "restrictdomainstocertificate", "senderipaddresses")),
    (OUTBOUND, ("smarthosts", "tlssettings", "usemxrecord", "recipientdomains", "tlsdomain")),
)
_PART = re.compile(r"[^,\s]+")
"""One value of a multi-valued property written as text: separated by commas or white space."""
_DOTNET = re.compile(r"^(System|Microsoft)\.\S*(`\d|Collections|MultiValuedProperty|\[)|^@\{")
"""What PowerShell writes for a value it did not expand: a .NET collection's type name
(`Export-Csv` of a list), `@{...}` (`ConvertTo-Json` past its `-Depth`)."""


@dataclass(frozen=True, slots=True)
class AcceptedDomain:
    name: str
    domain_type: str
    default: bool = False


@dataclass(frozen=True, slots=True)
class InboundConnector:
    name: str
    connector_type: str
    enabled: bool = True
    certificate_name: str | None = None
    """`TlsSenderCertificateName`, normalized (`*.contoso.com` or a literal)."""
    restrict_domains_to_certificate: bool = False
    require_tls: bool = False
    sender_domains: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class OutboundConnector:
    name: str
    connector_type: str
    enabled: bool = True
    use_mx: bool = False
    smart_hosts: tuple[str, ...] = ()
    recipient_domains: tuple[str, ...] = ()
    tls_settings: TlsSettings | None = None
    tls_domain: str | None = None
    transport_rule_scoped: bool = False


@dataclass(slots=True)
class Export:
    """Everything read from one tenant's exports, in file order."""

    accepted: list[AcceptedDomain] = field(default_factory=list)
    inbound: list[InboundConnector] = field(default_factory=list)
    outbound: list[OutboundConnector] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    """Microsoft365DSC resources with `Ensure = "Absent"`: reported, never imported."""


def read_exports(paths: list[Path]) -> Export:
    """Read every export into one `Export`; the first problem is an ExportError."""
    export = Export()
    for path in paths:
        text = read_text(path)
        stripped = text.lstrip("\ufeff \t\r\n")
        if stripped.startswith(("[", "{")):
            records = _json_records(str(path), stripped)
        elif dsc.looks_like_dsc(stripped):
            records = dsc.records(str(path), stripped, MAX_RECORDS, export.absent)
        else:
            records = _csv_records(str(path), stripped)
        for label, record in records:
            _add(export, Record(str(path), label, record))
    return export


def read_text(path: Path, max_bytes: int = MAX_EXPORT_BYTES) -> str:
    """A regular file's text, at most `max_bytes`, decoded by its BOM (UTF-8 without one)."""
    name = str(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ExportError(name, f"cannot read: {exc.strerror or exc}") from None
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        regular = False
    if not regular:
        os.close(fd)
        raise ExportError(name, "not a regular file")
    with os.fdopen(fd, "rb") as handle:
        raw = handle.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ExportError(name, f"larger than {max_bytes >> 20} MiB; refusing to read it")
    encoding = "utf-8-sig"
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "utf-16"  # Windows PowerShell's Out-File and `>` write UTF-16 with a BOM
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError:
        raise ExportError(name, "not UTF-8 or UTF-16 text") from None


def _json_records(file: str, text: str) -> Iterator[tuple[str, Mapping[str, object]]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExportError(file, f"not JSON (line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise ExportError(file, "JSON nesting is too deep") from None
    items = data if isinstance(data, list) else [data]
    if len(items) > MAX_RECORDS:
        raise ExportError(file, f"more than {MAX_RECORDS} records")
    for index, item in enumerate(items, 1):
        if not isinstance(item, dict):
            raise ExportError(file, "must be an object of properties", f"record {index}")
        yield f"record {index}", item


def _csv_records(file: str, text: str) -> Iterator[tuple[str, Mapping[str, object]]]:
    lines = io.StringIO(text, newline="")
    first = lines.readline()
    if not first.startswith("#TYPE"):
        lines.seek(0)  # PowerShell 7 writes no type line, nor does -NoTypeInformation
    reader = csv.DictReader(lines)
    try:
        for index, row in enumerate(reader, 1):
            if index > MAX_RECORDS:
                raise ExportError(file, f"more than {MAX_RECORDS} records")
            if None in row:
                raise ExportError(file, "more fields than the header names", f"record {index}")
            yield f"record {index}", {k: (v if v != "" else None) for k, v in row.items()}
    except csv.Error as exc:
        raise ExportError(file, f"not CSV (line {reader.line_num}: {exc})") from None
    if reader.fieldnames is None:
        raise ExportError(file, "empty: no header line and no records")


class Record:
    """One record's properties, looked up case-insensitively as PowerShell does."""

    def __init__(self, file: str, label: str, data: Mapping[str, object]) -> None:
        self.file, self.label = file, label
        self.data = {str(k).casefold(): v for k, v in data.items()}

    def error(self, prop: str, message: str) -> ExportError:
        return ExportError(self.file, message, self.label, prop)

    def kind(self) -> str:
        for kind, keys in _KINDS:
            if any(key in self.data for key in keys):
                return kind
        raise self.error(
            "",
            "none of the properties tlsprobe reads (DomainName; TlsSenderCertificateName; "
            "SmartHosts, TlsSettings): export with the Select-Object the README gives",
        )

    def raw(self, prop: str, required: bool = False) -> object:
        value = self.data.get(prop.casefold())
        if value is None and required:
            raise self.error(prop, "missing (export it with the Select-Object the README gives)")
        if isinstance(value, str) and _DOTNET.match(value):
            raise self.error(
                prop,
                "holds a .NET type name, not its values: join multi-valued properties "
                "(@{n='P';e={$_.P -join ','}}) or raise ConvertTo-Json -Depth",
            )
        return value

    def text(self, prop: str, required: bool = False) -> str | None:
        value = _scalar(self.raw(prop, required))
        if value is None:
            if required:
                raise self.error(prop, "missing")
            return None
        if not isinstance(value, str):
            raise self.error(prop, "must be text")
        if len(value) > MAX_TEXT:
            raise self.error(prop, f"longer than {MAX_TEXT} characters")
        return value.strip()

    def flag(self, prop: str, default: bool) -> bool:
        value = self.raw(prop)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower().lstrip("$") in ("true", "false"):
            return value.strip().lower().lstrip("$") == "true"
        raise self.error(prop, "must be True or False")

    def enum(self, prop: str, numbers: Mapping[int, str], required: bool = False) -> str | None:
        value = _scalar(self.raw(prop, required))
        if value is None:
            return None
        names = {n.casefold(): n for n in numbers.values()}
        if isinstance(value, int) and not isinstance(value, bool) and value in numbers:
            return numbers[value]
        if isinstance(value, str) and value.strip().casefold() in names:
            return names[value.strip().casefold()]
        if isinstance(value, str) and value.strip().isdigit() and int(value) in numbers:
            return numbers[int(value)]
        raise self.error(prop, f"must be one of {', '.join(numbers.values())}")

    def names(self, prop: str, check: Callable[[str], str]) -> tuple[str, ...]:
        value = self.raw(prop)
        items: list[object]
        if value is None:
            items = []
        elif isinstance(value, list):
            items = value
        else:
            items = [value]  # ConvertTo-Json writes a one-element list as its element
        out: list[str] = []
        for item in items:
            text = _scalar(item)
            if text is None:
                continue
            if not isinstance(text, str):
                raise self.error(prop, "must be names")
            # Taken one at a time up to the bound: an 8 MiB joined value is never split whole.
            for part in _PART.finditer(text):
                out.append(part.group())
                if len(out) > MAX_ITEMS:
                    raise self.error(prop, f"more than {MAX_ITEMS} values")
        try:
            return tuple(dict.fromkeys(check(_address_space(v)) for v in out))
        except ValueError as exc:
            raise self.error(prop, str(exc)) from None


_NAME_KEYS = ("ipaddresstostring", "address", "hostnamestring", "domain", "value")
"""Where an object `ConvertTo-Json` wrote for a typed value keeps its name, first present and
not null wins: SmtpDomainWithSubdomains `Address` (`*.contoso.com`, where `Domain` drops the
`*.`); SmartHost `Address` (an IPAddress: its `IPAddressToString`) or, for a host name,
`Address: null` and `Domain` (a Hostname: `HostnameString`, or its text past `-Depth`)."""


def _scalar(value: object) -> object:
    """An object PowerShell wrote for a typed value (SmtpDomain, SmartHost): its name."""
    for _ in range(4):
        if not isinstance(value, dict):
            return value
        lowered = {str(k).casefold(): v for k, v in value.items()}
        value = next((lowered[k] for k in _NAME_KEYS if lowered.get(k) is not None), None)
    return value


def _address_space(value: str) -> str:
    """`smtp:*.contoso.com;1` (an AddressSpace as Exchange writes it) -> `*.contoso.com`."""
    if value.lower().startswith("smtp:"):
        value = value[5:]
    return value.split(";", 1)[0]


def domain(value: str) -> str:
    name = normalize_name(value)
    if not is_host_name(name):
        raise ValueError("not a valid domain name")
    return name


def domain_pattern(value: str) -> str:
    """A domain or `*.domain` (recipient and sender domains; `*` alone for every domain)."""
    if value == "*":
        return value
    try:
        return str(o365.ConnectorPattern.parse(value))
    except o365.ConnectorPatternError:
        raise ValueError("not a valid domain or *.domain") from None


def smart_host(value: str) -> str:
    bare = value.strip("[]")
    if is_ip_literal(bare):
        return bare
    return domain(value)


def _add(export: Export, rec: Record) -> None:
    kind = rec.kind()
    if kind == ACCEPTED:
        name = rec.text("DomainName", required=True) or ""
        export.accepted.append(
            AcceptedDomain(
                name=_one(rec, "DomainName", name, domain),
                domain_type=rec.enum("DomainType", DOMAIN_TYPES, required=True) or "",
                default=rec.flag("Default", False),
            )
        )
    elif kind == INBOUND:
        certificate = rec.text("TlsSenderCertificateName")
        export.inbound.append(
            InboundConnector(
                name=rec.text("Name", required=True) or "",
                connector_type=rec.enum("ConnectorType", CONNECTOR_TYPES, required=True) or "",
                enabled=rec.flag("Enabled", True),
                certificate_name=(
                    _one(rec, "TlsSenderCertificateName", certificate, _pattern)
                    if certificate
                    else None
                ),
                restrict_domains_to_certificate=rec.flag("RestrictDomainsToCertificate", False),
                require_tls=rec.flag("RequireTls", False),
                sender_domains=rec.names("SenderDomains", domain_pattern),
            )
        )
    else:
        tls_domain = rec.text("TlsDomain")
        settings = rec.enum("TlsSettings", {k: v.value for k, v in TLS_SETTINGS.items()})
        export.outbound.append(
            OutboundConnector(
                name=rec.text("Name", required=True) or "",
                connector_type=rec.enum("ConnectorType", CONNECTOR_TYPES, required=True) or "",
                enabled=rec.flag("Enabled", True),
                use_mx=rec.flag("UseMXRecord", False),
                smart_hosts=rec.names("SmartHosts", smart_host),
                recipient_domains=rec.names("RecipientDomains", domain_pattern),
                tls_settings=TlsSettings(settings) if settings else None,
                tls_domain=_one(rec, "TlsDomain", tls_domain, _pattern) if tls_domain else None,
                transport_rule_scoped=rec.flag("IsTransportRuleScoped", False),
            )
        )


def _pattern(value: str) -> str:
    try:
        return str(o365.ConnectorPattern.parse(value))
    except o365.ConnectorPatternError:
        raise ValueError("not a valid name or *.domain") from None


def _one(rec: Record, prop: str, value: str, check: Callable[[str], str]) -> str:
    try:
        return check(_address_space(value))
    except ValueError as exc:
        raise rec.error(prop, str(exc)) from None
