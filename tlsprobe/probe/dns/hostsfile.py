"""The hosts file (`/etc/hosts` format), read the way the system resolver reads it.

`tlsprobe check` resolves a host through the system resolver (`getaddrinfo`), which consults
the hosts file before DNS; the exporter resolves through dnspython, which never reads it. So
that a configured host that `check` reaches is reached by `serve` too, discovery asks this
file first for configured hosts (MX hosts come from DNS only, as senders resolve them). The
file is read at most `MAX_BYTES` (the rest is ignored), reread when its size or modification
time changes, and a file that is missing, unreadable or not a regular file is empty: a lookup
never raises.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from tlsprobe.probe import files

MAX_BYTES = 1024 * 1024
DEFAULT_PATH = Path("/etc/hosts")


class HostsFile:
    def __init__(self, path: Path = DEFAULT_PATH) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._names: dict[str, tuple[str, ...]] = {}

    def lookup(self, name: str) -> tuple[str, ...]:
        """The addresses the file gives `name` (IPv4 first, each once, in file order)."""
        self._refresh()
        return self._names.get(name.strip().lower().rstrip("."), ())

    def _refresh(self) -> None:
        try:
            info = self.path.stat()
        except OSError:
            self._seen, self._names = None, {}
            return
        seen = (info.st_size, info.st_mtime_ns)
        if seen != self._seen:
            self._seen = seen
            self._names = parse(_read(self.path))


def _read(path: Path) -> str:
    """At most MAX_BYTES of a regular file; "" for anything else (a FIFO, a device: the one
    reader of named files opens without blocking and refuses them, so nothing waits on a
    writer or reads forever)."""
    try:
        return files.read_head(path, MAX_BYTES).decode("utf-8", "replace")
    except files.FileError:
        return ""


def parse(text: str) -> dict[str, tuple[str, ...]]:
    """`address name [aliases...]` lines; comments, bad addresses and zone ids are skipped."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        try:
            address = str(ipaddress.ip_address(fields[0]))
        except ValueError:
            continue
        for name in fields[1:]:
            addresses = found.setdefault(name.lower().rstrip("."), [])
            if address not in addresses:
                addresses.append(address)
    return {
        name: tuple(sorted(addresses, key=lambda a: ":" in a)) for name, addresses in found.items()
    }
