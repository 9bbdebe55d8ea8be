#!/usr/bin/env bash
# cross-system.sh — every unit test of the arm64 and armhf builds, run on an
# emulated ARM machine (qemu-system-aarch64) instead of under qemu-user.
# Why: on the sandboxed kernels this project is developed on, qemu-user cannot
# run a thread (scripts/cross.sh leaves 7 tests out for that); full-system
# emulation runs its own kernel, where threads, system() and loopback sockets
# work as on the board (docs/deployment.md, "ARM").
#   scripts/cross-system.sh [arm64|armhf|all] [--no-build] [--no-deps]
# 1. builds build-<arch>/ with scripts/cross.sh --no-test (which installs the
#    cross compilers and the target's libraries), unless --no-build;
# 2. installs qemu-system-arm and cpio, and downloads Debian's arm64 kernel
#    (linux-image-arm64) and busybox-static for the target into the cache
#    (FB_CROSS_CACHE, default ~/.cache/fieldbridge-cross), once;
# 3. packs an initramfs: busybox, the target's loader and the shared libraries
#    the test programs need (found through their DT_NEEDED entries, plus the
#    ones the gateway dlopen()s), the stripped test_* programs, the source
#    files they read (docs/, tests/unit/data/) and an /init that runs them,
#    two at a time, prints one result line each and powers the machine off;
# 4. boots it: -M virt, FB_SYS_CPU (default cortex-a72, the Raspberry Pi 4 /
#    Compute Module 4 core), -smp 2, -m 1024, no network device (the guest has
#    loopback only), the serial console on stdout, under `timeout`
#    (FB_SYS_TIMEOUT, default 4800 s; FB_SYS_TEST_TIMEOUT per test, 2400 s);
# 5. reads the result lines from the console and exits 1 unless every test
#    program ran and passed.
# armhf runs on the same 64-bit kernel (the cores run AArch32 user code, and
# Debian's kernel has CONFIG_COMPAT), as Raspberry Pi OS's 32-bit release does
# on a Pi 4 or 5.
set -euo pipefail
cd "$(dirname "$0")/.."

what=arm64 build=1 deps=1
for a in "$@"; do
    case "$a" in
        arm64|armhf|all) what=$a ;;
        --no-build) build=0 ;;
        --no-deps) deps=0 ;;
        *) echo "usage: $0 [arm64|armhf|all] [--no-build] [--no-deps]" >&2; exit 2 ;;
    esac
done
case "$what" in all) arches=(arm64 armhf) ;; *) arches=("$what") ;; esac
triple() { case "$1" in arm64) echo aarch64-linux-gnu ;; armhf) echo arm-linux-gnueabihf ;; esac; }
loader() { case "$1" in arm64) echo ld-linux-aarch64.so.1 ;; armhf) echo ld-linux-armhf.so.3 ;; esac; }
cache="${FB_CROSS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fieldbridge-cross}"
SUDO=()
[ "$(id -u)" -eq 0 ] || SUDO=(sudo)
log=/tmp/fieldbridge-cross-system-apt.log

if [ "$build" = 1 ]; then
    flags=(--no-test)
    [ "$deps" = 1 ] || flags+=(--no-deps)
    scripts/cross.sh "$what" "${flags[@]}"
fi

if [ "$deps" = 1 ]; then
    missing=()
    for p in qemu-system-arm cpio; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "cross-system: installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        if ! "${SUDO[@]}" apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 \
                "${missing[@]}" >"$log" 2>&1; then
            "${SUDO[@]}" apt-get update -q >"$log" 2>&1
            "${SUDO[@]}" apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 \
                "${missing[@]}" >>"$log" 2>&1 || {
                tail -30 "$log" >&2; echo "cross-system: apt-get install failed" >&2; exit 1; }
        fi
    fi
fi

