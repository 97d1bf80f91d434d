#!/usr/bin/env bash
# One script, two callers: the Vagrant VM's provisioning (vagrant/Vagrantfile)
# and CI (.ci/run calls `provision.sh deps`). The Debian package list lives
# here and nowhere else.
#
#   provision.sh deps
#       apt-get the Debian packages the tests need (skipped when all are
#       installed); installs Rust with rustup only when `cargo` is absent.
#   provision.sh test
#       builds and runs the AF_PACKET tests as root, with CI=true so that a
#       missing capability fails them instead of skipping them:
#       cargo test --release -p blipmq-dataplane \
#           --test afpacket --test bulk --test conformance
#   provision.sh nic-test IF CIDR [CLIENT_IF CLIENT_CIDR]
#       a real broker on a real NIC: takes the kernel's addresses off IF,
#       starts `blipmqd --backend afpacket --interface IF --ip CIDR`, and
#       (with CLIENT_IF, a second NIC on the same link) moves CLIENT_IF into
#       a network namespace with CLIENT_CIDR and checks, across the link:
#       ARP (the broker's MAC is IF's), ICMP echo, and a publish/subscribe
#       round trip of a 240 kB message over two TCP connections. Without
#       CLIENT_IF it checks only that the broker starts (for a client
#       elsewhere on the link, e.g. the VM's host, use `broker`).
#   provision.sh dpdk-nic-test IF CIDR [CLIENT_IF CLIENT_CIDR]
#       the same on the dpdk backend: reserves 512 MiB of 2 MiB hugepages
#       (hugepage-setup/hugepages.sh), binds IF to vfio-pci in no-IOMMU
#       mode (hugepage-setup/bind-nic.sh --noiommu: a VM has no IOMMU),
#       starts `blipmqd --backend dpdk --ip CIDR -- -a PCI` (the virtio-net
#       PMD on a VM's NIC) and checks ARP, ping and the round trip from
#       CLIENT_IF; then gives IF back to its driver and releases the pages.
#       With DPDK_VDEV=1 it binds nothing and runs DPDK's net_af_packet on
#       IF instead (--no-huge): the same path where vfio cannot be had.
#   provision.sh broker IF CIDR [blipmqd ARGS]
#       prepares IF the same way and runs blipmqd in the foreground, for
#       clients elsewhere on the link (the host: ping, connect to CIDR:9999).
#   provision.sh all [IF CIDR [CLIENT_IF CLIENT_CIDR]]
#       deps, test, then nic-test when IF is given (the VM's provisioning),
#       then dpdk-nic-test, which reports but does not fail the provisioning
#       (vfio's no-IOMMU mode or hugepages may be missing in a VM).
#
# IF or CLIENT_IF "auto": the physical NICs (those with /sys/class/net/X/device)
# in ifindex order, less the one with the default route; IF takes the first,
# CLIENT_IF the next. nic-test and broker refuse the default-route NIC.
#
# Every step is idempotent and prints what it does. Environment: PORT (9999),
# WORKERS (nic-test and broker: 2), BLIPMQD (nic-test and broker: this
# binary instead of building one), CI (test: true unless set),
# CARGO_TARGET_DIR (cargo's), OFFLOADS=off (nic-test and broker: turn IF's
# offloads off with ethtool), RUST_LOG / BLIPMQ_TEST_LOG (passed through).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PORT=${PORT:-9999}
WORKERS=${WORKERS:-2}
NIC_NS=blipmq-nic-c
PIDFILE=/run/blipmq-nic-test.pid

# The Debian packages the build and the tests need:
#   build-essential pkg-config  C toolchain and linker for the Rust crates
#   ca-certificates curl        HTTPS for cargo's registry (and rustup)
#   iproute2                    `ip netns`, veth: the tests' network labs
#   iputils-ping procps ethtool nic-test: ping, sysctl, OFFLOADS=off labs
#   dpdk dpdk-dev libdpdk-dev   DPDK 22.11 (PMDs, headers, pkg-config libdpdk)
#                               for ffi/ and the dpdk backend
#   libclang-dev                bindgen (ffi/ generates its bindings)
PACKAGES=(build-essential pkg-config ca-certificates curl iproute2 iputils-ping procps ethtool
    dpdk dpdk-dev libdpdk-dev libclang-dev python3 python3-venv)

