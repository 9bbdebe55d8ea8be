#!/usr/bin/env bash
# build.sh — configure and build fieldbridge with CMake + Ninja:
#   build/       RelWithDebInfo (what the demo and the system tests run)
#   build-asan/  RelWithDebInfo with AddressSanitizer + UndefinedBehaviorSanitizer
# Usage: scripts/build.sh [normal|asan|all]   (default: all)
# Re-running is cheap: CMake reconfigures only when needed, Ninja builds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

what="${1:-all}"
jobs="${FB_JOBS:-$(nproc 2>/dev/null || echo 2)}"

build_one() { # dir, extra cmake args...
    local dir="$1"; shift
    echo "build: configuring $dir"
    cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >"$dir/configure.log" 2>&1 || {
        cat "$dir/configure.log" >&2; echo "build: cmake configure of $dir failed" >&2; return 1; }
    echo "build: compiling $dir"
    ninja -C "$dir" -j "$jobs"
}

mkdir -p build build-asan
case "$what" in
    normal) build_one build ;;
    asan) build_one build-asan -DFB_SANITIZE=ON ;;
    all) build_one build; build_one build-asan -DFB_SANITIZE=ON ;;
    *) echo "usage: $0 [normal|asan|all]" >&2; exit 2 ;;
esac
