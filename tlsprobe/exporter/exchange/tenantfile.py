"""From a tenant's exports to its tenant file, and the differences from the configuration.

The tenant file is the part of the configuration Exchange Online owns: its accepted domains,
the OnPremises inbound connector's `TlsSenderCertificateName`, the outbound connectors that
deliver to on-premises servers, and one target per smart host (and per recipient domain of an
MX-routed connector). The main configuration names it (`tenants.NAME.exchange_online: FILE`)
and keeps everything typed by hand; `tlsprobe import-exo --write` rewrites the tenant file
whole and never touches the main file, so no comment or key of the user's is lost (a YAML
round trip through PyYAML would drop every comment).
"""

from __future__ import annotations

import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tlsprobe.exporter.exchange.exports import Export, InboundConnector, OutboundConnector
from tlsprobe.probe.names import normalize_name, show

HEADER = (
    "# Written by `tlsprobe import-exo` from tenant {tenant}'s Exchange Online exports.\n"
    "# Rerun the command rather than editing: the next import rewrites this file whole.\n"
)
ONPREM = "OnPremises"


@dataclass(slots=True)
class Plan:
    """The tenant file an export implies, and what was read but not imported (and why)."""

    block: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def plan(export: Export) -> Plan:
    notes = [f'{label}: Ensure = "Absent", not imported' for label in export.absent]
    block: dict[str, Any] = {
        "accepted_domains": list(dict.fromkeys(d.name for d in export.accepted)),
    }
    chosen = _inbound(export.inbound, notes)
    if chosen is not None:
        block["certificate_domain"] = chosen.certificate_name
        block["inbound_connector"] = chosen.name
    outbound = _outbound(export.outbound, notes)
    if outbound:
        block["outbound_connectors"] = [_connector(o) for o in outbound]
    targets = _targets(outbound)
    if targets:
        block["targets"] = targets
    return Plan(block, notes)


def _inbound(connectors: list[InboundConnector], notes: list[str]) -> InboundConnector | None:
    """The enabled OnPremises connector with a certificate name; the others are noted."""
    chosen = None
    for c in connectors:
        what = f"inbound connector {show(c.name)}"
        if _skipped(what, c, notes):
            continue
        if c.certificate_name is None:
            notes.append(f"{what}: no TlsSenderCertificateName (IP-based), not a certificate rule")
        elif chosen is not None:
            notes.append(
                f"{what}: another OnPremises certificate connector; the tenant is judged by "
                f"the first, {show(chosen.name)}"
            )
        else:
            chosen = c
    return chosen


def _outbound(connectors: list[OutboundConnector], notes: list[str]) -> list[OutboundConnector]:
    """The enabled OnPremises connectors that demand TLS; the others are noted."""
    kept = []
    for o in connectors:
        what = f"outbound connector {show(o.name)}"
        if _skipped(what, o, notes):
            continue
        if o.tls_settings is None:
            notes.append(f"{what}: no TlsSettings (TLS not demanded), not imported as a rule")
        else:
            if o.transport_rule_scoped:
                notes.append(f"{what}: used only where a transport rule sends mail to it")
            kept.append(o)
    return kept


def _skipped(what: str, c: InboundConnector | OutboundConnector, notes: list[str]) -> bool:
    """A Partner or disabled connector: reported in `notes`, never a rule."""
    if c.connector_type != ONPREM:
        notes.append(f"{what}: {c.connector_type} connector, reported, not imported as a rule")
    elif not c.enabled:
        notes.append(f"{what}: disabled, not imported as a rule")
    else:
        return False
    return True


def _connector(o: OutboundConnector) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": o.name, "tls_settings": str(o.tls_settings)}
    if o.tls_domain:
        entry["tls_domain"] = o.tls_domain
    if o.use_mx:
        entry["use_mx"] = True
    else:
        entry["smart_hosts"] = list(o.smart_hosts)
    if o.recipient_domains:
        entry["recipient_domains"] = list(o.recipient_domains)
    return entry


