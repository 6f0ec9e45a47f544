"""The exporter's log: one logfmt line per event on stderr, for the `tlsprobe` loggers."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any


class LogfmtFormatter(logging.Formatter):
    """One line per event: `ts=... level=... msg="..." key=value ...` (logfmt)."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields.update(getattr(record, "fields", {}))
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in fields.items())


def _logfmt_value(value: Any) -> str:
    text = str(value)
    if text and all(c.isalnum() or c in "-._:/@+," for c in text):
        return text
    return json.dumps(text)


def setup_logging(level: str = "info") -> None:
    """logfmt lines on stderr for the `tlsprobe` loggers.

    Propagation stays on: the command line configures no root handler, so nothing is logged
    twice, and an embedding program (or pytest's caplog) still sees the records.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    package = logging.getLogger("tlsprobe")
    package.handlers[:] = [handler]
    package.setLevel(level.upper())
