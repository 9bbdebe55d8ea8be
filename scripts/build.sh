#!/usr/bin/env bash
# build.sh — configure and build fieldbridge with CMake + Ninja:
#   build/               RelWithDebInfo (what the demo and the system tests run)
#   build-asan/          RelWithDebInfo with AddressSanitizer + UndefinedBehaviorSanitizer
#   build-release/       Release (-O3) with gcc       } only to catch the warnings that
#   build-release-clang/ Release (-O3) with clang     } optimisation or clang bring out
# Usage: scripts/build.sh [normal|asan|release|all] [TARGET...]   (default: normal and asan)
#   TARGETs limit the build (the demo builds only `fieldbridge`); default: every target
# All of them build with -DFB_WERROR=ON (warnings are errors in our development and CI
# builds; a plain `cmake` build, as users and distributions run it, does not use -Werror).
# Re-running is cheap: CMake reconfigures only when needed, Ninja builds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

what="${1:-all}"
[ $# -gt 0 ] && shift
targets=("$@")
jobs="${FB_JOBS:-$(nproc 2>/dev/null || echo 2)}"

build_one() { # dir, build type, extra cmake args...
    local dir="$1" type="$2"; shift 2
    mkdir -p "$dir"
    echo "build: configuring $dir ($type $*)"
    cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE="$type" -DFB_WERROR=ON "$@" >"$dir/configure.log" 2>&1 || {
        cat "$dir/configure.log" >&2; echo "build: cmake configure of $dir failed" >&2; return 1; }
    echo "build: compiling $dir"
    ninja -C "$dir" -j "$jobs" "${targets[@]}"
}

case "$what" in
    normal) build_one build RelWithDebInfo ;;
    asan) build_one build-asan RelWithDebInfo -DFB_SANITIZE=ON ;;
    release)
        # every target (library, binary, unit tests, tools) at -O3, gcc then clang; the compiler
        # is fixed at configure time, so each has its own directory
        build_one build-release Release -DCMAKE_C_COMPILER=gcc
        build_one build-release-clang Release -DCMAKE_C_COMPILER=clang ;;
    all) build_one build RelWithDebInfo; build_one build-asan RelWithDebInfo -DFB_SANITIZE=ON ;;
    *) echo "usage: $0 [normal|asan|release|all]" >&2; exit 2 ;;
esac