# download one package of architecture $2 into $cache/deb (apt-get download: no
# installation, no root needed) and print the .deb's path
fetch_deb() {
    local name=$1 arch=$2 debs
    mkdir -p "$cache/deb"
    debs=("$cache/deb/${name}_"*"_$arch.deb")
    if [ ! -e "${debs[0]}" ]; then
        (cd "$cache/deb" && apt-get download -q "$name:$arch" >"$log" 2>&1) || {
            cat "$log" >&2; echo "cross-system: apt-get download $name:$arch failed" >&2; return 1; }
        debs=("$cache/deb/${name}_"*"_$arch.deb")
    fi
    echo "${debs[0]}"
}

# the kernel: linux-image-arm64 is a metapackage naming the current ABI's image
kernel="$cache/vmlinuz-arm64"
if [ ! -s "$kernel" ]; then
    meta=$(fetch_deb linux-image-arm64 arm64)
    img=$(dpkg-deb -f "$meta" Depends | grep -o 'linux-image-[0-9][^ ,(]*' | head -1)
    [ -n "$img" ] || { echo "cross-system: no kernel package named by $meta" >&2; exit 1; }
    deb=$(fetch_deb "$img" arm64)
    tmp=$(mktemp -d)
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" --wildcards './boot/vmlinuz-*'
    mv "$tmp"/boot/vmlinuz-* "$kernel.tmp" && mv "$kernel.tmp" "$kernel"
    rm -rf "$tmp" "$deb" # 60 MB, mostly modules the initramfs does not use
    echo "cross-system: kernel ${img#linux-image-} from $(basename "$deb")"
fi

# the shared libraries an ELF file needs, recursively, from the target's multiarch directories
declare -A have
closure() {
    local f=$1 t=$2 n p
    for n in $("$t-readelf" -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
        [ -z "${have[$n]:-}" ] || continue
        p=
        for d in "/usr/lib/$t" "/lib/$t"; do [ -e "$d/$n" ] && { p="$d/$n"; break; }; done
        [ -n "$p" ] || { echo "cross-system: $n (needed by $(basename "$f")) is not in /usr/lib/$t" >&2; return 1; }
        have[$n]=$p
        closure "$p" "$t"
    done
}

rc=0
for a in "${arches[@]}"; do
    t=$(triple "$a") dir=build-$a
    [ -x "$dir/test_core" ] || { echo "cross-system: $dir has no test programs (run without --no-build)" >&2; exit 1; }
    bb="$cache/busybox-$a"
    if [ ! -s "$bb" ]; then
        deb=$(fetch_deb busybox-static "$a")
        tmp=$(mktemp -d)
        dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" ./bin/busybox
        mv "$tmp/bin/busybox" "$bb"
        rm -rf "$tmp"
    fi

    # the initramfs tree
    root="$dir/sysemu/root"
    rm -rf "$dir/sysemu"
    mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,tmp,root,t,src/tests/unit,usr/lib/"$t"}
    ln -s usr/lib "$root/lib"
    cp "$bb" "$root/bin/busybox"
    chmod 755 "$root/bin/busybox"
    ln -s busybox "$root/bin/sh"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    tests=()
    for f in "$dir"/test_*; do
        if [ ! -f "$f" ] || [ ! -x "$f" ] || ! "$t-readelf" -h "$f" >/dev/null 2>&1; then continue; fi
        n=$(basename "$f")
        tests+=("$n")
        "$t-strip" -o "$root/t/$n" "$f"
    done
    have=()
    for f in "$root"/t/test_*; do closure "$f" "$t"; done
    # loaded with dlopen(): libmicrohttpd (north/http), libsystemd (sd_notify),
    # libcurl (downloads), libgcc_s (glibc's pthread_cancel/exit unwinding)
    for n in libmicrohttpd.so.12 libsystemd.so.0 libcurl.so.4 libgcc_s.so.1; do
        p=/usr/lib/$t/$n
        [ -e "$p" ] || { echo "cross-system: $p missing (scripts/cross.sh installs the -dev packages)" >&2; exit 1; }
        have[$n]=$p
        closure "$p" "$t"
    done
    for n in "${!have[@]}"; do cp -L "${have[$n]}" "$root/usr/lib/$t/$n"; done
    ld=$(loader "$a")
    cp -L "/usr/lib/$t/$ld" "$root/usr/lib/$t/$ld"
    ln -sf "$t/$ld" "$root/usr/lib/$ld"
    cp -r docs "$root/src/"
    cp -r tests/unit/data "$root/src/tests/unit/"
    cat >"$root/init" <<EOF
