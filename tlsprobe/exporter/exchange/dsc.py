"""Microsoft365DSC configurations: the `EXOAcceptedDomain`, `EXOInboundConnector` and
`EXOOutboundConnector` resource blocks of an exported `.ps1`, read as property maps.

Not a PowerShell interpreter: a resource block is `EXOInboundConnector "title" { Key = value
... }`, and a value is a quoted string, `$True`/`$False`, a number, or `@(...)` of strings.
Anything else (a `$ConfigurationData...` credential, a hashtable) is skipped: the resource
properties tlsprobe reads are never of that kind. A block's `Identity` becomes the `Name` of a
connector and the `DomainName` of an accepted domain, so the records read like the cmdlets'.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

from tlsprobe.exporter.exchange.errors import ExportError

RESOURCES = ("EXOAcceptedDomain", "EXOInboundConnector", "EXOOutboundConnector")
_HEAD = re.compile(
    r"\b(EXOAcceptedDomain|EXOInboundConnector|EXOOutboundConnector)\s+"
    r"(\"(?:[^\"`]|`.|\"\")*\"|'(?:[^']|'')*'|[\w.-]+)\s*\{",
    re.IGNORECASE,
)
_TOKEN = re.compile(
    r"""\s+|\#[^\n]*|<\#.*?\#>
    |(?P<str>"(?:[^"`]|`.|"")*"|'(?:[^']|'')*')
    |(?P<var>\$[\w.:]+)
    |(?P<num>-?\d+(?:\.\d+)?)
    |(?P<word>[A-Za-z_][\w.-]*)
    |(?P<punct>@\(|@\{|[(){}=;,])
    |(?P<other>.)""",
    re.VERBOSE | re.DOTALL,
)
MAX_BLOCK = 1 << 16
"""Characters of one resource block at most."""


def looks_like_dsc(text: str) -> bool:
    return _HEAD.search(text) is not None


def records(
    file: str, text: str, max_records: int, absent: list[str]
) -> Iterator[tuple[str, Mapping[str, object]]]:
    """Each present resource block as a property map; `Ensure = "Absent"` ones go to
    `absent` (by resource and block number)."""
    counts = dict.fromkeys(RESOURCES, 0)
    total = 0
    position = 0
    while (head := _HEAD.search(text, position)) is not None:
        resource = next(r for r in RESOURCES if r.lower() == head.group(1).lower())
        counts[resource] += 1
        total += 1
        if total > max_records:
            raise ExportError(file, f"more than {max_records} resource blocks")
        label = f"{resource} block {counts[resource]}"
        # The next block starts after this one's `}`: a resource written inside a value
        # (a Comment quoting one) is text, not a block.
        props, position = _block(file, label, text, head.end())
        if str(props.get("ensure", "Present")).casefold() == "absent":
            absent.append(label)
            continue
        identity = props.pop("identity", None)
        if identity is not None:
            key = "domainname" if resource == "EXOAcceptedDomain" else "name"
            props.setdefault(key, identity)
        if resource == "EXOOutboundConnector":
            props.setdefault("smarthosts", None)  # classifies it even with none listed
        elif resource == "EXOInboundConnector":
            props.setdefault("tlssendercertificatename", None)
        yield label, props


def _block(file: str, label: str, text: str, start: int) -> tuple[dict[str, object], int]:
    """Parse `Key = value` pairs from `start` (just after `{`) to the matching `}`; the
    properties and the position after that `}`."""
    where = [start]
    tokens = _tokens(text, start, file, label, where)
    props: dict[str, object] = {}
    for kind, value in tokens:
        if kind == "punct" and value == "}":
            return props, where[0]
        if kind == "punct" and value == ";":
            continue
        if kind != "word":
            raise ExportError(file, "expected a property name", label)
        eq = next(tokens, ("", ""))
        if eq != ("punct", "="):
            raise ExportError(file, "expected '=' after the property name", label, value)
        props[value.casefold()] = _value(tokens, file, label, value)
    raise ExportError(file, "the block has no closing '}'", label)


def _value(tokens: Iterator[tuple[str, str]], file: str, label: str, prop: str) -> object:
    kind, value = next(tokens, ("", ""))
    if kind == "str":
        return _unquote(value)
    if kind == "num":
        return float(value) if "." in value else int(value)
    if kind == "var":
        lowered = value.lower()
        if lowered in ("$true", "$false"):
            return lowered == "$true"
        if lowered == "$null":
            return None
        return _Skipped()  # $ConfigurationData.NonNodeData..., $Credscredential
    if (kind, value) == ("punct", "@("):
        return _array(tokens, file, label, prop)
    if (kind, value) == ("punct", "@{"):
        _skip_nested(tokens, "}")
        return _Skipped()
    raise ExportError(file, "a value tlsprobe cannot read", label, prop)


def _array(tokens: Iterator[tuple[str, str]], file: str, label: str, prop: str) -> list[object]:
    items: list[object] = []
    for kind, value in tokens:
        if (kind, value) == ("punct", ")"):
            return items
        if (kind, value) == ("punct", ","):
            continue
        if kind == "str":
            items.append(_unquote(value))
        elif kind == "num":
            items.append(value)
        else:
            raise ExportError(file, "an array of strings was expected", label, prop)
    raise ExportError(file, "the array has no closing ')'", label, prop)


def _skip_nested(tokens: Iterator[tuple[str, str]], closing: str) -> None:
    depth = 1
    for kind, value in tokens:
        if kind == "punct" and value in ("{", "@{", "(", "@("):
            depth += 1
        elif kind == "punct" and value in ("}", ")"):
            depth -= 1
            if depth == 0:
                return


class _Skipped:
    """A value tlsprobe does not read (a variable, a hashtable); ignored like any unknown
    property, and refused where a property tlsprobe reads holds it."""

    def __repr__(self) -> str:
        return "(a PowerShell expression)"


def _tokens(
    text: str, start: int, file: str, label: str, where: list[int]
) -> Iterator[tuple[str, str]]:
    """The block's tokens; `where[0]` is kept at the end of the last one yielded."""
    end = min(len(text), start + MAX_BLOCK)
    position = start
    while position < end:
        match = _TOKEN.match(text, position)
        if match is None:  # pragma: no cover - `other` matches any character
            break
        position = where[0] = match.end()
        kind = match.lastgroup
        if kind is None:
            continue  # whitespace or a comment
        if kind == "other":
            raise ExportError(file, "unexpected text in the resource block", label)
        yield kind, match.group()
    raise ExportError(file, f"the block is longer than {MAX_BLOCK} characters or unclosed", label)


def _unquote(token: str) -> str:
    body = token[1:-1]
    if token.startswith("'"):
        return body.replace("''", "'")
    body = body.replace('""', '"')
    return re.sub(
        r"`(.)", lambda m: {"n": "\n", "t": "\t", "0": ""}.get(m.group(1), m.group(1)), body
    )
