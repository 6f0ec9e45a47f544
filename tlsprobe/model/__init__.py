"""Frozen result types and the closed enums that cross module boundaries.

Everything a probe learns is expressed here as immutable values: the endpoint that was probed
(`Endpoint`), what the transport captured (`Capture`), the parsed facts of each certificate
(`CertFacts`), the verdicts (`Check`) and the whole `ProbeResult`.  Failure text never becomes a
metric label: only the `Reason` tokens do, and they are a closed set.

The package re-exports every public name, so `from tlsprobe.model import X` is the one way in;
its modules are `enums` (closed vocabularies), `endpoint` (what is probed, host[:port]),
`certs` (certificate facts), `dane` (DNS policy findings) and `result` (capture, checks,
`ProbeResult`, the Exchange Online readiness rule). It imports nothing else of the project.
"""

from tlsprobe.model.certs import (
    UNREADABLE,
    UNREADABLE_TIME,
    CertFacts,
    CertPart,
    CertProblem,
    readable_time,
)
from tlsprobe.model.dane import DaneFindings, DnssecStatus, Tlsa, TlsaMatch, TlsaVerdict
from tlsprobe.model.endpoint import (
    ConnectorRef,
    Endpoint,
    EndpointKey,
    HostPortError,
    OutboundRule,
    Policy,
    is_ip_literal,
    parse_host_port,
)
from tlsprobe.model.enums import (
    CHECK_NAMES,
    IMPLICIT_TLS_PORT,
    PHASES,
    TRANSIENT_REASONS,
    CanaryReason,
    ChainReason,
    ChangeClass,
    ChangeReason,
    CheckName,
    Mode,
    Phase,
    Reason,
    Status,
    TlsSettings,
)
from tlsprobe.model.result import (
    O365_RULES,
    Capture,
    Check,
    ProbeError,
    ProbeResult,
    TlsInfo,
    o365_ready,
    overall_status,
)

__all__ = [
    "CHECK_NAMES",
    "IMPLICIT_TLS_PORT",
    "O365_RULES",
    "PHASES",
    "TRANSIENT_REASONS",
    "UNREADABLE",
    "UNREADABLE_TIME",
    "CanaryReason",
    "Capture",
    "CertFacts",
    "CertPart",
    "CertProblem",
    "ChainReason",
    "ChangeClass",
    "ChangeReason",
    "Check",
    "CheckName",
    "ConnectorRef",
    "DaneFindings",
    "DnssecStatus",
    "Endpoint",
    "EndpointKey",
    "HostPortError",
    "Mode",
    "OutboundRule",
    "Phase",
    "Policy",
    "ProbeError",
    "ProbeResult",
    "Reason",
    "Status",
    "TlsInfo",
    "TlsSettings",
    "Tlsa",
    "TlsaMatch",
    "TlsaVerdict",
    "is_ip_literal",
    "o365_ready",
    "overall_status",
    "parse_host_port",
    "readable_time",
]
