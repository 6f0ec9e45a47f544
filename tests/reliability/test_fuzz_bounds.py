"""Parsers end in a result or a clear error, in bounded memory, whatever they are fed.

tests/unit/test_smtp.py and test_config.py already fuzz the SMTP reply parser, the SMTP client
and the configuration loader with hypothesis. What they leave out is added here: ten megabytes
of hostile input through the reply parser and the client (random bytes, an endless line, an
endless multi-line reply, a flood of complete replies) with the parser's buffer and the traced
memory bounded throughout; YAML alias bombs ("billion laughs") against the configuration and
web configuration loaders; and hypothesis over the web configuration loader, which must end in
a `WebConfig` or a `WebConfigError` and never echo a value it was given.
"""

from __future__ import annotations

import random
import string
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tlsprobe.exporter.config import ConfigError, load_config
from tlsprobe.exporter.config.web import WebConfig, WebConfigError, load_web_config
from tlsprobe.probe.smtp.client import Failed, NeedData, ReplyParser, SmtpClient, SmtpError

TOTAL = 10 * 2**20
MAX_LINE = 4096
MAX_REPLY = 65536
MEMORY_BOUND = 2 * 2**20
"""Peak traced memory allowed beyond the chunk being fed: the parser's own limits are 68 KiB."""


def random_bytes(rng: random.Random) -> Iterator[bytes]:
    while True:
        yield rng.randbytes(rng.randint(1, 65536))


def endless_line(rng: random.Random) -> Iterator[bytes]:
    yield b"220 "
    while True:
        yield b"A" * rng.randint(1, 65536)


def endless_reply(rng: random.Random) -> Iterator[bytes]:
    while True:
        yield b"".join(b"250-" + b"x" * rng.randint(0, 200) + b"\r\n" for _ in range(300))


def reply_flood(rng: random.Random) -> Iterator[bytes]:
    while True:
        yield (b"250 " + b"x" * rng.randint(1000, 4000) + b"\r\n") * rng.randint(1, 16)


STREAMS: dict[str, Callable[[random.Random], Iterator[bytes]]] = {
    "random bytes": random_bytes,
    "endless line": endless_line,
    "endless multi-line reply": endless_reply,
    "flood of complete replies": reply_flood,
}


def ten_megabytes(stream: Callable[[random.Random], Iterator[bytes]]) -> Iterator[bytes]:
    fed = 0
    for chunk in stream(random.Random(1)):
        if fed >= TOTAL:
            return
        fed += len(chunk)
        yield chunk


@pytest.mark.parametrize("name", list(STREAMS))
def test_reply_parser_stays_bounded_over_ten_megabytes(name: str) -> None:
    parser = ReplyParser(max_line=MAX_LINE, max_reply=MAX_REPLY)
    errors = replies = 0
    tracemalloc.start()
    try:
        for chunk in ten_megabytes(STREAMS[name]):
            baseline = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            try:
                replies += len(parser.feed(chunk))
            except SmtpError as exc:
                errors += 1
                assert exc.message and "\n" not in exc.message
            assert len(parser.buffered) <= MAX_LINE + MAX_REPLY + 2
            # The replies of one feed are returned, not kept: allow for them, and for nothing else.
            assert tracemalloc.get_traced_memory()[1] - baseline < MEMORY_BOUND + 64 * len(chunk)
        kept = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert kept < MEMORY_BOUND
    if name == "flood of complete replies":
        assert errors == 0 and replies > 0
    else:
        assert errors > 0, "hostile input must end in a protocol error"


@pytest.mark.parametrize("name", list(STREAMS))
def test_smtp_client_ends_and_stays_bounded_over_ten_megabytes(name: str) -> None:
    client = SmtpClient("probe.example.net")
    tracemalloc.start()
    try:
        for chunk in ten_megabytes(STREAMS[name]):
            client.receive_data(chunk)
            event = client.next_event()
            while not isinstance(event, NeedData | Failed):
                event = client.next_event()
            if isinstance(event, Failed):
                break
        kept = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert isinstance(client.next_event(), Failed)
    assert kept < MEMORY_BOUND
    assert len(client.transcript) <= 200


