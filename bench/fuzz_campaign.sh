#!/usr/bin/env bash
# fuzz_campaign.sh — the long fuzzing campaign (docs/reliability.md): each
# harness runs, instrumented (build-fuzz/, scripts/fuzz.sh builds it), from
# its committed corpus until it has made FUZZ_CAMPAIGN_RUNS executions
# (default 10,000,000) or FUZZ_CAMPAIGN_MAX_S seconds passed (default 3600),
# ONE harness at a time, at nice 10: the machine is shared.  It records, per
# harness, the executions, exec/s, the final coverage and the corpus size in
# OUT/summary.tsv (OUT defaults to bench/results/tmp/fuzz-campaign) and keeps
# each run's log and grown corpus.  A crash stops that harness (the artifact
# is in OUT/); the others still run; the exit status says whether any failed.
#
#   bench/fuzz_campaign.sh                    every harness
#   bench/fuzz_campaign.sh command opcua_msg  some (names with or without fuzz_)
#   FUZZ_BUILD=/tmp/build-x bench/fuzz_campaign.sh ...   build there, not in build-fuzz/
#   FUZZ_CAMPAIGN_TIMEOUT=30 bench/fuzz_campaign.sh config
#       a slower input than that many seconds (default 10) is a finding; raise
#       it on a shared machine, where a starved process misses 10 s with an
#       input that takes 0.6 s alone
#   FUZZ_CAMPAIGN_MERGE=1 bench/fuzz_campaign.sh ...
#       afterwards add to tests/fuzz/corpus/<name> only the grown inputs that
#       reach new coverage (libFuzzer -merge=1), then re-record the floors
#       with FUZZ_RECORD_FLOOR=1 scripts/fuzz.sh.
# Why a separate script: CI runs only scripts/fuzz.sh (100,000 inputs per
# harness, fixed seed); this takes hours.
set -uo pipefail
cd "$(dirname "$0")/.."
runs="${FUZZ_CAMPAIGN_RUNS:-10000000}"
maxs="${FUZZ_CAMPAIGN_MAX_S:-3600}"
tmo="${FUZZ_CAMPAIGN_TIMEOUT:-10}"
out="${FUZZ_CAMPAIGN_OUT:-bench/results/tmp/fuzz-campaign}"
bd="${FUZZ_BUILD:-build-fuzz}"
mkdir -p "$out"
if [ $# -eq 0 ]; then
    set -- $(cd tests/fuzz && ls fuzz_*.c | sed 's/\.c$//')
fi
cmake -S . -B "$bd" -G Ninja -DFB_FUZZ=ON -DFB_WERROR=ON -DCMAKE_C_COMPILER=clang \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null || exit 1
hs=()
for a in "$@"; do hs+=("fuzz_${a#fuzz_}"); done
nice -n 10 ninja -C "$bd" "${hs[@]}" >/dev/null || exit 1
[ -f "$out/summary.tsv" ] ||
    printf 'harness\texecutions\texec_per_s\tseconds\tcov\tft\tcorpus_files\tcorpus_bytes\tresult\tload_avg\tdate\n' >"$out/summary.tsv"
rc=0
for h in "${hs[@]}"; do
    name=${h#fuzz_}
    corpus=""
    for d in tests/fuzz/corpus/*/; do
        d=${d%/}
        b=$(basename "$d")
        if [ "$b" = "$name" ] || [ "${name#"$b"}" != "$name" ]; then corpus=$d; fi
    done
    work="$out/$h.corpus"
    mkdir -p "$work"
    # -timeout: a slow input is a finding (YAML bombs); -rss_limit_mb: so is a memory bomb
    echo "fuzz_campaign: $h: up to $runs executions or ${maxs}s (corpus $corpus, grown in $work)"
    start=$(date +%s)
    nice -n 10 "$bd/$h" "$work" $corpus -runs="$runs" -max_total_time="$maxs" -timeout="$tmo" \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$out/$h-" >"$out/$h.log" 2>&1
    r=$?
    secs=$(($(date +%s) - start))
    result=ok
    [ $r -ne 0 ] && { result="FAILED($r)"; rc=1; }
    ex=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/$h.log" | tail -1)
    eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$out/$h.log" | tail -1)
    # the last status line: "#N  DONE|pulse|NEW  cov: C ft: F corp: files/size ..."
    last=$(grep -E '^#[0-9]+' "$out/$h.log" | tail -1)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    files=$(find "$work" $corpus -type f | wc -l)
    bytes=$(cat "$work"/* $corpus/* 2>/dev/null | wc -c)
    load=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' '/')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$h" "${ex:-?}" "${eps:-?}" "$secs" "${cov:-?}" "${ft:-?}" \
        "$files" "$bytes" "$result" "$load" "$(date -u +%FT%TZ)" >>"$out/summary.tsv"
    echo "fuzz_campaign: $h: $result, ${ex:-?} executions, ${eps:-?}/s, cov ${cov:-?}, ${files} inputs (log $out/$h.log)"
    [ "$result" != ok ] && tail -30 "$out/$h.log"
    if [ "${FUZZ_CAMPAIGN_MERGE:-0}" = 1 ] && [ "$result" = ok ] && [ -n "$corpus" ]; then
        before=$(ls "$corpus" | wc -l)
        nice -n 10 "$bd/$h" -merge=1 "$corpus" "$work" >"$out/$h.merge.log" 2>&1 ||
            { echo "fuzz_campaign: $h: merge failed (see $out/$h.merge.log)"; rc=1; }
        echo "fuzz_campaign: $h: merged $(($(ls "$corpus" | wc -l) - before)) new inputs into $corpus"
    fi
done
column -t -s $'\t' "$out/summary.tsv"
exit $rc