#!/bin/sh
# initramfs /init (written by scripts/cross-system.sh): run the unit tests, power off
/bin/busybox --install -s /bin
# FB_EMULATED: the tests leave out their CPU-time bounds (test_config)
export PATH=/bin LD_LIBRARY_PATH=/usr/lib/$t HOME=/root FB_SOURCE_DIR=/src FB_EMULATED=1
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mkdir -p /dev/shm /dev/pts; mount -t tmpfs shm /dev/shm; mount -t tmpfs tmp /tmp
ip link set lo up
echo "FBSYS-BOOT \$(uname -m) \$(uname -r) cpus=\$(nproc) mem=\$(sed -n 's/MemTotal: *//p' /proc/meminfo)"
run() { # one of two runners: each takes the next test nobody has claimed (mkdir is atomic)
    for n in ${tests[*]}; do
        mkdir /tmp/claim.\$n 2>/dev/null || continue
        s=\$(date +%s)
        (cd /t && timeout -s KILL ${FB_SYS_TEST_TIMEOUT:-2400} ./\$n >/tmp/\$n.log 2>&1); r=\$?
        e=\$((\$(date +%s) - s))
        if [ \$r -ne 0 ]; then
            sed "s/^/[\$n] /" /tmp/\$n.log # prefixed: the other runner may print meanwhile
        fi
        echo "FBSYS-RESULT \$n rc=\$r secs=\$e"
    done
}
t0=\$(date +%s)
run & run & wait
echo "FBSYS-DONE secs=\$((\$(date +%s) - t0))"
poweroff -f
EOF
    chmod 755 "$root/init"
    (cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) >"$dir/sysemu/initrd.cpio"
    echo "cross-system: $a: initramfs $(( $(stat -c %s "$dir/sysemu/initrd.cpio") / 1048576 )) MiB," \
         "${#tests[@]} test programs, ${#have[@]} libraries"

    out="$dir/sysemu/console.log"
    cpu="${FB_SYS_CPU:-cortex-a72}"
    echo "cross-system: $a: booting qemu-system-aarch64 -M virt -cpu $cpu -smp 2 -m 1024 (console: $out)"
    t0=$(date +%s)
    set +e
    timeout -s KILL "${FB_SYS_TIMEOUT:-4800}" qemu-system-aarch64 -M virt -cpu "$cpu" -smp 2 -m 1024 \
        -nographic -no-reboot -nic none -kernel "$kernel" -initrd "$dir/sysemu/initrd.cpio" \
        -append "console=ttyAMA0 panic=-1 loglevel=3" </dev/null | stdbuf -oL tr -d '\r' | tee "$out" | grep --line-buffered '^FBSYS-\|Kernel panic'
    qrc=${PIPESTATUS[0]}
    set -e
    secs=$(( $(date +%s) - t0 ))
    pass=$(grep -c '^FBSYS-RESULT .* rc=0 ' "$out" || true)
    fail=$(grep '^FBSYS-RESULT ' "$out" | grep -v ' rc=0 ' | awk '{print $2}' | tr '\n' ' ' || true)
    ran=$(grep -c '^FBSYS-RESULT ' "$out" || true)
    if [ "$qrc" -ne 0 ] || ! grep -q '^FBSYS-DONE' "$out"; then
        echo "cross-system: $a: the emulated machine did not finish (qemu exit $qrc after $secs s; $ran of ${#tests[@]} ran)" >&2
        rc=1
    elif [ "$ran" -ne ${#tests[@]} ] || [ -n "$fail" ]; then
        echo "cross-system: $a: $pass of ${#tests[@]} unit tests passed in $secs s; FAILED: ${fail:-(results missing)}" >&2
        rc=1
    else
        echo "cross-system: $a: all ${#tests[@]} unit tests passed on the emulated machine in $secs s" \
             "($(sed -n 's/^FBSYS-DONE secs=//p' "$out") s of tests after boot)"
    fi
done
exit $rc
