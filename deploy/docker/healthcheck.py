#!/usr/bin/env python3
"""Container health check: is the exporter's HTTP server answering?

Docker runs this as the image's HEALTHCHECK (the slim base has no curl).  It asks
TLSPROBE_HEALTHCHECK_URL (default http://127.0.0.1:9825/-/healthy) and exits 0 when the server
answers 2xx, or 401 (basic auth is configured: the server is alive, it only wants a password),
1 otherwise.  Liveness only: whether the probes themselves succeed is the metrics' business.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:9825/-/healthy"
TIMEOUT_SECONDS = 4.0


def check(url: str, timeout: float = TIMEOUT_SECONDS) -> tuple[bool, str]:
    """Ask `url` once; (healthy, what happened)."""
    if not url.startswith(("http://", "https://")):
        return False, f"{url!r}: only http:// and https:// URLs are checked"
    # The exporter checks itself over loopback; its certificate names the public host name,
    # not 127.0.0.1, so verifying it here would only ever fail.
    context = ssl._create_unverified_context()  # noqa: S323
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:  # noqa: S310
            return True, f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return exc.code == 401, f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return False, str(exc)


def main() -> int:
    url = os.environ.get("TLSPROBE_HEALTHCHECK_URL") or DEFAULT_URL
    healthy, detail = check(url)
    print(f"{url}: {detail}", file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
