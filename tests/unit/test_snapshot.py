"""The /metrics snapshot: gzip put together from cached segments, equal to the text renderer.

`TextRenderer` is the reference (itself held equal to a prometheus_client collector in
test_metrics): the snapshot's body, inflated, must be its text byte for byte for a fresh
renderer, and the same lines in the same families after any sequence of endpoints changing,
arriving and leaving. Small blocks make a handful of endpoints span many of them.
"""

from __future__ import annotations

import gzip
import random
import subprocess
import zlib
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from tests.support.pki import Hierarchy
from tests.support.renders import count_renders
from tlsprobe.exporter.exposition import collector, deflate
from tlsprobe.exporter.exposition.deflate import compressor, gzip_body, joined, segment
from tlsprobe.exporter.exposition.metrics import Sample, TextRenderer
from tlsprobe.exporter.exposition.snapshot import SnapshotRenderer
from tlsprobe.exporter.history.store import Drift
from tlsprobe.exporter.state import EndpointState
from tlsprobe.model import Capture, Endpoint, Policy, TlsInfo
from tlsprobe.probe.prober import judge
from tlsprobe.probe.x509.evaluate import TrustStore

NOW = datetime.now(UTC)
POLICY = Policy(certificate_domain="*.contoso.test", accepted_domains=("contoso.test",))
EXTRA: list[Sample] = [("tlsprobe_senders_configured", (), 2.0)]


@pytest.fixture(scope="module")
def base(pki: Hierarchy, trust: TrustStore) -> EndpointState:
    ep = Endpoint(host="mail.contoso.test", address="127.0.0.1", target="relay")
    chain = (pki.leaf(("mail.contoso.test",)).der, pki.intermediate.der)
    capture = Capture(address=ep.address, chain_der=chain, tls=TlsInfo("TLSv1.3", "TLS_X"))
    result = judge(ep, capture, POLICY, trust, started_at=NOW.timestamp(), now=NOW)
    return EndpointState("contoso", "relay", result, interval=60.0, connector=("a", "b"))


def variant(base: EndpointState, index: int, stamp: float = 0.0) -> EndpointState:
    """Endpoint `index` (three per target), its result taken `stamp` seconds later."""
    result = base.result
    endpoint = replace(result.endpoint, host=f"mx{index}.contoso.test", target=f"t{index // 3}")
    result = replace(
        result, endpoint=endpoint, address=f"127.0.1.{index}", started_at=NOW.timestamp() + stamp
    )
    return replace(base, target=f"t{index // 3}", result=result)


def sections(text: bytes) -> list[tuple[bytes, list[bytes]]]:
    """Per family in order: its header and its sample lines, sorted."""
    out: list[tuple[bytes, list[bytes]]] = []
    for line in text.splitlines():
        if line.startswith(b"# HELP"):
            out.append((line, []))
        elif not line.startswith(b"#"):
            out[-1][1].append(line)
    return [(header, sorted(lines)) for header, lines in out]


def test_fresh_body_is_the_text_renderers_byte_for_byte(base: EndpointState) -> None:
    states = [variant(base, i) for i in range(10)]
    tail = collector.exporter_registry().exposition(openmetrics=False)
    body = SnapshotRenderer(block_size=4).gzip(states, EXTRA, tail=tail)
    assert gzip.decompress(body) == TextRenderer().render(states, EXTRA) + tail
    assert b"process_cpu_seconds_total" in tail
    empty = SnapshotRenderer().gzip([])
    assert gzip.decompress(empty) == TextRenderer().render([]) == b""


def test_body_follows_changes_arrivals_and_departures(base: EndpointState) -> None:
    chance = random.Random(14)
    renderer, probes = SnapshotRenderer(block_size=3), {"ok": 0}
    registry = collector.exporter_registry([lambda: [("tlsprobe_probes", ("ok",), probes["ok"])]])
    present = {i: variant(base, i) for i in range(12)}
    for step in range(40):
        for index in chance.sample(range(20), 4):
            if index in present and chance.random() < 0.4:
                del present[index]
            else:
                present[index] = variant(base, index, stamp=step + chance.random())
        states = list(present.values())
        chance.shuffle(states)
        probes["ok"] = step
        tail = registry.exposition(openmetrics=False)
        assert f'tlsprobe_probes_total{{result="ok"}} {step}.0'.encode() in tail
        text = gzip.decompress(renderer.gzip(states, EXTRA, tail=tail))
        assert sections(text) == sections(TextRenderer().render(states, EXTRA) + tail), step


def test_only_new_results_are_rendered_again(
    monkeypatch: pytest.MonkeyPatch, base: EndpointState
) -> None:
    rendered = count_renders(monkeypatch)
    states = [variant(base, i) for i in range(9)]
    renderer = SnapshotRenderer(block_size=4)
    first = renderer.gzip(states)
    assert len(rendered) == 9
    assert renderer.gzip(list(states)) == first
    assert len(rendered) == 9, "a new list of the same states is the same snapshot"
    newer = variant(base, 5, stamp=60)
    text = gzip.decompress(renderer.gzip([*states[:5], newer, *states[6:]]))
    assert rendered[9:] == [newer]
    assert f"{NOW.timestamp() + 60!r}".encode() in text


