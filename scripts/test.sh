#!/usr/bin/env bash
# test.sh — THE test command (README, .ci/run): deps → build (normal and
# ASan+UBSan) → unit tests (ctest, both builds) → system tests (pytest against
# real peers) with build/fieldbridge → a smoke subset of the system tests with
# build-asan/fieldbridge, valgrind over the threaded unit tests and a short run,
# and a fuzz smoke run of every libFuzzer harness, then a benchmark smoke run
# (bench/quick.sh).  Every step runs even if an earlier one failed (so one
# run shows everything); the exit code is non-zero if any step failed, and the
# last line is a one-line summary.
#
# Env: FB_TEST_SKIP_DEPS=1 skips the apt step; PYTEST_ARGS adds pytest arguments
#      (e.g. PYTEST_ARGS="-k rtu"); FB_TEST_SKIP_ASAN=1 skips the sanitizer build;
#      FB_TEST_ASAN_FULL=1 runs all system tests (not only `smoke`) on the ASan build.
set -uo pipefail
cd "$(dirname "$0")/.."

start=$(date +%s)
declare -a names=() results=()
failed=0

step() { # name, command...
    local name="$1"; shift
    local t0=$(date +%s)
    echo
    echo "================ $name ================"
    "$@"
    local rc=$?
    local dt=$(( $(date +%s) - t0 ))
    names+=("$name")
    if [ $rc -eq 0 ]; then
        results+=("ok (${dt}s)")
    else
        results+=("FAILED rc=$rc (${dt}s)")
        failed=1
    fi
    return $rc
}

# pytest exits 5 when it collected no tests: that is a failure here too.
run_pytest() { # binary, extra args...
    local bin="$1"; shift
    if [ ! -x "$bin" ]; then echo "test: $bin not built" >&2; return 1; fi
    FB_BIN="$bin" /usr/bin/python3 -m pytest tests/system -v -p no:cacheprovider "$@" ${PYTEST_ARGS:-}
}

if [ "${FB_TEST_SKIP_DEPS:-0}" != 1 ]; then
    step "deps" ./scripts/deps.sh || { echo "test: cannot continue without dependencies" >&2; exit 1; }
fi

step "npm test peers" ./scripts/peers.sh

step "build (normal)" ./scripts/build.sh normal
build_ok=$?
asan_ok=1
if [ "${FB_TEST_SKIP_ASAN:-0}" != 1 ]; then
    step "build (asan)" ./scripts/build.sh asan
    asan_ok=$?
fi

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"

[ $build_ok -eq 0 ] && step "unit tests (build)" ctest --test-dir build --output-on-failure -j2 --timeout 120
if [ "${FB_TEST_SKIP_ASAN:-0}" != 1 ] && [ $asan_ok -eq 0 ]; then
    step "unit tests (build-asan)" ctest --test-dir build-asan --output-on-failure -j2 --timeout 300
fi

if [ $build_ok -eq 0 ]; then
    step "valgrind (unit tests + run)" ./scripts/valgrind.sh build
fi
step "fuzz smoke (fixed seed, every harness)" ./scripts/fuzz.sh

if [ $build_ok -eq 0 ]; then
    step "system tests (build/fieldbridge)" run_pytest build/fieldbridge
fi
if [ "${FB_TEST_SKIP_ASAN:-0}" != 1 ] && [ $asan_ok -eq 0 ]; then
    if [ "${FB_TEST_ASAN_FULL:-0}" = 1 ]; then
        step "system tests (build-asan/fieldbridge)" run_pytest build-asan/fieldbridge
    else
        step "system smoke tests (build-asan/fieldbridge)" run_pytest build-asan/fieldbridge -m smoke
    fi
fi

# benchmark smoke run (bench/quick.sh, ~1 min, no timing assertions): fails
# only if a bench tool or the gateway crashes or delivers nothing
if [ $build_ok -eq 0 ]; then
    step "bench smoke (bench/quick.sh)" env FB_BUILD="$PWD/build" ./bench/quick.sh
fi

total=$(( $(date +%s) - start ))
echo
echo "================ summary ================"
for i in "${!names[@]}"; do
    printf '  %-45s %s\n' "${names[$i]}" "${results[$i]}"
done
nok=0; nfail=0
for r in "${results[@]}"; do
    case "$r" in ok*) nok=$((nok + 1)) ;; *) nfail=$((nfail + 1)) ;; esac
done
if [ $failed -eq 0 ]; then
    echo "test.sh: ALL PASSED in ${total}s"
else
    echo "test.sh: FAILED in ${total}s (see the steps marked FAILED above)"
fi
# the plain closing line: steps of this script that passed and failed
echo "$nok passed, $nfail failed"
[ $failed -eq 0 ]
