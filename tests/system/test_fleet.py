"""test_fleet.py — the gateway as a fleet member (issue 20), through the real
binary against Mosquitto and pymodbus: configuration reload (SIGHUP, the
gateway's own command topic, the systemd unit's ExecReload), what a reload
keeps running and what it restarts, remote configuration with a health check
and automatic roll-back, identity and lifecycle state in the retained status,
and the health block (docs/fleet.md, docs/metrics.md).
"""
import signal
import subprocess
import time

from conftest import GW_STATUS, gw_config, status_state
from test_run import device, ready


def wait_status(w, state, timeout=10, after=0.0):
    return w.wait_for(lambda m: status_state(m) == state, timeout, topic=GW_STATUS, after=after)


# ------------------------------------------------------------------ SIGHUP
def test_sighup_does_not_kill_the_gateway(broker, start_modbus, start_gateway, watch):
    """SIGHUP used to end the process at once (default action) without the
    offline status; now it asks for a reload and the gateway keeps running."""
    mb = start_modbus({"units": {"1": {"hr": [1]}}})
    w = watch(broker.port)
    gw = start_gateway(gw_config(broker.port, [device(mb.port, [{"name": "x", "addr": "hr:0"}])]))
    assert wait_status(w, "online")
    ready(w)
    t = time.monotonic()
    gw.proc.send(signal.SIGHUP)
    time.sleep(1.5)
    assert gw.alive(), f"SIGHUP ended the gateway:\n{gw.output()[-3000:]}"
    assert w.wait_for(lambda m: True, 5, topic="testsite/_/_/plc1/telemetry", after=t + 1.0), \
        "no telemetry after SIGHUP"
    assert not [m for m in w.messages(GW_STATUS) if m.t >= t and status_state(m) == "offline"], \
        w.messages(GW_STATUS)
    t2 = time.monotonic()
    gw.proc.send(signal.SIGTERM)
    assert gw.wait(15) == 0, gw.output()[-3000:]
    assert wait_status(w, "offline", timeout=5, after=t2), w.messages(GW_STATUS)


# ------------------------------------------------------------------ reload
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import urllib.request  # noqa: E402

import peers  # noqa: E402
from conftest import SITE, GW_ID, to_yaml, topic  # noqa: E402

GW_CMD = topic(GW_ID, "command")
GW_RESP = topic(GW_ID, "command/response")
POLL_S = 0.1


def http_json(port, path="/status"):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return json.loads(r.read().decode())


def http_text(port, path="/metrics"):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.read().decode()


def metric(text, name, **labels):
    sel = "".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
        if not labels and line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name}{{{sel}}} in /metrics")


def mdev(server, name, tags=None, poll=f"{int(POLL_S * 1000)}ms"):
    return {"name": name, "url": f"modbus-tcp://127.0.0.1:{server.port}?unit=1", "poll": poll,
            "timeout": "500ms", "tags": tags or [{"name": "n", "addr": "hr:20"}]}


def write_cfg(gw, cfg):
    with open(gw.path, "w", encoding="utf-8") as f:
        f.write(cfg if isinstance(cfg, str) else to_yaml(cfg) + "\n")


def last_result(w, after, action=None, timeout=15):
    """The retained status's config.last once it is newer than `after` (monotonic)."""
    def ok(m):
        j = m.json()
        last = ((j or {}).get("config") or {}).get("last") if isinstance(j, dict) else None
        return bool(last) and (action is None or last.get("action") == action)
    m = w.wait_for(ok, timeout, topic=topic(GW_ID, "status"), after=after)
    return m.json()["config"]["last"] if m else None


def gaps(msgs):
    ts = [m.t for m in msgs]
    return max((b - a for a, b in zip(ts, ts[1:])), default=0.0)


def counting_server(start_modbus, name):
    return start_modbus({"units": {"1": {"hr": [0] * 32}},
                         "counters": [{"unit": 1, "addr": 20, "period_ms": 50}]}, name=name)


