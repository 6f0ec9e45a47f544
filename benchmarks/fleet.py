"""The benchmark fleet: a private Postfix instance with STARTTLS on many loopback addresses.

The instance is separate from the system Postfix that the integration tests use (its own
configuration, queue and certificate directories under a temporary directory), so tuning it for
load changes nothing the tests expect. `master -d` runs in the foreground under
`benchmarks.supervise`, which lets us start it without registering the instance in the
system's main.cf and guarantees it stops with the harness. Each address gets its own `smtpd`
service, like a fleet of separate servers, so a prober that keeps one connection per address
(tlsprobe's politeness rule) is not serialised. Rate and connection-count limits are off: the
benchmark measures probers, not anvil. Certificates (root, intermediate, leaf for
`FLEET_NAME`) are generated at start; the leaf's key is ECDSA P-256 by default, because the
server signs every handshake with it and an RSA-2048 signature costs the fleet more CPU than
the probers' whole side of the handshake (the RSA fleet stays measured as a second row).
Each smtpd serves many connections before it is replaced (`max_use`), so a sweep does not pay
Postfix's process start-up either. `fleet_cpu_seconds` reads the CPU time of the whole instance
(master, live children, reaped children), so a report can tell when the fleet was the ceiling.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import supervise
from tests.support.pki import KeyKind, write_server_set

FLEET_NAME = "mail.bench.test"
_REPO = Path(__file__).resolve().parent.parent
MASTER = Path("/usr/lib/postfix/sbin/master")
SMTPD_PER_ADDRESS = 8
"""smtpd processes per address: one connection at a time per prober, plus slack for the
processes still finishing the previous connection (post-QUIT clean-up) and for restarts."""
KEYS = {"ecdsa": KeyKind.EC_P256, "rsa": KeyKind.RSA2048}
"""The fleet's leaf key, by the name the report uses."""


class FleetError(RuntimeError):
    """Postfix is missing, we are not root, or the instance did not come up."""


def fleet_unavailable() -> str | None:
    """Why a Postfix fleet cannot be started here, or None when it can."""
    if not MASTER.is_file() or shutil.which("postconf") is None:
        return "postfix is not installed (apt-get install postfix)"
    if os.geteuid() != 0:
        return "starting a Postfix instance needs root"
    return None


@dataclass(frozen=True)
class Fleet:
    addresses: tuple[str, ...]
    port: int
    ca_file: Path
    name: str = FLEET_NAME
    key: str = "ecdsa"
    master_pid: int = 0


class PostfixFleet:
    """Context manager: a running Postfix answering STARTTLS on `count` loopback addresses."""

    def __init__(self, count: int, port: int | None = None, key: str = "ecdsa") -> None:
        self.count = count
        self.key = key
        self.port = port or free_port()
        self.addresses = tuple(f"127.0.{i // 250}.{2 + i % 250}" for i in range(count))
        self._root = Path(tempfile.mkdtemp(prefix="tlsprobe-bench-postfix-"))
        self._master: subprocess.Popen[bytes] | None = None
        self._master_pid = 0

    def __enter__(self) -> Fleet:
        problem = fleet_unavailable()
        if problem:
            raise FleetError(problem)
        try:
            self._configure()
            self._start()
        except BaseException:
            self.close()
            raise
        ca_file = self._root / "pki" / "ca.pem"
        return Fleet(self.addresses, self.port, ca_file, key=self.key, master_pid=self._master_pid)

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _configure(self) -> None:
        root = self._root
        root.chmod(0o755)  # smtpd drops to the postfix user and must reach the queue directory
        pki = root / "pki"
        write_server_set(pki, FLEET_NAME, key=KEYS[self.key])
        (pki / "key.pem").chmod(0o600)
        etc, queue, data = root / "etc", root / "queue", root / "data"
        postfix_uid = pwd.getpwnam("postfix").pw_uid
        postdrop_gid = grp.getgrnam("postdrop").gr_gid
        for path in (etc, queue, data, queue / "pid", queue / "private", queue / "public"):
            path.mkdir(parents=True, exist_ok=True)
        os.chown(data, postfix_uid, -1)
        os.chown(queue / "private", postfix_uid, 0)
        (queue / "private").chmod(0o700)
        os.chown(queue / "public", postfix_uid, postdrop_gid)
        (queue / "public").chmod(0o710)
        (etc / "main.cf").write_text(_main_cf(root))
        (etc / "master.cf").write_text(_master_cf(self.addresses, self.port))

    def _start(self) -> None:
        command = [str(MASTER), "-c", str(self._root / "etc"), "-d"]
        self._master, self._master_pid = supervise.start(
            command, log=str(self._log), cwd=str(_REPO)
        )
        deadline = time.monotonic() + 20
        for address in self.addresses:
            while not _greets(address, self.port):
                if self._master.poll() is not None or time.monotonic() > deadline:
                    tail = self._log.read_text(errors="replace")[-2000:]
                    raise FleetError(f"postfix did not answer on {address}:{self.port}\n{tail}")
                time.sleep(0.1)

    @property
    def _log(self) -> Path:
        return self._root / "postfix.log"

    def close(self) -> None:
        supervisor, self._master = self._master, None
        if supervisor is not None:
            supervise.stop(supervisor)
        shutil.rmtree(self._root, ignore_errors=True)


