"""test_hotpath.py — what a published message costs in thread wake-ups, and
a Modbus TCP read in system calls.

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
import shutil
import signal
import subprocess
import time

from conftest import gw_config, topic
from test_run import device

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


def strace_counts(path):
    """{system call: calls} from the table `strace -c -o path` writes."""
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            p = line.split()
            if len(p) >= 5 and p[-1].isidentifier() and p[3].isdigit():
                out[p[-1]] = int(p[3])
    return out


def test_modbus_tcp_read_is_two_system_calls(broker, start_modbus, start_gateway, watch, tmp_path):
    """A Modbus TCP read is one send() and, when the answer comes in one
    segment, one recv() (south/modbus/modbus.c, tcp_read).  Through libmodbus
    it was seven: select() + recv() for the answer's header and again for
    the rest, which cost more CPU per value than anything else in the gateway
    (BENCHMARKS.md).  Counted with strace on the running gateway, so the
    figure does not depend on the machine's speed; the gateway's other
    threads use none of these calls (libmosquitto reads and writes with
    read()/write(), and its network thread waits in ppoll())."""
    assert shutil.which("strace"), "strace is missing: bash scripts/deps.sh test installs it"
    mb = start_modbus({"units": {"1": {"hr": list(range(20))}}})
    tags = [{"name": f"r{i}", "addr": f"hr:{i}"} for i in range(20)]
    w = watch(broker.port)
    g = start_gateway(gw_config(broker.port, [device(mb.port, tags, poll="2ms")]))
    assert w.wait_for(lambda m: True, 15) is not None, "no telemetry"
    out = tmp_path / "strace.txt"
    st = subprocess.Popen(["strace", "-f", "-c", "-o", str(out), "-e",
                           "trace=sendto,recvfrom,send,recv,select,pselect6,poll", "-p", str(g.proc.pid)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(3.0)
    st.send_signal(signal.SIGINT)
    st.wait(timeout=10)
    c = strace_counts(out)
    requests = c.get("sendto", 0) + c.get("send", 0)
    waits = sum(c.get(k, 0) for k in ("recvfrom", "recv", "select", "pselect6", "poll"))
    print(f"\n{requests} requests, {waits} receive/wait calls: {c}")
    assert requests >= 100, f"too few Modbus requests under strace: {c}"
    assert waits <= 1.5 * requests, f"{waits / requests:.1f} receive/wait calls per request (libmodbus: 6): {c}"