step() { printf '\n==> provision: %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
die() {
    printf 'provision: %s\n' "$*" >&2
    exit 1
}
# Prints a command, then runs it.
run() {
    printf '    $ %s\n' "$*"
    "$@"
}
need_root() { [ "$(id -u)" = 0 ] || die "$1 needs root (try: sudo $0 $1 ...)"; }

# Cargo from rustup, also under sudo (which resets PATH).
for dir in "${CARGO_HOME:-${HOME:-/root}/.cargo}/bin" /root/.cargo/bin; do
    if [ -x "$dir/cargo" ] && ! command -v cargo >/dev/null 2>&1; then
        PATH="$dir:$PATH"
    fi
done
export PATH

deps() {
    step "deps: Debian packages: ${PACKAGES[*]}"
    need_root deps
    command -v apt-get >/dev/null 2>&1 || die "deps: no apt-get (Debian or Ubuntu expected)"
    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        if [ "$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null)" != installed ]; then
            missing+=("$pkg")
        fi
    done
    if [ ${#missing[@]} = 0 ]; then
        info "all installed"
    else
        export DEBIAN_FRONTEND=noninteractive
        run apt-get update -qq
        printf '    $ apt-get install -y -qq --no-install-recommends %s\n' "${missing[*]}"
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi

    step "deps: Rust toolchain (stable, 1.91 or newer)"
    if command -v cargo >/dev/null 2>&1; then
        info "cargo present: $(cargo --version)"
    else
        info "cargo absent: installing stable Rust with rustup into ${CARGO_HOME:-${HOME:-/root}/.cargo}"
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
            sh -s -- -y --no-modify-path --profile minimal --default-toolchain stable
        PATH="${CARGO_HOME:-${HOME:-/root}/.cargo}/bin:$PATH"
        info "installed: $(cargo --version)"
    fi
    local version
    version=$(rustc --version | awk '{print $2}')
    if [ "$(printf '%s\n' 1.91.0 "${version%%-*}" | sort -V | head -n1)" != 1.91.0 ]; then
        info "warning: rustc $version is older than 1.91 (rustup update stable)"
    fi
}

run_tests() {
    step "test: build and run the AF_PACKET tests (root, CI=${CI:-true}: no skipping)"
    need_root test
    command -v cargo >/dev/null 2>&1 || die "test: no cargo (run: $0 deps)"
    cd "$REPO"
    export CI=${CI:-true}
    run cargo test --release -p blipmq-dataplane --test afpacket --test bulk --test conformance
}

# The physical NICs in ifindex order, less the one with the default route.
candidate_nics() {
    local default_if dev
    default_if=$(ip -4 route show default | awk '{for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit }}')
    for dev in /sys/class/net/*; do
        [ -e "$dev/device" ] || continue
        [ "${dev##*/}" = "$default_if" ] && continue
        printf '%s %s\n' "$(cat "$dev/ifindex")" "${dev##*/}"
    done | sort -n | awk '{print $2}'
}

# resolve_nic NAME [EXCLUDE]: NAME, or for "auto" the first candidate NIC
# that is not EXCLUDE.
resolve_nic() {
    local name=$1 exclude=${2:-} nic
    if [ "$name" != auto ]; then
        printf '%s\n' "$name"
        return
    fi
    for nic in $(candidate_nics); do
        if [ "$nic" != "$exclude" ]; then
            printf '%s\n' "$nic"
            return
        fi
    done
    die "no NIC left for \"auto\" (physical NICs other than the default route's: $(candidate_nics | xargs))"
}

check_cidr() {
    [[ $1 =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+/[0-9]+$ ]] || die "not an IPv4 A.B.C.D/N: $1"
}

# Stops a broker a previous nic-test left behind, and gives back the NIC it
# moved into its namespace (synchronously, before the namespace goes).
nic_cleanup() {
    local pid dev
    if [ -f "$PIDFILE" ]; then
        pid=$(cat "$PIDFILE")
        if kill -0 "$pid" 2>/dev/null && grep -q blipmqd "/proc/$pid/comm" 2>/dev/null; then
            info "stopping blipmqd (pid $pid)"
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$PIDFILE"
    fi
    if ip netns list | grep -qw "$NIC_NS"; then
        for dev in $(ip -n "$NIC_NS" -o link show | awk -F': ' '{print $2}' | cut -d@ -f1); do
            [ "$dev" = lo ] && continue
            info "moving $dev back out of netns $NIC_NS"
            ip -n "$NIC_NS" link set "$dev" netns 1 || true
        done
        run ip netns del "$NIC_NS"
    fi
}

# The kernel keeps no address on the broker's NIC: the broker owns its IP in
# user space, and the kernel must neither answer for it nor reply with RSTs.
prepare_broker_nic() {
    local nic=$1
    [ -e "/sys/class/net/$nic" ] || die "no interface $nic"
    local default_if
    default_if=$(ip -4 route show default | awk '{for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit }}')
    [ "$nic" != "$default_if" ] || die "$nic carries the default route; refusing to take its addresses"
    step "take the kernel's addresses off $nic, disable IPv6 there, bring it up"
    run ip addr flush dev "$nic"
    run sysctl -q -w "net.ipv6.conf.$nic.disable_ipv6=1" || true
    run ip link set "$nic" up
    if [ "${OFFLOADS:-on}" = off ]; then
        run ethtool -K "$nic" gro off lro off tso off gso off tx off || true
    fi
    ip -br link show dev "$nic" | sed 's/^/    /'
}

# build_broker [CARGO_ARGS]: builds blipmqd unless BLIPMQD names one.
build_broker() {
    if [ -n "${BLIPMQD:-}" ]; then
        step "blipmqd: using BLIPMQD=$BLIPMQD (no build)"
        [ -x "$BLIPMQD" ] || die "BLIPMQD=$BLIPMQD is not an executable"
        return
    fi
    step "build blipmqd (release)"
    command -v cargo >/dev/null 2>&1 || die "no cargo (run: $0 deps)"
    cd "$REPO"
    run cargo build --release -p blipmq-dataplane --bin blipmqd "$@"
    BLIPMQD=${CARGO_TARGET_DIR:-$REPO/target}/release/blipmqd
    [ -x "$BLIPMQD" ] || die "no $BLIPMQD after the build"
}

# hexbytes HEX: the bytes the hex string spells, on stdout.
hexbytes() {
    local escaped
    escaped=$(printf '%s' "$1" | sed 's/../\\x&/g')
    # shellcheck disable=SC2059 # the format is the escaped bytes
    printf "$escaped"
}

# frame OP FLAGS TOPIC [BODY_FILE]: one protocol frame on stdout
# (len u32, op u8, topic_len u16, flags u8, topic, body; big-endian).
frame() {
    local op=$1 flags=$2 topic=$3 body=${4:-/dev/null} body_len
    body_len=$(wc -c <"$body")
    hexbytes "$(printf '%08x%02x%04x%02x' $((4 + ${#topic} + body_len)) "$op" "${#topic}" "$flags")"
    printf '%s' "$topic"
    cat "$body"
}

# How many OK frames (len 4, op 0x11) FILE holds.
count_oks() {
    od -An -v -tx1 "$1" | tr -d ' \n' | grep -o 0000000411000000 | wc -l
}

# wait_until SECONDS COMMAND...: polls COMMAND every 0.1 s.
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

oks_at_least() { [ "$(count_oks "$1")" -ge "$2" ]; }

# Runs inside the client namespace: a subscriber and a publisher over kernel
# TCP, through CLIENT_IF, the link, IF, to the user-space broker.
client_roundtrip() {
    local ip=$1 port=$2 dir=$3 sub_reader pub_reader
    printf '{"protocol":1,"name":"nic-test-sub"}' >"$dir/connect-sub"
    printf '{"protocol":1,"name":"nic-test-pub"}' >"$dir/connect-pub"
    hexbytes 00000001 >"$dir/sid"
    { echo BEGIN; cat "$dir/lines"; echo END; } >"$dir/payload"

    exec 3<>"/dev/tcp/$ip/$port"
    cat <&3 >"$dir/sub.out" &
    sub_reader=$!
    { frame 1 0 "" "$dir/connect-sub"; frame 3 1 nic.test "$dir/sid"; } >&3
    wait_until 10 oks_at_least "$dir/sub.out" 2 || die "subscriber: no OK for CONNECT and SUBSCRIBE"
    grep -aq '"server_id"' "$dir/sub.out" || die "subscriber: no INFO"
    info "subscriber: INFO, CONNECT ok, SUBSCRIBE nic.test ok"

    exec 4<>"/dev/tcp/$ip/$port"
    cat <&4 >"$dir/pub.out" &
    pub_reader=$!
    { frame 1 0 "" "$dir/connect-pub"; frame 2 1 nic.test "$dir/payload"; } >&4
    wait_until 20 oks_at_least "$dir/pub.out" 2 || die "publisher: no OK for CONNECT and PUBLISH"
    info "publisher: PUBLISH of $(wc -c <"$dir/payload") bytes ok"

    wait_until 20 grep -aq '^END$' "$dir/sub.out" || die "subscriber: the message did not arrive whole"
    grep -a '^line-' "$dir/sub.out" >"$dir/got" || true
    cmp -s "$dir/got" "$dir/lines" || die "subscriber: the message arrived altered"
    info "subscriber: MESSAGE intact ($(wc -l <"$dir/got") lines)"

    frame 7 0 "" >&3
    frame 7 0 "" >&4
    wait_until 10 bash -c "! kill -0 $sub_reader 2>/dev/null && ! kill -0 $pub_reader 2>/dev/null" ||
        info "warning: the broker did not close after DISCONNECT"
    kill "$sub_reader" "$pub_reader" 2>/dev/null || true
    exec 3>&- 4>&-
}

# The EXIT trap of nic-test (and its end): stop the broker, give back the
# client NIC, and on failure show the broker's log.
nic_test_exit() {
    local status=${1:-$?}
    step "nic-test: stop the broker, give back the NIC"
    nic_cleanup
    dpdk_cleanup
    if [ "$status" != 0 ] && [ -n "${NIC_DIR:-}" ]; then
        echo "--- broker log, last 40 lines ($NIC_DIR/broker.log):"
        tail -n 40 "$NIC_DIR/broker.log" || true
    elif [ -n "${NIC_DIR:-}" ]; then
        rm -rf "$NIC_DIR"
    fi
}

# nic_test BACKEND IF CIDR [CLIENT_IF CLIENT_CIDR], BACKEND afpacket or dpdk.
nic_test() {
    local backend=$1
    shift
    [ $# = 2 ] || [ $# = 4 ] || die "usage: $0 nic-test IF CIDR [CLIENT_IF CLIENT_CIDR]"
    need_root nic-test
    local cidr=$2 client_cidr=${4:-} nic client_nic="" broker_ip pid mac
    check_cidr "$cidr"
    [ -z "$client_cidr" ] || check_cidr "$client_cidr"
    broker_ip=${cidr%/*}

    step "nic-test: clean up after an earlier run"
    nic_cleanup
    nic=$(resolve_nic "$1")
    [ $# = 2 ] || client_nic=$(resolve_nic "$3" "$nic")
    [ "$nic" != "$client_nic" ] || die "IF and CLIENT_IF are both $nic"
    info "broker NIC: $nic ($cidr)${client_nic:+, client NIC: $client_nic ($client_cidr)}"

    if [ "$backend" = dpdk ]; then
        build_broker --features dpdk
    else
        build_broker
    fi
    prepare_broker_nic "$nic"
    mac=$(cat "/sys/class/net/$nic/address")

    if [ -n "$client_nic" ]; then
        step "move $client_nic into netns $NIC_NS with $client_cidr (the client end of the link)"
        run ip netns add "$NIC_NS"
        run ip link set "$client_nic" netns "$NIC_NS"
        run ip -n "$NIC_NS" link set lo up
        run ip -n "$NIC_NS" addr add "$client_cidr" dev "$client_nic"
        run ip -n "$NIC_NS" link set "$client_nic" up
        if [ "$backend" = dpdk ] && [ "${DPDK_VDEV:-0}" = 1 ]; then
            # A veth peer sends partial checksums and GSO frames, which
            # DPDK's af_packet driver passes on as they are.
            run ip netns exec "$NIC_NS" ethtool -K "$client_nic" tx off tso off gso off
        fi
    fi

    NIC_DIR=$(mktemp -d /tmp/blipmq-nic-test.XXXXXX)
    local dir=$NIC_DIR
    trap nic_test_exit EXIT
    local broker_args=(--backend afpacket --interface "$nic")
    if [ "$backend" = dpdk ]; then
        dpdk_prepare "$nic"
        broker_args=(--backend dpdk -- "${DPDK_EAL[@]}")
    fi

    # Flags first; a `--` (DPDK's EAL arguments) stays last.
    local flags=(--ip "$cidr" --listen "0.0.0.0:$PORT" --workers "$WORKERS")
    local args=("${broker_args[@]:0:2}" "${flags[@]}" "${broker_args[@]:2}")
    step "start blipmqd --backend $backend on $nic owning $cidr, port $PORT, $WORKERS workers"
    printf '    $ %s\n' "$BLIPMQD ${args[*]}"
    "$BLIPMQD" "${args[@]}" >"$dir/broker.log" 2>&1 &
    pid=$!
    echo "$pid" >"$PIDFILE"
    wait_until 30 grep -q 'blipmqd listening on' "$dir/broker.log" || die "blipmqd did not start"
    kill -0 "$pid" 2>/dev/null || die "blipmqd exited"
    info "$(grep -m1 'blipmqd listening on' "$dir/broker.log") (pid $pid)"
    if [ -e "/sys/class/net/$nic" ]; then
        [ -z "$(ip -4 -o addr show dev "$nic")" ] || die "the kernel has an IPv4 address on $nic"
        info "the kernel has no IPv4 address on $nic"
    fi

    if [ -z "$client_nic" ]; then
        step "nic-test: no CLIENT_IF: the broker started; stopping it"
        info "to test from the other end of the link (e.g. the VM's host), run"
        info "  $0 broker $nic $cidr    and from there: ping $broker_ip; connect to $broker_ip:$PORT"
        trap - EXIT
        nic_test_exit 0
        return
    fi

    step "ARP and ICMP echo across the link: ping $broker_ip from $NIC_NS"
    run ip netns exec "$NIC_NS" ping -c 3 -i 0.2 -W 2 "$broker_ip"
    local lladdr
    lladdr=$(ip -n "$NIC_NS" neigh show "$broker_ip" | awk '{for (i = 1; i < NF; i++) if ($i == "lladdr") print $(i + 1)}')
    [ "$lladdr" = "$mac" ] || die "ARP: $broker_ip is at '$lladdr', expected $nic's MAC $mac"
    info "ARP: $broker_ip is at $lladdr ($nic's MAC), answered in user space"

    step "publish/subscribe round trip across the link: 2 TCP connections to $broker_ip:$PORT"
    seq -f 'line-%06g' 1 20000 >"$dir/lines"
    run timeout 90 ip netns exec "$NIC_NS" bash "$REPO/vagrant/provision.sh" _client "$broker_ip" "$PORT" "$dir"

    trap - EXIT
    nic_test_exit 0
    step "nic-test: passed"
}

# dpdk_prepare IF: hugepages, and IF bound to vfio-pci (no-IOMMU mode);
# sets DPDK_EAL to the EAL arguments that give the broker that NIC. With
# DPDK_VDEV=1: no binding, DPDK's af_packet driver on IF without hugepages.
dpdk_prepare() {
    local nic=$1 pci
    if [ "${DPDK_VDEV:-0}" = 1 ]; then
        step "dpdk: net_af_packet on $nic (DPDK_VDEV=1: nothing bound)"
        DPDK_EAL=(--no-pci --no-huge -m 512 "--vdev=net_af_packet0,iface=$nic,qpairs=$WORKERS")
        return
    fi
    step "dpdk: 512 MiB of 2 MiB hugepages"
    DPDK_HUGEPAGES=1
    run bash "$REPO/hugepage-setup/hugepages.sh" --size 2M --memory 512M
    pci=$(basename "$(readlink -f "/sys/class/net/$nic/device")")
    case "$pci" in
        virtio*) pci=$(basename "$(readlink -f "/sys/class/net/$nic/device/..")") ;;
    esac
    step "dpdk: bind $nic ($pci) to vfio-pci, no-IOMMU mode"
    DPDK_BOUND=$pci
    run bash "$REPO/hugepage-setup/bind-nic.sh" --noiommu "$nic"
    DPDK_EAL=(-a "$pci")
}

# Gives back what dpdk_prepare took.
dpdk_cleanup() {
    if [ -n "${DPDK_BOUND:-}" ]; then
        run bash "$REPO/hugepage-setup/bind-nic.sh" --unbind "$DPDK_BOUND" || true
        DPDK_BOUND=
    fi
    if [ -n "${DPDK_HUGEPAGES:-}" ]; then
        run bash "$REPO/hugepage-setup/hugepages.sh" --release || true
        DPDK_HUGEPAGES=
    fi
}

broker() {
    [ $# -ge 2 ] || die "usage: $0 broker IF CIDR [blipmqd ARGS]"
    need_root broker
    local nic cidr=$2
    check_cidr "$cidr"
    nic=$(resolve_nic "$1")
    shift 2
    build_broker
    prepare_broker_nic "$nic"
    step "run blipmqd on $nic owning $cidr, port $PORT (Ctrl-C drains and stops it)"
    printf '    $ %s\n' "$BLIPMQD --backend afpacket --interface $nic --ip $cidr --listen 0.0.0.0:$PORT --workers $WORKERS $*"
    exec "$BLIPMQD" --backend afpacket --interface "$nic" --ip "$cidr" --listen "0.0.0.0:$PORT" \
        --workers "$WORKERS" "$@"
}

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

case "${1:-}" in
    deps) deps ;;
    test) run_tests ;;
    nic-test)
        shift
        nic_test afpacket "$@"
        ;;
    dpdk-nic-test)
        shift
        nic_test dpdk "$@"
        ;;
    broker)
        shift
        broker "$@"
        ;;
    all)
        shift
        [ $# = 0 ] || [ $# = 2 ] || [ $# = 4 ] || die "usage: $0 all [IF CIDR [CLIENT_IF CLIENT_CIDR]]"
        deps
        run_tests
        if [ $# -gt 0 ]; then
            nic_test afpacket "$@"
            # In a subshell: its EXIT trap gives the NIC back either way.
            if (nic_test dpdk "$@"); then
                info "the DPDK path works on this VM's NIC"
            else
                info "warning: the DPDK path failed on this VM (see above); the afpacket path works"
            fi
        fi
        step "all: done"
        ;;
    _client)
        shift
        client_roundtrip "$@"
        ;;
    *) usage ;;
esac