def test_reload_keeps_untouched_devices_running(broker, start_modbus, start_gateway, watch, tmp_path):
    """Under load (every device polled every 100 ms, every poll published),
    a reload adds one device, removes one and changes one: the untouched
    devices keep their TCP connection (the peer sees no new one), miss no
    poll cycle and lose no message; the changed one reconnects with its new
    tag, the removed one goes offline with the reason, the added one starts."""
    srv = {n: counting_server(start_modbus, n) for n in ("keep1", "keep2", "change", "gone", "new")}
    port = peers.free_port()
    devs = [mdev(srv["keep1"], "keep1"), mdev(srv["keep2"], "keep2"), mdev(srv["change"], "change"),
            mdev(srv["gone"], "gone")]
    cfg = gw_config(broker.port, devs, metrics={"listen": f"127.0.0.1:{port}"},
                    buffer={"path": str(tmp_path / "buf")})
    w = watch(broker.port)
    gw = start_gateway(cfg)
    for d in ("keep1", "keep2", "change", "gone"):
        assert w.wait_for(lambda m: True, 20, topic=topic(d, "telemetry")), f"no telemetry from {d}"
    time.sleep(1.0)
    conns = {n: s.connections() for n, s in srv.items()}  # the start-up's port check counts one too
    m0 = http_text(port)
    overruns0 = {d: metric(m0, "fieldbridge_device_poll_overruns_total", device=d) for d in ("keep1", "keep2")}

    cfg["devices"] = [mdev(srv["keep1"], "keep1"),
                      mdev(srv["change"], "change", tags=[{"name": "n", "addr": "hr:20"},
                                                          {"name": "extra", "addr": "hr:1"}]),
                      mdev(srv["keep2"], "keep2"),  # moved in the list: its ids change, nothing else
                      mdev(srv["new"], "new")]
    write_cfg(gw, cfg)
    t0 = time.monotonic()
    gw.proc.send(signal.SIGHUP)
    last = last_result(w, t0, "reload")
    assert last and last["ok"], f"reload failed: {last}\n{gw.output()[-3000:]}"
    ch = last["changes"]
    assert ch["devices"]["added"] == ["new"] and ch["devices"]["removed"] == ["gone"], ch
    assert ch["devices"]["changed"] == ["change"] and ch["devices"]["kept"] == 2, ch
    assert ch["sinks"]["kept"] == ["mqtt"], ch
    assert w.wait_for(lambda m: "extra" in ((m.json() or {}).get("values") or {}), 10,
                      topic=topic("change", "telemetry"), after=t0), "the changed device's new tag never came"
    assert w.wait_for(lambda m: True, 10, topic=topic("new", "telemetry"), after=t0), "the added device never came"
    gone = w.wait_for(lambda m: status_state(m) == "offline", 10, topic=topic("gone", "status"), after=t0)
    assert gone and "removed" in gone.json().get("reason", ""), gone
    time.sleep(2.0)
    t1 = time.monotonic()
    assert not [m for m in w.messages(topic("gone", "telemetry")) if m.t > t0 + 1.0], "removed device still publishes"
    # the peers: the untouched devices kept their connection; the changed one reconnected
    conns1 = {n: s.connections() for n, s in srv.items()}
    assert conns1["keep1"] == conns["keep1"] and conns1["keep2"] == conns["keep2"], (conns, conns1)
    assert conns1["change"] == conns["change"] + 1, (conns, conns1)
    # no gap: every 100 ms cycle of the untouched devices ran and arrived, around the reload too
    m1 = http_text(port)
    for d in ("keep1", "keep2"):
        msgs = [m for m in w.messages(topic(d, "telemetry")) if t0 - 2.0 <= m.t <= t1]
        assert gaps(msgs) < 3.5 * POLL_S, f"{d}: a gap of {gaps(msgs):.3f}s around the reload"
        assert metric(m1, "fieldbridge_device_poll_overruns_total", device=d) == overruns0[d], d
        seqs = [m.json()["seq"] for m in msgs]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), f"{d}: seq not increasing: {seqs}"
        values = [m.json()["values"]["n"]["v"] for m in msgs]
        assert all(b != a for a, b in zip(values, values[1:])) or len(values) > 10, values
        # one message per cycle: as many as the time covered allows
        span = msgs[-1].t - msgs[0].t
        assert len(msgs) >= span / POLL_S * 0.9, f"{d}: {len(msgs)} messages in {span:.2f}s"
    st = http_json(port)
    assert st["sinks"]["mqtt"]["dropped"] == 0, st["sinks"]
    assert st["config"]["last"]["ok"] is True and "new" in st["devices"] and "gone" not in st["devices"], st
    assert st["devices"]["keep1"]["state"] == "online"


