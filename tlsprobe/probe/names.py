"""Host names and addresses: the one place that says what a valid name is and how one is shown.

Every module that accepts a name (the configuration, the `/probe` allowlist, the connector
pattern, the SMTP client's EHLO argument, the command line) asks here, so they cannot disagree.
A name is first normalized (`normalize_name`: lower case, A-labels, no trailing dot) and then
judged by one rule (`is_host_name`: LDH labels of 1-63 characters, 253 in all, the last label
not all digits so that no dotted quad passes for a name).  `show` quotes any value for a
one-line message, `host_port` writes an address with its port as a URL would.
"""

from __future__ import annotations

import encodings.idna
import re
from typing import Final

from tlsprobe.model import is_ip_literal

MAX_NAME: Final = 253
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_MAX_SHOWN_CHARS = 80
_LITERAL_HINT = ": write [192.0.2.1] or [IPv6:2001:db8::1]"
_NOT_A_NAME = " is not a host name or address literal"


def normalize_name(name: str) -> str:
    """Lower-case ASCII form of a DNS name: one trailing dot stripped, U-labels as A-labels.

    A name that cannot be converted (an over-long label, an empty label beside a non-ASCII
    one) comes back merely lower-cased, so it still compares equal to itself and never to a
    well-formed name.
    """
    lowered = name.lower()
    if lowered.endswith("."):
        lowered = lowered[:-1]
    if lowered.isascii():
        return lowered
    try:
        labels = [_to_a_label(label) for label in lowered.split(".")]
    except UnicodeError:
        return lowered
    return ".".join(labels)


def _to_a_label(label: str) -> str:
    if label.isascii():
        return label
    # IDNA 2003 ToASCII (what Python's "idna" codec does): nameprep folds case and width.
    return encodings.idna.ToASCII(label).decode("ascii").lower()


def is_host_name(name: str) -> bool:
    """A normalized name made of LDH labels (letters, digits, inner hyphens; 1-63 characters),
    at most 253 in all, whose last label is not all digits.  Underscores are refused: every
    name here is a host or a mail domain, never a service label."""
    labels = name.split(".")
    return (
        0 < len(name) <= MAX_NAME
        and all(_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()
    )


class EhloNameError(ValueError):
    """Neither a host name nor an RFC 5321 address literal; `problem` follows the quoted name."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"ehlo_name {show(name)}{problem}")
        self.problem = problem


def check_ehlo_name(name: str) -> None:
    """Refuse anything but a host name (any case) or an address literal as given, so that no
    value can inject a line into the SMTP dialogue.  `[192.0.2.1]`, `[IPv6:2001:db8::1]`."""
    if name.startswith("[") and name.endswith("]"):
        inner = name[1:-1]
        tagged = inner[:5].lower() == "ipv6:"
        address = inner[5:] if tagged else inner
        if not is_ip_literal(address) or tagged != (":" in address):
            raise EhloNameError(name, _LITERAL_HINT)
    elif not is_host_name(name.lower()):
        raise EhloNameError(name, _NOT_A_NAME)


def ehlo_name(text: str) -> str:
    """The EHLO argument a configured or typed value stands for: a host name normalized, or an
    address literal as written; EhloNameError otherwise."""
    text = text.strip()
    literal = text.startswith("[") and text.endswith("]")
    value = text if literal else normalize_name(text)
    try:
        check_ehlo_name(value)
    except EhloNameError as exc:
        raise EhloNameError(text, exc.problem) from None
    return value


def host_port(host: str, port: int) -> str:
    """`host:port`, with an IPv6 address in brackets: `[2001:db8::1]:25`."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def show(value: object) -> str:
    """Quote a value for a one-line message: escape unprintables, cut long text."""
    text = value if isinstance(value, str) else repr(value)
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    if len(text) > _MAX_SHOWN_CHARS:
        text = text[: _MAX_SHOWN_CHARS - 3] + "..."
    return f"'{text}'"
