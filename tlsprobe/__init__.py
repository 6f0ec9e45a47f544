"""tlsprobe: watch the TLS certificates of SMTP servers that relay through Exchange Online.

The version is read from the installed distribution's metadata, so `pyproject.toml` is its one
source; a source tree that was never installed reports "0+unknown". It is read on first use of
`tlsprobe.__version__` (PEP 562), not at import: `importlib.metadata` (and the `email` package it
loads) costs a short-lived `tlsprobe check` about 10 ms of CPU that only `--version`, the rules'
runbook links and the exporter's build_info need.
"""

from __future__ import annotations

from functools import cache


@cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tlsprobe")
    except PackageNotFoundError:  # pragma: no cover - only in an uninstalled checkout
        return "0+unknown"


def __getattr__(name: str) -> str:
    if name == "__version__":
        return _version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
