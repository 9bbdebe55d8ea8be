#!/usr/bin/env bash
# test.sh — THE test command (README, .ci/run): deps (scripts/deps.sh test) →
# npm test peers → build (normal and ASan+UBSan) → Release (-O3) builds with gcc
# and clang, warnings as errors → unit tests (ctest, both builds) → valgrind
# over the threaded unit tests and a short run → a fuzz smoke run of every
# libFuzzer harness → system tests (pytest against real peers) with
# build/fieldbridge → a smoke subset of them with build-asan/fieldbridge → a
# benchmark smoke run (bench/quick.sh).  Every step runs even if an earlier one
# failed (so one run shows everything); the exit code is non-zero if any step
# failed, and the summary lists every step, its time and its test counts.
#
# Nothing is skipped unless you turn it off, and the summary says what was:
#   FB_TEST_SKIP=opcua,s7,...  system and unit tests to leave out on purpose
#                  (opcua, s7, ads-client, sparkplug, tmpfs, root; see tests/system/conftest.py);
#                  without it a missing peer FAILS its tests, and a skipped
#                  test fails the step
#   FB_TEST_SKIP_DEPS=1        no apt step
#   FB_TEST_SKIP_ASAN=1        no sanitizer build (nor its unit and smoke tests)
#   FB_TEST_SKIP_RELEASE=1     no Release -O3 gcc/clang builds
# Env: PYTEST_ARGS adds pytest arguments (e.g. PYTEST_ARGS="-k rtu");
#      FB_TEST_ASAN_FULL=1 runs all system tests (not only `smoke`) on the ASan build.
set -uo pipefail
cd "$(dirname "$0")/.."

start=$(date +%s)
declare -a names=() results=()
failed=0
STEP_NOTE=""

step() { # name, command...
    local name="$1"; shift
    local t0=$(date +%s)
    echo
    echo "================ $name ($(date +%H:%M:%S)) ================"
    STEP_NOTE=""
    "$@"
    local rc=$?
    local dt=$(( $(date +%s) - t0 ))
    names+=("$name")
    if [ $rc -eq 0 ]; then
        results+=("ok (${dt}s)${STEP_NOTE:+ $STEP_NOTE}")
    else
        results+=("FAILED rc=$rc (${dt}s)${STEP_NOTE:+ $STEP_NOTE}")
        failed=1
    fi
    return $rc
}
turned_off() { # name, why: a step the user turned off, listed in the summary
    names+=("$1")
    results+=("skipped: turned off by $2")
}

# ctest: the counts for the summary
run_ctest() { # build dir, timeout
    local out; out=$(mktemp)
    ctest --test-dir "$1" --output-on-failure -j2 --timeout "$2" 2>&1 | tee "$out"
    local rc=${PIPESTATUS[0]}
    STEP_NOTE=$(grep -E 'tests passed, [0-9]+ tests failed out of' "$out" | tail -1)
    rm -f "$out"
    return $rc
}

# pytest exits 5 when it collected no tests: that is a failure here too.  A skip
# is a failure unless FB_TEST_SKIP turned something off (then the summary says so).
run_pytest() { # binary, extra args...
    local bin="$1"; shift
    if [ ! -x "$bin" ]; then echo "test: $bin not built" >&2; return 1; fi
    local out; out=$(mktemp)
    # -u: each test's name is shown when it starts, not when a buffer fills
    FB_BIN="$bin" /usr/bin/python3 -u -m pytest tests/system -v -rfEs -p no:cacheprovider "$@" ${PYTEST_ARGS:-} 2>&1 |
        tee "$out"
    local rc=${PIPESTATUS[0]}
    local last nskip
    last=$(grep -E '^=+ .*[0-9]+ (passed|failed|error|errors|skipped|deselected).* in [0-9.]+s' "$out" | tail -1)
    STEP_NOTE=$(echo "$last" | sed -E 's/^=+ //; s/ in [0-9.]+s.*//')
    nskip=$(echo "$last" | grep -oE '[0-9]+ skipped' | grep -oE '[0-9]+' || true)
    if [ "${nskip:-0}" -gt 0 ]; then
        if [ -z "${FB_TEST_SKIP:-}" ]; then
            echo "test: $nskip system test(s) skipped although nothing was turned off (FB_TEST_SKIP is empty);" \
                 "a skip hides a gap: see the SKIPPED lines above" >&2
            STEP_NOTE+=" — skips nobody asked for"
            [ $rc -eq 0 ] && rc=1
        else
            STEP_NOTE+=" (turned off: FB_TEST_SKIP=$FB_TEST_SKIP)"
        fi
    fi
    rm -f "$out"
    return $rc
}

