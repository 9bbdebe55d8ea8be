"""test_hotpath.py — what a published message costs in thread wake-ups, and
a Modbus TCP read in system calls; the MQTT session's in-flight window.

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

The in-flight window (north/mqtt/window.h) keeps as many messages awaiting
their PUBACK as the link needs, not max_inflight: a broker that stops for a
moment must not collect a thousand of them (libmosquitto walks that list on
every publish), and a link with long round trips must still get a window
that fills it.  Both are watched on /metrics (fieldbridge_sink_inflight,
fieldbridge_sink_window), and nothing may be lost or reordered meanwhile.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request

import peers
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


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {k: float(v) for k, v in re.findall(r'^(fieldbridge_sink_(?:inflight|window))\{sink="mqtt"\} (\S+)$',
                                                text, re.M)}


def window_config(mqtt_port, metrics_port, poll, version=5):
    dev = {"name": DEV, "url": "sim://hot?seed=1", "poll": poll,
           "tags": [{"for": {"i": "0..9"}, "name": "t{i}", "addr": "counter:step=1"}]}
    cfg = gw_config(mqtt_port, [dev], metrics={"listen": f"127.0.0.1:{metrics_port}"})
    cfg["mqtt"]["version"] = version
    cfg["log"] = {"level": "info"}
    return cfg


def test_window_stays_small_while_the_broker_stalls(broker, start_gateway, watch):
    """The broker stops for 0.6 s while a device publishes 1,000 messages/s:
    at most the window's worth waits for a PUBACK (before the window: all
    600, up to max_inflight 1,000); the rest waits in the memory queue, and
    every message arrives, in order, once the broker runs again."""
    mport = peers.free_port()
    w = watch(broker.port, topics=(topic(DEV, "telemetry"),))
    g = start_gateway(window_config(broker.port, mport, "1ms"))
    peers.wait_port(mport, 10, g.proc.p)
    assert w.wait_for(lambda m: True, 15, topic=topic(DEV, "telemetry")) is not None, "no telemetry"
    time.sleep(1.0)
    t0 = time.monotonic()
    broker.proc.send(signal.SIGSTOP)
    most = {"fieldbridge_sink_inflight": 0, "fieldbridge_sink_window": 0}
    try:
        end = time.monotonic() + 0.6
        while time.monotonic() < end:
            m = metrics(mport)
            assert set(m) == set(most), f"in-flight gauges missing from /metrics: {m}"
            for k in most:
                most[k] = max(most[k], m[k])
            time.sleep(0.02)
    finally:
        broker.proc.send(signal.SIGCONT)
    print(f"\nwhile the broker stood still: {most}")
    assert most["fieldbridge_sink_inflight"] >= 16, f"the stall was not seen: {most}"
    assert most["fieldbridge_sink_inflight"] <= 64, f"too many awaiting their PUBACK: {most}"
    assert most["fieldbridge_sink_window"] <= 64, most
    time.sleep(2.0)
    s = seqs(w, t0 - 0.5)
    assert len(s) > 1500, f"only {len(s)} messages"
    assert all(y == x + 1 for x, y in zip(s, s[1:])), "telemetry lost or reordered around the stall"


PROXY = r"""
import asyncio, sys
port, target, delay = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])

async def pipe(reader, writer):
    loop = asyncio.get_running_loop()
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            loop.call_later(delay, writer.write, data)
    except OSError:
        pass
    loop.call_later(delay, writer.close)

async def serve(reader, writer):
    try:
        ur, uw = await asyncio.open_connection("127.0.0.1", target)
    except OSError:
        writer.close()
        return
    await asyncio.gather(pipe(reader, uw), pipe(ur, writer))

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", port)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""


class DelayProxy:
    """TCP proxy on 127.0.0.1 that holds every chunk `delay` seconds in each
    direction: a link with a round trip of 2 x delay (a WAN), on loopback.
    A process of its own, so that the test's subscriber does not delay it."""

    def __init__(self, workdir, target_port, delay):
        self.port = peers.free_port()
        self.proc = peers.Proc(["/usr/bin/python3", "-c", PROXY, str(self.port), str(target_port), str(delay)],
                               os.path.join(str(workdir), "proxy.log"))
        peers.wait_port(self.port, 10, self.proc.p)

    def close(self):
        self.proc.stop()


def test_window_grows_to_fill_a_long_link(broker, start_gateway, watch, tmp_path):
    """Through a link with 60 ms round trips, the window's floor (32) would
    carry at most 533 messages/s; the device makes 2,000/s (poll 500 us).  The
    window must grow until the link carries them all — as a fixed window of
    32 could not — and stay within max_inflight.  MQTT 3.1.1: an MQTT 5
    Mosquitto would cap it at its Receive Maximum (20 by default; the next
    test)."""
    proxy = DelayProxy(tmp_path, broker.port, 0.030)
    try:
        mport = peers.free_port()
        w = watch(broker.port, topics=(topic(DEV, "telemetry"),))
        g = start_gateway(window_config(proxy.port, mport, "500us", version="3.1.1"))
        peers.wait_port(mport, 10, g.proc.p)
        assert w.wait_for(lambda m: True, 15, topic=topic(DEV, "telemetry")) is not None, "no telemetry"
        time.sleep(3.0)  # the window grows within a few intervals of 4 round trips
        t0 = time.monotonic()
        most = 0
        while time.monotonic() < t0 + 3.0:
            m = metrics(mport)
            assert "fieldbridge_sink_window" in m, f"no window gauge on /metrics: {m}"
            most = max(most, m["fieldbridge_sink_window"])
            time.sleep(0.1)
        t1 = time.monotonic()
        n = len([x for x in w.messages(topic(DEV, "telemetry")) if t0 <= x.t <= t1])
        rate = n / (t1 - t0)
        print(f"\nthrough 60 ms round trips: {rate:.0f} messages/s, window up to {most:.0f}")
        assert most > 64, f"the window did not grow: {most}"
        assert most <= 1000
        assert rate > 1200, f"only {rate:.0f} messages/s through the long link"
        s = seqs(w, t0)
        assert all(y == x + 1 for x, y in zip(s, s[1:])), "telemetry lost or reordered"
    finally:
        proxy.close()


def test_window_stops_at_the_brokers_receive_maximum(broker, start_gateway, watch):
    """An MQTT 5 Mosquitto takes 20 QoS 1 messages at once by default (its
    CONNACK's Receive Maximum): the window stops there (libmosquitto would
    hold the rest unsent, in the list it walks per message)."""
    mport = peers.free_port()
    w = watch(broker.port, topics=(topic(DEV, "telemetry"),))
    g = start_gateway(window_config(broker.port, mport, "1ms"))
    peers.wait_port(mport, 10, g.proc.p)
    assert w.wait_for(lambda m: True, 15, topic=topic(DEV, "telemetry")) is not None, "no telemetry"
    m = metrics(mport)
    assert m.get("fieldbridge_sink_window") == 20, m
