#!/usr/bin/env bash
# hugepages.sh: reserve, mount, check and release hugepages for DPDK
# (blipmqd --backend dpdk). Writes the kernel's sysfs knobs directly:
#   /sys/kernel/mm/hugepages/hugepages-<KB>kB/nr_hugepages            (any node)
#   /sys/devices/system/node/node<K>/hugepages/hugepages-<KB>kB/nr_hugepages
# `dpdk-hugepages.py -p 2M --setup 512M` (Debian package dpdk) does the same
# job; this script adds per-node checks, --need, the in-use refusal on release
# and the record of what it changed, so that --release gives back exactly that.
set -euo pipefail

# shellcheck source=common.sh source-path=SCRIPTDIR
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/common.sh"

PROG=${0##*/}
# For tests only: another root for sysfs (a fake tree); /sys normally.
SYS=${BLIPMQ_SYSFS:-/sys}
STATE_DIR=${BLIPMQ_HUGEPAGES_STATE_DIR:-/run/blipmq-hugepages}
DEFAULT_MOUNT=/dev/hugepages

EXIT_SHORT=3

usage() {
    cat <<EOF
Usage:
  $PROG [--size 2M|1G] --pages N [--node K] [--mount DIR | --no-mount] [--dry-run]
  $PROG [--size 2M|1G] --memory SIZE [--node K] [--mount DIR | --no-mount] [--dry-run]
  $PROG --release [--size 2M|1G] [--node K] [--mount DIR] [--force] [--dry-run]
  $PROG --check [--need SIZE] [--size 2M|1G] [--node K] [--mount DIR]
  $PROG --help

Reserve hugepages for DPDK and mount hugetlbfs where DPDK finds them.

Reserve (the default action):
  --size 2M|1G     page size (default 2M; also 2048K, 1024M)
  --pages N        make the kernel's pool of SIZE pages N pages (on node K
                   with --node, else spread over the nodes by the kernel)
  --memory SIZE    the same in bytes: 512M, 4G (rounded up to whole pages)
  --node K         reserve on NUMA node K (/sys/devices/system/node/nodeK)
  --mount DIR      mount hugetlbfs (-o pagesize=SIZE) on DIR, made if missing
                   (default $DEFAULT_MOUNT; kept if already mounted there with
                   the same page size)
  --no-mount       reserve only
  Exits 3 when the kernel gave fewer pages than asked (memory fragmented:
  reserve early after boot, or on the kernel command line).

Release:
  --release        unmount DIR (default $DEFAULT_MOUNT) and give the pages back:
                   the pools $PROG changed go back to the size they had
                   before (recorded in $STATE_DIR); pools it has no record
                   of (all sizes, or --size / --node) go to 0.
                   Refuses while a process has files of DIR open or mapped
                   (a running DPDK process).
  --force          release anyway: lazy unmount; pages in use stay allocated
                   (surplus) until their process exits

Check (changes nothing, needs no root):
  --check          per size and node: reserved, free, surplus; hugetlbfs
                   mounts, the files in them and the processes using them
  --need SIZE      also say whether SIZE of hugepages is free (of --size, else
                   of every mounted size; on --node K if given); exit 1 if not

Common:
  --dry-run        print every sysfs write, mkdir, mount and umount it would
                   make, and make none
  -h, --help       this text

Exit status: 0 done, 1 failed or refused (or --need not met), 2 usage error,
3 fewer pages than asked. Reserving and releasing need root.

Examples:
  $PROG --size 2M --memory 1G                 # 512 x 2M, mounted on /dev/hugepages
  $PROG --size 1G --pages 2 --node 0 --mount /dev/hugepages-1G
  $PROG --check --need 512M
  $PROG --release
EOF
}




# to_kb SIZE: SIZE (2M, 1G, 2048K, 2048kB, 512MiB) in KiB on stdout; fails
# on anything else (a bare number has no unit and is refused).
to_kb() {
    local value=$1 number unit
    [[ $value =~ ^([0-9]+)([KkMmGgTt])([Ii]?[Bb])?$ ]] || return 1
    number=$((10#${BASH_REMATCH[1]}))
    unit=${BASH_REMATCH[2]}
    case $unit in
        K | k) printf '%s\n' "$number" ;;
        M | m) printf '%s\n' $((number * 1024)) ;;
        G | g) printf '%s\n' $((number * 1024 * 1024)) ;;
        T | t) printf '%s\n' $((number * 1024 * 1024 * 1024)) ;;
    esac
}