if [ -n "${FB_TEST_SKIP:-}" ]; then
    echo "test: turned off on purpose: FB_TEST_SKIP=$FB_TEST_SKIP (their tests are skipped and counted)"
fi
if [ "$(id -u)" -ne 0 ] && [[ ",${FB_TEST_SKIP:-}," != *,tmpfs,* ]]; then
    echo "test: not root: the full-disk tests (they mount a tmpfs) will fail; run as root, or FB_TEST_SKIP=tmpfs" >&2
fi
if [ "$(id -u)" -ne 0 ] && [[ ",${FB_TEST_SKIP:-}," != *,root,* ]]; then
    echo "test: not root: the capability test (setpriv gives the gateway CAP_NET_BIND_SERVICE) will fail; run as root, or FB_TEST_SKIP=root" >&2
fi

if [ "${FB_TEST_SKIP_DEPS:-0}" != 1 ]; then
    step "deps (apt, test set)" ./scripts/deps.sh test ||
        { echo "test: cannot continue without dependencies" >&2; exit 1; }
else
    turned_off "deps (apt, test set)" FB_TEST_SKIP_DEPS=1
fi

step "npm test peers" ./scripts/peers.sh

# the modules of src/ must not include each other in a circle (docs/architecture.md)
step "include graph (scripts/include-cycles.py)" /usr/bin/python3 scripts/include-cycles.py --quiet

step "build (normal)" ./scripts/build.sh normal
build_ok=$?
asan_ok=1
if [ "${FB_TEST_SKIP_ASAN:-0}" != 1 ]; then
    step "build (asan)" ./scripts/build.sh asan
    asan_ok=$?
else
    turned_off "build (asan) and its tests" FB_TEST_SKIP_ASAN=1
fi
# -O3 and clang bring out warnings (maybe-uninitialized, ...) that the normal
# build does not show; users build Release: catch them here (about 1 min)
if [ "${FB_TEST_SKIP_RELEASE:-0}" != 1 ]; then
    step "build (Release -O3, gcc and clang, -Werror)" ./scripts/build.sh release
else
    turned_off "build (Release -O3, gcc and clang)" FB_TEST_SKIP_RELEASE=1
fi

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"

[ $build_ok -eq 0 ] && step "unit tests (build)" run_ctest build 120
if [ "${FB_TEST_SKIP_ASAN:-0}" != 1 ] && [ $asan_ok -eq 0 ]; then
    step "unit tests (build-asan)" run_ctest build-asan 300
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
nok=0; nfail=0; nskip=0
for r in "${results[@]}"; do
    case "$r" in ok*) nok=$((nok + 1)) ;; skipped*) nskip=$((nskip + 1)) ;; *) nfail=$((nfail + 1)) ;; esac
done
if [ $failed -eq 0 ]; then
    echo "test.sh: ALL PASSED in ${total}s${FB_TEST_SKIP:+ (turned off on purpose: FB_TEST_SKIP=$FB_TEST_SKIP)}"
else
    echo "test.sh: FAILED in ${total}s (see the steps marked FAILED above)"
fi
# the plain closing line: steps of this script that passed, failed (and were turned off)
if [ $nskip -gt 0 ]; then
    echo "$nok passed, $nfail failed, $nskip skipped"
else
    echo "$nok passed, $nfail failed"
fi
[ $failed -eq 0 ]
