#!/usr/bin/env bash
# Install Dovecot (IMAP and POP3) for the development mail server, once.
# The package's own service is left alone: sysmail runs Dovecot with a config
# of its own (config/dovecot/). Quiet when it works; one line when it fails.
set -u

if [ -x /usr/sbin/dovecot ]; then
    exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! {
    $sudo apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
            dovecot-imapd dovecot-pop3d
} >"$log" 2>&1; then
    echo "install-dovecot: apt-get failed: $(tail -n 1 "$log")" >&2
    exit 1
fi
