#!/usr/bin/env bash
# Configure and start a real Postfix on 127.0.0.1:10025 for tests/integration/test_postfix.py.
#
# Run as root on a Debian 12 machine after `apt-get install postfix` (CI has no systemd, so
# Postfix is started with `postfix start`). Idempotent: run it again and it keeps current
# certificates, rewrites the same settings and reloads (or restarts when the listeners changed).
# The server presents a leaf for mail.tlsprobe.test plus its intermediate, listens on loopback
# only, relays nothing and delivers nothing off this machine. On success the last two lines are
#   TLSPROBE_TEST_POSTFIX=127.0.0.1:10025
#   TLSPROBE_TEST_POSTFIX_CA=/var/lib/tlsprobe-test/postfix/ca.pem
# which CI appends to its environment (e.g. `.ci/postfix.sh | tail -2 >> "$GITHUB_ENV"`).
set -euo pipefail

readonly DIR=/var/lib/tlsprobe-test/postfix
readonly ADDRESS=127.0.0.1
readonly PORT=10025
readonly NAME=mail.tlsprobe.test
readonly SERVICE="${ADDRESS}:${PORT}"
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO

die() {
    echo "postfix.sh: $*" >&2
    exit 1
}

[[ $(id -u) == 0 ]] || die "must run as root"
command -v postfix >/dev/null && command -v postconf >/dev/null ||
    die "postfix is not installed (apt-get install postfix)"

# Certificates: CA, intermediate and leaf from the test PKI; kept while valid for 30 more days.
install -d -m 0755 "$DIR"
python3 "$REPO/tests/support/pki.py" --out "$DIR" --name "$NAME" --keep-days 30 >&2
chmod 0600 "$DIR/key.pem"

# Debian installs main.cf for "Internet Site"; with "No configuration" there is none yet.
if [[ ! -f /etc/postfix/main.cf ]]; then
    cp /usr/share/postfix/main.cf.debian /etc/postfix/main.cf
fi

listeners_before=$(postconf -h inet_interfaces inet_protocols | tr '\n' ' ')

# Loopback only, IPv4 only; no relaying; every non-local delivery bounces at once, so nothing
# ever leaves the machine; no DNS for the client's name (traffic must stay on loopback).
postconf -e \
    "myhostname = $NAME" \
    "mydomain = tlsprobe.test" \
    "myorigin = \$myhostname" \
    "mydestination = \$myhostname, localhost" \
    "inet_interfaces = loopback-only" \
    "inet_protocols = ipv4" \
    "mynetworks = 127.0.0.0/8" \
    "relayhost =" \
    "relay_domains =" \
    "smtpd_relay_restrictions = reject_unauth_destination" \
    "default_transport = error:tlsprobe test server delivers nothing" \
    "relay_transport = error:tlsprobe test server relays nothing" \
    "smtpd_peername_lookup = no" \
    "smtpd_tls_security_level = may" \
    "smtpd_tls_chain_files = $DIR/key.pem, $DIR/leaf.pem, $DIR/intermediate.pem" \
    "smtpd_tls_loglevel = 1" \
    "maillog_file = /var/log/postfix-tlsprobe.log"
# The legacy certificate settings (Debian points them at the snakeoil pair) are ignored once
# smtpd_tls_chain_files is set; drop them so nobody reads the wrong ones.
postconf -X smtpd_tls_cert_file smtpd_tls_key_file

# Listen only on the test port: comment out the stock port-25 service, add ours.
postconf -M# smtp/inet 2>/dev/null || true
postconf -M "${SERVICE}/inet=${SERVICE} inet n - y - - smtpd"

listeners_after=$(postconf -h inet_interfaces inet_protocols | tr '\n' ' ')

# Debian's helper copies resolv.conf, hosts, etc. into the chroot; systemd would run it for us.
if [[ -x /usr/lib/postfix/configure-instance.sh ]]; then
    /usr/lib/postfix/configure-instance.sh - >&2
fi
[[ -f /etc/aliases ]] && newaliases
postfix check

if postfix status >/dev/null 2>&1; then
    if [[ $listeners_before != "$listeners_after" ]]; then
        # inet_interfaces and inet_protocols take effect only on a full restart.
        postfix stop >&2
        postfix start >&2
    else
        postfix reload >&2
    fi
else
    postfix start >&2
fi

python3 "$REPO/.ci/wait-smtp.py" "$ADDRESS" "$PORT" >&2

echo "TLSPROBE_TEST_POSTFIX=${SERVICE}"
echo "TLSPROBE_TEST_POSTFIX_CA=${DIR}/ca.pem"
