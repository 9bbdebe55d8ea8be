#!/usr/bin/env bash
# valgrind.sh — memcheck over the unit tests that exercise threads, sockets and
# the config loader, and over a short `fieldbridge run` (sim device, no broker
# needed) reloaded with SIGHUP and stopped with SIGTERM.  Fails on any error or
# definite leak.
# (The JSON and pipeline tests are skipped here: millions of random numbers
#  take minutes under valgrind; ASan+UBSan covers them in test.sh.)
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build}
VG=(valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite
    --show-leak-kinds=definite)
rc=0
for t in test_core test_runtime test_batch_codec test_store test_config test_modbus test_mqtt test_sim test_revpi test_metrics \
         test_health test_reload test_alarm test_alarms test_expr test_script test_vib_dsp test_file test_shadow; do
    [ -x "$B/$t" ] || continue
    echo "valgrind: $t"
    if ! FB_VALGRIND=1 FB_SOURCE_DIR="$PWD" "${VG[@]}" "$B/$t" >/tmp/vg_$t.log 2>&1; then
        echo "valgrind: $t FAILED"; tail -40 /tmp/vg_$t.log; rc=1
    fi
done
cfg=$(mktemp --suffix=.yaml)
lua=$(mktemp --suffix=.lua)
buf=$(mktemp -d)
cat >"$lua" <<'LUA'
n = 0
function on_batch(d) n = n + 1; fb.set('n', n); fb.alarm('busy', n % 20 > 10, n) end
function on_timer(now) fb.set('t', now) end
LUA
cat >"$cfg" <<YAML
gateway: {id: vg, site: s}
buffer: {path: $buf}
scripts:
  - {name: s, file: $lua, device: sim, timer: 200ms, alarms: {busy: {}}}
devices:
  - name: sim
    url: "sim://vg?seed=3"
    poll: 50ms
    tags:
      - {name: a, addr: "sine:amp=10,period=5s", deadband: 0.1, window: 1s}
      - {name: b, addr: "walk:step=1", range: [0, 50], max_rate: 100, stuck: 10s}
      - {name: c, addr: "memory:initial=1", access: rw}
      - {name: ab, expr: "a - b", alarms: {hi: {limit: 0, deadband: 1}, bad_quality: true}}
      - {name: n, script: s}
      - {name: t, script: s}
  - name: calc
    tags:
      - {name: twice, expr: "'sim/ab' * 2", period: 300ms}
YAML
echo "valgrind: fieldbridge run (sim, 4 s, a reload by SIGHUP in the middle)"
"${VG[@]}" "$B/fieldbridge" run -c "$cfg" --log-level warn >/tmp/vg_run.log 2>&1 &
pid=$!
sleep 2
sed -i 's/deadband: 0.1/deadband: 0.2/' "$cfg"   # a changed tag: its device keeps running, its state restarts
kill -HUP $pid
sleep 2
kill -TERM $pid
if ! wait $pid; then echo "valgrind: fieldbridge run FAILED"; tail -40 /tmp/vg_run.log; rc=1; fi
rm -rf "$cfg" "$lua" "$buf"
[ $rc -eq 0 ] && echo "valgrind: clean"
exit $rc
