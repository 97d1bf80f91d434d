# shellcheck shell=bash
# common.sh: what hugepages.sh and bind-nic.sh share: messages, exit
# codes, and the one way each prints and makes a change (or, with
# --dry-run, only prints it). Sourced, not run; the caller sets PROG and SYS.

EXIT_FAIL=1
EXIT_USAGE=2

usage_error() {
    printf '%s: %s\n' "$PROG" "$1" >&2
    printf "Try '%s --help'.\n" "$PROG" >&2
    exit "$EXIT_USAGE"
}

# die MESSAGE [STATUS]
die() {
    printf '%s: %s\n' "$PROG" "$1" >&2
    exit "${2:-$EXIT_FAIL}"
}

warn() { printf '%s: warning: %s\n' "$PROG" "$1" >&2; }

# set_action NAME: the action a flag asks for; two flags that ask for
# different actions (other than the script's DEFAULT_ACTION) are refused.
set_action() {
    if [ "$ACTION" != "$DEFAULT_ACTION" ] && [ "$ACTION" != "$1" ]; then
        usage_error "--$ACTION and --$1 exclude each other"
    fi
    ACTION=$1
}

DRY_RUN=""

# act CMD...: prints and runs CMD.
act() {
    if [ -n "$DRY_RUN" ]; then
        printf 'dry-run: %s\n' "$*"
        return 0
    fi
    printf 'run: %s\n' "$*"
    "$@"
}

# write_sys VALUE FILE: the one way these scripts write to sysfs.
write_sys() {
    local value=$1 file=$2 error
    if [ -n "$DRY_RUN" ]; then
        printf 'dry-run: echo %s > %s\n' "$value" "$file"
        return 0
    fi
    printf 'run: echo %s > %s\n' "$value" "$file"
    if ! error=$( { printf '%s\n' "$value" >"$file"; } 2>&1); then
        die "cannot write $value to $file: ${error##*: }"
    fi
}

# need_root WHAT WHY: root is needed to change the real system (not for
# --dry-run, nor on a fake sysfs tree in tests).
need_root() {
    [ -n "$DRY_RUN" ] && return 0
    [ "$SYS" != /sys ] && return 0
    [ "$(id -u)" = 0 ] || die "$1 needs root$2; try: sudo $0 ... (or --dry-run, --check)"
}
