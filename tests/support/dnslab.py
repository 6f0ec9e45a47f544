"""A DNSSEC laboratory on loopback: Debian's NSD serving a zone signed here, Unbound validating.

`DnsLab` signs the zone `dane.test.` with a key made at start (dnspython's signer, ECDSA P-256),
serves it and an unsigned child zone (`insecure.dane.test.`, delegated without DS) from an NSD
instance on a free loopback port, and runs an Unbound instance on another free loopback port
with the zone's key as its only trust anchor. Names under `dane.test.` validate (`secure`),
names under the child are `insecure`, and names listed as corrupt get their records altered
after signing, so Unbound finds them `bogus`. `publish()` re-signs, reloads NSD (SIGHUP) and
flushes the zone from Unbound's cache (`unbound-control` over a socket in the lab's directory),
so the next lookup sees the changed zone; TTLs are one second besides.

Both daemons run in the foreground as children of the test process with their own config, pid
and log files in a temporary directory; `stop()` ends exactly those two PIDs. Root hints point
at 127.0.0.1, so nothing ever leaves loopback. Tests that need the lab skip when `nsd`,
`unbound` or `unbound-control` is missing (CI installs them; TLSPROBE_REQUIRE_DNSLAB=1 turns
the skip into a failure).
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Self

import dns.dnssec
import dns.dnssectypes
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.zone
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from dns.rdtypes.ANY.SOA import SOA

from tests.support.servers import unused_port

ORIGIN = "dane.test."
CHILD = "insecure.dane.test."
TTL = 1

NSD = shutil.which("nsd") or "/usr/sbin/nsd"
UNBOUND = shutil.which("unbound") or "/usr/sbin/unbound"
UNBOUND_CONTROL = shutil.which("unbound-control") or "/usr/sbin/unbound-control"


def available() -> bool:
    return all(Path(binary).is_file() for binary in (NSD, UNBOUND, UNBOUND_CONTROL))


def udp_port_pair() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (DNS needs both)."""
    import socket

    for _ in range(50):
        port = unused_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free loopback port for DNS")