# human KB: 2M, 1G, 512M, 6K...
human() {
    local kb=$1
    if ((kb >= 1048576 && kb % 1048576 == 0)); then
        printf '%sG\n' $((kb / 1048576))
    elif ((kb >= 1024 && kb % 1024 == 0)); then
        printf '%sM\n' $((kb / 1024))
    else
        printf '%sK\n' "$kb"
    fi
}

# mib KB: "512 MiB" (rounded down), for amounts of memory.
mib() { printf '%s MiB\n' $(($1 / 1024)); }

size_dir() { printf '%s/kernel/mm/hugepages/hugepages-%skB\n' "$SYS" "$1"; }
node_size_dir() { printf '%s/devices/system/node/node%s/hugepages/hugepages-%skB\n' "$SYS" "$1" "$2"; }

# read_num FILE: its number (0 when the file is absent, e.g. resv on a node).
read_num() {
    local value=0
    if [ -r "$1" ]; then
        read -r value <"$1" || true
    fi
    [[ $value =~ ^[0-9]+$ ]] || value=0
    printf '%s\n' "$value"
}

# The page sizes the kernel offers, in KiB, one a line.
kernel_sizes() {
    local dir kb
    for dir in "$SYS"/kernel/mm/hugepages/hugepages-*kB; do
        [ -d "$dir" ] || continue
        kb=${dir##*hugepages-}
        printf '%s\n' "${kb%kB}"
    done
}

# The kernel's page sizes, "1G 2M".
list_sizes() {
    local kb
    for kb in $(kernel_sizes); do human "$kb"; done | paste -sd ' '
}

nodes() {
    local dir
    for dir in "$SYS"/devices/system/node/node[0-9]*; do
        [ -d "$dir" ] && printf '%s\n' "${dir##*node}"
    done
}

# The kernel's default hugepage size in KiB (hugetlbfs without pagesize=).
default_size_kb() {
    local key value unit
    while read -r key value unit; do
        if [ "$key" = Hugepagesize: ]; then
            printf '%s\n' "$value"
            return
        fi
    done </proc/meminfo
    printf '2048\n'
}

# hugetlbfs mounts as "DIR PAGESIZE_KB" lines, from /proc/mounts.
hugetlbfs_mounts() {
    local dir fstype opts rest kb option options default_kb
    default_kb=$(default_size_kb)
    while read -r _ dir fstype opts rest; do
        [ "$fstype" = hugetlbfs ] || continue
        kb=$default_kb
        IFS=, read -ra options <<<"$opts"
        for option in "${options[@]}"; do
            if [[ $option == pagesize=* ]]; then
                kb=$(to_kb "${option#pagesize=}") || kb=$default_kb
            fi
        done
        # /proc/mounts escapes blanks as \040 and so on.
        printf '%b %s\n' "$dir" "$kb"
    done </proc/mounts
}

# mount_fstype DIR: the file system type mounted on DIR, or nothing.
mount_fstype() {
    local dir fstype rest found=""
    while read -r _ dir fstype rest; do
        [ "$(printf '%b' "$dir")" = "$1" ] && found=$fstype
    done </proc/mounts
    printf '%s\n' "$found"
}

# mount_pagesize DIR: the page size (KiB) of the hugetlbfs on DIR, or nothing.
mount_pagesize() {
    local dir kb found=""
    while read -r dir kb; do
        [ "$dir" = "$1" ] && found=$kb
    done < <(hugetlbfs_mounts)
    printf '%s\n' "$found"
}

# users_of DIR: "PID COMM" of every process with a file under DIR open or
# mapped (a DPDK process maps its hugepage files and keeps them open). Only
# root sees every process's.
users_of() {
    local dir=$1 proc pid comm maps fd_links link seen
    for proc in /proc/[0-9]*; do
        pid=${proc#/proc/}
        [ "$pid" = "$$" ] || [ "$pid" = "$BASHPID" ] && continue
        seen=""
        maps=()
        # Each maps line ends in its file's path, after blanks.
        if mapfile -t maps 2>/dev/null <"$proc/maps" && [[ " ${maps[*]}" == *" $dir/"* ]]; then
            seen=yes
        fi
        if [ -z "$seen" ]; then
            fd_links=$(QUOTING_STYLE=literal stat -c '%N' "$proc"/fd/* 2>/dev/null || true)
            while IFS= read -r link; do
                [[ $link == *" -> $dir/"* ]] && seen=yes && break
            done <<<"$fd_links"
        fi
        if [ -n "$seen" ]; then
            comm='?'
            read -r comm <"$proc/comm" 2>/dev/null || true
            printf '%s %s\n' "$pid" "$comm"
        fi
    done
}

# files_in DIR: how many files DIR holds (hugepage files left by DPDK
# without --huge-unlink hold their pages until removed or unmounted).
files_in() {
    local count=0 file
    for file in "$1"/* "$1"/.[!.]*; do
        [ -e "$file" ] && count=$((count + 1))
    done
    printf '%s\n' "$count"
}

# ---------------------------------------------------------------------------
# Actions: printed always; made unless --dry-run.





# Serialises this script's read-modify-write of the pools and its records.
take_lock() {
    [ -n "$DRY_RUN" ] && return 0
    mkdir -p "$STATE_DIR"
    exec {LOCK_FD}>"$STATE_DIR/lock"
    flock -w 30 "$LOCK_FD" || die "another $PROG holds $STATE_DIR/lock for over 30 s"
}

# ---------------------------------------------------------------------------
# Records in $STATE_DIR: "counts" holds "FILE COUNT_BEFORE" for every pool
# this script changed (the first value seen is kept), "mounts" holds
# "DIR made|existing|found": a hugetlbfs it mounted on a directory it made or
# that existed, or one it found mounted already (and leaves on --release).

# record_get KIND KEY: the value recorded for KEY, or nothing.
record_get() {
    local file=$STATE_DIR/$1 key value
    [ -r "$file" ] || return 0
    while read -r key value; do
        if [ "$key" = "$2" ]; then
            printf '%s\n' "$value"
            return 0
        fi
    done <"$file"
}

# record_set KIND KEY VALUE: adds KEY unless already recorded.
record_set() {
    [ -n "$(record_get "$1" "$2")" ] && return 0
    if [ -n "$DRY_RUN" ]; then
        printf 'dry-run: record "%s %s" in %s\n' "$2" "$3" "$STATE_DIR/$1"
        return 0
    fi
    printf '%s %s\n' "$2" "$3" >>"$STATE_DIR/$1"
}

# record_del KIND KEY
record_del() {
    local file=$STATE_DIR/$1 key value
    [ -n "$DRY_RUN" ] && return 0
    [ -r "$file" ] || return 0
    {
        while read -r key value; do
            [ "$key" = "$2" ] || printf '%s %s\n' "$key" "$value"
        done <"$file"
    } >"$file.new"
    mv "$file.new" "$file"
}

# record_keys KIND: every recorded KEY.
record_keys() {
    local file=$STATE_DIR/$1 key value
    [ -r "$file" ] || return 0
    while read -r key value; do
        printf '%s\n' "$key"
    done <"$file"
}

# ---------------------------------------------------------------------------
# Options

DEFAULT_ACTION=reserve
ACTION=$DEFAULT_ACTION
SIZE_KB=""
PAGES=""
MEMORY_KB=""
NODE=""
MOUNT_DIR=$DEFAULT_MOUNT
MOUNT_GIVEN=""
NO_MOUNT=""
FORCE=""
NEED_KB=""

# value_of OPTION ARGC: fails with a usage error when OPTION has no value.
need_value() {
    [ "$2" -ge 2 ] || usage_error "$1 needs a value"
}

while [ $# -gt 0 ]; do
    case $1 in
        -h | --help)
            usage
            exit 0
            ;;
        --check) set_action check ;;
        --release) set_action release ;;
        --dry-run) DRY_RUN=yes ;;
        --force) FORCE=yes ;;
        --no-mount) NO_MOUNT=yes ;;
        --size | --pages | --memory | --node | --mount | --need)
            need_value "$1" $#
            value=$2
            case $1 in
                --size)
                    SIZE_KB=$(to_kb "$value") || usage_error "--size: not a page size: $value (2M or 1G)"
                    ;;
                --pages)
                    if ! [[ $value =~ ^[0-9]+$ ]] || ((10#$value == 0)); then
                        usage_error "--pages: not a positive number: $value"
                    fi
                    PAGES=$((10#$value))
                    ;;
                --memory)
                    MEMORY_KB=$(to_kb "$value") || usage_error "--memory: not a size: $value (e.g. 512M, 2G)"
                    ((MEMORY_KB > 0)) || usage_error "--memory: must be more than 0"
                    ;;
                --node)
                    [[ $value =~ ^[0-9]+$ ]] || usage_error "--node: not a node number: $value"
                    NODE=$((10#$value))
                    ;;
                --mount)
                    [ -n "$value" ] || usage_error "--mount: empty directory"
                    MOUNT_DIR=$value
                    MOUNT_GIVEN=yes
                    ;;
                --need)
                    NEED_KB=$(to_kb "$value") || usage_error "--need: not a size: $value (e.g. 512M)"
                    ;;
            esac
            shift
            ;;
        --*=*)
            # --size=2M and the like
            option=${1%%=*}
            set -- "$option" "${1#*=}" "${@:2}"
            continue
            ;;
        *) usage_error "unknown argument: $1" ;;
    esac
    shift
done

case $ACTION in
    reserve)
        [ -n "$PAGES" ] || [ -n "$MEMORY_KB" ] || usage_error "nothing to do: give --pages N or --memory SIZE (or --check, --release)"
        [ -z "$PAGES" ] || [ -z "$MEMORY_KB" ] || usage_error "--pages and --memory exclude each other"
        [ -z "$FORCE" ] || usage_error "--force goes with --release"
        [ -z "$NEED_KB" ] || usage_error "--need goes with --check"
        [ -z "$NO_MOUNT" ] || [ -z "$MOUNT_GIVEN" ] || usage_error "--mount and --no-mount exclude each other"
        ;;
    release)
        [ -z "$PAGES$MEMORY_KB" ] || usage_error "--release takes no --pages or --memory"
        [ -z "$NEED_KB" ] || usage_error "--need goes with --check"
        [ -z "$NO_MOUNT" ] || usage_error "--no-mount goes with reserving"
        ;;
    check)
        [ -z "$PAGES$MEMORY_KB" ] || usage_error "--check takes no --pages or --memory (see --need)"
        [ -z "$DRY_RUN" ] || usage_error "--check changes nothing; --dry-run is for reserving and releasing"
        [ -z "$FORCE$NO_MOUNT" ] || usage_error "--check takes no --force or --no-mount"
        ;;
esac

if [ "$MOUNT_DIR" != / ]; then
    MOUNT_DIR=${MOUNT_DIR%/}
fi
MOUNT_DIR=$(realpath -m -- "$MOUNT_DIR")

# Validation against the kernel (not usage errors: the command was well formed).
[ -d "$SYS/kernel/mm/hugepages" ] || die "this kernel has no hugepages ($SYS/kernel/mm/hugepages is missing: CONFIG_HUGETLBFS)"
if [ -n "$SIZE_KB" ] && [ ! -d "$(size_dir "$SIZE_KB")" ]; then
    die "the kernel offers no $(human "$SIZE_KB") pages (it has: $(list_sizes)); 1G pages need CPU flag pdpe1gb"
fi
if [ -n "$NODE" ] && [ ! -d "$SYS/devices/system/node/node$NODE" ]; then
    die "no NUMA node $NODE (nodes: $(nodes | paste -sd ' '))"
fi

# ---------------------------------------------------------------------------

# pool_file KB [NODE]: the nr_hugepages file of that pool.
pool_file() {
    if [ -n "${2:-}" ]; then
        printf '%s/nr_hugepages\n' "$(node_size_dir "$2" "$1")"
    else
        printf '%s/nr_hugepages\n' "$(size_dir "$1")"
    fi
}

ensure_mount() {
    local dir=$1 kb=$2 fstype mounted_kb
    fstype=$(mount_fstype "$dir")
    if [ "$fstype" = hugetlbfs ]; then
        mounted_kb=$(mount_pagesize "$dir")
        if [ "$mounted_kb" = "$kb" ]; then
            printf 'hugetlbfs with %s pages already mounted on %s\n' "$(human "$kb")" "$dir"
            # Not ours (e.g. systemd's dev-hugepages.mount): --release leaves it.
            record_set mounts "$dir" found
            return 0
        fi
        die "$dir is already a hugetlbfs of $(human "$mounted_kb") pages; mount the $(human "$kb") pages elsewhere (--mount ${DEFAULT_MOUNT}-$(human "$kb"))"
    elif [ -n "$fstype" ]; then
        die "$dir is already a mount point ($fstype), not hugetlbfs"
    fi
    if [ ! -d "$dir" ]; then
        [ ! -e "$dir" ] || die "$dir exists and is not a directory"
        act mkdir -p "$dir" || die "cannot make $dir"
        record_set mounts "$dir" made
    else
        record_set mounts "$dir" existing
    fi
    act mount -t hugetlbfs -o "pagesize=$(human "$kb")" nodev "$dir" || die "mount of hugetlbfs on $dir failed"
}

reserve() {
    local kb=${SIZE_KB:-2048} pages file before after where
    if [ -n "$MEMORY_KB" ]; then
        pages=$(((MEMORY_KB + kb - 1) / kb))
        if ((MEMORY_KB % kb != 0)); then
            printf '%s is not a whole number of %s pages: rounded up to %s pages (%s)\n' \
                "$(human "$MEMORY_KB")" "$(human "$kb")" "$pages" "$(human $((pages * kb)))"
        fi
    else
        pages=$PAGES
    fi
    need_root "reserving hugepages" " (writes sysfs and mounts)"
    file=$(pool_file "$kb" "$NODE")
    [ -e "$file" ] || die "no $file"
    where=${NODE:+ on node $NODE}
    take_lock
    before=$(read_num "$file")
    printf '%s pages%s: %s reserved, want %s (%s)\n' "$(human "$kb")" "$where" "$before" "$pages" "$(mib $((pages * kb)))"
    if ((pages < before)); then
        printf 'note: this shrinks the pool from %s to %s pages (pages in use stay until freed)\n' "$before" "$pages"
    fi
    if ((pages != before)); then
        record_set counts "$file" "$before"
        write_sys "$pages" "$file"
    fi
    local status=0
    if [ -z "$DRY_RUN" ]; then
        after=$(read_num "$file")
        if ((after < pages)); then
            printf '%s: the kernel gave %s of %s %s pages%s (%s of %s): memory is too fragmented or too small.\n' \
                "$PROG" "$after" "$pages" "$(human "$kb")" "$where" "$(mib $((after * kb)))" "$(mib $((pages * kb)))" >&2
            printf '%s: reserve right after boot (this script'"'"'s boot unit), or on the kernel command line: hugepagesz=%s hugepages=%s; %s --release gives these back\n' \
                "$PROG" "$(human "$kb")" "$pages" "$PROG" >&2
            status=$EXIT_SHORT
        else
            printf 'reserved: %s %s pages%s (%s)\n' "$after" "$(human "$kb")" "$where" "$(mib $((after * kb)))"
        fi
    fi
    if [ -z "$NO_MOUNT" ]; then
        ensure_mount "$MOUNT_DIR" "$kb"
    fi
    return "$status"
}

release() {
    need_root "releasing hugepages" " (writes sysfs and mounts)"
    take_lock
    local status=0 dir fstype kb users made dirs=() busy=() recorded
    # Which mounts: --mount DIR, else those this script mounted (not those it
    # found mounted), else the default.
    if [ -n "$MOUNT_GIVEN" ]; then
        dirs=("$MOUNT_DIR")
    else
        recorded=$(record_keys mounts)
        if [ -n "$recorded" ]; then
            mapfile -t dirs <<<"$recorded"
        else
            dirs=("$DEFAULT_MOUNT")
        fi
    fi
    local unmount=()
    for dir in "${dirs[@]}"; do
        if [ -z "$MOUNT_GIVEN" ] && [ "$(record_get mounts "$dir")" = found ]; then
            if [ -z "$SIZE_KB" ] || [ "$(mount_pagesize "$dir")" = "$SIZE_KB" ]; then
                printf '%s was mounted before %s: left mounted\n' "$dir" "$PROG"
                record_del mounts "$dir"
            fi
            continue
        fi
        fstype=$(mount_fstype "$dir")
        if [ "$fstype" = hugetlbfs ]; then
            kb=$(mount_pagesize "$dir")
            if [ -n "$SIZE_KB" ] && [ "$kb" != "$SIZE_KB" ]; then
                printf '%s holds %s pages, not %s: left mounted\n' "$dir" "$(human "$kb")" "$(human "$SIZE_KB")"
                continue
            fi
            unmount+=("$dir")
            users=$(users_of "$dir")
            [ -z "$users" ] || busy+=("$dir: pid ${users//$'\n'/, pid }")
        elif [ -n "$fstype" ]; then
            die "$dir is a $fstype mount, not hugetlbfs; not unmounting it"
        else
            printf 'no hugetlbfs mounted on %s\n' "$dir"
            [ "$(record_get mounts "$dir")" != made ] || [ ! -d "$dir" ] || act rmdir "$dir" || true
            record_del mounts "$dir"
        fi
    done
    # Refuse before changing anything.
    if [ ${#busy[@]} -gt 0 ] && [ -z "$FORCE" ]; then
        printf '%s: refusing to release: files are in use (a DPDK process holds its hugepages until it exits):\n' "$PROG" >&2
        printf '    %s\n' "${busy[@]}" >&2
        printf '%s: stop those processes first, or --force (lazy unmount; their pages stay allocated until they exit)\n' "$PROG" >&2
        return "$EXIT_FAIL"
    fi
    for dir in "${unmount[@]}"; do
        if [ ${#busy[@]} -gt 0 ]; then
            warn "--force: files in use (${busy[*]}): lazy unmount, their pages stay allocated until they exit"
            act umount -l "$dir" || die "umount -l $dir failed"
        else
            act umount "$dir" || die "umount $dir failed"
        fi
        made=$(record_get mounts "$dir")
        if [ "$made" = made ]; then
            act rmdir "$dir" || warn "could not remove $dir"
        fi
        record_del mounts "$dir"
    done

    # Which pools, and back to what.
    local file targets=() node
    for file in $(record_keys counts); do
        [[ $file =~ hugepages-([0-9]+)kB/nr_hugepages$ ]] || continue
        kb=${BASH_REMATCH[1]}
        [ -z "$SIZE_KB" ] || [ "$SIZE_KB" = "$kb" ] || continue
        node=""
        [[ $file =~ /node([0-9]+)/hugepages/ ]] && node=${BASH_REMATCH[1]}
        [ -z "$NODE" ] || [ "$NODE" = "$node" ] || continue
        targets+=("$file $(record_get counts "$file")")
    done
    if [ ${#targets[@]} = 0 ]; then
        local which="every size"
        [ -z "$SIZE_KB" ] || which="the $(human "$SIZE_KB") pool"
        printf 'no pool recorded by %s (%s): giving back every page of %s%s\n' "$PROG" "$STATE_DIR/counts" \
            "$which" "${NODE:+ on node $NODE}"
        for kb in ${SIZE_KB:-$(kernel_sizes)}; do
            targets+=("$(pool_file "$kb" "$NODE") 0")
        done
    fi
    local entry count before after
    for entry in "${targets[@]}"; do
        file=${entry% *}
        count=${entry##* }
        before=$(read_num "$file")
        record_del counts "$file"
        if ((before == count)); then
            printf '%s: already %s\n' "$file" "$count"
            continue
        fi
        write_sys "$count" "$file"
        [ -n "$DRY_RUN" ] && continue
        after=$(read_num "$file")
        if ((after > count)); then
            if [ -n "$FORCE" ]; then
                warn "$file: $after pages, not $count: $((after - count)) are still in use and return to the kernel when their process exits"
            else
                printf '%s: %s: %s pages remain, not %s: %s are in use (a process maps them: DPDK --in-memory, another hugetlbfs, shm); they are given back when it exits\n' \
                    "$PROG" "$file" "$after" "$count" "$((after - count))" >&2
                status=$EXIT_FAIL
            fi
        else
            printf 'released: %s is %s (was %s)\n' "$file" "$after" "$before"
        fi
    done
    return "$status"
}

check() {
    local kb node dir nr free resv surp files users status=0 mounted_any=""
    printf 'hugepages (%s):\n' "$SYS/kernel/mm/hugepages"
    for kb in $(kernel_sizes); do
        [ -z "$SIZE_KB" ] || [ "$SIZE_KB" = "$kb" ] || continue
        dir=$(size_dir "$kb")
        nr=$(read_num "$dir/nr_hugepages")
        free=$(read_num "$dir/free_hugepages")
        resv=$(read_num "$dir/resv_hugepages")
        surp=$(read_num "$dir/surplus_hugepages")
        printf '  %-4s reserved %s, free %s, in use %s, committed %s, surplus %s (%s reserved, %s free)\n' \
            "$(human "$kb")" "$nr" "$free" $((nr - free)) "$resv" "$surp" "$(mib $((nr * kb)))" "$(mib $((free * kb)))"
        for node in $(nodes); do
            [ -z "$NODE" ] || [ "$NODE" = "$node" ] || continue
            dir=$(node_size_dir "$node" "$kb")
            [ -d "$dir" ] || continue
            printf '       node%s: reserved %s, free %s, surplus %s\n' "$node" \
                "$(read_num "$dir/nr_hugepages")" "$(read_num "$dir/free_hugepages")" "$(read_num "$dir/surplus_hugepages")"
        done
    done
    printf 'hugetlbfs mounts (/proc/mounts):\n'
    while read -r dir kb; do
        [ -n "$dir" ] || continue
        if [ -n "$MOUNT_GIVEN" ] && [ "$dir" != "$MOUNT_DIR" ]; then
            continue
        fi
        mounted_any=yes
        files=$(files_in "$dir")
        users=$(users_of "$dir")
        printf '  %s  pagesize %s, %s files' "$dir" "$(human "$kb")" "$files"
        if [ -n "$users" ]; then
            printf ', in use by pid %s\n' "${users//$'\n'/, pid }"
        elif [ "$files" != 0 ]; then
            printf ', in use by no process (left by a DPDK run without --huge-unlink: they hold pages until removed)\n'
        else
            printf '\n'
        fi
    done < <(hugetlbfs_mounts)
    if [ -z "$mounted_any" ]; then
        if [ -n "$MOUNT_GIVEN" ]; then
            printf '  none on %s\n' "$MOUNT_DIR"
        else
            printf '  none (DPDK needs one: %s --size 2M --pages N mounts %s)\n' "$PROG" "$DEFAULT_MOUNT"
        fi
    fi
    if [ "$(id -u)" != 0 ]; then
        printf '  (not root: processes of other users are not seen)\n'
    else
        local proc hidden=()
        for proc in /proc/[0-9]*; do
            { : <"$proc/maps"; } 2>/dev/null || [ ! -e "$proc" ] || hidden+=("${proc#/proc/}")
        done
        [ ${#hidden[@]} = 0 ] || printf '  (processes not inspectable, even as root: pid %s)\n' "${hidden[*]}"
    fi
    local keys
    keys=$(record_keys counts)
    if [ -n "$keys" ]; then
        printf 'changed by %s (%s), --release restores:\n' "$PROG" "$STATE_DIR"
        for dir in $keys; do
            printf '  %s back to %s\n' "$dir" "$(record_get counts "$dir")"
        done
    fi

    if [ -n "$NEED_KB" ]; then
        local have=0 sizes=() mounts_of
        for kb in $(kernel_sizes); do
            [ -z "$SIZE_KB" ] || [ "$SIZE_KB" = "$kb" ] || continue
            mounts_of=""
            while read -r dir mounted_kb; do
                [ "$mounted_kb" = "$kb" ] && mounts_of+=" $dir"
            done < <(hugetlbfs_mounts)
            if [ -n "$NODE" ]; then
                free=$(read_num "$(node_size_dir "$NODE" "$kb")/free_hugepages")
            else
                free=$(read_num "$(size_dir "$kb")/free_hugepages")
                free=$((free - $(read_num "$(size_dir "$kb")/resv_hugepages")))
            fi
            if [ -z "$mounts_of" ]; then
                [ -n "$SIZE_KB" ] && printf 'need: no hugetlbfs of %s pages is mounted (DPDK cannot use them)\n' "$(human "$kb")"
                continue
            fi
            have=$((have + free * kb))
            sizes+=("$free x $(human "$kb") on$mounts_of")
        done
        local what
        what="${NODE:+on node $NODE: }$(mib "$have") free"
        [ ${#sizes[@]} = 0 ] || what+=" (${sizes[*]})"
        if ((have >= NEED_KB)); then
            printf 'need %s: yes, %s\n' "$(human "$NEED_KB")" "$what"
        else
            printf 'need %s: NO, %s; short by %s: %s --size %s --memory %s%s\n' "$(human "$NEED_KB")" "$what" \
                "$(mib $((NEED_KB - have)))" "$PROG" "$(human "${SIZE_KB:-2048}")" "$(human "$NEED_KB")" "${NODE:+ --node $NODE}"
            status=$EXIT_FAIL
        fi
    fi
    return "$status"
}

case $ACTION in
    reserve) reserve ;;
    release) release ;;
    check) check ;;
esac
