#!/usr/bin/env bash
# quick.sh — smoke run of every benchmark scenario (about a minute, bounded
# at 170 s) for CI: catches crashes, hangs and gross regressions in the
# harness, the bench tools and the gateway.  No timing assertions — the
# numbers of a 1.5 s window on a shared CI machine mean nothing.  It fails
# (non-zero exit) when a scenario cannot run, a tool crashes or exits with an
# error, a gateway dies during its window, or a tool delivers no values
# where values are expected (run.sh collects these and exits 1).
# Node-RED is not started (npm and its start-up are too slow for a smoke run).
#
# Build: FB_BUILD if set; else the build/ tree that scripts/test.sh made (the
# bench tools are part of its default target; run.sh only brings them up to
# date with ninja); else run.sh's own Release build-bench/.
# Results go to bench/results/tmp/ (not committed).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${FB_BUILD:-}" ] && [ -f "$ROOT/build/build.ninja" ]; then
    export FB_BUILD="$ROOT/build"
fi
exec timeout -k 10 170 "$ROOT/bench/run.sh" all --quick "$@"
