#!/usr/bin/env bash
# A SECOND, separate Postfix instance acting as the relay of the send-side tests
# (tests/integration/test_relay_postfix.py). It never touches the instance of .ci/postfix.sh:
# its own config_directory, queue_directory and data_directory under $DIR, loopback only.
#
# It accepts mail on 127.0.0.1:10026 for subdomains of canary.tlsprobe.test and relays each to
# the test receiver on 127.0.0.1:10027 with smtp_tls_security_level = encrypt, through a
# transport whose SMTP client presents one case's certificate (smtp_tls_chain_files):
#   good.canary...     the same certificate as the relay's smtpd (relay.contoso.test)
#   other.canary...    another valid certificate (relay2.contoso.test): same_as_server differs
#   none.canary...     no client certificate
#   expired.canary...  an expired one
#   fabrikam.canary... a name outside the accepted domain (relay.fabrikam.test)
#   noeku.canary...    serverAuth only, no clientAuth EKU
#   broken.canary...   routed to 127.0.0.1:10029, where nothing listens (the canary never arrives)
# Certificates are made fresh on every run by tests/support/pki.py. Run as root; idempotent.
# On success the last lines are
#   TLSPROBE_TEST_RELAY=127.0.0.1:10026
#   TLSPROBE_TEST_RELAY_DIR=/var/lib/tlsprobe-test/relay
set -euo pipefail

readonly SCRIPT=postfix-relay.sh
readonly DIR=/var/lib/tlsprobe-test/relay
readonly CONF=$DIR/etc
readonly ADDRESS=127.0.0.1
readonly PORT=10026
readonly RECEIVER="[127.0.0.1]:10027"
readonly NOWHERE="[127.0.0.1]:10029"
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO
# shellcheck source=.ci/postfix-lib.sh
source "$REPO/.ci/postfix-lib.sh"

instance_prepare "$DIR"
install -d -m 0755 "$DIR/certs"
python3 "$REPO/tests/support/pki.py" --out "$DIR/certs" --relay-set >&2
chmod 0600 "$DIR"/certs/*key*.pem

cases=(good other none expired fabrikam noeku)
transport_map="canary.tlsprobe.test=smtp-good:$RECEIVER"
for case in "${cases[@]}"; do
    transport_map+=", $case.canary.tlsprobe.test=smtp-$case:$RECEIVER"
done
transport_map+=", broken.canary.tlsprobe.test=smtp:$NOWHERE"
relay_domains=canary.tlsprobe.test
for case in "${cases[@]}" broken; do relay_domains+=", $case.canary.tlsprobe.test"; done

chain() { echo "$DIR/certs/$1-key.pem,$DIR/certs/$1-leaf.pem,$DIR/certs/intermediate.pem"; }

before=$(instance_listeners "$DIR")
instance_base "$DIR" "$ADDRESS" "$PORT" relay.tlsprobe.test
postconf -c "$CONF" -e \
    "mydestination =" \
    "relay_domains = $relay_domains" \
    "transport_maps = inline:{ $transport_map }" \
    "default_transport = error:the tlsprobe test relay delivers only canaries" \
    "local_transport = error:the tlsprobe test relay delivers nothing locally" \
    "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination" \
    "smtp_host_lookup = native" \
    "disable_dns_lookups = yes" \
    "smtpd_tls_chain_files = $(chain good)" \
    "smtp_tls_security_level = encrypt" \
    "smtp_tls_chain_files = $(chain other)" \
    "smtp_tls_loglevel = 1" \
    "queue_run_delay = 5s" \
    "minimal_backoff_time = 5s" \
    "maximal_backoff_time = 10s" \
    "maximal_queue_lifetime = 10m" \
    "bounce_queue_lifetime = 0" \
    "smtp_connect_timeout = 5s" \
    "maillog_file = /var/log/postfix-tlsprobe-relay.log"

# One client transport per certificate case.
for case in "${cases[@]}"; do
    files=$(chain "$case")
    [[ $case == none ]] && files=""
    postconf -c "$CONF" -M "smtp-$case/unix=smtp-$case unix - - n - - smtp"
    postconf -c "$CONF" -P "smtp-$case/unix/smtp_tls_chain_files=$files"
done
postconf -c "$CONF" -P "smtp-none/unix/smtp_tls_security_level=encrypt"

instance_run "$DIR" "$ADDRESS" "$PORT" "$before"

echo "TLSPROBE_TEST_RELAY=${ADDRESS}:${PORT}"
echo "TLSPROBE_TEST_RELAY_DIR=${DIR}"
