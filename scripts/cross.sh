#!/usr/bin/env bash
# cross.sh — arm64 and armhf builds with Debian's cross compilers, and the unit
# tests of each under qemu-user.  Separate from scripts/test.sh (CI): the two
# extra builds and the emulated tests take far longer than the native ones on
# 2 cores (docs/deployment.md, "ARM"), and the install step changes the
# machine's dpkg configuration (dpkg --add-architecture arm64 armhf), which
# the default test dependencies must not.
#   scripts/cross.sh [arm64|armhf|all] [--no-test] [--no-deps]
# Builds build-arm64/ and build-armhf/ (RelWithDebInfo, -DFB_WERROR=ON) with
# cmake/toolchain-*.cmake, runs ctest there (each test through qemu-aarch64 /
# qemu-arm -L /usr/<triple>), prints the binary sizes.
# Before the tests, a 5-line program that starts one thread runs under the
# emulator: where qemu-user cannot run threads (seen on a sandboxed kernel:
# pthread_create spins or crashes inside the emulator) the unit tests that
# start threads (or processes with system(): posix_spawn clones with CLONE_VM,
# which qemu-user handles like a thread) would hang, so the script says so and
# fails; the others still run (FB_CROSS_NOTHREAD_TESTS, a ctest -E regex of
# the ones to leave out).
# FB_CROSS_TEST_TIMEOUT: seconds per emulated test (default 600).
set -euo pipefail
cd "$(dirname "$0")/.."

what=all test=1 deps=1
for a in "$@"; do
    case "$a" in
        arm64|armhf|all) what=$a ;;
        --no-test) test=0 ;;
        --no-deps) deps=0 ;;
        *) echo "usage: $0 [arm64|armhf|all] [--no-test] [--no-deps]" >&2; exit 2 ;;
    esac
done
case "$what" in all) arches=(arm64 armhf) ;; *) arches=("$what") ;; esac
triple() { case "$1" in arm64) echo aarch64-linux-gnu ;; armhf) echo arm-linux-gnueabihf ;; esac; }
qemu_of() { case "$1" in arm64) echo qemu-aarch64 ;; armhf) echo qemu-arm ;; esac; }
# the -dev packages of debian/control's Build-Depends (+ cmocka for the tests), per architecture
LIBS=(libmodbus-dev libmosquitto-dev libyaml-dev libjansson-dev libmicrohttpd-dev libssl-dev
      libprotobuf-c-dev libsystemd-dev liblua5.4-dev libcurl4-openssl-dev zlib1g-dev libkissfft-dev libcmocka-dev)

if [ "$deps" = 1 ]; then
    SUDO=()
    [ "$(id -u)" -eq 0 ] || SUDO=(sudo)
    pkgs=(qemu-user protobuf-c-compiler cmake ninja-build pkg-config)
    added=0
    for a in "${arches[@]}"; do
        # (not `dpkg ... | grep -q`: grep's early exit would fail the pipe under pipefail)
        if ! grep -qx "$a" <<<"$(dpkg --print-foreign-architectures)"; then
            echo "cross: dpkg --add-architecture $a"
            "${SUDO[@]}" dpkg --add-architecture "$a"
            added=1
        fi
        pkgs+=("gcc-$(triple "$a")")
        for l in "${LIBS[@]}"; do pkgs+=("$l:$a"); done
    done
    missing=()
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "cross: installing ${#missing[@]} packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        if [ "$added" = 1 ] || ! "${SUDO[@]}" apt-get install -y -q --no-install-recommends \
                -o DPkg::Lock::Timeout=300 "${missing[@]}" >/tmp/fieldbridge-cross-apt.log 2>&1; then
            "${SUDO[@]}" apt-get update -q >/tmp/fieldbridge-cross-apt.log 2>&1
            "${SUDO[@]}" apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 \
                "${missing[@]}" >>/tmp/fieldbridge-cross-apt.log 2>&1 || {
                tail -30 /tmp/fieldbridge-cross-apt.log >&2; echo "cross: apt-get install failed" >&2; exit 1; }
        fi
    fi
fi

jobs="${FB_JOBS:-$(nproc 2>/dev/null || echo 2)}"
rc=0
for a in "${arches[@]}"; do
    t=$(triple "$a") dir=build-$a
    echo "cross: $a: configuring $dir"
    mkdir -p "$dir"
    t0=$(date +%s)
    cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFB_WERROR=ON \
        -DCMAKE_TOOLCHAIN_FILE="cmake/toolchain-$t.cmake" >"$dir/configure.log" 2>&1 || {
        cat "$dir/configure.log" >&2; echo "cross: configure of $dir failed" >&2; exit 1; }
    ninja -C "$dir" -j "$jobs"
    echo "cross: $a: built in $(( $(date +%s) - t0 )) s"
    file "$dir/fieldbridge" | sed 's/^/cross: /'
    size=$(stat -c %s "$dir/fieldbridge")
    "$t-strip" -o "$dir/fieldbridge.stripped" "$dir/fieldbridge"
    echo "cross: $a: fieldbridge $size bytes (RelWithDebInfo), $(stat -c %s "$dir/fieldbridge.stripped") bytes stripped"
    if [ "$test" = 1 ]; then
        emu=$(qemu_of "$a")
        # can this machine's qemu-user run a thread at all?
        printf '#include <pthread.h>\nstatic void *f(void *a) { return a; }\nint main(void) { pthread_t t; void *r = 0;\n  return pthread_create(&t, 0, f, &t) || pthread_join(t, &r) || r != &t; }\n' \
            >"$dir/thread-smoke.c"
        "$t-gcc" -O2 -pthread -o "$dir/thread-smoke" "$dir/thread-smoke.c"
        exclude=()
        if ! timeout 30 "$emu" -L "/usr/$t" "$dir/thread-smoke" 2>/dev/null; then
            echo "cross: $a: $emu cannot run a thread on this machine (a program that starts one thread" \
                 "hangs or crashes in the emulator): the unit tests that start threads cannot run here" >&2
            exclude=(-E "${FB_CROSS_NOTHREAD_TESTS:-^test_(ads_proto|live|metrics|modbus|opcua_secure|runtime|store)\$}")
            rc=1
        fi
        t0=$(date +%s)
        if ctest --test-dir "$dir" --output-on-failure -j "$jobs" --timeout "${FB_CROSS_TEST_TIMEOUT:-600}" \
                "${exclude[@]}"; then
            echo "cross: $a: unit tests under qemu passed in $(( $(date +%s) - t0 )) s${exclude:+ (${exclude[1]} NOT run: no threads under qemu here)}"
        else
            echo "cross: $a: unit tests under qemu FAILED" >&2
            rc=1
        fi
    fi
done
exit $rc
