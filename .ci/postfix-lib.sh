# Sourced by .ci/postfix.sh and .ci/postfix-relay.sh: one private Postfix instance per test
# service, never the system one. Each has its own config_directory (DIR/etc), queue_directory
# (DIR/spool) and data_directory (DIR/data), listens on one loopback address and port only, and
# is started, reloaded or restarted with `postfix -c DIR/etc`, so nothing else on the machine
# (the system Postfix, other instances) is touched. The caller sets SCRIPT (for messages).

die() {
    echo "$SCRIPT: $*" >&2
    exit 1
}

# instance_prepare DIR: check the prerequisites, make the instance's directories and files.
instance_prepare() {
    local dir=$1
    [[ $(id -u) == 0 ]] || die "must run as root"
    command -v postfix >/dev/null && command -v postconf >/dev/null ||
        die "postfix is not installed (apt-get install postfix)"
    install -d -m 0755 "$dir" "$dir/etc" "$dir/spool"
    install -d -m 0755 -o postfix "$dir/data"
    [[ -f $dir/etc/master.cf ]] || cp /usr/share/postfix/master.cf.dist "$dir/etc/master.cf"
    [[ -f $dir/etc/main.cf ]] || : >"$dir/etc/main.cf"
}

# instance_listeners DIR: the settings that take effect only on a full restart.
instance_listeners() {
    postconf -c "$1/etc" -h inet_interfaces inet_protocols | tr '\n' ' '
}

# instance_base DIR ADDRESS PORT NAME: what both instances share: their own directories,
# loopback IPv4 only, no relay host, no DNS for the client's name, no local delivery, only the
# one smtpd listener, no chroot (the instance's files live outside any chroot). The caller adds
# its own settings with `postconf -c DIR/etc` afterwards.
instance_base() {
    local dir=$1 address=$2 port=$3 name=$4
    postconf -c "$dir/etc" -e \
        "compatibility_level = 3.6" \
        "queue_directory = $dir/spool" \
        "data_directory = $dir/data" \
        "mail_owner = postfix" \
        "setgid_group = postdrop" \
        "myhostname = $name" \
        "mydomain = tlsprobe.test" \
        "inet_interfaces = $address" \
        "inet_protocols = ipv4" \
        "mynetworks = 127.0.0.0/8" \
        "relayhost =" \
        "smtpd_peername_lookup = no" \
        "smtpd_tls_security_level = may" \
        "alias_maps =" \
        "alias_database ="
    postconf -c "$dir/etc" -M# smtp/inet 2>/dev/null || true
    postconf -c "$dir/etc" -M "${address}:${port}/inet=${address}:${port} inet n - n - - smtpd"
    postconf -c "$dir/etc" -F '*/*/chroot = n'
}

# instance_run DIR ADDRESS PORT LISTENERS_BEFORE: check the configuration, then start the
# instance, or reload it (restart it when its listeners changed), and wait until it answers.
instance_run() {
    local dir=$1 address=$2 port=$3 before=$4 conf=$1/etc
    postfix -c "$conf" check
    if ! postfix -c "$conf" status >/dev/null 2>&1; then
        # Postfix listens with SO_REUSEPORT: it would share the port with whatever holds it
        # (the kernel spreading connections over both) instead of failing to start.
        if (exec 3<>"/dev/tcp/$address/$port") 2>/dev/null; then
            die "$address:$port is in use by another process: stop it, or free the port"
        fi
        postfix -c "$conf" start >&2
    elif [[ $before != "$(instance_listeners "$dir")" ]]; then
        postfix -c "$conf" stop >&2
        postfix -c "$conf" start >&2
    else
        postfix -c "$conf" reload >&2
    fi
    python3 "$REPO/.ci/wait-smtp.py" "$address" "$port" >&2
}
