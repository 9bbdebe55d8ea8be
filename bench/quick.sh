#!/usr/bin/env bash
# quick.sh — smoke run of every benchmark scenario (well under 2 minutes) for
# CI: catches crashes, hangs and gross regressions in the harness and the
# gateway.  No timing assertions — the numbers of a 1.5 s window on a shared
# CI machine mean nothing; it fails only if a scenario cannot run.
# Results go to bench/results/tmp/ (not committed).
set -euo pipefail
exec timeout -k 10 170 "$(dirname "$0")/run.sh" all --quick "$@"
