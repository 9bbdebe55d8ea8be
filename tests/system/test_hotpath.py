"""test_hotpath.py — what a published message costs in thread wake-ups.

Without a buffer, a connection thread hands its batch straight to the MQTT
sink and, over plain TCP, writes the PUBLISH and reads the PUBACKs itself
(core/publish.c, north/mqtt/session.c): neither the sink thread nor the MQTT
network thread wakes up per message.  Before that, every message woke the
sink thread (queue) and the network thread twice (libmosquitto's socket pair,
then the PUBACK) — most of the CPU per value (BENCHMARKS.md).  Wake-ups are
counted, not timed: /proc/<pid>/task/<tid>/status voluntary_ctxt_switches of
the threads named "sink:mqtt" and "net:mqtt", per message received at a
subscriber, so the test does not depend on the machine's speed or load.
The same messages must arrive complete and in order (seq).
"""
import json
import os
import time

from conftest import gw_config, topic

DEV = "hot1"


def threads(pid):
    """{thread name: voluntary context switches} of the gateway's threads."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm", encoding="utf-8") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/status", encoding="utf-8") as f:
                vcs = next(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches"))
        except (FileNotFoundError, StopIteration):
            continue
        out[name] = out.get(name, 0) + vcs
    return out


def seqs(w, after):
    return [json.loads(m.payload)["seq"] for m in w.messages(topic(DEV, "telemetry")) if m.t >= after]


def test_no_thread_wakes_per_message(broker, start_gateway, watch):
    dev = {"name": DEV, "url": "sim://hot?seed=1", "poll": "1ms",
           "tags": [{"for": {"i": "0..19"}, "name": "t{i}", "addr": "counter:step=1"}]}
    cfg = gw_config(broker.port, [dev])
    cfg["log"] = {"level": "info"}  # debug would also log every libmosquitto packet
    w = watch(broker.port, topics=(topic(DEV, "telemetry"),))
    g = start_gateway(cfg)
    assert w.wait_for(lambda m: True, 15, topic=topic(DEV, "telemetry")) is not None, "no telemetry"
    time.sleep(1.0)
    pid = g.proc.pid
    t0 = time.monotonic()
    a = threads(pid)
    assert "sink:mqtt" in a and "net:mqtt" in a, f"threads not named as expected: {sorted(a)}"
    time.sleep(3.0)
    b = threads(pid)
    t1 = time.monotonic()
    n = len([m for m in w.messages(topic(DEV, "telemetry")) if t0 <= m.t <= t1])
    assert n >= 1000, f"only {n} messages in {t1 - t0:.1f} s from a 1 ms poll"
    wakes = {k: b[k] - a[k] for k in ("sink:mqtt", "net:mqtt")}
    print(f"\n{n} messages in {t1 - t0:.1f} s; wake-ups: {wakes} "
          f"({ {k: round(v / n, 3) for k, v in wakes.items()} } per message)")
    # Before: every message woke the sink thread once and the network thread
    # twice.  Now the sink thread only ticks (10/s) and the network thread
    # wakes once per pause of the publisher, at most every 5 ms.
    assert wakes["sink:mqtt"] < 0.2 * n, wakes
    assert wakes["net:mqtt"] < min(0.6 * n, 300 * (t1 - t0)), wakes
    s = seqs(w, t0)
    assert all(y == x + 1 for x, y in zip(s, s[1:])), "telemetry out of order or with gaps"