def test_the_cache_holds_compressed_text_and_only_for_present_endpoints(
    base: EndpointState,
) -> None:
    states = [variant(base, i) for i in range(60)]
    renderer = SnapshotRenderer(block_size=8)
    text = gzip.decompress(renderer.gzip(states))
    assert 0 < renderer.held_bytes() < len(text) / 4
    renderer.gzip(states[:6])
    small = renderer.held_bytes()
    renderer.gzip([])
    assert renderer.held_bytes() == 0 < small


def test_openmetrics_body_is_what_prometheus_client_writes(base: EndpointState) -> None:
    """The OpenMetrics form of the same segments: counter families named without `_total`,
    `# EOF` last; read by client_python's strict OpenMetrics parser, the same samples as its
    own OpenMetrics exposition of the same states (through `TableCollector`)."""
    leaf = base.result.leaf
    assert leaf is not None
    drifting = replace(base, drift=Drift(leaf.sha256, since=1.5, changes_total=3, previous=None))
    states = [drifting, *(variant(base, i) for i in range(1, 7))]
    extra: list[Sample] = [*EXTRA, ("tlsprobe_receiver_refused_sessions", (), 4.0)]
    registry = collector.exporter_registry()
    renderer = SnapshotRenderer(block_size=3)
    for om in (True, False, True):  # both formats from one cache, in any order
        tail = registry.exposition(openmetrics=om)
        text = gzip.decompress(renderer.gzip(states, extra, tail=tail, openmetrics=om))
        assert text.endswith(b"# EOF\n") is om
    assert b"# TYPE tlsprobe_cert_changes counter\n" in text
    assert b"# TYPE tlsprobe_receiver_refused_sessions counter\n" in text
    reference = CollectorRegistry(auto_describe=False)
    reference.register(collector.TableCollector(lambda: states, lambda: extra))
    ours = _om_samples(text.decode(), skip=("process_", "python_"))
    theirs = _om_samples(openmetrics.generate_latest(reference).decode(), skip=())  # type: ignore[no-untyped-call]
    assert ours == theirs and len(ours) > 100


def _om_samples(text: str, skip: tuple[str, ...]) -> set[tuple[str, str, object]]:
    return {
        (family.name, family.type, (s.name, frozenset(s.labels.items()), s.value))
        for family in text_string_to_metric_families(text)  # type: ignore[no-untyped-call]
        if not family.name.startswith(skip)
        for s in family.samples
    }


# --- gzip from segments (deflate.py) -------------------------------------------------------


@given(st.lists(st.binary(max_size=3000), max_size=12), st.randoms(use_true_random=False))
def test_segments_in_any_order_make_one_valid_gzip(
    texts: list[bytes], chance: random.Random
) -> None:
    engine = compressor()
    parts = [segment(text, engine if i % 2 else None) for i, text in enumerate(texts)]
    chance.shuffle(parts)
    whole = b"".join(part.text() for part in parts)
    body = gzip_body(parts)
    assert gzip.decompress(body) == whole
    assert joined(parts).crc == zlib.crc32(whole)
    one_member = zlib.decompressobj(16 + zlib.MAX_WBITS)
    assert one_member.decompress(body) == whole
    assert one_member.eof and not one_member.unused_data


@given(st.binary(max_size=2000), st.binary(max_size=70_000))
def test_crc_combination_is_the_crc_of_the_texts_one_after_the_other(
    first: bytes, second: bytes
) -> None:
    crcs = (zlib.crc32(first), zlib.crc32(second), len(second))
    assert deflate.python_combine(*crcs) == zlib.crc32(first + second)
    assert deflate.combine(*crcs) == zlib.crc32(first + second)


def test_crc_combination_uses_the_zlib_library_where_it_loads() -> None:
    """Debian's zlib is there for CI; elsewhere the pure-Python method is the fallback."""
    assert deflate.combine is not deflate.python_combine


def test_the_pure_python_combination_makes_valid_bodies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deflate, "combine", deflate.python_combine)
    texts = [b"a" * 70_000, bytes(range(256)) * 40, b"", b"tail\n"]
    assert gzip.decompress(gzip_body([segment(t) for t in texts])) == b"".join(texts)


def test_gzip_tool_accepts_the_body() -> None:
    body = gzip_body([segment(b"a" * 70_000), segment(bytes(range(256)) * 40)])
    done = subprocess.run(["gzip", "-dc"], input=body, capture_output=True, check=True)
    assert done.stdout == b"a" * 70_000 + bytes(range(256)) * 40