def test_invalid_config_is_refused_and_the_running_one_stays(broker, start_modbus, start_gateway, watch):
    mb = counting_server(start_modbus, "m")
    cfg = gw_config(broker.port, [mdev(mb, "plc1")])
    w = watch(broker.port)
    gw = start_gateway(cfg)
    assert w.wait_for(lambda m: True, 20, topic=topic("plc1", "telemetry"))
    conns = mb.connections()
    good = open(gw.path, encoding="utf-8").read()
    bad = good.replace('"poll": "100ms"', '"poll": "fast"').replace("poll: \"100ms\"", "poll: fast")
    bad = re.sub(r"poll: .*100ms.*", "poll: fast", good) + "bogus_top_level_key: 1\n"
    write_cfg(gw, bad)
    t0 = time.monotonic()
    gw.proc.send(signal.SIGHUP)
    last = last_result(w, t0, "reload")
    assert last and last["ok"] is False, last
    errs = last.get("errors", [])
    assert any(re.search(re.escape(gw.path) + r":\d+:\d+: .*bogus_top_level_key", e) for e in errs), errs
    assert any(":" in e and "poll" in e for e in errs), errs
    assert re.search(re.escape(gw.path) + r":\d+:\d+: .*bogus_top_level_key", gw.output()), "not logged"
    time.sleep(1.0)
    assert w.wait_for(lambda m: True, 5, topic=topic("plc1", "telemetry"), after=time.monotonic()), "polling stopped"
    assert mb.connections() == conns
    # the same through the reload command: the answer carries the diagnostics
    t1 = time.monotonic()
    w.publish(GW_CMD, {"id": "r-1", "cmd": "reload"}, qos=1)
    r = w.wait_for(lambda m: (m.json() or {}).get("id") == "r-1", 15, topic=GW_RESP, after=t1)
    assert r is not None, w.messages(GW_RESP)
    j = r.json()
    assert j["ok"] is False and any("bogus_top_level_key" in e for e in j["errors"]), j
    # fixed: the reload command applies it; the answer goes to the MQTT 5 response topic
    write_cfg(gw, good)
    t2 = time.monotonic()
    w.publish(GW_CMD, {"id": "r-2", "cmd": "reload"}, qos=1, response_topic="test/reply", correlation=b"c-2")
    r = w.wait_for(lambda m: True, 15, topic="test/reply", after=t2)
    assert r is not None and r.json()["ok"] is True, r
    assert r.props is not None and getattr(r.props, "CorrelationData", None) == b"c-2", r.props
    assert r.json()["changes"]["devices"]["kept"] == 1, r.json()
    assert mb.connections() == conns


def test_systemd_unit_reload(broker, start_modbus, start_gateway, watch):
    """`systemctl reload fieldbridge` runs the unit's ExecReload with $MAINPID:
    run that command line against the gateway's PID."""
    unit = open(os.path.join(os.path.dirname(__file__), "..", "..", "deploy", "fieldbridge.service"),
                encoding="utf-8").read()
    m = re.search(r"^ExecReload=(.+)$", unit, re.M)
    assert m, "deploy/fieldbridge.service has no ExecReload="
    mb = counting_server(start_modbus, "m")
    w = watch(broker.port)
    gw = start_gateway(gw_config(broker.port, [mdev(mb, "plc1")]))
    assert w.wait_for(lambda m: True, 20, topic=topic("plc1", "telemetry"))
    cmd = m.group(1).replace("$MAINPID", str(gw.proc.p.pid)).replace("${MAINPID}", str(gw.proc.p.pid))
    t0 = time.monotonic()
    subprocess.run(cmd, shell=True, check=True, timeout=10)
    last = last_result(w, t0, "reload")
    assert last and last["ok"] and last["source"] == "signal:SIGHUP", last
    assert gw.alive()
