#!/usr/bin/env bash
# Installs opsqueue as three systemd services (API, worker, monitor) under
# opsqueue.target, or removes them. Run as root on a host booted with
# systemd. See systemd/README.md.
#
#   systemd/install.sh install [--binaries DIR] [--no-start]
#       builds release binaries (cargo, as the owner of this checkout) unless
#       --binaries names a directory holding opsqueue-api, opsqueue-worker
#       and opsqueue-monitor; installs them to /usr/local/bin, the units to
#       /usr/local/lib/systemd/system, the sysusers.d and tmpfiles.d entries
#       to /usr/local/lib, a default /etc/opsqueue/opsqueue.toml (an
#       existing one is kept); creates the user and group opsqueue and
#       /var/lib/opsqueue; enables the units and (re)starts opsqueue.target.
#       Running it again upgrades in place.
#   systemd/install.sh uninstall [--purge]
#       stops and disables the units and removes what install put in place,
#       keeping /etc/opsqueue, /var/lib/opsqueue (the database) and the user;
#       --purge removes those too.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
invoked_as="$0 $*"
repo=$(dirname "$here")

BIN_DIR=/usr/local/bin
UNIT_DIR=/usr/local/lib/systemd/system
SYSUSERS=/usr/local/lib/sysusers.d/opsqueue.conf
TMPFILES=/usr/local/lib/tmpfiles.d/opsqueue.conf
CONFIG_DIR=/etc/opsqueue
DATA_DIR=/var/lib/opsqueue
DOC_DIR=/usr/local/share/doc/opsqueue
BINARIES=(opsqueue-api opsqueue-worker opsqueue-monitor)
SERVICES=(opsqueue-api.service opsqueue-worker.service opsqueue-monitor.service)

say() { echo "opsqueue install: $*"; }
die() {
    echo "opsqueue install: $*" >&2
    exit 1
}

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
    exit 2
}

preflight() {
    [ "$(id -u)" -eq 0 ] || die "run me as root (sudo $invoked_as)"
    [ -d /run/systemd/system ] || die "this host was not booted with systemd"
}

build() {
    local owner
    owner=$(stat -c %U "$repo")
    say "building release binaries in $repo (as $owner)"
    if [ "$owner" = root ]; then
        (cd "$repo" && cargo build --release --locked --bins)
    else
        # A login shell, so that the owner's ~/.cargo/bin is on PATH.
        runuser -u "$owner" -- bash -lc 'cd "$1" && cargo build --release --locked --bins' _ "$repo"
    fi
}

install_all() {
    local binaries="" start=yes
    while [ $# -gt 0 ]; do
        case $1 in
            --binaries) binaries=${2:?--binaries needs a directory}; shift 2 ;;
            --no-start) start=no; shift ;;
            *) usage ;;
        esac
    done
    preflight
    if [ -z "$binaries" ]; then
        build
        binaries=$repo/target/release
    fi
    for bin in "${BINARIES[@]}"; do
        [ -x "$binaries/$bin" ] || die "$binaries/$bin is missing"
    done

    say "installing the binaries to $BIN_DIR"
    for bin in "${BINARIES[@]}"; do
        # Through a temporary name, so a running binary is replaced, not
        # overwritten in place.
        install -m 0755 "$binaries/$bin" "$BIN_DIR/.$bin.new"
        mv -f "$BIN_DIR/.$bin.new" "$BIN_DIR/$bin"
    done

    say "creating the user opsqueue and $DATA_DIR"
    install -D -m 0644 "$here/opsqueue.sysusers" "$SYSUSERS"
    install -D -m 0644 "$here/opsqueue.tmpfiles" "$TMPFILES"
    systemd-sysusers "$SYSUSERS"
    systemd-tmpfiles --create "$TMPFILES"

    install -d -m 0750 -o root -g opsqueue "$CONFIG_DIR"
    if [ -e "$CONFIG_DIR/opsqueue.toml" ]; then
        say "keeping the existing $CONFIG_DIR/opsqueue.toml"
    else
        say "writing a default $CONFIG_DIR/opsqueue.toml"
        install -m 0640 -o root -g opsqueue "$here/opsqueue.toml" "$CONFIG_DIR/opsqueue.toml"
    fi

    say "installing the units to $UNIT_DIR"
    install -d -m 0755 "$UNIT_DIR" "$DOC_DIR"
    for unit in "${SERVICES[@]}" opsqueue.target; do
        install -m 0644 "$here/$unit" "$UNIT_DIR/$unit"
    done
    install -m 0644 "$here/README.md" "$DOC_DIR/systemd.md"
    systemctl daemon-reload
    systemctl enable opsqueue.target "${SERVICES[@]}"

    if [ "$start" = yes ]; then
        say "starting opsqueue.target"
        # A restart of the target restarts every service PartOf= it, so an
        # upgrade runs the new binaries; on a first install it starts them.
        systemctl restart opsqueue.target
        systemctl --no-pager --lines=0 status "${SERVICES[@]}" || true
        say "the first admin key is in $DATA_DIR/admin.key (readable by root)"
    fi
    say "done"
}

uninstall_all() {
    local purge=no
    while [ $# -gt 0 ]; do
        case $1 in
            --purge) purge=yes; shift ;;
            *) usage ;;
        esac
    done
    preflight
    say "stopping and disabling the units"
    systemctl disable --now opsqueue.target "${SERVICES[@]}" 2>/dev/null || true
    for unit in "${SERVICES[@]}" opsqueue.target; do
        rm -f "$UNIT_DIR/$unit"
    done
    systemctl daemon-reload
    systemctl reset-failed "${SERVICES[@]}" 2>/dev/null || true
    for bin in "${BINARIES[@]}"; do
        rm -f "$BIN_DIR/$bin"
    done
    rm -f "$SYSUSERS" "$TMPFILES"
    rm -rf "$DOC_DIR"
    if [ "$purge" = yes ]; then
        say "removing $CONFIG_DIR, $DATA_DIR and the user opsqueue"
        rm -rf "$CONFIG_DIR" "$DATA_DIR"
        if getent passwd opsqueue >/dev/null; then userdel opsqueue; fi
        if getent group opsqueue >/dev/null; then groupdel opsqueue; fi
    else
        say "kept $CONFIG_DIR, $DATA_DIR and the user opsqueue (--purge removes them)"
    fi
    say "done"
}

case ${1:-} in
    install) shift; install_all "$@" ;;
    uninstall) shift; uninstall_all "$@" ;;
    *) usage ;;
esac
