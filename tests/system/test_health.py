"""test_health.py — devices tell the truth about their health, through the
real binary: the error counter and NE107 in GET /status and /metrics, with
reads the device refuses, and Modbus units behind one TCP→RTU-style gateway
where one unit is dead.

- Modbus (pymodbus): one unit id that never answers (pymodbus's
  ignore_missing_slaves, "silent_units" in the spec) next to two healthy
  units on the same TCP connection: the healthy units' values keep flowing
  at their poll rate, a change reaches the broker within a cycle or two, no
  reconnect is counted, and only the dead unit is offline (NE107 Failure)
  with Bad tags.
- Modbus: registers that answer exception 02 — errors counted, NE107
  Maintenance required while the tags are Bad (also after the status
  interval), a write counted once.
- The simulator: every Bad item counts (dropout).

S7, OPC UA and RevPi have the same check in test_s7.py, test_opcua.py and
test_revpi.py (they need their peers' fixtures); status_of() and metric()
here are shared with them.
"""
import json
import re
import time
import urllib.request

import peers
from conftest import gw_config, topic
from test_run import CMD, DEV, device, ready, response


def http(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.read().decode()


def status_of(port, dev):
    """The device's object in GET /status."""
    return json.loads(http(port, "/status"))["devices"][dev]


def metric(port, name, dev):
    """A per-device sample from GET /metrics (None when absent)."""
    text = http(port, "/metrics")
    m = re.search(r"^" + re.escape(name) + r'\{device="' + re.escape(dev) + r'"[^}]*\} (\S+)$', text, re.M)
    return float(m.group(1)) if m else None


def wait_status(port, dev, pred, timeout=15.0):
    """Poll GET /status until pred(device object) holds; return the last object."""
    deadline = time.monotonic() + timeout
    st = None
    while time.monotonic() < deadline:
        try:
            st = status_of(port, dev)
            if pred(st):
                return st
        except (OSError, KeyError, ValueError):
            pass
        time.sleep(0.2)
    return st


def values(m):
    j = m.json()
    return j.get("values") if isinstance(j, dict) else None


def test_modbus_silent_unit_does_not_disturb_the_others(broker, start_modbus, start_gateway, watch):
    mb = start_modbus({"units": {"1": {"hr": [11, 12]}, "2": {"hr": [21, 22]}}, "silent_units": True})
    port = peers.free_port()
    tags = [{"name": "a", "addr": "hr:0"}, {"name": "b", "addr": "hr:1"}]
    devs = [device(mb.port, tags, name="unit1", unit=1, poll="200ms", timeout="300ms"),
            device(mb.port, tags, name="unit2", unit=2, poll="200ms", timeout="300ms"),
            # three requests per cycle: three timeouts in a row on the connection, which
            # reconnected the link for everyone when they were counted per connection
            device(mb.port, [{"name": "a", "addr": "hr:0"}, {"name": "b", "addr": "ir:0"},
                             {"name": "c", "addr": "co:0"}],
                   name="unit7", unit=7, poll="200ms", timeout="300ms")]
    w = watch(broker.port)
    gw = start_gateway(gw_config(broker.port, devs, metrics={"listen": f"127.0.0.1:{port}"}))
    st7 = wait_status(port, "unit7", lambda s: s["state"] == "offline", timeout=20)
    assert st7 and st7["state"] == "offline", f"the dead unit is not reported offline: {st7}\n{gw.output()[-3000:]}"
    assert st7["ne107"] == "Failure", st7
    assert st7["errors"] >= 3, st7

    # from here on, over 6 s: the healthy units flow at their rate, nothing reconnects
    t0 = time.monotonic()
    time.sleep(2.0)
    mb.write_hr(0, [111], unit=1)
    t_write = time.monotonic()
    m = w.wait_for(lambda m: (values(m) or {}).get("a", {}).get("v") == 111, 5,
                   topic=topic("unit1", "telemetry"), after=t_write)
    assert m is not None, f"unit 1's new value never arrived\n{gw.output()[-3000:]}"
    assert m.t - t_write < 1.0, f"unit 1's change took {m.t - t_write:.2f}s (poll 200 ms)"
    time.sleep(max(0.0, t0 + 6.0 - time.monotonic()))
    t1 = time.monotonic()
    for name in ("unit1", "unit2"):
        msgs = [x for x in w.messages(topic(name, "telemetry")) if t0 <= x.t <= t1]
        # 200 ms polling, deadband off: about 30 messages in 6 s; a reconnect every three
        # timeouts (the old per-connection count) left gaps of seconds
        assert len(msgs) >= 20, f"{name}: {len(msgs)} telemetry messages in {t1 - t0:.1f}s"
        gaps = [b.t - a.t for a, b in zip(msgs, msgs[1:])]
        assert max(gaps) < 1.0, f"{name}: telemetry stalled for {max(gaps):.2f}s"
        assert all(v["q"] == "good" for x in msgs for v in (values(x) or {}).values()), name
        st = status_of(port, name)
        assert st["state"] == "online" and st["ne107"] == "OK", (name, st)
    for name in ("unit1", "unit2", "unit7"):
        assert metric(port, "fieldbridge_device_reconnects_total", name) == 0, \
            f"{name} reconnected\n{gw.output()[-3000:]}"
    assert metric(port, "fieldbridge_device_connected", "unit7") == 0
    assert metric(port, "fieldbridge_device_bad_tags", "unit7") == 3
    st7 = status_of(port, "unit7")
    assert st7["state"] == "offline" and st7["ne107"] == "Failure", st7
    bad = [values(x) for x in w.messages(topic("unit7", "telemetry")) if x.t >= t0]
    assert bad and all(v["q"] == "bad" for b in bad for v in (b or {}).values()), bad[-2:]
    assert "unit 7: 3 requests in a row without an answer" in gw.output()
    assert "reconnecting" not in gw.output(), gw.output()[-3000:]


def test_modbus_refused_reads(broker, start_modbus, start_gateway, watch):
    """hr:5 is a hole (exception 02): the device is online and its other tag
    good, but errors grow and NE107 stays Maintenance required while the tag
    is Bad — beyond the 1 s status interval; a command write counts once."""
    mb = start_modbus({"units": {"1": {"hr": {"0": 7, "1": 8}}}})
    port = peers.free_port()
    tags = [{"name": "ok", "addr": "hr:0", "access": "rw"}, {"name": "hole", "addr": "hr:5"}]
    w = watch(broker.port)
    gw = start_gateway(gw_config(broker.port, [device(mb.port, tags)], metrics={"listen": f"127.0.0.1:{port}"}))
    ready(w)
    time.sleep(2.5)  # longer than status_interval (1 s): not only "errors seen to grow"
    st = status_of(port, DEV)
    assert st["state"] == "online" and st["errors"] > 0, st
    assert st["ne107"] == "Maintenance required", st
    assert metric(port, "fieldbridge_device_errors_total", DEV) > 0
    assert metric(port, "fieldbridge_device_bad_tags", DEV) == 1
    w.publish(CMD, {"id": "w1", "write": {"ok": 9}}, qos=1)
    assert response(w, "w1")["ok"] is True
    assert metric(port, "fieldbridge_device_writes_total", DEV) == 1, "a write counted twice"
    assert metric(port, "fieldbridge_device_write_errors_total", DEV) == 0
    assert gw.alive()


def test_sim_counts_every_bad_item(broker, start_gateway, watch):
    port = peers.free_port()
    dev = {"name": "sim-1", "url": "sim://s?seed=3", "poll": "100ms",
           "tags": [{"name": "x", "addr": "const:1,dropout=1"}, {"name": "y", "addr": "const:2,dropout=1"},
                    {"name": "z", "addr": "const:3"}]}
    w = watch(broker.port)
    start_gateway(gw_config(broker.port, [dev], metrics={"listen": f"127.0.0.1:{port}"}))
    assert w.wait_for(lambda m: True, 15, topic=topic("sim-1", "telemetry"))
    time.sleep(2.5)
    st = status_of(port, "sim-1")
    # two dropping tags: two failed items per read (the old count was one per read)
    assert st["requests"] > 5 and st["errors"] >= 2 * st["requests"] - 2, st
    assert st["state"] == "online" and st["ne107"] == "Maintenance required", st
    assert metric(port, "fieldbridge_device_bad_tags", "sim-1") == 2
