"""DNS policy findings (DANE): the resolver's DNSSEC verdict, TLSA records and their match."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class DnssecStatus(enum.StrEnum):
    """What a validating resolver said about an answer (RFC 4035 terms, Postfix style)."""

    SECURE = "secure"
    """The resolver set the AD bit: the answer validated."""
    INSECURE = "insecure"
    """No AD bit: the zone is unsigned (or the resolver does not validate)."""
    BOGUS = "bogus"
    """SERVFAIL from the validating resolver: signatures failed (a sender defers the mail)."""
    FAILED = "failed"
    """No answer at all (timeout, unreachable resolver): nothing could be judged."""


class TlsaMatch(enum.StrEnum):
    """How one TLSA record relates to the chain served."""

    MATCHED = "matched"
    NEXT_KEY = "next_key"
    """A `3 1 x` record that matches no served key: the staged next key of a rollover."""
    NO_MATCH = "no_match"
    UNUSABLE = "unusable"
    """Usage 0/1 (PKIX, unusable for SMTP), unknown parameters, or malformed data."""


@dataclass(frozen=True, slots=True, order=True)
class Tlsa:
    """One TLSA record (RFC 6698): certificate usage, selector, matching type, data."""

    usage: int
    selector: int
    mtype: int
    data: bytes

    @property
    def text(self) -> str:
        """Presentation form, `3 1 1 ab12...`, as in a zone file."""
        return f"{self.usage} {self.selector} {self.mtype} {self.data.hex() or '-'}"


@dataclass(frozen=True, slots=True)
class TlsaVerdict:
    record: Tlsa
    match: TlsaMatch
    note: str
    """Why: which certificate matched, or why the record is unusable."""


@dataclass(frozen=True, slots=True)
class DaneFindings:
    """The TLSA lookup of one endpoint and each record's verdict against the chain served."""

    name: str
    """The TLSA owner asked (`_25._tcp.mx.example`)."""
    status: DnssecStatus
    """Of the TLSA answer (or of the denial of existence when there are no records)."""
    mx_status: DnssecStatus | None
    """Of the MX lookup that named this host; None when the host was configured directly."""
    records: tuple[TlsaVerdict, ...]
    detail: str = ""
    """The resolver's words on a failure (extended DNS error when one was given)."""

    @property
    def applicable(self) -> bool:
        """DANE applies: TLSA records exist (judged or not), or the answer is bogus (validating
        senders then defer: a bogus answer is no denial of existence)."""
        return bool(self.records) or self.status is DnssecStatus.BOGUS
