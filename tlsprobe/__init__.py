"""tlsprobe: watch the TLS certificates of SMTP servers that relay through Exchange Online.

The version is read from the installed distribution's metadata, so `pyproject.toml` is its one
source; a source tree that was never installed reports "0+unknown".
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tlsprobe")
except PackageNotFoundError:  # pragma: no cover - only in an uninstalled checkout
    __version__ = "0+unknown"
