"""Verdicts on certificates that could not be read strictly: the `certificate_format` check.

`facts` records what `cryptography` refused as `CertProblem`s and reads those fields
leniently. This module turns the problems of a chain into findings: one `certificate_format`
check naming each problem (critical when strict verifiers refuse such a certificate, a warning
for a legacy string type that is still read and verified), and the `chain_trusted` verdict for
chains the verifier cannot even be given, because a certificate in them does not parse.
"""

from __future__ import annotations

from collections.abc import Sequence

from tlsprobe.model import CertFacts, CertPart, ChainReason, Check, CheckName, Status

CHECK = CheckName.CERTIFICATE_FORMAT
SYMPTOM = (
    "refuses a certificate that strict TLS stacks cannot parse or verify: "
    "the connection fails or the connector does not match"
)
MALFORMED = ChainReason.MALFORMED
"""The chain_trusted reason token for a chain the verifier cannot process."""
_SHOWN = 3
_SUBJECT_SHOWN = 120
"""Characters of a subject quoted in a message: a 60 KB name must not become a 60 KB line."""


def describe(position: int, facts: CertFacts) -> str:
    """`leaf` or `chain certificate N 'subject'`, for messages."""
    if position == 0:
        return "leaf"
    subject = facts.subject
    if len(subject) > _SUBJECT_SHOWN:
        subject = subject[:_SUBJECT_SHOWN] + f"... ({len(subject)} characters)"
    return f"chain certificate {position} '{subject}'"


def check_format(chain: Sequence[CertFacts]) -> Check | None:
    """None when every certificate was read strictly; else the problems, worst first."""
    found = [
        (problem.critical, f"{describe(i, facts)}: {problem.part}: {problem.detail}")
        for i, facts in enumerate(chain)
        for problem in facts.problems
    ]
    if not found:
        return None
    found.sort(key=lambda item: not item[0])
    critical = found[0][0]
    shown = "; ".join(text for _, text in found[:_SHOWN])
    more = f" (and {len(found) - _SHOWN} more)" if len(found) > _SHOWN else ""
    return Check(CHECK, Status.CRITICAL if critical else Status.WARNING, shown + more, SYMPTOM)


def unparsed(chain: Sequence[CertFacts]) -> tuple[int, CertFacts] | None:
    """The first certificate `cryptography` could not load at all, with its position."""
    return next(((i, f) for i, f in enumerate(chain) if f.unreadable(CertPart.ENCODING)), None)


def first_critical(chain: Sequence[CertFacts]) -> str | None:
    """A sentence naming the first critical problem of the chain, or None."""
    for position, facts in enumerate(chain):
        for problem in facts.problems:
            if problem.critical:
                return f"{describe(position, facts)}: {problem.part}: {problem.detail}"
    return None