# --- alias bombs -------------------------------------------------------------------------------


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """A flow sequence of anchors, each holding `width` aliases of the one before: 9**9 leaves."""
    names = string.ascii_lowercase
    parts = [f"&a [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        parts.append(f"&{names[i]} [{', '.join([f'*{names[i - 1]}'] * width)}]")
    return "[" + ", ".join(parts) + "]"


def _bounded(load: Callable[[], object]) -> tuple[BaseException | None, float, int]:
    tracemalloc.start()
    started = time.monotonic()
    try:
        load()
    except (ConfigError, WebConfigError) as exc:
        error: BaseException | None = exc
    else:
        error = None
    finally:
        elapsed = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return error, elapsed, peak


@pytest.mark.parametrize(
    "template",
    [
        "targets: {bomb}\n",
        "targets: [{{host: a.example, name: {bomb}}}]\n",
        "web: {{probe_allowlist: {bomb}}}\ntargets: [{{host: a.example}}]\n",
        "tenants: {{t: {{accepted_domains: {bomb}, targets: [{{host: a.example}}]}}}}\n",
        "dns: {{nameservers: {bomb}}}\n",
    ],
)
def test_config_alias_bombs_end_in_a_config_error(tmp_path: Path, template: str) -> None:
    path = tmp_path / "tlsprobe.yml"
    path.write_text(template.format(bomb=alias_bomb()))
    error, elapsed, peak = _bounded(lambda: load_config(path))
    assert isinstance(error, ConfigError)
    assert elapsed < 2.0 and peak < 20 * 2**20, (elapsed, peak)
    assert len(str(error)) < 500


@pytest.mark.parametrize(
    "template",
    [
        "http_server_config: {{headers: {{X-Frame-Options: {bomb}}}}}\n",
        "basic_auth_users: {{prometheus: {bomb}}}\n",
        "tls_server_config: {{cert_file: {bomb}, key_file: k}}\n",
        "basic_auth_users: {bomb}\n",
    ],
)
def test_web_config_alias_bombs_end_in_a_web_config_error(tmp_path: Path, template: str) -> None:
    path = tmp_path / "web.yml"
    path.write_text(template.format(bomb=alias_bomb()))
    error, elapsed, peak = _bounded(lambda: load_web_config(path))
    assert isinstance(error, WebConfigError)
    assert elapsed < 2.0 and peak < 20 * 2**20, (elapsed, peak)
    assert "lol" not in str(error)


def test_web_config_larger_than_a_mebibyte_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text("basic_auth_users: {}\n" + "#" * (2 * 2**20) + "\n")
    with pytest.raises(WebConfigError, match="larger than 1 MiB"):
        load_web_config(path)


# --- hypothesis over the web configuration loader ----------------------------------------------

SECRET = "Sekr1t-Passw0rd"
_KEYS = [
    "tls_server_config",
    "basic_auth_users",
    "http_server_config",
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
    "headers",
    "http2",
    "cipher_suites",
    "prometheus",
    "X-Frame-Options",
    "Strict-Transport-Security",
    "Set-Cookie",
]
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=20),
    st.sampled_from(
        [
            SECRET,
            "TLS12",
            "TLS13",
            "TLS10",
            "RequireAnyClientCert",
            "RequireAndVerifyClientCert",
            "deny",
            "nosniff",
            "$2b$04$" + "a" * 53,
            "$2b$04$short",
            "value\r\nInjected: 1",
        ]
    ),
)
_DOCUMENTS = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.sampled_from(_KEYS), children, max_size=4),
    ),
    max_leaves=20,
)


FIXTURE = HealthCheck.function_scoped_fixture


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("webfuzz") / "web.yml"


def _load_and_judge(path: Path) -> None:
    try:
        web = load_web_config(path)
    except WebConfigError as exc:
        text = str(exc)
        assert SECRET not in text and "\n" not in text.strip()
    else:
        assert isinstance(web, WebConfig)
        assert all(v.isprintable() for v in web.headers.values())
        assert SECRET not in repr(web)


@pytest.mark.slow
@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(_DOCUMENTS)
def test_arbitrary_web_configs_end_in_a_web_config_or_error(scratch: Path, data: object) -> None:
    scratch.write_text(yaml.safe_dump(data))
    _load_and_judge(scratch)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(st.sampled_from(list(":-[]{}#&*!|>'\"%@`,?\n \t") + list(SECRET)), max_size=80))
def test_arbitrary_web_config_text_ends_in_a_web_config_or_error(scratch: Path, text: str) -> None:
    scratch.write_text(text)
    _load_and_judge(scratch)
