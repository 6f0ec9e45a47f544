"""The probe outcome log: one line when an endpoint's outcome changes, not one per probe.

An outcome is the status, the failure reason, the leaf and the failing checks; the line says
what it became (logfmt fields: the endpoint's labels, status, reason, failing checks, the
leaf's fingerprint and notAfter). One entry per endpoint published, forgotten when the
endpoint leaves, so the table is bounded by the endpoints probed.
"""

from __future__ import annotations

import logging

from tlsprobe import report
from tlsprobe.exporter.state import EndpointState
from tlsprobe.model import UNREADABLE, EndpointKey, Status

log = logging.getLogger("tlsprobe.exporter.scheduler")
"""The scheduler's logger, as before this module was cut from it: log filters name it."""

_BAD = (Status.CRITICAL, Status.WARNING)


class OutcomeLog:
    def __init__(self) -> None:
        self._last: dict[EndpointKey, tuple[object, ...]] = {}

    def forget(self, key: EndpointKey) -> None:
        self._last.pop(key, None)

    def record(self, state: EndpointState) -> None:
        """Log `state` when its outcome differs from the endpoint's last one."""
        result = state.result
        failing = tuple(c.name for c in result.checks if c.status in _BAD)
        outcome = (
            result.status,
            result.error.kind if result.error else None,
            result.leaf.sha256 if result.leaf else None,
            failing,
        )
        if self._last.get(state.key) == outcome:
            return
        self._last[state.key] = outcome
        level = logging.INFO if result.status is Status.OK else logging.WARNING
        labels = ("tenant", "target", "host", "address", "port")
        fields = dict(zip(labels, state.label_values, strict=True))
        fields |= {"status": result.status.label}
        if result.error:
            fields |= {"reason": result.error.kind.value, "error": result.error.message}
        if failing:
            fields["failing"] = ",".join(failing)
        if result.leaf:
            fields["fingerprint"] = result.leaf.sha256[:16]
            fields["not_after"] = report.iso_time(result.leaf.not_after) or UNREADABLE
        log.log(level, "probe outcome changed", extra={"fields": fields})
