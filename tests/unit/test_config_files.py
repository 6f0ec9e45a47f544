"""Every file the configuration names goes through one bounded, regular-file-only reader.

`/dev/zero` as `canary.password_file` was read whole before it was cut (validate-config, serve
and reload ate all memory); as `receiver.tls_cert_file` validate-config accepted it and serve
then failed naming `receiver.listen`. A device, a FIFO (whose open blocks) or an oversized file
is now one ConfigError naming the key, read no further than the key's bound.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.pki import Hierarchy
from tlsprobe.cli.main import main
from tlsprobe.exporter.config import ConfigError, load_config
from tlsprobe.exporter.config.web import WebConfigError, load_web_config
from tlsprobe.probe import files

TARGET = "targets:\n  - host: mail.example.com\n"
SENDER = """\
receiver: {receiver}
tenants:
  contoso:
    accepted_domains: [contoso.test]
    targets: [{{host: mail.contoso.test}}]
    senders:
      - name: relay-1
        peers: [127.0.0.1]
        {sender}
"""
CANARY = "canary: {relay: 127.0.0.1:2526, recipient: c@canary.test, username: u, password_file: %s}"

# key path -> the configuration naming FILE at that key (other files it needs are good ones).
CONFIGS: dict[str, str] = {
    "web.config_file": "web:\n  config_file: {FILE}\n" + TARGET,
    "defaults.ca_file": "defaults:\n  ca_file: {FILE}\n" + TARGET,
    "targets[0].ca_file": "targets:\n  - host: mail.example.com\n    ca_file: {FILE}\n",
    "receiver.tls_cert_file": SENDER.format(receiver="{tls_cert_file: {FILE}}", sender=""),
    "receiver.tls_key_file": SENDER.format(
        receiver="{tls_cert_file: cert.pem, tls_key_file: {FILE}}", sender=""
    ),
    "tenants.contoso.senders[0].ca_file": SENDER.format(receiver="{}", sender="ca_file: {FILE}"),
    "tenants.contoso.senders[0].canary.password_file": SENDER.format(
        receiver="{}", sender=CANARY % "{FILE}"
    ),
}


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


def _huge(tmp_path: Path) -> Path:
    path = tmp_path / "huge"
    with path.open("wb") as handle:
        handle.truncate(64 << 20)  # sparse: over every bound, costs no disk
    return path


BAD_FILES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "/dev/zero": (lambda _: Path("/dev/zero"), "not a regular file"),
    "fifo": (_fifo, "not a regular file"),
    "directory": (lambda tmp: tmp, "not a regular file"),
    "oversized": (_huge, "larger than"),
    "absent": (lambda tmp: tmp / "absent", "cannot read: No such file or directory"),
}


@pytest.fixture
def good_files(tmp_path: Path, pki: Hierarchy) -> Path:
    leaf = pki.leaf(("receiver.contoso.test",))
    (tmp_path / "cert.pem").write_bytes(leaf.cert_pem)
    (tmp_path / "key.pem").write_bytes(leaf.key_pem)
    return tmp_path


@pytest.mark.parametrize("bad", BAD_FILES, ids=list(BAD_FILES))
@pytest.mark.parametrize("key", CONFIGS, ids=list(CONFIGS))
def test_a_named_file_that_is_no_bounded_regular_file_is_one_error_at_its_key(
    good_files: Path, key: str, bad: str
) -> None:
    make, problem = BAD_FILES[bad]
    target = make(good_files)
    config = good_files / "tlsprobe.yml"
    config.write_text(CONFIGS[key].replace("{FILE}", str(target)))
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    found = {p.path: p.message for p in caught.value.problems}
    assert key in found, found
    assert problem in found[key] and str(target) in found[key]


def test_the_configuration_file_itself_must_be_a_regular_file(tmp_path: Path) -> None:
    for path in (Path("/dev/zero"), _fifo(tmp_path)):
        with pytest.raises(ConfigError, match="not a regular file"):
            load_config(path)


@pytest.mark.parametrize("key", ["cert_file", "key_file", "client_ca_file"])
def test_the_web_configs_tls_files_are_checked_the_same_way(good_files: Path, key: str) -> None:
    names = {"cert_file": "cert.pem", "key_file": "key.pem", "client_ca_file": "cert.pem"}
    names[key] = "/dev/zero"
    web = good_files / "web.yml"
    web.write_text(
        "tls_server_config:\n  client_auth_type: RequireAndVerifyClientCert\n"
        + "".join(f"  {k}: {v}\n" for k, v in names.items())
    )
    with pytest.raises(WebConfigError, match=f"{key}: /dev/zero: not a regular file"):
        load_web_config(web)


def test_a_receiver_certificate_that_is_no_pem_is_an_error_at_its_key(good_files: Path) -> None:
    """validate-config accepted it, and serve then failed naming receiver.listen."""
    (good_files / "junk.pem").write_bytes(b"not a certificate\n")
    config = good_files / "tlsprobe.yml"
    config.write_text(CONFIGS["receiver.tls_cert_file"].replace("{FILE}", "junk.pem"))
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert caught.value.path == "receiver.tls_cert_file"
    assert "no PEM certificate" in caught.value.message
    config.write_text(CONFIGS["receiver.tls_key_file"].replace("{FILE}", "cert.pem"))
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert caught.value.path == "receiver.tls_key_file"


def test_a_good_receiver_identity_loads(good_files: Path) -> None:
    config = good_files / "tlsprobe.yml"
    config.write_text(CONFIGS["receiver.tls_key_file"].replace("{FILE}", "key.pem"))
    assert main(["validate-config", str(config)]) == 0


# The command line under a 2 GiB address-space limit, set in the child itself.
LIMITED_CLI = (
    "import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)); "
    "sys.argv = ['tlsprobe', *sys.argv[1:]]; runpy.run_module('tlsprobe', run_name='__main__')"
)


def test_validate_config_with_dev_zero_as_the_password_file_stays_small(good_files: Path) -> None:
    """Under a 2 GiB address-space limit (the old reader died there with MemoryError, after
    taking all of it): exit 2, the key named."""
    config = good_files / "tlsprobe.yml"
    key = "tenants.contoso.senders[0].canary.password_file"
    config.write_text(CONFIGS[key].replace("{FILE}", "/dev/zero"))
    done = subprocess.run(
        [sys.executable, "-c", LIMITED_CLI, "validate-config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert f"{key}: /dev/zero: not a regular file" in done.stderr


def test_the_reader_reads_no_further_than_its_bound(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    assert files.read(path, 10) == b"x" * 10
    with pytest.raises(files.FileError, match="larger than 9 bytes"):
        files.read(path, 9)
    assert files.size(1 << 20) == "1 MiB" and files.size(1024) == "1 KiB"


def test_reading_a_head_takes_only_regular_files_and_only_the_head(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_bytes(b"y" * 100)
    assert files.read_head(path, 10) == b"y" * 10
    for other in (Path("/dev/zero"), _fifo(tmp_path), tmp_path):
        with pytest.raises(files.FileError, match="not a regular file"):
            files.read_head(other, 10)
