#!/usr/bin/env bash
# bind-nic.sh: hand a NIC to DPDK (vfio-pci) and give it back to its kernel
# driver, through dpdk-devbind.py (Debian package dpdk). Refuses NICs the
# host needs: the default route's, any with an IP address, and anything that
# is not a PCI network device (veth, lo, bridges, USB NICs).
set -euo pipefail

# shellcheck source=common.sh source-path=SCRIPTDIR
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/common.sh"

PROG=${0##*/}
# For tests only: another root for sysfs (a fake tree); /sys normally.
SYS=${BLIPMQ_SYSFS:-/sys}
STATE_DIR=${BLIPMQ_NIC_STATE_DIR:-/run/blipmq-nic}
DEVBIND=${DPDK_DEVBIND:-dpdk-devbind.py}
DPDK_DRIVER=vfio-pci
NOIOMMU_PARAM=module/vfio/parameters/enable_unsafe_noiommu_mode


usage() {
    cat <<EOF
Usage:
  $PROG [--noiommu] [--dry-run] NIC
  $PROG --unbind [--driver DRIVER] [--force] [--dry-run] NIC
  $PROG --check [NIC]
  $PROG --help

NIC: an interface name (eth1) or a PCI address (0000:03:00.0 or 03:00.0).

Bind (the default action): loads vfio-pci, binds NIC's PCI function to it
with dpdk-devbind.py, and records the driver it had in $STATE_DIR
so that --unbind restores it. Then start DPDK with -a <PCI address>:
  blipmqd --backend dpdk --ip A.B.C.D/N --workers N -- -a 0000:03:00.0
Refused (with the reason) when the NIC
  - carries the default route (IPv4 or IPv6),
  - has any IP address, link-local ones included (take them off first:
    ip addr flush dev IF; or ip link set IF down),
  - has no PCI device (veth, lo, bridge, tun...) or is not a network
    controller,
  - is bound to a kernel driver but has no interface in this network
    namespace (its addresses cannot be checked).
  --noiommu        turn on vfio's unsafe no-IOMMU mode first (writes Y to
                   /sys/$NOIOMMU_PARAM): for VMs
                   without a virtual IOMMU. Unsafe: the device can DMA
                   anywhere in memory. Without it, binding needs an IOMMU
                   (intel_iommu=on or amd_iommu=on on the kernel command line).

Unbind:
  --unbind         give NIC back to the driver recorded when it was bound
                   (NIC may be the interface name it had). Refuses while a
                   process (DPDK) has its VFIO group open: unbinding would
                   hang until that process exits.
  --driver DRIVER  the driver to give it back to when there is no record
                   (see 'lspci -k -s PCI', "Kernel modules"); "none" leaves
                   it unbound
  --force          unbind even while its VFIO group is open

Check (changes nothing, needs no root):
  --check          vfio modules, no-IOMMU mode, IOMMU groups, dpdk-devbind.py,
                   and every PCI network device: driver, interfaces,
                   addresses, default route, NUMA node, whether it can be bound
  --check NIC      the same; exit 0 if NIC is bound to vfio-pci (ready for
                   DPDK's -a), 1 if not

Common:
  --dry-run        print every modprobe, sysfs write and dpdk-devbind.py call
                   it would make, and make none
  -h, --help       this text

Environment: DPDK_DEVBIND (path of dpdk-devbind.py, e.g. usertools/ of a DPDK
source tree), BLIPMQ_NIC_STATE_DIR (default $STATE_DIR).
Exit status: 0 done, 1 failed or refused, 2 usage error. Binding needs root.
EOF
}








PCI_RE='^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$'
SHORT_PCI_RE='^[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$'

# read_line FILE: its first line, or nothing.
read_line() {
    local line=""
    [ -r "$1" ] && read -r line <"$1"
    printf '%s\n' "$line"
}

# pci_of_netdev IF: the PCI address of IF's device, or nothing (virtual
# interface, or a device on another bus such as USB).
pci_of_netdev() {
    local dev subsystem
    dev=$(readlink -f "$SYS/class/net/$1/device" 2>/dev/null) || return 0
    [ -n "$dev" ] && [ -e "$dev" ] || return 0
    subsystem=$(readlink -f "$dev/subsystem" 2>/dev/null || true)
    # virtio-net: the netdev hangs off virtioN, whose parent is the PCI function.
    if [ "${subsystem##*/}" = virtio ]; then
        dev=${dev%/*}
        subsystem=$(readlink -f "$dev/subsystem" 2>/dev/null || true)
    fi
    [ "${subsystem##*/}" = pci ] || return 0
    [[ ${dev##*/} =~ $PCI_RE ]] && printf '%s\n' "${dev##*/}"
    return 0
}

# netdevs_of PCI: the interfaces of PCI in this network namespace.
netdevs_of() {
    local net name
    for net in "$SYS"/class/net/*; do
        [ -e "$net" ] || continue
        name=${net##*/}
        [ "$(pci_of_netdev "$name")" = "$1" ] && printf '%s\n' "$name"
    done
    return 0
}

driver_of() {
    local link
    link=$(readlink "$SYS/bus/pci/devices/$1/driver" 2>/dev/null) || return 0
    printf '%s\n' "${link##*/}"
}

# module_loaded DRIVER: loaded or built in (as dpdk-devbind.py checks).
module_loaded() {
    local module=${1//-/_}
    [ -d "$SYS/module/$module" ] && return 0
    local builtin line
    builtin=/lib/modules/$(uname -r)/modules.builtin
    [ "$SYS" = /sys ] && [ -r "$builtin" ] || return 1
    while read -r line; do
        line=${line##*/}
        line=${line%.ko}
        [ "${line//-/_}" = "$module" ] && return 0
    done <"$builtin"
    return 1
}

# The interfaces carrying a default route (IPv4 or IPv6), one a line.
default_route_devs() {
    local family line words i
    for family in -4 -6; do
        while read -r line; do
            read -ra words <<<"$line"
            for ((i = 0; i + 1 < ${#words[@]}; i++)); do
                [ "${words[i]}" = dev ] && printf '%s\n' "${words[i + 1]}"
            done
        done < <(ip "$family" route show default 2>/dev/null || true)
    done
}

# addresses_of IF: "inet A/N" lines; fails when ip cannot tell.
addresses_of() {
    local out line words i
    out=$(ip -o addr show dev "$1" 2>&1) || {
        printf '%s\n' "$out" >&2
        return 1
    }
    while read -r line; do
        read -ra words <<<"$line"
        for ((i = 0; i + 1 < ${#words[@]}; i++)); do
            if [ "${words[i]}" = inet ] || [ "${words[i]}" = inet6 ]; then
                printf '%s %s\n' "${words[i]}" "${words[i + 1]}"
            fi
        done
    done <<<"$out"
}

# virtual_kind IF: "veth", "bridge", "loopback"... as ip reports it.
virtual_kind() {
    local json
    json=$(ip -j -d link show dev "$1" 2>/dev/null || true)
    if [[ $json =~ \"info_kind\":\"([A-Za-z0-9_-]+)\" ]]; then
        printf '%s\n' "${BASH_REMATCH[1]}"
    elif [[ $json =~ \"link_type\":\"loopback\" ]] || [ "$1" = lo ]; then
        printf 'loopback\n'
    else
        printf 'virtual\n'
    fi
}

# ---------------------------------------------------------------------------
# Records: $STATE_DIR/<PCI address> holds "driver DRIVER" and
# "interfaces IF...", written before binding.

record_field() {
    local file=$STATE_DIR/$1 key value
    [ -r "$file" ] || return 0
    while read -r key value; do
        [ "$key" = "$2" ] && printf '%s\n' "$value"
    done <"$file"
    return 0
}

# record_by_interface IF: the PCI address whose record names IF.
record_by_interface() {
    local file names name
    for file in "$STATE_DIR"/*; do
        [ -f "$file" ] || continue
        [[ ${file##*/} =~ $PCI_RE ]] || continue
        names=$(record_field "${file##*/}" interfaces)
        for name in $names; do
            if [ "$name" = "$1" ]; then
                printf '%s\n' "${file##*/}"
                return 0
            fi
        done
    done
    return 0
}

# ---------------------------------------------------------------------------

# resolve NIC: sets PCI, IFACES (array), DRIVER; dies with the reason when
# NIC is no PCI network device.
resolve() {
    local nic=$1 class kind
    IFACES=()
    if [[ $nic =~ $SHORT_PCI_RE ]]; then
        nic=0000:$nic
    fi
    if [[ $nic =~ $PCI_RE ]]; then
        PCI=${nic,,}
        [ -e "$SYS/bus/pci/devices/$PCI" ] || die "no PCI device $PCI (see: $PROG --check)"
    elif [ -e "$SYS/class/net/$nic" ]; then
        PCI=$(pci_of_netdev "$nic")
        if [ -z "$PCI" ]; then
            if [ ! -e "$SYS/class/net/$nic/device" ]; then
                kind=$(virtual_kind "$nic")
                die "refusing $nic: it has no PCI device ($kind interface); only a PCI NIC can be bound to $DPDK_DRIVER (for a veth, use DPDK's net_af_packet or net_af_xdp vdev instead)"
            fi
            die "refusing $nic: its device is not on the PCI bus ($(readlink -f "$SYS/class/net/$nic/device/subsystem" 2>/dev/null || echo unknown)); only a PCI NIC can be bound to $DPDK_DRIVER"
        fi
    elif [ -n "$(record_by_interface "$nic")" ]; then
        # An interface that went away when its NIC was bound to DPDK.
        PCI=$(record_by_interface "$nic")
    else
        die "no interface or PCI device named $nic (see: $PROG --check)"
    fi
    class=$(read_line "$SYS/bus/pci/devices/$PCI/class")
    [[ $class == 0x02* ]] || die "refusing $PCI: not a network controller (PCI class $class)"
    mapfile -t IFACES < <(netdevs_of "$PCI")
    DRIVER=$(driver_of "$PCI")
}

# refusals PCI DRIVER IFACES...: why binding PCI would hurt the host, one
# reason a line; nothing when it is safe.
refusals() {
    local pci=$1 driver=$2 iface addrs defaults
    shift 2
    if [ $# = 0 ] && [ -n "$driver" ] && ! is_dpdk_driver "$driver"; then
        printf '%s is bound to %s but has no interface in this network namespace: its addresses and routes cannot be checked (moved to another netns?)\n' "$pci" "$driver"
    fi
    defaults=$(default_route_devs)
    for iface in "$@"; do
        if [[ $'\n'$defaults$'\n' == *$'\n'$iface$'\n'* ]]; then
            printf '%s (%s) carries the default route: binding it would cut this host off the network\n' "$iface" "$pci"
        fi
        if ! addrs=$(addresses_of "$iface" 2>/dev/null); then
            printf 'cannot read the addresses of %s (%s)\n' "$iface" "$pci"
        elif [ -n "$addrs" ]; then
            printf '%s (%s) has IP addresses: %s (take them off first: ip addr flush dev %s)\n' \
                "$iface" "$pci" "$(printf '%s\n' "$addrs" | cut -d' ' -f2 | paste -sd ' ')" "$iface"
        fi
    done
}

is_dpdk_driver() {
    case $1 in
        vfio-pci | uio_pci_generic | igb_uio) return 0 ;;
        *) return 1 ;;
    esac
}

# vfio_users PCI: "PID COMM" of processes holding PCI's VFIO group open.
vfio_users() {
    local group link proc pid comm links
    link=$(readlink "$SYS/bus/pci/devices/$1/iommu_group" 2>/dev/null) || return 0
    group=${link##*/}
    for proc in /proc/[0-9]*; do
        pid=${proc#/proc/}
        links=$(QUOTING_STYLE=literal stat -c '%N' "$proc"/fd/* 2>/dev/null || true)
        if [[ $links == *" -> /dev/vfio/$group"* ]] || [[ $links == *" -> /dev/vfio/noiommu-$group"* ]]; then
            comm='?'
            read -r comm <"$proc/comm" 2>/dev/null || true
            printf '%s %s\n' "$pid" "$comm"
        fi
    done
}

devbind_path() {
    if [[ $DEVBIND == */* ]]; then
        [ -x "$DEVBIND" ] && printf '%s\n' "$DEVBIND"
    else
        command -v "$DEVBIND" 2>/dev/null || true
    fi
}

# devbind ARGS...: runs dpdk-devbind.py (or says, in a dry run, that it would).
devbind() {
    local path
    path=$(devbind_path)
    if [ -z "$path" ]; then
        if [ -n "$DRY_RUN" ]; then
            printf 'dry-run: %s %s   (note: %s is not installed: apt-get install dpdk)\n' "$DEVBIND" "$*" "$DEVBIND"
            return 0
        fi
        die "$DEVBIND not found: apt-get install dpdk (or set DPDK_DEVBIND to its path)"
    fi
    act "$path" "$@"
}

iommu_groups() {
    local count=0 group
    for group in "$SYS"/kernel/iommu_groups/*; do
        [ -e "$group" ] && count=$((count + 1))
    done
    printf '%s\n' "$count"
}

# ---------------------------------------------------------------------------

bind() {
    resolve "$1"
    local pci=$PCI reasons noiommu
    if [ "$DRIVER" = "$DPDK_DRIVER" ]; then
        printf '%s is already bound to %s (DPDK: -a %s)\n' "$pci" "$DPDK_DRIVER" "$pci"
        return 0
    fi
    if [ -n "$DRIVER" ] && is_dpdk_driver "$DRIVER"; then
        die "$pci is bound to $DRIVER, another DPDK driver: $PROG --unbind --driver none $pci first"
    fi
    reasons=$(refusals "$pci" "$DRIVER" "${IFACES[@]}")
    if [ -n "$reasons" ]; then
        printf '%s: refusing to bind %s%s:\n' "$PROG" "$pci" "${IFACES[*]:+ (${IFACES[*]})}" >&2
        printf '    %s\n' "${reasons//$'\n'/$'\n'    }" >&2
        return "$EXIT_FAIL"
    fi
    noiommu=$(read_line "$SYS/$NOIOMMU_PARAM")
    if [ -z "$NOIOMMU" ] && [ "$(iommu_groups)" = 0 ] && [ "$noiommu" != Y ]; then
        die "no IOMMU groups ($SYS/kernel/iommu_groups is empty): $DPDK_DRIVER needs an IOMMU (intel_iommu=on / amd_iommu=on), or in a VM without one: --noiommu (unsafe no-IOMMU mode)"
    fi
    need_root "binding a NIC"

    printf '%s%s: %s -> %s\n' "$pci" "${IFACES[*]:+ (${IFACES[*]})}" "${DRIVER:-no driver}" "$DPDK_DRIVER"
    if ! module_loaded "$DPDK_DRIVER"; then
        act modprobe "$DPDK_DRIVER" || die "modprobe $DPDK_DRIVER failed: this kernel has no VFIO (CONFIG_VFIO_PCI)"
    fi
    if [ -n "$NOIOMMU" ] && [ "$noiommu" != Y ]; then
        if [ -z "$DRY_RUN" ] && [ ! -e "$SYS/$NOIOMMU_PARAM" ]; then
            die "this kernel's vfio has no no-IOMMU mode ($SYS/$NOIOMMU_PARAM missing: CONFIG_VFIO_NOIOMMU)"
        fi
        warn "enabling vfio's unsafe no-IOMMU mode: the device can DMA anywhere in memory"
        write_sys Y "$SYS/$NOIOMMU_PARAM"
    fi

    if [ -n "$DRY_RUN" ]; then
        printf 'dry-run: record "driver %s" and "interfaces %s" in %s\n' "${DRIVER:-none}" "${IFACES[*]}" "$STATE_DIR/$pci"
    else
        printf 'record: "driver %s" and "interfaces %s" in %s\n' "${DRIVER:-none}" "${IFACES[*]}" "$STATE_DIR/$pci"
        mkdir -p "$STATE_DIR"
        printf 'driver %s\ninterfaces %s\n' "${DRIVER:-none}" "${IFACES[*]}" >"$STATE_DIR/$pci"
    fi
    devbind --bind="$DPDK_DRIVER" "$pci" || die "dpdk-devbind.py failed to bind $pci"
    [ -n "$DRY_RUN" ] && return 0
    local now
    now=$(driver_of "$pci")
    [ "$now" = "$DPDK_DRIVER" ] || die "$pci is on '${now:-no driver}' after dpdk-devbind.py, not $DPDK_DRIVER"
    printf 'bound: %s to %s (was %s; %s --unbind %s restores it)\n' "$pci" "$DPDK_DRIVER" "${DRIVER:-no driver}" "$PROG" "$pci"
    printf 'DPDK: blipmqd --backend dpdk --ip A.B.C.D/N -- -a %s\n' "$pci"
}

unbind() {
    resolve "$1"
    local pci=$PCI target users now
    if [ -n "$DRIVER" ] && ! is_dpdk_driver "$DRIVER"; then
        printf '%s%s is on its kernel driver %s, not on a DPDK driver: nothing to unbind\n' "$pci" "${IFACES[*]:+ (${IFACES[*]})}" "$DRIVER"
        record_delete "$pci"
        return 0
    fi
    target=${TO_DRIVER:-$(record_field "$pci" driver)}
    if [ -z "$target" ]; then
        die "no record of $pci's original driver in $STATE_DIR; give --driver DRIVER (see: lspci -k -s $pci, \"Kernel modules\"), or --driver none"
    fi
    if [ "$target" = none ] && [ -z "$DRIVER" ]; then
        printf '%s is bound to no driver already\n' "$pci"
        record_delete "$pci"
        return 0
    fi
    if [ "$DRIVER" = "$target" ]; then
        printf '%s is on %s already\n' "$pci" "$target"
        record_delete "$pci"
        return 0
    fi
    users=$(vfio_users "$pci")
    if [ -n "$users" ]; then
        if [ -z "$FORCE" ]; then
            printf '%s: refusing to unbind %s: its VFIO group is open (unbinding waits until they close it):\n    pid %s\n' \
                "$PROG" "$pci" "${users//$'\n'/$'\n'    pid }" >&2
            printf '%s: stop that DPDK process first, or --force\n' "$PROG" >&2
            return "$EXIT_FAIL"
        fi
        warn "--force: $pci's VFIO group is open (pid ${users//$'\n'/, pid }); the unbind waits until it is closed"
    fi
    need_root "unbinding a NIC"
    printf '%s: %s -> %s\n' "$pci" "${DRIVER:-no driver}" "$target"
    if [ "$target" = none ]; then
        devbind --unbind "$pci" || die "dpdk-devbind.py failed to unbind $pci"
    else
        if ! module_loaded "$target"; then
            act modprobe "$target" || die "modprobe $target failed"
        fi
        devbind --bind="$target" "$pci" || die "dpdk-devbind.py failed to bind $pci to $target"
    fi
    [ -n "$DRY_RUN" ] && return 0
    now=$(driver_of "$pci")
    if [ "$target" = none ]; then
        [ -z "$now" ] || die "$pci is still on $now"
    else
        [ "$now" = "$target" ] || die "$pci is on '${now:-no driver}' after dpdk-devbind.py, not $target"
    fi
    record_delete "$pci"
    mapfile -t IFACES < <(netdevs_of "$pci")
    printf 'restored: %s on %s%s\n' "$pci" "$target" "${IFACES[*]:+ (interface ${IFACES[*]})}"
}

record_delete() {
    [ -e "$STATE_DIR/$1" ] || return 0
    if [ -n "$DRY_RUN" ]; then
        printf 'dry-run: rm %s\n' "$STATE_DIR/$1"
    else
        rm -f "$STATE_DIR/$1"
    fi
}

check() {
    local want=${1:-} path dev pci class driver ifaces iface addrs reasons status=0 numa vendor device noiommu
    if [ -n "$want" ]; then
        resolve "$want"
        want=$PCI
    fi
    printf 'vfio:\n'
    printf '  vfio-pci module: %s\n' "$(module_loaded vfio-pci && echo loaded || echo 'not loaded (binding loads it; this kernel may have none)')"
    printf '  IOMMU groups: %s\n' "$(iommu_groups)"
    noiommu=$(read_line "$SYS/$NOIOMMU_PARAM")
    printf '  no-IOMMU mode: %s\n' "${noiommu:-unavailable (vfio not loaded)}"
    path=$(devbind_path)
    printf '  dpdk-devbind.py: %s\n' "${path:-not found (apt-get install dpdk, or DPDK_DEVBIND=PATH)}"
    printf 'PCI network devices:\n'
    local any=""
    for dev in "$SYS"/bus/pci/devices/*; do
        [ -e "$dev" ] || continue
        pci=${dev##*/}
        class=$(read_line "$dev/class")
        [[ $class == 0x02* ]] || continue
        any=yes
        driver=$(driver_of "$pci")
        mapfile -t ifaces < <(netdevs_of "$pci")
        vendor=$(read_line "$dev/vendor")
        device=$(read_line "$dev/device")
        numa=$(read_line "$dev/numa_node")
        [ "$numa" != -1 ] || numa="-1 (none reported)"
        printf '  %s  %s:%s  driver %s  numa node %s' "$pci" "${vendor#0x}" "${device#0x}" "${driver:-none}" "${numa:-?}"
        [ ! -e "$STATE_DIR/$pci" ] || printf '  (recorded driver: %s)' "$(record_field "$pci" driver)"
        printf '\n'
        for iface in "${ifaces[@]}"; do
            addrs=$(addresses_of "$iface" 2>/dev/null | cut -d' ' -f2 | paste -sd ' ' || true)
            printf '      interface %s: %s\n' "$iface" "${addrs:-no addresses}"
        done
        if [ "$driver" = "$DPDK_DRIVER" ]; then
            printf '      bound to %s: ready for DPDK (-a %s)\n' "$DPDK_DRIVER" "$pci"
        elif [ -n "$driver" ] && is_dpdk_driver "$driver"; then
            printf '      bound to %s (DPDK driver, not %s)\n' "$driver" "$DPDK_DRIVER"
        else
            reasons=$(refusals "$pci" "$driver" "${ifaces[@]}")
            if [ -n "$reasons" ]; then
                printf '      not bindable: %s\n' "${reasons//$'\n'/$'\n'      not bindable: }"
            else
                printf '      bindable: %s %s\n' "$PROG" "$pci"
            fi
        fi
    done
    [ -n "$any" ] || printf '  none\n'
    local virtual=()
    for dev in "$SYS"/class/net/*; do
        [ -e "$dev" ] || continue
        [ -e "$dev/device" ] || virtual+=("${dev##*/}")
    done
    [ ${#virtual[@]} = 0 ] || printf 'virtual interfaces (not bindable): %s\n' "${virtual[*]}"
    if [ -n "$want" ]; then
        driver=$(driver_of "$want")
        if [ "$driver" = "$DPDK_DRIVER" ]; then
            printf '%s: bound to %s, ready: blipmqd --backend dpdk ... -- -a %s\n' "$want" "$DPDK_DRIVER" "$want"
        else
            printf '%s: NOT bound to %s (driver: %s): %s %s\n' "$want" "$DPDK_DRIVER" "${driver:-none}" "$PROG" "$want"
            status=$EXIT_FAIL
        fi
    fi
    return "$status"
}

# ---------------------------------------------------------------------------

DEFAULT_ACTION=bind
ACTION=$DEFAULT_ACTION
NOIOMMU=""
FORCE=""
TO_DRIVER=""
NIC=""

while [ $# -gt 0 ]; do
    case $1 in
        -h | --help)
            usage
            exit 0
            ;;
        --check) set_action check ;;
        --unbind) set_action unbind ;;
        --dry-run) DRY_RUN=yes ;;
        --noiommu) NOIOMMU=yes ;;
        --force) FORCE=yes ;;
        --driver)
            [ $# -ge 2 ] || usage_error "--driver needs a value"
            [[ $2 =~ ^[A-Za-z0-9_-]+$ ]] || usage_error "--driver: not a driver name: $2"
            TO_DRIVER=$2
            shift
            ;;
        --driver=*)
            set -- --driver "${1#*=}" "${@:2}"
            continue
            ;;
        -*) usage_error "unknown option: $1" ;;
        *)
            [ -z "$NIC" ] || usage_error "one NIC at a time (got $NIC and $1)"
            NIC=$1
            ;;
    esac
    shift
done

case $ACTION in
    bind)
        [ -n "$NIC" ] || usage_error "which NIC? (an interface name or a PCI address; --check lists them)"
        [ -z "$TO_DRIVER$FORCE" ] || usage_error "--driver and --force go with --unbind"
        bind "$NIC"
        ;;
    unbind)
        [ -n "$NIC" ] || usage_error "--unbind: which NIC?"
        [ -z "$NOIOMMU" ] || usage_error "--noiommu goes with binding"
        unbind "$NIC"
        ;;
    check)
        [ -z "$DRY_RUN$NOIOMMU$FORCE$TO_DRIVER" ] || usage_error "--check changes nothing and takes only a NIC"
        check "$NIC"
        ;;
esac
