#!/usr/bin/env bash
# syscall-check.sh — do the system calls the gateway makes fit the filter of
# deploy/fieldbridge.service (SystemCallFilter=)?  Runs a selection of the system
# tests with the binary under strace (a wrapper as FB_BIN) and lists every system
# call it made that the unit's filter would refuse.  Tests may fail under strace
# (it slows everything down); only the calls matter here.
# Usage: scripts/syscall-check.sh [PYTEST ARGS...]   (default: a broad, bounded selection)
# Needs: strace, setpriv, systemd-analyze (systemd), a build in build/.  The calls of the
# two setpriv steps before the gateway starts (capget, capset, prctl) are counted too.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$(pwd)/build/fieldbridge"
[ -x "$bin" ] || { echo "syscall-check: build first (scripts/build.sh normal)" >&2; exit 2; }
work="$(mktemp -d /tmp/fb-syscalls.XXXXXX)"
trap 'rm -rf "$work"' EXIT
cp "$bin" "$work/fieldbridge"
# The wrapper the tests start: strace runs the gateway; SIGTERM/SIGINT are passed on to
# the gateway (strace itself would only detach and leave it running), and if the wrapper
# is killed (kill -9 tests) strace and then the gateway die with it (--pdeathsig).
cat >"$work/fb" <<WRAP
#!/bin/sh
setpriv --pdeathsig KILL strace -f -qq -o $work/trace.\$\$ setpriv --pdeathsig KILL $work/fieldbridge "\$@" &
s=\$!
fwd() { for c in \$(cat /proc/\$s/task/\$s/children 2>/dev/null); do kill -\$1 \$c 2>/dev/null; done; }
trap 'fwd TERM' TERM
trap 'fwd INT' INT
rc=0
while :; do wait \$s; rc=\$?; kill -0 \$s 2>/dev/null || break; done
exit \$rc
WRAP
chmod +x "$work/fb"
if [ $# -eq 0 ]; then
    set -- tests/system/test_security.py tests/system/test_opcua.py tests/system/test_revpi.py \
        tests/system/test_rtu.py tests/system/test_health.py tests/system/test_store_forward.py \
        -k "not root and not low_port and not tmpfs and not full"
fi
FB_BIN="$work/fb" FB_TEST_TIMEOUT=120 timeout 1800 /usr/bin/python3 -m pytest -p no:cacheprovider -q "$@" \
    >"$work/pytest.log" 2>&1 || true
# the filter of the unit, expanded into system call names
filter=$(sed -n 's/^SystemCallFilter=//p' deploy/fieldbridge.service)
: >"$work/allowed"
expand() { # @group: its calls and those of the groups it names (its own name heads the list)
    systemd-analyze syscall-filter "$1" 2>/dev/null | sed 's/^ *//' | grep -v '^#' | grep -v '^$' |
        grep -vxF -- "$1" | while read -r x; do case "$x" in @*) expand "$x" ;; *) echo "$x" ;; esac; done
}
for f in $filter; do case "$f" in @*) expand "$f" >>"$work/allowed" ;; *) echo "$f" >>"$work/allowed" ;; esac; done
cat "$work"/trace.* 2>/dev/null | sed -E 's/^[0-9]+ +//; s/^<\.\.\. ([a-z0-9_]+) resumed>.*/\1/; s/^([a-z0-9_]+)\(.*/\1/' |
    grep -E '^[a-z_0-9]+$' | sort -u >"$work/used"
runs=$(ls "$work"/trace.* 2>/dev/null | wc -l)
bad=$(grep -vxF -f "$work/allowed" "$work/used" || true)
echo "syscall-check: $(wc -l <"$work/used") distinct system calls in $runs traced processes:"
tr '\n' ' ' <"$work/used"; echo
if [ -n "$bad" ]; then
    echo "syscall-check: NOT allowed by the unit's SystemCallFilter: $bad" >&2
    exit 1
fi
echo "syscall-check: all allowed by SystemCallFilter=$filter"
