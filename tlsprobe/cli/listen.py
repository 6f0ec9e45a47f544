"""`tlsprobe listen [ADDRESS:]PORT`: wait for one inbound SMTP session, report the client chain.

"Send a test message from your relay to this box and see what Exchange Online will see." The
receiver asks the connecting relay for a client certificate, accepts whatever comes, and the
report is the one `tlsprobe check` prints, for the certificate the relay presents when it
*sends*. Exit codes as `check`: 0 ok, 1 warning, 2 critical, 3 unknown (no session in time).
Sessions that never say EHLO nor start TLS (port scans, TCP health checks) are not judged, nor
those from outside `--peer`; `listen` waits on for the relay's.
Every recipient is accepted and every message discarded: nothing is stored or relayed.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import sys
from collections.abc import Callable
from typing import Any

from tlsprobe import report
from tlsprobe.cli import options
from tlsprobe.cli.connector import add_policy_arguments, build_policy
from tlsprobe.cli.options import UsageError
from tlsprobe.model import HostPortError, Policy, Status, parse_host_port
from tlsprobe.probe.prober import utcnow
from tlsprobe.probe.send import receiver
from tlsprobe.probe.send.sender import Session, judge_session
from tlsprobe.probe.x509.evaluate import TrustStore

_SESSION_TIMEOUT = 60.0


def parse_listen(value: str) -> tuple[str, int]:
    """`PORT`, `ADDRESS:PORT` or `[v6]:PORT`; the address defaults to 127.0.0.1."""
    if value.isascii() and value.isdigit():
        value = f"127.0.0.1:{value}"
    try:
        host, port = parse_host_port(value)
    except HostPortError as exc:
        raise UsageError(str(exc)) from exc
    if port is None:
        raise UsageError(f"{value!r}: a port is required")
    return host, port


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_peer(value: str) -> Network:
    """`--peer`: an address or a network."""
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise argparse.ArgumentTypeError("not an IP address or network") from None


def ignored_because(session: Session, peer: Network | None) -> str | None:
    """Why a session is not the one `listen` waits for, or None when it is: a port scan or a
    TCP health check never says EHLO nor starts TLS; `--peer` names the relay."""
    if peer is not None:
        try:
            address = ipaddress.ip_address(session.peer)
        except ValueError:
            return f"from {session.peer}, not from --peer {peer}"
        if address.version != peer.version or address not in peer:
            return f"from {session.peer}, not from --peer {peer}"
    if session.helo is None and session.tls is None and not session.plaintext_mail:
        return f"from {session.peer} ended before EHLO or TLS (a port scan or health check?)"
    return None


async def wait_for_session(
    host: str,
    port: int,
    *,
    timeout: float,
    context: Any,
    announce: bool = True,
    peer: Network | None = None,
    on_ignored: Callable[[str], None] | None = None,
) -> Session | None:
    """Listen until one session worth judging has ended (or `timeout` passes: None). Others
    are ignored (`ignored_because`); `on_ignored` is told why."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Session] = loop.create_future()

    def finished(session: Session) -> None:
        if done.done():
            return
        why = ignored_because(session, peer)
        if why is None:
            done.set_result(session)
        elif on_ignored is not None:
            on_ignored(why)

    limits = receiver.ReceiverLimits(session_timeout=min(timeout, _SESSION_TIMEOUT))
    listener = receiver.Receiver(
        context=context,
        hostname="tlsprobe.listen",
        accept_recipient=lambda _peer, _rcpt: True,
        on_session=finished,
        limits=limits,
    )
    bound = await listener.start(host, port)
    if announce:
        print(f"tlsprobe listen: waiting on {bound[0]}:{bound[1]}", file=sys.stderr, flush=True)
    try:
        async with asyncio.timeout(timeout):
            return await done
    except TimeoutError:
        return None
    finally:
        await listener.close()


def cmd_listen(args: argparse.Namespace) -> int:
    host, port = parse_listen(args.listen)
    policy, trust = build_policy(args)
    try:
        context = receiver.tls_context(args.tls_cert, args.tls_key)
    except receiver.ReceiverTlsError as exc:
        raise UsageError(f"--tls-cert: {exc}") from exc
    try:
        session = asyncio.run(
            wait_for_session(
                host,
                port,
                timeout=args.timeout,
                context=context,
                peer=args.peer,
                on_ignored=_say_ignored if args.verbose else None,
            )
        )
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.listen}: {exc.strerror or exc}") from exc
    if session is None:
        print(f"TLSPROBE UNKNOWN - no SMTP session arrived within {args.timeout:g} s")
        return int(Status.UNKNOWN)
    return _print(session, policy, trust, args)


def _say_ignored(why: str) -> None:
    print(f"tlsprobe listen: ignored a session {why}", file=sys.stderr, flush=True)


def _print(session: Session, policy: Policy, trust: TrustStore, args: argparse.Namespace) -> int:
    now = utcnow()
    result = judge_session(session, policy, trust, now=now)
    if args.json:
        data = report.to_json(result) | {"sender": sender_json(session)}
        print(json.dumps(data, indent=2))
    else:
        text = report.human(result, now, sender=True, policy=policy)
        if args.verbose and result.transcript:
            text += "\nSMTP transcript\n" + "\n".join(f"  {t}" for t in result.transcript) + "\n"
        sys.stdout.write(text)
    return int(result.status)


def sender_json(session: Session) -> dict[str, Any]:
    """What the session did besides the certificate (counts only; bodies are never kept)."""
    return {
        "peer": session.peer,
        "helo": session.helo,
        "messages": [
            {"size": m.size, "recipients": len(m.recipients), "canary_token": m.token}
            for m in session.messages
        ],
        "auth_attempts": session.auth_attempts,
        "refused_recipients": session.refused_recipients,
        "discarded_plaintext_bytes": session.discarded_plaintext,
    }


def register(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Listen for one SMTP session (send a test message from your relay here) and "
        "judge the certificate the relay presents as a TLS client, as Exchange Online does. "
        "Exit codes: 0 ok, 1 warning, 2 critical, 3 unknown."
    )
    p.add_argument(
        "listen", metavar="[ADDRESS:]PORT", help="where to listen; address default 127.0.0.1"
    )
    add_policy_arguments(p)
    p.add_argument("--tls-cert", help="PEM chain the receiver presents (default: self-signed)")
    p.add_argument("--tls-key", help="PEM key for --tls-cert (default: in the same file)")
    p.add_argument(
        "--timeout",
        type=options.bounded(0.0, options.MAX_WAIT, low_open=True, unit="seconds"),
        default=300.0,
        help=f"seconds to wait for a session (at most {options.MAX_WAIT:g})",
    )
    p.add_argument(
        "--peer",
        type=parse_peer,
        help="judge only a session from this address or network (default: the first session "
        "that says EHLO or starts TLS, from anyone)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also print the SMTP transcript, and each session ignored (to stderr)",
    )
    p.set_defaults(func=cmd_listen)
