"""The send side's configuration: the receiver (`receiver:`) and each tenant's `senders:`.

Values only here; `parse_send_side` reads them from the YAML mapping with the same error
conventions as the rest of the configuration (one `ConfigError` naming the key, no secret
echoed: a canary password is read from its file and never shown).

```yaml
receiver:                       # off unless present
  listen: 127.0.0.1:2525        # loopback unless configured otherwise
  hostname: canary.example.net  # greeting and EHLO name
  recipients: [canary@canary.example.net]   # accepted from known senders (plus canary ones)
  tls_cert_file: receiver.pem   # optional; default: a self-signed certificate made at start
  tls_key_file: receiver.key
  session_timeout: 60s
  max_sessions: 20              # lowered at start to fit the open-file limit
  max_sessions_per_peer: 5
  per_peer_per_minute: 30
  idle_eviction: 10s            # a full receiver closes sessions idle this long for newcomers
  max_message_bytes: 65536
tenants:
  contoso:
    accepted_domains: [contoso.com]
    certificate_domain: "*.contoso.com"
    senders:
      - name: relay-1
        peers: [192.0.2.10, 198.51.100.0/28]
        server_target: relay-1   # a target of this tenant: enables same_as_server
        expected_certificates: [...]
        session_expected_within: 15m   # default with a canary: 2 x interval + deadline
        canary:
          relay: mail.contoso.com:25
          starttls: true
          username: tlsprobe
          password_file: relay-password
          mail_from: tlsprobe@contoso.com
          recipient: canary@canary.example.net
          interval: 5m
          deadline: 2m
```
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tlsprobe.model import Policy
from tlsprobe.probe.send import canary

DEFAULT_RECEIVER_PORT = 2525


@dataclass(frozen=True, slots=True)
class CanaryConfig:
    relay: canary.Relay
    interval: float
    deadline: float
    """Seconds a submitted canary may take to arrive before it counts as missing."""


@dataclass(frozen=True, slots=True)
class SenderConfig:
    """One relay node that sends to the receiver: who it is (peers) and its connector policy."""

    tenant: str
    name: str
    peers: tuple[str, ...]
    """Normalized networks (`192.0.2.10/32`, `198.51.100.0/28`)."""
    policy: Policy
    ca_file: Path | None = None
    server_target: str | None = None
    canary: CanaryConfig | None = None
    session_expected_within: float | None = None
    """Seconds after its last session by which the sender is expected to have sent again
    (`session_expected_within`, by default twice the canary interval plus its deadline; none
    without a canary): `TlsprobeSenderSilent` fires past it, so a verdict cannot go stale."""

    def matches(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in ipaddress.ip_network(peer) for peer in self.peers)

    @property
    def key(self) -> tuple[str, str]:
        return (self.tenant, self.name)


@dataclass(frozen=True, slots=True)
class ReceiverConfig:
    listen_host: str = "127.0.0.1"
    listen_port: int = DEFAULT_RECEIVER_PORT
    hostname: str = "tlsprobe-receiver.localdomain"
    recipients: tuple[str, ...] = ()
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    session_timeout: float = 60.0
    max_sessions: int = 20
    max_sessions_per_peer: int = 5
    per_peer_per_minute: int = 30
    idle_eviction: float = 10.0
    max_message_bytes: int = 65536


@dataclass(frozen=True, slots=True)
class SendSideConfig:
    receiver: ReceiverConfig
    senders: tuple[SenderConfig, ...]

    def sender_for(self, address: str) -> SenderConfig | None:
        """The first sender whose peers contain `address` (file order decides overlaps)."""
        return next((s for s in self.senders if s.matches(address)), None)

    def accepts(self, sender: SenderConfig, recipient: str) -> bool:
        """A known sender may deliver to the receiver's recipients and its canary recipient."""
        wanted = recipient.lower()
        if sender.canary is not None and sender.canary.relay.recipient.lower() == wanted:
            return True
        return wanted in self.receiver.recipients


def find_sender(senders: Sequence[SenderConfig], tenant: str, name: str) -> SenderConfig | None:
    return next((s for s in senders if s.key == (tenant, name)), None)
