"""Which mail server answered, from its banner and EHLO reply: Exchange, Postfix, Exim or unknown.

The human report ends with the line that installs the certificate, and that line differs per
server: Exchange's `Set-SendConnector -TlsCertificateName`, Postfix's `smtp_tls_chain_files`,
Exim's `tls_certificate`. Servers name themselves in the greeting by default (`ESMTP Postfix`,
`ESMTP Exim 4.97`, `Microsoft ESMTP MAIL Service`), and Exchange also lists its own EHLO
keywords. A banner an administrator changed says nothing, and then every line is shown. Pure
function of the transcript lines the SMTP client kept.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable


class MailServer(enum.StrEnum):
    EXCHANGE = "exchange"
    POSTFIX = "postfix"
    EXIM = "exim"
    UNKNOWN = "unknown"


_SIGNS: tuple[tuple[MailServer, re.Pattern[str]], ...] = (
    (
        MailServer.EXCHANGE,
        re.compile(
            r"Microsoft ESMTP MAIL Service|Microsoft Exchange|\b(X-EXPS|XEXCH50|X-ANONYMOUSTLS|"
            r"XRDST|X-MS-EXCHANGE)\b",
            re.IGNORECASE,
        ),
    ),
    (MailServer.POSTFIX, re.compile(r"\bPostfix\b", re.IGNORECASE)),
    (MailServer.EXIM, re.compile(r"\bExim\b", re.IGNORECASE)),
)


def identify(transcript: Iterable[str]) -> MailServer:
    """The server the replies (`S: ` lines) name; UNKNOWN when none or several do."""
    replies = [line for line in transcript if line.startswith("S: ")]
    found = {server for server, sign in _SIGNS if any(sign.search(line) for line in replies)}
    return found.pop() if len(found) == 1 else MailServer.UNKNOWN
