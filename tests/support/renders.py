"""Which endpoint states the renderers format: a test's window on their caches."""

from __future__ import annotations

import pytest

from tlsprobe.exporter.exposition import metrics
from tlsprobe.exporter.state import EndpointState


def count_renders(monkeypatch: pytest.MonkeyPatch) -> list[EndpointState]:
    """From now on, every state `metrics.render_endpoint` formats is appended to the list."""
    calls: list[EndpointState] = []
    real = metrics.render_endpoint

    def counting(state: EndpointState) -> dict[str, bytes]:
        calls.append(state)
        return real(state)

    monkeypatch.setattr(metrics, "render_endpoint", counting)
    return calls