def _main_cf(root: Path) -> str:
    pki = root / "pki"
    settings = {
        "compatibility_level": "3.6",
        "queue_directory": root / "queue",
        "data_directory": root / "data",
        "myhostname": FLEET_NAME,
        "mydomain": "bench.test",
        "mydestination": "",
        "inet_interfaces": "loopback-only",
        "inet_protocols": "ipv4",
        "mynetworks": "127.0.0.0/8",
        "relayhost": "",
        "relay_domains": "",
        "smtpd_relay_restrictions": "reject_unauth_destination",
        "alias_maps": "",
        "alias_database": "",
        "smtpd_peername_lookup": "no",
        "smtpd_tls_security_level": "may",
        "smtpd_tls_chain_files": f"{pki / 'key.pem'}, {pki / 'leaf.pem'}, "
        f"{pki / 'intermediate.pem'}",
        # No throttling: the fleet must not be what limits a sweep at concurrency 100.
        "smtpd_client_connection_count_limit": "0",
        "smtpd_client_connection_rate_limit": "0",
        "smtpd_client_new_tls_session_rate_limit": "0",
        "default_process_limit": "10000",
        # A new smtpd (exec, configuration, TLS key loading) after every 100 connections, the
        # default, would bill process start-up to the fleet; keep them for the whole run.
        "max_use": "100000",
        "max_idle": "3600s",
        # No session cache and no TLS 1.3 tickets: probers never resume, so minting tickets
        # (and asking tlsmgr) on every handshake is fleet work no prober benefits from.
        "smtpd_tls_session_cache_timeout": "0",
        # Logging to the master's stdout (our log file) needs no syslog daemon.
        "maillog_file": "/dev/stdout",
    }
    return "".join(f"{key} = {value}\n" for key, value in settings.items())


def _master_cf(addresses: tuple[str, ...], port: int) -> str:
    lines = [f"{address}:{port} inet n - n - {SMTPD_PER_ADDRESS} smtpd" for address in addresses]
    lines += [
        "tlsmgr unix - - n 1000? 1 tlsmgr",
        "rewrite unix - - n - - trivial-rewrite",
        "proxymap unix - - n - - proxymap",
        "anvil unix - - n - 1 anvil",
        "postlog unix-dgram n - n - 1 postlogd",
    ]
    return "\n".join(lines) + "\n"


def fleet_cpu_seconds(master_pid: int) -> float:
    """CPU seconds (user + system) of a Postfix instance: its master, every live process under
    it and every child it has reaped. 0.0 when the master is gone."""
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile; its parent has its time now
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        times[pid] = sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    total, stack = 0.0, [master_pid]
    while stack:
        pid = stack.pop()
        total += times.get(pid, 0)
        stack.extend(children.get(pid, ()))
    return total / os.sysconf("SC_CLK_TCK")


def _greets(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=2) as sock:
            banner = sock.makefile("rb").readline()
            sock.sendall(b"QUIT\r\n")
            return banner.startswith(b"220 ")
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
