#!/usr/bin/env bash
# The AF_PACKET lab on one host, with network namespaces:
#
#   netns blipmq-b                              netns blipmq-c
#   bq-b0 (no kernel address)   <-- veth -->    bq-c0  198.18.0.1/24
#   blipmqd --backend afpacket owns 198.18.0.2
#
# The broker side gets a namespace of its own so that its kernel, with no
# address and no route, neither answers nor forwards what the broker handles
# in user space. Addresses come from 198.18.0.0/15 (benchmarking space).
#
#   vagrant/netns-lab.sh up       build the lab (idempotent: rebuilds)
#   vagrant/netns-lab.sh down     remove it
#   vagrant/netns-lab.sh status   show it
#   vagrant/netns-lab.sh broker [ARGS]   run blipmqd in the broker namespace:
#       blipmqd --backend afpacket --interface BROKER_IF --ip LAB_SUBNET.2/24
#       --listen 0.0.0.0:PORT --workers 1 ARGS, where a flag given in ARGS
#       (--workers 2 or --workers=2, --listen ...) replaces the script's
#       (these flags override the keys of a --config file, as flags do)
#   vagrant/netns-lab.sh broker-dpdk [ARGS] [-- EAL_ARGS]   the same on the
#       dpdk backend (a blipmqd built with --features blipmq-dataplane/dpdk):
#       blipmqd --backend dpdk --ip LAB_SUBNET.2/24 --listen 0.0.0.0:PORT
#       --workers 1 ARGS -- --no-pci --no-huge -m 512 --file-prefix blipmq-lab
#       --vdev=net_af_packet0,iface=BROKER_IF,qpairs=WORKERS EAL_ARGS;
#       it turns the client interface's offloads off first (DPDK's af_packet
#       driver neither completes partial checksums nor takes GSO frames)
#   vagrant/netns-lab.sh client CMD...   run a command in the client namespace
#
# Offloads stay as veth sets them (tx checksum offload, TSO/GSO on): the
# afpacket backend trusts frames the kernel marks TP_STATUS_CSUMNOTREADY
# (partial checksums from a local sender), verifies all others in software,
# and takes GSO frames whole (read from the copy the kernel queues for frames larger than a ring slot).
# To test with offloads off instead: OFFLOADS=off vagrant/netns-lab.sh up
# (needs ethtool).
#
# Environment: LAB_SUBNET (default 198.18.0), BROKER_NS, CLIENT_NS,
# BROKER_IF, CLIENT_IF, PORT (default 9999), BLIPMQD (path to the binary;
# default: target/release/blipmqd of this checkout, or of CARGO_TARGET_DIR).
set -euo pipefail

SUBNET=${LAB_SUBNET:-198.18.0}
BROKER_NS=${BROKER_NS:-blipmq-b}
CLIENT_NS=${CLIENT_NS:-blipmq-c}
BROKER_IF=${BROKER_IF:-bq-b0}
CLIENT_IF=${CLIENT_IF:-bq-c0}
PORT=${PORT:-9999}
BLIPMQD=${BLIPMQD:-${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target}/release/blipmqd}

case "$SUBNET" in
    198.18.* | 198.19.*) ;;
    *) echo "LAB_SUBNET must be inside 198.18.0.0/15 (got $SUBNET)" >&2; exit 2 ;;
esac

need_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "netns-lab: needs root (network namespaces, veth)" >&2
        exit 1
    fi
}

down() {
    # Deleting a namespace deletes the veth end inside it, and so the pair.
    ip netns del "$BROKER_NS" 2>/dev/null || true
    ip netns del "$CLIENT_NS" 2>/dev/null || true
}

up() {
    need_root
    down
    trap 'echo "netns-lab: setup failed, cleaning up" >&2; down' ERR
    ip netns add "$BROKER_NS"
    ip netns add "$CLIENT_NS"
    ip link add "$BROKER_IF" netns "$BROKER_NS" type veth peer name "$CLIENT_IF" netns "$CLIENT_NS"
    ip -n "$BROKER_NS" link set lo up
    ip -n "$BROKER_NS" link set "$BROKER_IF" up
    ip -n "$CLIENT_NS" link set lo up
    ip -n "$CLIENT_NS" addr add "$SUBNET.1/24" dev "$CLIENT_IF"
    ip -n "$CLIENT_NS" link set "$CLIENT_IF" up
    if [ "${OFFLOADS:-on}" = off ]; then
        ip netns exec "$CLIENT_NS" ethtool -K "$CLIENT_IF" tx off tso off gso off
        ip netns exec "$BROKER_NS" ethtool -K "$BROKER_IF" tx off tso off gso off gro off
    fi
    trap - ERR
    status
    echo
    echo "broker: $0 broker            (blipmqd --backend afpacket --interface $BROKER_IF --ip $SUBNET.2/24)"
    echo "client: $0 client CMD...     (reach the broker at $SUBNET.2:$PORT)"
}

