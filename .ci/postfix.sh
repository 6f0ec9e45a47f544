#!/usr/bin/env bash
# Configure and start a real Postfix on 127.0.0.1:10025 for tests/integration/test_postfix.py.
#
# Run as root on a Debian 12 machine after `apt-get install postfix`. A private instance (see
# .ci/postfix-lib.sh): its configuration, queue and data live under $DIR, and it is started with
# `postfix -c $DIR/etc`; the system Postfix (/etc/postfix) is neither changed nor started nor
# stopped. Idempotent: run it again and it keeps current certificates, rewrites the same
# settings and reloads (or restarts when the listeners changed).
# The server presents a leaf for mail.tlsprobe.test plus its intermediate, listens on loopback
# only, relays nothing and delivers nothing. On success the last two lines are
#   TLSPROBE_TEST_POSTFIX=127.0.0.1:10025
#   TLSPROBE_TEST_POSTFIX_CA=/var/lib/tlsprobe-test/postfix/ca.pem
# which CI appends to its environment (e.g. `.ci/postfix.sh | tail -2 >> "$GITHUB_ENV"`).
set -euo pipefail

readonly SCRIPT=postfix.sh
readonly DIR=/var/lib/tlsprobe-test/postfix
readonly ADDRESS=127.0.0.1
readonly PORT=10025
readonly NAME=mail.tlsprobe.test
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO
# shellcheck source=.ci/postfix-lib.sh
source "$REPO/.ci/postfix-lib.sh"

instance_prepare "$DIR"
# Certificates: CA, intermediate and leaf from the test PKI; kept while valid for 30 more days.
python3 "$REPO/tests/support/pki.py" --out "$DIR" --name "$NAME" --keep-days 30 >&2
chmod 0600 "$DIR/key.pem"

before=$(instance_listeners "$DIR")
instance_base "$DIR" "$ADDRESS" "$PORT" "$NAME"
# No relaying; every delivery fails at once, so nothing ever leaves the machine.
postconf -c "$DIR/etc" -e \
    "myorigin = \$myhostname" \
    "mydestination = \$myhostname, localhost" \
    "relay_domains =" \
    "smtpd_relay_restrictions = reject_unauth_destination" \
    "default_transport = error:tlsprobe test server delivers nothing" \
    "relay_transport = error:tlsprobe test server relays nothing" \
    "local_transport = error:tlsprobe test server delivers nothing" \
    "smtpd_tls_chain_files = $DIR/key.pem, $DIR/leaf.pem, $DIR/intermediate.pem" \
    "smtpd_tls_loglevel = 1" \
    "maillog_file = /var/log/postfix-tlsprobe.log"
instance_run "$DIR" "$ADDRESS" "$PORT" "$before"

echo "TLSPROBE_TEST_POSTFIX=${ADDRESS}:${PORT}"
echo "TLSPROBE_TEST_POSTFIX_CA=${DIR}/ca.pem"