def _targets(outbound: list[OutboundConnector]) -> list[dict[str, str]]:
    """A host target per smart host; an mx target per literal recipient domain of an
    MX-routed connector (a `*.domain` or `*` names no MX to look up)."""
    targets: dict[str, dict[str, str]] = {}
    for o in outbound:
        if not o.use_mx:
            for host in o.smart_hosts:
                targets.setdefault(host, {"host": host})
        else:
            for domain in o.recipient_domains:
                if "*" not in domain:
                    targets.setdefault(domain, {"mx": domain})
    return list(targets.values())


def render(tenant: str, block: dict[str, Any]) -> str:
    body = yaml.safe_dump(block, sort_keys=False, default_flow_style=False, allow_unicode=False)
    return HEADER.format(tenant=tenant) + body


# --- differences ---------------------------------------------------------------------------


def differences(current: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What the configuration says that the tenant does not, one line each, stable order."""
    lines: list[str] = []
    old_domains = _names(current.get("accepted_domains"))
    new_domains = _names(new.get("accepted_domains"))
    lines += [f"accepted domain added: {show(d)}" for d in new_domains if d not in old_domains]
    lines += [f"accepted domain removed: {show(d)}" for d in old_domains if d not in new_domains]
    for key, what in (
        ("certificate_domain", "connector certificate domain (TlsSenderCertificateName)"),
        ("inbound_connector", "inbound connector name"),
    ):
        old, now = _text(current.get(key)), _text(new.get(key))
        if (old and old.casefold()) != (now and now.casefold()):
            lines.append(f"{what} changed: {_shown(old)} -> {_shown(now)}")
    old_out = _by_name(current.get("outbound_connectors"))
    new_out = _by_name(new.get("outbound_connectors"))
    lines += [f"outbound connector added: {show(n)}" for n in new_out if n not in old_out]
    lines += [f"outbound connector removed: {show(n)}" for n in old_out if n not in new_out]
    for name, entry in new_out.items():
        before = old_out.get(name)
        if before is None:
            continue
        for key in ("tls_settings", "tls_domain", "use_mx", "smart_hosts", "recipient_domains"):
            if _comparable(before.get(key)) != _comparable(entry.get(key)):
                lines.append(
                    f"outbound connector {show(name)}: {key} changed: "
                    f"{_shown(before.get(key))} -> {_shown(entry.get(key))}"
                )
    return lines


def _names(value: object) -> list[str]:
    items = value if isinstance(value, list) else []
    return list(dict.fromkeys(normalize_name(str(v)) for v in items))


def _text(value: object) -> str | None:
    return (
        None if value is None else normalize_name(str(value)) if "." in str(value) else str(value)
    )


def _by_name(value: object) -> dict[str, dict[str, Any]]:
    items = value if isinstance(value, list) else []
    return {str(i.get("name")): i for i in items if isinstance(i, dict)}


def _comparable(value: object) -> object:
    if isinstance(value, list):
        return sorted(normalize_name(str(v)) for v in value)
    if isinstance(value, str):
        return value.casefold()
    return bool(value) if value is None else value


def _shown(value: object) -> str:
    if value is None or value == []:
        return "(none)"
    if isinstance(value, list):
        return ", ".join(show(str(v)) for v in value)
    return show(str(value))


# --- writing -------------------------------------------------------------------------------


def refuse_to_replace(path: Path, main: Path) -> str | None:
    """Why `--write` must not replace `path` (None: it may): the main configuration, or an
    existing file that is not a tenant file this command wrote (a link, a directory, a file
    without its header), so a wrong `--tenant-file` never overwrites the user's own files."""
    if path.absolute() == main.absolute() or (
        path.exists() and main.exists() and path.samefile(main)
    ):
        return "is the main configuration; the import never rewrites it"
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    if not stat.S_ISREG(mode):
        return "exists and is not a regular file (a link, a directory or a device)"
    marker = HEADER.split("{", 1)[0].encode()
    try:
        with path.open("rb") as handle:
            head = handle.read(len(marker))
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    if head != marker:
        return "exists and was not written by tlsprobe import-exo; move it away or name another"
    return None


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` in one step: a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(path.lstat().st_mode)  # a file made private stays private
    except FileNotFoundError:
        mode = 0o644  # configuration, readable like tlsprobe.yml
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        Path(temp).chmod(mode)
        Path(temp).replace(path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