status() {
    for ns in "$BROKER_NS" "$CLIENT_NS"; do
        if ip netns list | grep -qw "$ns"; then
            echo "== netns $ns"
            ip -n "$ns" -br link show
            ip -n "$ns" -br -4 addr show
        else
            echo "== netns $ns: absent"
        fi
    done
}

# has_flag FLAG ARGS...: whether ARGS give FLAG (as "FLAG V" or "FLAG=V")
# before a "--" (after which DPDK's EAL arguments would follow).
has_flag() {
    local flag=$1 arg
    shift
    for arg in "$@"; do
        [ "$arg" != -- ] || return 1
        [ "$arg" = "$flag" ] || [[ $arg == "$flag="* ]] && return 0
    done
    return 1
}

broker() {
    need_root
    if [ ! -x "$BLIPMQD" ]; then
        echo "netns-lab: no blipmqd at $BLIPMQD: cargo build --release -p blipmq-dataplane --bin blipmqd, or set BLIPMQD" >&2
        exit 1
    fi
    # The lab's settings, each unless the user's ARGS give that flag.
    local defaults=() flag value
    for flag in --backend=afpacket --interface="$BROKER_IF" --ip="$SUBNET.2/24" \
        --listen="0.0.0.0:$PORT" --workers=1; do
        value=${flag#*=}
        flag=${flag%%=*}
        has_flag "$flag" "$@" || defaults+=("$flag" "$value")
    done
    exec ip netns exec "$BROKER_NS" "$BLIPMQD" "${defaults[@]}" "$@"
}

# broker-dpdk [ARGS] [-- EAL_ARGS]
broker_dpdk() {
    need_root
    if [ ! -x "$BLIPMQD" ]; then
        echo "netns-lab: no blipmqd at $BLIPMQD: cargo build --release -p blipmq-dataplane --features dpdk --bin blipmqd, or set BLIPMQD" >&2
        exit 1
    fi
    local args=() eal=() seen_dashes=0 arg
    for arg in "$@"; do
        if [ $seen_dashes = 0 ] && [ "$arg" = -- ]; then
            seen_dashes=1
        elif [ $seen_dashes = 0 ]; then
            args+=("$arg")
        else
            eal+=("$arg")
        fi
    done
    local workers=1 i
    for ((i = 0; i < ${#args[@]}; i++)); do
        case "${args[$i]}" in
            --workers) workers=${args[$((i + 1))]:-1} ;;
            --workers=*) workers=${args[$i]#--workers=} ;;
        esac
    done
    local defaults=() flag value
    for flag in --backend=dpdk --ip="$SUBNET.2/24" --listen="0.0.0.0:$PORT" --workers=1; do
        value=${flag#*=}
        flag=${flag%%=*}
        has_flag "$flag" "${args[@]}" || defaults+=("$flag" "$value")
    done
    ip netns exec "$CLIENT_NS" ethtool -K "$CLIENT_IF" tx off tso off gso off >/dev/null
    exec ip netns exec "$BROKER_NS" "$BLIPMQD" "${defaults[@]}" "${args[@]}" -- \
        --no-pci --no-huge -m 512 --file-prefix blipmq-lab \
        "--vdev=net_af_packet0,iface=$BROKER_IF,qpairs=$workers" "${eal[@]}"
}

case "${1:-}" in
    up) up ;;
    down) need_root; down ;;
    status) status ;;
    broker)
        shift
        broker "$@"
        ;;
    broker-dpdk)
        shift
        broker_dpdk "$@"
        ;;
    client)
        need_root
        shift
        exec ip netns exec "$CLIENT_NS" "$@"
        ;;
    *)
        echo "usage: $0 up|down|status|broker [ARGS]|broker-dpdk [ARGS] [-- EAL_ARGS]|client CMD..." >&2
        exit 2
        ;;
esac