class DnsLab:
    """NSD + Unbound on loopback ports; see the module docstring."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.nsd_port = udp_port_pair()
        self.port = udp_port_pair()
        """Unbound's port: what the probe is told to use as its resolver."""
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._dnskey = dns.dnssec.make_dnskey(
            self._key.public_key(), dns.dnssectypes.Algorithm.ECDSAP256SHA256, flags=257
        )
        self._procs: list[subprocess.Popen[bytes]] = []
        self._serial = 0

    # --- zone content ---------------------------------------------------------------------

    def publish(
        self,
        records: Iterable[str],
        *,
        child: Iterable[str] = (),
        corrupt: Sequence[str] = (),
        malformed: Mapping[str, bytes] = MappingProxyType({}),
    ) -> None:
        """Write, sign and (re)load the zones. `records` are zone-file lines relative to
        `dane.test.`; `child` lines go to the unsigned child zone; owners in `corrupt` get
        their TLSA data flipped after signing (bogus); `malformed` maps an owner to raw TLSA
        RDATA that dnspython cannot represent (a digest of the wrong length), served validly
        signed."""
        # Every publication gets a higher serial, so "NSD serves it" can be checked.
        self._serial = max(self._serial + 1, int(time.time()))
        self._write_signed(list(records), corrupt, malformed)
        self._write_child(list(child))
        if not self._procs:
            return  # not serving yet: nothing is cached anywhere
        os.kill(self._procs[0].pid, signal.SIGHUP)
        self._wait_serial(ORIGIN)
        self._wait_serial(CHILD)
        # Unbound forgets its copies of the old answers (rrsets, messages, keys) at once,
        # rather than after their TTL, which it counts in whole seconds.
        subprocess.run(
            [UNBOUND_CONTROL, "-c", str(self.dir / "unbound.conf"), "flush_zone", ORIGIN],
            check=True,
            capture_output=True,
            timeout=10,
        )

    def _wait_serial(self, zone: str, timeout: float = 20.0) -> None:
        """Until NSD answers with the serial just written (a reload is asynchronous)."""
        query = dns.message.make_query(zone, "SOA")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                answer = dns.query.udp(query, "127.0.0.1", port=self.nsd_port, timeout=0.5)
            except (OSError, dns.exception.Timeout):
                answer = None
            serials = [
                rdata.serial
                for rrset in (answer.answer if answer is not None else [])
                for rdata in rrset
                if isinstance(rdata, SOA)
            ]
            if serials == [self._serial]:
                return
            time.sleep(0.1)
        raise RuntimeError(f"nsd did not load serial {self._serial} of {zone} in {timeout} s")

    def _write_signed(
        self, records: list[str], corrupt: Sequence[str], malformed: Mapping[str, bytes]
    ) -> None:
        serial = self._serial
        text = "\n".join(
            [
                f"$TTL {TTL}",
                f"@ SOA ns.{ORIGIN} hostmaster.{ORIGIN} {serial} 60 60 3600 {TTL}",
                f"@ NS ns.{ORIGIN}",
                "ns A 127.0.0.1",
                f"insecure NS ns.{ORIGIN}",
                *records,
                *(f"{owner} TLSA 3 1 1 {'00' * 32}" for owner in malformed),
                "",
            ]
        )
        zone = dns.zone.from_text(text, origin=ORIGIN, relativize=False)
        now = datetime.now(UTC)
        dns.dnssec.sign_zone(
            zone,
            keys=[(self._key, self._dnskey)],
            inception=now - timedelta(hours=1),
            expiration=now + timedelta(days=2),
        )
        origin = dns.name.from_text(ORIGIN)
        extra: list[str] = []
        with zone.writer() as txn:
            for owner in corrupt:
                _flip_tlsa(txn, dns.name.from_text(owner, origin))
            for owner, rdata in malformed.items():
                extra += self._sign_raw_tlsa(txn, dns.name.from_text(owner, origin), rdata)
        text = zone.to_text(relativize=False)
        (self.dir / "dane.test.zone").write_text(text + "\n".join(extra) + "\n")

    def _sign_raw_tlsa(
        self, txn: dns.transaction.Transaction, owner: dns.name.Name, rdata: bytes
    ) -> list[str]:
        """Replace the placeholder TLSA at `owner` by `rdata` (other TLSA records there stay),
        all in RFC 3597 generic form, with an RRSIG made by hand over the set (RFC 4034
        3.1.8.1); the NSEC chain stays as signed."""
        sigs = txn.get(owner, dns.rdatatype.RRSIG, dns.rdatatype.TLSA)
        tlsas = txn.get(owner, dns.rdatatype.TLSA)
        assert sigs is not None and tlsas is not None
        template = next(iter(sigs))
        placeholder = bytes([3, 1, 1]) + bytes(32)
        datas = [r.to_digestable() for r in tlsas]
        datas = sorted([d for d in datas if d != placeholder] + [rdata])
        txn.delete(owner, dns.rdatatype.TLSA)
        txn.delete(owner, dns.rdatatype.RRSIG, dns.rdatatype.TLSA)
        ttl = template.original_ttl
        signed = (
            struct.pack(
                "!HBBIIIH",
                dns.rdatatype.TLSA,
                template.algorithm,
                template.labels,
                ttl,
                template.expiration,
                template.inception,
                template.key_tag,
            )
            + template.signer.canonicalize().to_wire()
        )
        for data in datas:
            signed += owner.canonicalize().to_wire()
            signed += struct.pack("!HHIH", dns.rdatatype.TLSA, 1, ttl, len(data)) + data
        r, s = decode_dss_signature(self._key.sign(signed, ec.ECDSA(hashes.SHA256())))
        rrsig = template.replace(signature=r.to_bytes(32, "big") + s.to_bytes(32, "big"))
        name = owner.to_text()
        lines = [f"{name} {ttl} IN TYPE52 \\# {len(d)} {d.hex()}" for d in datas]
        return [*lines, f"{name} {ttl} IN RRSIG {rrsig.to_text()}"]

    def _write_child(self, records: list[str]) -> None:
        serial = self._serial
        lines = [
            f"$TTL {TTL}",
            f"$ORIGIN {CHILD}",
            f"@ SOA ns.{ORIGIN} hostmaster.{ORIGIN} {serial} 60 60 3600 {TTL}",
            f"@ NS ns.{ORIGIN}",
            *records,
            "",
        ]
        (self.dir / "insecure.zone").write_text("\n".join(lines))

    # --- daemons --------------------------------------------------------------------------

    def start(self) -> None:
        self._write_configs()
        self._spawn(NSD, "nsd", self.nsd_port)
        self._spawn(UNBOUND, "unbound", self.port)

    def _spawn(self, binary: str, what: str, port: int) -> None:
        """Run `binary -d -c WHAT.conf` in the foreground and wait until it answers."""
        with (self.dir / f"{what}.out").open("wb") as log:
            self._procs.append(
                subprocess.Popen(
                    [binary, "-d", "-c", str(self.dir / f"{what}.conf")],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        self._wait(port, ORIGIN, what)

    def stop(self) -> None:
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        self._procs.clear()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait(self, port: int, name: str, what: str) -> None:
        query = dns.message.make_query(name, "SOA")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self._procs):
                break
            try:
                dns.query.udp(query, "127.0.0.1", port=port, timeout=0.5)
            except (OSError, dns.exception.Timeout):
                time.sleep(0.1)
                continue
            return
        self.stop()
        log = (self.dir / f"{what}.out").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{what} did not answer on 127.0.0.1:{port}:\n{log}")

    def _write_configs(self) -> None:
        d = self.dir
        (d / "nsd.conf").write_text(
            f"""server:
    ip-address: 127.0.0.1@{self.nsd_port}
    port: {self.nsd_port}
    username: ""
    chroot: ""
    zonesdir: "{d}"
    database: ""
    pidfile: "{d}/nsd.pid"
    xfrdfile: "{d}/xfrd.state"
    zonelistfile: "{d}/zone.list"
    xfrdir: "{d}"
    logfile: "{d}/nsd.log"
    server-count: 1
    reuseport: no
    verbosity: 1
remote-control:
    control-enable: no
zone:
    name: {ORIGIN}
    zonefile: dane.test.zone
zone:
    name: {CHILD}
    zonefile: insecure.zone
"""
        )
        (d / "root.hints").write_text(". 3600 NS a.root.test.\na.root.test. 3600 A 127.0.0.1\n")
        anchor = dns.dnssec.make_ds(ORIGIN, self._dnskey, "SHA256")
        # Typed in dnspython 2.9, untyped before; str() is the same text on every version.
        anchor_text = str(anchor)
        (d / "unbound.conf").write_text(
            f"""server:
    interface: 127.0.0.1
    port: {self.port}
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{d}"
    pidfile: "{d}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 1
    num-threads: 1
    so-reuseport: no
    do-ip6: no
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    root-hints: "{d}/root.hints"
    trust-anchor: "{ORIGIN} DS {anchor_text}"
    ede: yes
    val-log-level: 2
    val-bogus-ttl: 1
    cache-max-ttl: {TTL}
    cache-max-negative-ttl: {TTL}
    prefetch: no
    qname-minimisation: no
    local-zone: "." refuse
    local-zone: "test." transparent
remote-control:
    control-enable: yes
    control-interface: "{d}/unbound.ctl"
    control-use-cert: no
stub-zone:
    name: "{ORIGIN}"
    stub-addr: 127.0.0.1@{self.nsd_port}
stub-zone:
    name: "{CHILD}"
    stub-addr: 127.0.0.1@{self.nsd_port}
"""
        )


def _flip_tlsa(txn: dns.transaction.Transaction, owner: dns.name.Name) -> None:
    rdataset = txn.get(owner, dns.rdatatype.TLSA)
    if rdataset is None:
        raise ValueError(f"no TLSA at {owner} to corrupt")
    flipped = [r.replace(cert=bytes(b ^ 0xFF for b in r.cert)) for r in rdataset]
    txn.replace(owner, dns.rdataset.from_rdata_list(rdataset.ttl, flipped))
