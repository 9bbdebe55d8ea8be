"""test_fleet.py — the gateway as a fleet member (issue 20), through the real
binary against Mosquitto and pymodbus: configuration reload (SIGHUP, the
gateway's own command topic, the systemd unit's ExecReload), what a reload
keeps running and what it restarts, remote configuration with a health check
and automatic roll-back, identity and lifecycle state in the retained status,
and the health block (docs/fleet.md, docs/metrics.md).
"""
import datetime
import signal
import subprocess
import time

import pytest

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
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402

import peers  # noqa: E402
from conftest import SITE, GW_ID, to_yaml, topic  # noqa: E402

GW_CMD = topic(GW_ID, "command")
GW_RESP = topic(GW_ID, "command/response")
POLL_S = 0.1


def http_json(port, path="/status"):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return json.loads(r.read().decode())


def http_json_soon(port, path="/status"):
    """http_json, or {} while the endpoint is not listening yet (the metrics
    service starts after the connection threads: telemetry can come first)."""
    try:
        return http_json(port, path)
    except urllib.error.URLError:
        return {}


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
    """The retained status's config.last once it is newer than `after` (monotonic): a status
    message that arrives after `after` may still carry the previous reload's result."""
    wall = time.time() - (time.monotonic() - after) - 0.005

    def ok(m):
        j = m.json()
        last = ((j or {}).get("config") or {}).get("last") if isinstance(j, dict) else None
        if not last or (action is not None and last.get("action") != action):
            return False
        ts = last.get("ts")
        return not ts or datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() >= wall
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
    k2 = [{"name": "k", "addr": "hr:20"}]  # its own name: after the move its values must still be its own
    devs = [mdev(srv["keep1"], "keep1"), mdev(srv["keep2"], "keep2", tags=k2), mdev(srv["change"], "change"),
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
                      mdev(srv["keep2"], "keep2", tags=k2),  # moved in the list: its ids change, nothing else
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
    # the metrics endpoint (same address) is not restarted: its clients are not cut off
    assert ch["services"] == {"restarted": [], "kept": ["metrics"]}, ch
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
        key = "k" if d == "keep2" else "n"
        assert all(set(m.json()["values"]) == {key} for m in msgs), f"{d}: values of another tag: {msgs[-1].json()}"
        values = [m.json()["values"][key]["v"] for m in msgs]
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
    unit = open(os.path.join(os.path.dirname(__file__), "..", "..", "deploy", "systemd", "fieldbridge.service"),
                encoding="utf-8").read()
    m = re.search(r"^ExecReload=(.+)$", unit, re.M)
    assert m, "deploy/systemd/fieldbridge.service has no ExecReload="
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


@pytest.mark.parametrize("where", ["disk", "memory"])
def test_buffered_data_survives_a_reload(start_broker, start_modbus, start_gateway, watch, tmp_path, where):
    """While the broker is away, telemetry waits in the sink's buffer (on disk,
    or the in-memory queue without one).  A reload then renumbers every
    device and tag (a device added in front, another changed): the records
    made under the old config are translated by name and all delivered, to
    the right device with the right tag names, when the broker is back."""
    # the subscriber's session (and its subscription) outlives the broker's restart: records the
    # gateway delivers before the test client is back are queued for it, not dropped by the broker
    broker = start_broker(persistence=True)
    srv = {n: counting_server(start_modbus, n) for n in ("d0", "d1", "d2")}
    port = peers.free_port()
    cfg = gw_config(broker.port, [mdev(srv["d1"], "d1"), mdev(srv["d2"], "d2")],
                    mqtt={"reconnect": {"min": "2s", "max": "2s"}},
                    metrics={"listen": f"127.0.0.1:{port}"})
    if where == "disk":
        cfg["buffer"] = {"path": str(tmp_path / "buf")}
    w = watch(broker.port)
    gw = start_gateway(cfg)
    for d in ("d1", "d2"):
        assert w.wait_for(lambda m: True, 20, topic=topic(d, "telemetry")), d
    w.close()
    w2 = watch(broker.port, session=True)
    time.sleep(0.5)  # its SUBACK
    broker.stop()
    time.sleep(2.0)
    cfg["devices"] = [mdev(srv["d0"], "d0"), mdev(srv["d1"], "d1"),
                      mdev(srv["d2"], "d2", tags=[{"name": "extra", "addr": "hr:1"}, {"name": "n", "addr": "hr:20"}])]
    write_cfg(gw, cfg)
    before = http_json(port)["sinks"]["mqtt"]
    counted_ts = time.time()  # every record counted was made before this
    records = before["buffer"]["records"]
    assert records >= 20, before
    gw.proc.send(signal.SIGHUP)
    assert peers.wait_until(lambda: (http_json(port).get("config", {}).get("last") or {}).get("action") == "reload",
                            10), gw.output()[-3000:]
    last = http_json(port)["config"]["last"]
    assert last["ok"], last
    assert last["changes"]["devices"]["kept"] == 1 and last["changes"]["devices"]["changed"] == ["d2"], last
    time.sleep(1.0)
    restarted = time.monotonic()  # what w2 received before the stop is live data, not the buffer's
    broker.start()

    def delivered():
        st = http_json(port)["sinks"]["mqtt"]
        return st["buffer"]["records"] == 0 and st["connected"]
    assert peers.wait_until(delivered, 30), http_json(port)["sinks"]
    time.sleep(1.0)
    old = []
    for d in ("d1", "d2"):
        for m in [m for m in w2.messages(topic(d, "telemetry")) if m.t >= restarted]:
            j = m.json()
            assert j["device"] == d, j
            assert set(j["values"]) <= ({"n"} if d == "d1" else {"n", "extra"}), j
            ts = datetime.datetime.fromisoformat(j["ts"].replace("Z", "+00:00")).timestamp()
            if ts < counted_ts:
                old.append(j)
                assert "n" in j["values"] and "extra" not in j["values"], j
    assert len(old) >= records, f"{len(old)} of {records} buffered records arrived"
    seqs = [j["seq"] for j in old]
    assert len(set(seqs)) == len(seqs), "duplicates"
    st = http_json(port)
    assert st["sinks"]["mqtt"]["dropped"] == 0, st["sinks"]


# ---------------------------------------------------- remote configuration
import hashlib  # noqa: E402


def fleet_cfg(broker_port, devs, state_dir, check="2s", **top):
    cfg = gw_config(broker_port, devs, **top)
    cfg["fleet"] = {"state_dir": str(state_dir), "remote_config": {"health_check": check}}
    return cfg


def command(w, body, cid, timeout=20):
    t = time.monotonic()
    body = dict(body, id=cid)
    w.publish(GW_CMD, body, qos=1)
    r = w.wait_for(lambda m: (m.json() or {}).get("id") == cid, timeout, topic=GW_RESP, after=t)
    assert r is not None, f"no answer to {cid}: {w.messages(GW_RESP)[-3:]}"
    return r.json()


def status(w, pred, after, timeout=20):
    m = w.wait_for(lambda m: isinstance(m.json(), dict) and pred(m.json()), timeout,
                   topic=topic(GW_ID, "status"), after=after)
    return m.json() if m else None


def test_remote_config_inline_is_checked_kept_and_survives_a_restart(broker, start_modbus, start_gateway, watch,
                                                                       tmp_path):
    srv = {n: counting_server(start_modbus, n) for n in ("a", "b")}
    state = tmp_path / "state"
    cfg = fleet_cfg(broker.port, [mdev(srv["a"], "a")], state)
    w = watch(broker.port)
    gw = start_gateway(cfg)
    assert w.wait_for(lambda m: True, 20, topic=topic("a", "telemetry"))
    new = dict(cfg, version="v2")
    new["devices"] = [mdev(srv["a"], "a"), mdev(srv["b"], "b")]
    text = to_yaml(new) + "\n"
    t0 = time.monotonic()
    r = command(w, {"cmd": "config", "version": "v2", "config": text}, "c-1")
    assert r["ok"] and r["result"] == "applied" and r["health_check_s"] == 2, r
    assert r["sha256"] == hashlib.sha256(text.encode()).hexdigest(), r
    assert r["changes"]["devices"]["added"] == ["b"] and r["changes"]["devices"]["kept"] == 1, r
    # while it is checked: the status says so
    st = status(w, lambda j: (j.get("config") or {}).get("trial", {}).get("version") == "v2", t0)
    assert st and st["config"]["version"] == "v2" and st["config"]["source"] == "remote", st
    st = status(w, lambda j: (j.get("config") or {}).get("last", {}).get("health_check") == "passed", t0)
    assert st, f"never kept: {w.messages(topic(GW_ID, 'status'))[-1:]}"
    assert st["config"]["version"] == "v2" and "trial" not in st["config"], st["config"]
    assert (state / "config" / "current.yaml").read_text() == text
    assert not (state / "config" / "pending.yaml").exists()
    assert w.wait_for(lambda m: True, 10, topic=topic("b", "telemetry"), after=t0)
    # a restart runs the kept version (the local file names only device a)
    gw.stop()
    t1 = time.monotonic()
    gw2 = start_gateway(cfg, name="again")
    assert w.wait_for(lambda m: True, 20, topic=topic("b", "telemetry"), after=t1), gw2.output()[-2000:]
    st = status(w, lambda j: j.get("online") and (j.get("config") or {}).get("version") == "v2", t1)
    assert st and st["config"]["source"] == "remote", st
    assert st["config"]["path"].endswith("[remote configuration v2]"), st["config"]
    # a reload re-reads the kept version, not the local file
    t2 = time.monotonic()
    r = command(w, {"cmd": "reload"}, "r-1")
    assert r["ok"] and r["changes"]["devices"]["kept"] == 2 and not r["changes"]["devices"]["removed"], r


def test_remote_config_by_url_with_sha256(broker, start_modbus, start_gateway, watch, tmp_path, certs):
    srv = counting_server(start_modbus, "a")
    files = tmp_path / "files"
    files.mkdir()
    state = tmp_path / "state"
    cfg = fleet_cfg(broker.port, [mdev(srv, "a")], state, check="1s")
    cfg["fleet"]["remote_config"]["ca"] = certs.path("ca.pem")
    w = watch(broker.port)
    gw = start_gateway(cfg)
    assert w.wait_for(lambda m: True, 20, topic=topic("a", "telemetry"))
    new = dict(cfg, version="v3")
    new["devices"] = [mdev(srv, "a", tags=[{"name": "n", "addr": "hr:20"}, {"name": "x", "addr": "hr:2"}])]
    text = (to_yaml(new) + "\n").encode()
    (files / "v3.yaml").write_bytes(text)
    good = hashlib.sha256(text).hexdigest()
    for scheme_certs in (None, certs):  # http, then https with the test CA
        fs = peers.FileServer(files, certs=scheme_certs)
        try:
            r = command(w, {"cmd": "config", "version": "v3", "url": fs.url("v3.yaml"), "sha256": "0" * 64},
                        f"bad-{fs.scheme}")
            assert not r["ok"] and "SHA-256 mismatch" in r["error"], r
            assert fs.requests == ["/v3.yaml"], fs.requests
            r = command(w, {"cmd": "config", "version": "v3", "url": fs.url("missing.yaml"), "sha256": good},
                        f"404-{fs.scheme}")
            assert not r["ok"] and "404" in r["error"], r
            if scheme_certs is None:
                continue
            t0 = time.monotonic()
            r = command(w, {"cmd": "config", "version": "v3", "url": fs.url("v3.yaml"), "sha256": good.upper()},
                        "good")
            assert r["ok"] and r["sha256"] == good, r
        finally:
            fs.stop()
    assert w.wait_for(lambda m: "x" in ((m.json() or {}).get("values") or {}), 10, topic=topic("a", "telemetry"),
                      after=t0)
    st = status(w, lambda j: (j.get("config") or {}).get("last", {}).get("health_check") == "passed", t0)
    assert st and st["config"]["sha256"] == good, st
    # a slow download does not hold the command router: a write is answered meanwhile
    (files / "v4.yaml").write_bytes(text.replace(b"version: \"v3\"", b"version: \"v4\""))
    slow = peers.FileServer(files, delay={"/v4.yaml": 3.0})
    try:
        sha4 = hashlib.sha256((files / "v4.yaml").read_bytes()).hexdigest()
        t1 = time.monotonic()
        w.publish(GW_CMD, {"id": "slow", "cmd": "config", "version": "v4", "url": slow.url("v4.yaml"),
                           "sha256": sha4}, qos=1)
        assert peers.wait_until(lambda: slow.requests, 5)
        r = command(w, {"cmd": "config", "config": "x"}, "meanwhile")
        assert not r["ok"] and "being downloaded" in r["error"], r
        w.publish(topic("a", "command"), {"id": "w-1", "write": {"nope": 1}}, qos=1)
        resp = w.wait_for(lambda m: (m.json() or {}).get("id") == "w-1", 5, topic=topic("a", "command/response"),
                          after=t1)
        assert resp is not None and time.monotonic() - t1 < 2.5, "the router waited for the download"
        r = w.wait_for(lambda m: (m.json() or {}).get("id") == "slow", 15, topic=GW_RESP, after=t1)
        assert r is not None and r.json()["ok"] and r.json()["sha256"] == sha4, r
        assert time.monotonic() - t1 >= 3.0
    finally:
        slow.stop()
    # no sha256 with a url: refused before anything is fetched
    r = command(w, {"cmd": "config", "url": "http://127.0.0.1:1/x.yaml"}, "no-sha")
    assert not r["ok"] and "sha256" in r["error"], r


def test_remote_config_rolls_back_when_a_healthy_device_fails(broker, start_modbus, start_gateway, watch, tmp_path):
    srv = {n: counting_server(start_modbus, n) for n in ("a", "b")}
    state = tmp_path / "state"
    cfg = fleet_cfg(broker.port, [mdev(srv["a"], "a"), mdev(srv["b"], "b")], state, check="2s")
    w = watch(broker.port)
    gw = start_gateway(cfg)
    for d in ("a", "b"):
        assert w.wait_for(lambda m: True, 20, topic=topic(d, "telemetry"))
    time.sleep(0.5)
    conns_a = srv["a"].connections()
    bad = dict(cfg, version="broken-b")
    dead = peers.free_port()  # nobody listens there
    bad["devices"] = [mdev(srv["a"], "a"), dict(mdev(srv["b"], "b"), url=f"modbus-tcp://127.0.0.1:{dead}?unit=1")]
    t0 = time.monotonic()
    r = command(w, {"cmd": "config", "version": "broken-b", "config": to_yaml(bad) + "\n"}, "c-bad")
    assert r["ok"], r  # valid, applied, then watched
    st = status(w, lambda j: (j.get("config") or {}).get("last", {}).get("rolled_back") is True, t0, timeout=20)
    assert st, f"no roll-back: {w.messages(topic(GW_ID, 'status'))[-1:]}\n{gw.output()[-3000:]}"
    last = st["config"]["last"]
    assert last["ok"] is False and last["version"] == "broken-b" and "device b" in last["error"], last
    assert st["config"]["version"] is None and st["config"]["source"] == "file", st["config"]
    assert not (state / "config" / "current.yaml").exists() and not (state / "config" / "pending.yaml").exists()
    t1 = time.monotonic()
    assert w.wait_for(lambda m: True, 10, topic=topic("b", "telemetry"), after=t1), "b not back"
    assert srv["a"].connections() == conns_a, "the healthy device was reconnected"
    # refused outright: invalid, another gateway id, another state directory
    r = command(w, {"cmd": "config", "config": "gateway: {id: x}\nbogus: 1\n"}, "c-invalid")
    assert not r["ok"] and any("bogus" in e for e in r["errors"]), r
    other = dict(cfg, gateway={"id": "someone-else", "site": SITE})
    r = command(w, {"cmd": "config", "config": to_yaml(other) + "\n"}, "c-id")
    assert not r["ok"] and "gateway.id" in r["error"], r
    moved = dict(cfg, fleet={"state_dir": str(tmp_path / "elsewhere"), "remote_config": {}})
    r = command(w, {"cmd": "config", "config": to_yaml(moved) + "\n"}, "c-dir")
    assert not r["ok"] and "state_dir" in r["error"], r
    r = command(w, {"cmd": "config", "version": "v9", "config": to_yaml(dict(cfg, version="v8")) + "\n"}, "c-ver")
    assert not r["ok"] and "version mismatch" in r["error"], r


def test_remote_config_rolls_back_when_the_broker_becomes_unreachable(broker, start_modbus, start_gateway, watch,
                                                                        tmp_path):
    srv = counting_server(start_modbus, "a")
    state = tmp_path / "state"
    cfg = fleet_cfg(broker.port, [mdev(srv, "a")], state, check="2s")
    w = watch(broker.port)
    start_gateway(cfg)
    assert w.wait_for(lambda m: True, 20, topic=topic("a", "telemetry"))
    bad = dict(cfg, version="wrong-broker")
    bad["mqtt"] = dict(cfg["mqtt"], url=f"mqtt://127.0.0.1:{peers.free_port()}")
    t0 = time.monotonic()
    # the answer would go out on the new connection, which cannot be made: the
    # retained status tells the outcome once the gateway is back
    w.publish(GW_CMD, {"id": "c-broker", "cmd": "config", "config": to_yaml(bad) + "\n"}, qos=1)
    # it comes back to this broker by itself, and tells why
    st = status(w, lambda j: (j.get("config") or {}).get("last", {}).get("rolled_back") is True, t0, timeout=25)
    assert st and "sink mqtt is not connected" in st["config"]["last"]["error"], st
    assert w.wait_for(lambda m: True, 10, topic=topic("a", "telemetry"), after=time.monotonic())


# ------------------------------------------------------- identity and state
def test_identity_and_capabilities_in_the_retained_status(broker, start_modbus, start_gateway, watch):
    srv = counting_server(start_modbus, "a")
    cfg = gw_config(broker.port, [mdev(srv, "a")], version="2026-03-01.2")
    cfg["gateway"].update({"model": "RevPi Connect 4", "location": "Munich, hall B",
                           "labels": {"line": "A", "owner": "ops"}})
    w = watch(broker.port)
    start_gateway(cfg)
    st = status(w, lambda j: j.get("online") and "info" in j, 0)
    assert st, w.messages(topic(GW_ID, "status"))
    info = st["info"]
    assert info["id"] == GW_ID and info["site"] == SITE and info["model"] == "RevPi Connect 4", info
    assert info["location"] == "Munich, hall B" and info["labels"] == {"line": "A", "owner": "ops"}, info
    assert info["software"].startswith("fieldbridge "), info
    caps = info["capabilities"]
    assert {"modbus", "opcua", "s7", "ads", "revpi", "sim"} <= set(caps["drivers"]), caps
    assert {"mqtt", "sparkplug"} <= set(caps["sinks"]) and "reload" in caps["commands"], caps
    assert "config" not in caps["commands"], "remote configuration is off without fleet.remote_config"
    assert st["state"] == "online" and st["config"]["version"] == "2026-03-01.2", st
    late = watch(broker.port, topics=[topic(GW_ID, "status")])
    m = late.wait_for(lambda m: True, 5)
    assert m is not None and m.retain and m.json()["info"]["model"] == "RevPi Connect 4", m


def test_maintenance_refuses_writes_and_is_kept_across_a_restart(broker, start_modbus, start_gateway, watch, tmp_path):
    srv = counting_server(start_modbus, "a")
    state = tmp_path / "state"
    dev = mdev(srv, "a", tags=[{"name": "n", "addr": "hr:20"}, {"name": "sp", "addr": "hr:5", "access": "rw"}])
    cfg = fleet_cfg(broker.port, [dev], state)
    w = watch(broker.port)
    gw = start_gateway(cfg)
    assert w.wait_for(lambda m: True, 20, topic=topic("a", "telemetry"))
    time.sleep(0.5)
    t0 = time.monotonic()
    r = command(w, {"cmd": "maintenance", "on": True, "reason": "replacing the PLC"}, "m-1")
    assert r["ok"], r
    st = status(w, lambda j: j.get("state") == "maintenance", t0, timeout=5)
    assert st and st["health_reasons"] == [], st
    assert (state / "maintenance").read_text() == "replacing the PLC"
    t1 = time.monotonic()
    w.publish(topic("a", "command"), {"id": "w-1", "write": {"sp": 7}}, qos=1)
    resp = w.wait_for(lambda m: (m.json() or {}).get("id") == "w-1", 10, topic=topic("a", "command/response"), after=t1)
    assert resp and resp.json()["ok"] is False and "maintenance" in resp.json()["error"], resp
    r = command(w, {"cmd": "config", "config": to_yaml(cfg) + "\n"}, "c-1")
    assert not r["ok"] and "maintenance" in r["error"], r
    assert w.wait_for(lambda m: True, 5, topic=topic("a", "telemetry"), after=time.monotonic()), "polling stopped"
    gw.stop()
    t2 = time.monotonic()
    start_gateway(cfg, name="again")
    st = status(w, lambda j: j.get("online") and j.get("state") == "maintenance", t2)
    assert st, "maintenance not kept across the restart"
    r = command(w, {"cmd": "maintenance", "on": False}, "m-2")
    assert r["ok"] and not (state / "maintenance").exists(), r
    assert status(w, lambda j: j.get("state") == "online", time.monotonic() - 0.1, timeout=5)
    t3 = time.monotonic()
    w.publish(topic("a", "command"), {"id": "w-2", "write": {"sp": 7}}, qos=1)
    resp = w.wait_for(lambda m: (m.json() or {}).get("id") == "w-2", 10, topic=topic("a", "command/response"), after=t3)
    assert resp and resp.json()["ok"] is True, resp


def test_decommission_stops_polling_and_is_kept(broker, start_modbus, start_gateway, watch, tmp_path):
    srv = counting_server(start_modbus, "a")
    state = tmp_path / "state"
    cfg = fleet_cfg(broker.port, [mdev(srv, "a")], state)
    w = watch(broker.port)
    gw = start_gateway(cfg)
    assert w.wait_for(lambda m: True, 20, topic=topic("a", "telemetry"))
    r = command(w, {"cmd": "decommission", "confirm": "not-me"}, "d-0")
    assert not r["ok"] and "confirm" in r["error"], r
    t0 = time.monotonic()
    r = command(w, {"cmd": "decommission", "confirm": GW_ID}, "d-1")
    assert r["ok"], r
    st = status(w, lambda j: j.get("state") == "decommissioned", t0, timeout=5)
    assert st and st["devices"]["a"]["state"] == "offline", st
    off = w.wait_for(lambda m: status_state(m) == "offline", 5, topic=topic("a", "status"), after=t0)
    assert off and "decommissioned" in off.json()["reason"], off
    time.sleep(0.5)
    t1 = time.monotonic()
    time.sleep(1.0)
    assert not w.messages(topic("a", "telemetry")) or w.messages(topic("a", "telemetry"))[-1].t < t1, "still polling"
    r = command(w, {"cmd": "reload"}, "r-1")
    assert not r["ok"] and "decommissioned" in r["error"], r
    # a restart keeps it out of service: no connection to the device at all
    gw.stop()
    conns = srv.connections()
    t2 = time.monotonic()
    gw2 = start_gateway(cfg, name="again")
    st = status(w, lambda j: j.get("online") and j.get("state") == "decommissioned", t2)
    assert st, gw2.output()[-2000:]
    time.sleep(1.0)
    assert srv.connections() == conns, "a decommissioned gateway connected to its device"
    # the offline status of a decommissioned gateway says so too
    t3 = time.monotonic()
    gw2.stop()
    st = status(w, lambda j: not j.get("online"), t3, timeout=5)
    assert st and st["state"] == "decommissioned", st
    t4 = time.monotonic()
    gw3 = start_gateway(cfg, name="third")
    assert status(w, lambda j: j.get("online") and j.get("state") == "decommissioned", t4)
    time.sleep(0.5)  # its command subscription
    r = command(w, {"cmd": "recommission"}, "d-2")
    assert r["ok"] and not (state / "decommissioned").exists(), r
    assert w.wait_for(lambda m: True, 10, topic=topic("a", "telemetry"), after=t4), gw3.output()[-2000:]


def test_error_state_when_no_device_is_online(broker, start_gateway, watch, start_modbus):
    srv = counting_server(start_modbus, "a")
    cfg = gw_config(broker.port, [mdev(srv, "a")], status_interval="30s")
    cfg["fleet"] = {"health": {"error_after": "1s"}}
    w = watch(broker.port)
    start_gateway(cfg)
    assert w.wait_for(lambda m: True, 20, topic=topic("a", "telemetry"))
    t0 = time.monotonic()
    srv.stop()
    st = status(w, lambda j: j.get("state") == "error", t0, timeout=10)  # on change: long before 30 s
    assert st and st["health"] == "error" and "no device online" in st["health_reasons"][0], st
    t1 = time.monotonic()
    srv.start()
    assert status(w, lambda j: j.get("state") == "online" and j.get("health") == "ok", t1, timeout=15)


# ------------------------------------------------------------------ health
def test_health_in_status_and_metrics(broker, start_modbus, start_gateway, watch, tmp_path):
    """CPU, memory, disk (the buffer's filesystem), network counters, thermal
    zones (a board's sysfs, here a directory laid out like one), the clock:
    in the status and on /metrics, published at once when the health changes."""
    sysfs = tmp_path / "sys"
    tz = sysfs / "class" / "thermal" / "thermal_zone0"
    tz.mkdir(parents=True)
    (tz / "type").write_text("cpu-thermal\n")
    (tz / "temp").write_text("48500\n")
    srv = counting_server(start_modbus, "a")
    port = peers.free_port()
    cfg = gw_config(broker.port, [mdev(srv, "a")], status_interval="30s",
                    metrics={"listen": f"127.0.0.1:{port}"}, buffer={"path": str(tmp_path / "buf")})
    cfg["fleet"] = {"health": {"sysfs": str(sysfs), "temperature_max": 80}}
    w = watch(broker.port)
    start_gateway(cfg)
    assert w.wait_for(lambda m: True, 20, topic=topic("a", "telemetry"))
    assert peers.wait_until(lambda: (http_json_soon(port).get("system") or {}).get("cpu", {}).get("usage") is not None,
                            15)
    st = http_json(port)
    sysj = st["system"]
    with open("/proc/meminfo", encoding="ascii") as f:
        total = int(re.search(r"MemTotal:\s+(\d+) kB", f.read()).group(1)) * 1024
    assert sysj["memory"]["total_bytes"] == total, sysj["memory"]
    assert 0 < sysj["memory"]["available_bytes"] <= total and sysj["memory"]["process_rss_bytes"] > 0
    assert 0.0 <= sysj["cpu"]["usage"] <= 1.0 and sysj["cpu"]["cores"] == os.cpu_count(), sysj["cpu"]
    assert sysj["disk"]["path"] == str(tmp_path / "buf"), sysj["disk"]
    vfs = os.statvfs(str(tmp_path / "buf"))
    assert sysj["disk"]["total_bytes"] == vfs.f_blocks * vfs.f_frsize, sysj["disk"]
    assert "lo" in sysj["network"] and sysj["network"]["lo"]["rx_bytes"] > 0, sysj["network"]
    assert sysj["temperature"] == {"thermal_zone0": {"type": "cpu-thermal", "celsius": 48.5}}, sysj["temperature"]
    assert isinstance(sysj["clock"]["synced"], bool) and sysj["clock"]["synced"] == st["clock_synced"]
    assert st["health"] == "ok" and st["sinks"]["mqtt"]["queue"] >= 0, st
    text = http_text(port)
    assert metric(text, "fieldbridge_temperature_celsius", zone="thermal_zone0", type="cpu-thermal") == 48.5
    assert metric(text, "fieldbridge_system_memory_total_bytes") == total
    assert metric(text, "fieldbridge_network_receive_bytes_total", interface="lo") > 0
    assert metric(text, "fieldbridge_disk_total_bytes", path=str(tmp_path / "buf")) == vfs.f_blocks * vfs.f_frsize
    assert metric(text, "fieldbridge_gateway_state", state="online") == 1
    assert metric(text, "fieldbridge_gateway_state", state="maintenance") == 0
    assert metric(text, "fieldbridge_sink_queue_length", sink="mqtt") >= 0
    assert metric(text, "fieldbridge_system_cpus") == os.cpu_count()
    metric(text, "fieldbridge_clock_maxerror_seconds")
    # too hot: degraded, published at once (the status interval is 30 s)
    t0 = time.monotonic()
    (tz / "temp").write_text("85250\n")
    st = status(w, lambda j: j.get("health") == "degraded", t0, timeout=10)
    assert st and any("thermal_zone0" in r for r in st["health_reasons"]), st
    assert metric(http_text(port), "fieldbridge_temperature_celsius", zone="thermal_zone0", type="cpu-thermal") == 85.25


def test_reload_restarts_a_changed_sink_without_losing_data(broker, start_modbus, start_gateway, watch, tmp_path):
    """A reload that changes the MQTT section (keepalive) restarts that sink:
    a clean DISCONNECT and a new session, while the device keeps polling and
    what it produced meanwhile is stored and delivered in order — every poll
    cycle arrives, none twice.  Adding a Sparkplug section starts that sink
    beside it; removing it again stops it with its NDEATH; changing the
    metrics address moves the endpoint."""
    srv = counting_server(start_modbus, "a")
    port, port2 = peers.free_port(), peers.free_port()
    cfg = gw_config(broker.port, [mdev(srv, "a")], buffer={"path": str(tmp_path / "buf")},
                    metrics={"listen": f"127.0.0.1:{port}"})
    w = watch(broker.port)
    gw = start_gateway(cfg)
    assert w.wait_for(lambda m: True, 20, topic=topic("a", "telemetry"))
    time.sleep(1.0)
    cfg["mqtt"] = dict(cfg["mqtt"], keepalive="7s")
    write_cfg(gw, cfg)
    t0 = time.monotonic()
    gw.proc.send(signal.SIGHUP)
    last = last_result(w, t0, "reload")
    assert last and last["ok"] and last["changes"]["sinks"]["restarted"] == ["mqtt"], last
    assert last["changes"]["devices"]["kept"] == 1, last
    time.sleep(1.5)
    t1 = time.monotonic()
    msgs = [m for m in w.messages(topic("a", "telemetry")) if t0 - 1.0 <= m.t <= t1]
    ts = sorted(datetime.datetime.fromisoformat(m.json()["ts"].replace("Z", "+00:00")).timestamp() for m in msgs)
    assert max(b - a for a, b in zip(ts, ts[1:])) < 2.5 * POLL_S, "a poll cycle went missing over the sink restart"
    seqs = [m.json()["seq"] for m in msgs]
    assert len(seqs) == len(set(seqs)), "a message arrived twice"
    st = http_json(port)
    assert st["sinks"]["mqtt"]["dropped"] == 0 and st["sinks"]["mqtt"]["connected"], st["sinks"]
    # a sink added beside it, then removed again; the metrics endpoint moved
    cfg["sparkplug"] = {"url": f"mqtt://127.0.0.1:{broker.port}", "group": "G", "keepalive": "5s"}
    cfg["metrics"] = {"listen": f"127.0.0.1:{port2}"}
    devs = cfg.pop("devices")
    cfg["devices"] = devs
    write_cfg(gw, cfg)
    t2 = time.monotonic()
    gw.proc.send(signal.SIGHUP)
    last = last_result(w, t2, "reload")
    assert last and last["ok"], last
    assert last["changes"]["sinks"] == {"added": ["sparkplug"], "removed": [], "restarted": [], "kept": ["mqtt"]}, last
    assert last["changes"]["services"]["restarted"] == ["metrics"], last
    assert w.wait_for(lambda m: True, 10, topic=f"spBv1.0/G/NBIRTH/{GW_ID}", after=t2), "the added sink never started"
    assert http_json(port2)["sinks"]["sparkplug"]["connected"] is True
    assert not peers.port_open(port), "the old metrics address still answers"
    del cfg["sparkplug"]
    write_cfg(gw, cfg)
    t3 = time.monotonic()
    gw.proc.send(signal.SIGHUP)
    last = last_result(w, t3, "reload")
    assert last and last["changes"]["sinks"]["removed"] == ["sparkplug"] and last["changes"]["sinks"]["kept"] == ["mqtt"]
    assert w.wait_for(lambda m: True, 10, topic=f"spBv1.0/G/NDEATH/{GW_ID}", after=t3), "no NDEATH from the removed sink"
    assert "sparkplug" not in http_json(port2)["sinks"]
    assert w.wait_for(lambda m: True, 5, topic=topic("a", "telemetry"), after=time.monotonic())


def test_reloads_of_an_unbuffered_sink_fed_straight_by_the_connection(broker, start_modbus, start_gateway, watch):
    """Without a buffer, a group without processing is handed straight from its
    connection thread to the ready MQTT sink (core/publish.c).  Reloads that
    restart that sink (its section changes) park, close and open it while the
    kept connection goes on polling: meanwhile the connection thread must queue
    instead of calling into it, and the sink's memory queue keeps every poll
    cycle across each restart, none twice.  A reload that gives the kept
    device's tag a scale takes its group off the in-place path: what is
    published afterwards is scaled."""
    srv = counting_server(start_modbus, "a")
    cfg = gw_config(broker.port, [mdev(srv, "a")])
    w = watch(broker.port)
    gw = start_gateway(cfg)
    assert w.wait_for(lambda m: True, 20, topic=topic("a", "telemetry"))
    time.sleep(1.0)
    t0 = time.monotonic()
    for i in range(6):
        cfg["mqtt"] = dict(cfg["mqtt"], keepalive=f"{7 + i % 2}s")
        write_cfg(gw, cfg)
        t = time.monotonic()
        gw.proc.send(signal.SIGHUP)
        last = last_result(w, t, "reload")
        assert last and last["ok"] and last["changes"]["sinks"]["restarted"] == ["mqtt"], last
        assert last["changes"]["devices"]["kept"] == 1, last
        time.sleep(0.3)
    time.sleep(1.5)
    t1 = time.monotonic()
    assert gw.alive(), gw.output()[-3000:]
    msgs = [m for m in w.messages(topic("a", "telemetry")) if t0 - 1.0 <= m.t <= t1]
    ts = sorted(datetime.datetime.fromisoformat(m.json()["ts"].replace("Z", "+00:00")).timestamp() for m in msgs)
    assert max(b - a for a, b in zip(ts, ts[1:])) < 2.5 * POLL_S, "a poll cycle went missing over a sink restart"
    seqs = [m.json()["seq"] for m in msgs]
    assert len(seqs) == len(set(seqs)), "a message arrived twice"
    # the same device, its tag now scaled: no longer published as read
    cfg["devices"][0]["tags"] = [{"name": "n", "addr": "hr:20", "scale": {"factor": 0.5, "offset": 1000}}]
    write_cfg(gw, cfg)
    t2 = time.monotonic()
    gw.proc.send(signal.SIGHUP)
    last = last_result(w, t2, "reload")
    assert last and last["ok"] and last["changes"]["devices"]["kept"] == 1, last
    time.sleep(1.0)
    after = [m.json()["values"]["n"]["v"] for m in w.messages(topic("a", "telemetry")) if m.t >= time.monotonic() - 0.6]
    assert after and all(v >= 1000 for v in after), after  # raw: the counter, still far below 1000
    t3 = time.monotonic()
    gw.proc.send(signal.SIGTERM)
    assert gw.wait(15) == 0, gw.output()[-3000:]
    assert wait_status(w, "offline", timeout=5, after=t3)


def test_reloads_while_the_http_api_takes_writes(broker, start_modbus, start_gateway, watch, tmp_path):
    """The HTTP API sink while writes come through it and ten reloads run
    that change a tag's processing: the API is kept each time (its section is
    the same), so it never goes away and never answers 503 — every write gets
    an answer (done, or refused because of the reload), the gateway keeps its
    device's connection and nothing is left behind (the ASan build checks the
    memory)."""
    import threading  # pylint: disable=import-outside-toplevel
    import httpapi as H  # pylint: disable=import-outside-toplevel
    srv = counting_server(start_modbus, "a")
    tokens = tmp_path / "http.tokens"
    H.write_tokens(tokens, ("op", "operator", H.OPERATOR))
    hport = peers.free_port()
    dev = mdev(srv, "a", tags=[{"name": "n", "addr": "hr:20"}, {"name": "sp", "addr": "hr:5", "access": "rw"}])
    cfg = gw_config(broker.port, [dev], http={"listen": f"127.0.0.1:{hport}", "tokens": str(tokens),
                                              "plaintext_writes": True})
    w = watch(broker.port)
    gw = start_gateway(cfg)
    assert w.wait_for(lambda m: True, 20, topic=topic("a", "telemetry"))
    H.wait_for(lambda: peers.port_open(hport), 10, "the API")
    conns = srv.connections()
    answers, refused, stop = [], [], threading.Event()

    def writer():
        k = 0
        while not stop.is_set() and k < 500:
            k += 1
            try:
                r = H.Client(hport, H.OPERATOR, validate_api=False).post(
                    "/api/v1/devices/a/write", {"id": f"w{k}", "write": {"sp": k % 100}}, timeout=10)
                answers.append(r.status)
                if r.status == 422:
                    refused.append(r.body)
            except OSError:
                answers.append("down")  # the API restarting
                time.sleep(0.02)
    t = threading.Thread(target=writer)
    t.start()
    try:
        for i in range(10):
            cfg["devices"][0]["tags"][0]["deadband"] = i  # a processing change: the device is kept
            write_cfg(gw, cfg)
            t0 = time.monotonic()
            gw.proc.send(signal.SIGHUP)
            last = last_result(w, t0, "reload")
            assert last and last["ok"], last
            assert "http" in last["changes"]["sinks"]["kept"], last
            time.sleep(0.2)
    finally:
        stop.set()
        t.join(30)
    # the API was kept through every reload: no connection refused, no "the gateway is stopping"
    assert "down" not in answers and 503 not in answers, sorted(set(map(str, answers)))
    # done, refused because of the reload (422 from the router, 503 from the API closing), the API's
    # own rate limit (429), or the API restarting
    assert answers and all(a in (200, 422, 429, 503, "down") for a in answers), sorted(set(map(str, answers)))
    assert all("reload" in str(b) for b in refused), refused
    assert 200 in answers
    H.wait_for(lambda: H.Client(hport, H.OPERATOR, validate_api=False).post(
        "/api/v1/devices/a/write", {"write": {"sp": 1}}).status == 200, 10, "a write after the reloads")
    assert srv.connections() == conns  # the device kept its one connection through ten reloads
    assert gw.alive()


def test_stop_during_a_download_is_prompt(broker, start_modbus, start_gateway, watch, tmp_path):
    """SIGTERM while a remote configuration is downloading from a server that
    does not answer: the download is given up and the gateway exits at once
    (systemd's TimeoutStopSec is 15 s), with its offline status."""
    srv = counting_server(start_modbus, "a")
    files = tmp_path / "files"
    files.mkdir()
    (files / "v.yaml").write_text("gateway: {id: x}\n")
    cfg = fleet_cfg(broker.port, [mdev(srv, "a")], tmp_path / "state")
    cfg["fleet"]["remote_config"]["fetch_timeout"] = "60s"
    w = watch(broker.port)
    gw = start_gateway(cfg)
    assert w.wait_for(lambda m: True, 20, topic=topic("a", "telemetry"))
    fs = peers.FileServer(files, delay={"/v.yaml": 30.0})
    try:
        w.publish(GW_CMD, {"id": "d", "cmd": "config", "url": fs.url("v.yaml"), "sha256": "a" * 64}, qos=1)
        assert peers.wait_until(lambda: fs.requests, 5)
        t0 = time.monotonic()
        gw.proc.send(signal.SIGTERM)
        assert gw.wait(10) == 0, gw.output()[-3000:]
        assert time.monotonic() - t0 < 5, f"stopping took {time.monotonic() - t0:.1f}s"
        assert wait_status(w, "offline", timeout=5, after=t0)
    finally:
        fs.stop()


def test_reload_applies_alarm_and_control_changes(broker, start_gateway, watch, tmp_path):
    """Computed tags, alarms (the edge thread) and a PID loop (the control
    service) hold ids of the running model, so a reload stops them before the
    swap and starts them again on the new model.  A reload that does not touch
    them leaves them working: the active alarm stays active (its state comes
    back from the journal: no second `raised`), the expression tag is computed
    again, the loop controls at its set point.  A reload that changes an alarm
    limit and the loop's section applies both: the alarm clears under its new
    limit and is raised at it, the loop goes to its new set point.  The HTTP
    API's alarm view and GET /status are read all along (the ASan build checks
    that nothing reads a freed model)."""
    import threading  # pylint: disable=import-outside-toplevel
    import httpapi as H  # pylint: disable=import-outside-toplevel
    from test_alarms import events, wait_event  # pylint: disable=import-outside-toplevel
    from conftest import wait_values  # pylint: disable=import-outside-toplevel
    tokens = tmp_path / "http.tokens"
    H.write_tokens(tokens, ("op", "operator", H.OPERATOR))
    hport, mport = peers.free_port(), peers.free_port()
    fopdt = "k=2.0,tau=4.0s,dead=0.8s,y0=20.0"
    oven = {"name": "oven", "url": "sim://oven", "poll": "20ms",
            "tags": [{"name": "power", "addr": "memory:initial=0", "access": "rw"},
                     {"name": "temp", "addr": f"fopdt:{fopdt},input=power"}]}

    def boiler(limit):
        return {"name": "boiler", "url": "sim://boiler", "poll": "100ms",
                "tags": [{"name": "temp", "addr": "memory:initial=50", "access": "rw",
                          "alarms": {"hi": {"limit": limit, "deadband": 2}}},
                         {"name": "double", "expr": "'boiler/temp' * 2"}]}

    def loop(sp, kp=1.25):
        return {"loops": [{"name": "tic", "pv": "oven/temp", "out": "oven/power", "sp": sp, "kp": kp, "ti": "4s",
                           "cycle": "20ms", "safe": 0, "out_min": 0, "out_max": 100, "publish": "100ms"}]}
    cfg = gw_config(broker.port, [oven, boiler(80)], control=loop(20), metrics={"listen": f"127.0.0.1:{mport}"},
                    http={"listen": f"127.0.0.1:{hport}", "tokens": str(tokens)},
                    buffer={"path": str(tmp_path / "buf")})
    w = watch(broker.port, (f"{SITE}/#",))
    gw = start_gateway(cfg)
    assert wait_values(w, "tic", lambda v: v.get("state", {}).get("v") == "ok", timeout=20), gw.output()[-3000:]
    H.wait_for(lambda: peers.port_open(hport), 10, "the API")
    # readers of the model from other threads, all along
    errors, stop = [], threading.Event()

    def reader():
        k = 0
        while not stop.is_set() and k < 2000:
            k += 1
            try:
                r = H.Client(hport, H.OPERATOR, validate_api=False).request("GET", "/api/v1/alarms", timeout=5)
                if r.status not in (200, 429, 503):  # 429: the API's own rate limit
                    errors.append(("alarms", r.status))
                json.loads(http_text(mport, "/status"))
            except (OSError, ValueError):
                time.sleep(0.02)  # the API restarting with its sink
            time.sleep(0.05)
    t = threading.Thread(target=reader)
    t.start()

    def cmd(device, body):
        cid = f"c{time.monotonic_ns()}"
        t1 = time.monotonic()
        w.publish(topic(device, "command"), json.dumps(dict(body, id=cid)), qos=1)
        m = w.wait_for(lambda m: (m.json() or {}).get("id") == cid, 10, topic=topic(device, "command/response"),
                       after=t1)
        assert m and m.json()["ok"], m and m.json()

    def reload(after_write):
        write_cfg(gw, cfg)
        t0 = time.monotonic()
        gw.proc.send(signal.SIGHUP)
        last = last_result(w, t0, "reload")
        assert last and last["ok"], f"reload failed: {last}\n{gw.output()[-3000:]}"
        after_write(last["changes"])
        return t0

    try:
        t0 = time.monotonic()
        cmd("boiler", {"write": {"temp": 85}})
        raised = wait_event(w, lambda j: j.get("event") == "raised", dev="boiler", after=t0)
        assert raised and raised["limit"] == 80, raised

        # 1. a reload that touches neither the alarms nor the loop (a device added)
        cfg["devices"] = [oven, boiler(80), {"name": "extra", "url": "sim://extra", "poll": "100ms",
                                             "tags": [{"name": "x", "addr": "memory:initial=1"}]}]
        t1 = reload(lambda ch: ch["devices"]["added"] == ["extra"] or pytest.fail(str(ch)))
        assert wait_values(w, "tic", lambda v: v.get("state", {}).get("v") == "ok" and v.get("sp", {}).get("v") == 20,
                           timeout=10, after=t1), "the loop did not come back after the reload"
        cmd("boiler", {"write": {"temp": 86}})
        assert wait_values(w, "boiler", lambda v: v.get("double", {}).get("v") == 172, timeout=10, after=t1), \
            "the expression tag is not computed after the reload"
        time.sleep(1.0)
        again = [j for j in events(w, "boiler", after=t1) if j.get("event") == "raised"]
        assert not again, f"the active alarm was raised again by a reload that did not change it: {again}"
        st = json.loads(http_text(mport, "/status"))
        assert st["devices"]["boiler"]["alarms"]["active"] == 1, st["devices"]["boiler"]
        assert wait_values(w, "oven", lambda v: abs(v.get("temp", {}).get("v", 0) - 20) < 1.0, timeout=10,
                           after=t1), "the loop does not hold its set point after the reload"

        # 2. a reload that changes the alarm's limit and the loop's section (set point and gain)
        cfg["devices"][1] = boiler(90)
        cfg["control"] = loop(30, kp=1.3)
        t2 = reload(lambda ch: "control" in ch["services"]["restarted"] or pytest.fail(str(ch)))
        clr = wait_event(w, lambda j: j.get("event") == "cleared", dev="boiler", after=t2)
        assert clr and clr["limit"] == 90 and clr["value"] == 86, clr
        assert wait_values(w, "tic", lambda v: v.get("sp", {}).get("v") == 30 and v.get("state", {}).get("v") == "ok",
                           timeout=10, after=t2), "the loop did not take its new set point"
        assert wait_values(w, "oven", lambda v: v.get("temp", {}).get("v", 0) > 27, timeout=20, after=t2), \
            "the process did not follow the new set point"
        st = json.loads(http_text(mport, "/status"))
        assert st["control"]["loops"]["tic"]["sp"] == 30, st["control"]
        t3 = time.monotonic()
        cmd("boiler", {"write": {"temp": 89}})
        time.sleep(0.8)
        assert not [j for j in events(w, "boiler", after=t3) if j.get("event") == "raised"], "raised under 90"
        cmd("boiler", {"write": {"temp": 95}})
        r2 = wait_event(w, lambda j: j.get("event") == "raised", dev="boiler", after=t3)
        assert r2 and r2["limit"] == 90 and r2["value"] == 95, r2
    finally:
        stop.set()
        t.join(30)
    r = H.Client(hport, H.OPERATOR, validate_api=False).get("/api/v1/alarms")
    assert r.status == 200 and "temp/hi" in str(r.body), r.body
    assert not errors, errors
    t4 = time.monotonic()
    gw.proc.send(signal.SIGTERM)
    assert gw.wait(20) == 0, gw.output()[-3000:]
    assert wait_status(w, "offline", timeout=5, after=t4)


def test_reload_keeps_the_edge_running(broker, start_modbus, start_gateway, watch, tmp_path):
    """A reload that leaves the edge configuration (scripts, expression tags,
    alarms) as it is keeps the edge thread running: a Lua script's global
    counter and timer go on (no restart from 1), the virtual device does not
    go offline, an active alarm is neither cleared nor raised again — here
    without a buffer, so a restarted alarm table would have nothing to come
    back from.  First a Modbus device is added in front of the others (every
    device and tag id moves: the edge's state follows), then only the MQTT
    sink's settings change.  A reload that changes the script restarts the
    edge: the counter starts over."""
    from test_alarms import events  # pylint: disable=import-outside-toplevel
    from conftest import merged_values, wait_values  # pylint: disable=import-outside-toplevel
    script = tmp_path / "count.lua"
    src = "t = 0\nfunction on_timer(now)\n  t = t + 1\n  fb.set('ticks', t)\nend\n"
    script.write_text(src)
    boiler = {"name": "boiler", "url": "sim://boiler", "poll": "100ms",
              "tags": [{"name": "temp", "addr": "memory:initial=50", "access": "rw",
                        "alarms": {"hi": {"limit": 80, "deadband": 2}}}]}
    calc = {"name": "calc", "tags": [{"name": "ticks", "script": "count", "type": "uint32"},
                                     {"name": "double", "expr": "'boiler/temp' * 2"}]}
    scripts = [{"name": "count", "file": str(script), "device": "calc", "timer": "200ms"}]
    cfg = gw_config(broker.port, [boiler, calc], scripts=scripts)
    w = watch(broker.port, (f"{SITE}/#",))
    gw = start_gateway(cfg)

    def timed_ticks():
        return [(m.t, m.json()["values"]["ticks"]["v"]) for m in w.messages(topic("calc", "telemetry"))
                if "ticks" in ((m.json() or {}).get("values") or {})]

    def ticks(after):
        return [v for t_, v in timed_ticks() if t_ >= after]

    def reload():
        write_cfg(gw, cfg)
        t0 = time.monotonic()
        gw.proc.send(signal.SIGHUP)
        last = last_result(w, t0, "reload")
        assert last and last["ok"], f"reload failed: {last}\n{gw.output()[-3000:]}"
        return t0, last["changes"]

    assert wait_values(w, "calc", lambda v: v.get("ticks", {}).get("v", 0) >= 5, timeout=20), gw.output()[-3000:]
    t = time.monotonic()
    w.publish(topic("boiler", "command"), json.dumps({"id": "w1", "write": {"temp": 85}}), qos=1)
    assert peers.wait_until(lambda: [j for j in events(w, "boiler", after=t) if j.get("event") == "raised"], 10)
    assert wait_values(w, "calc", lambda v: v.get("double", {}).get("v") == 170, timeout=10, after=t)

    def kept_across(t0, what):
        # 4 ticks of the 200 ms timer after the reload: 0.8 s when idle; a
        # loaded machine may take longer, a stopped script never gets there
        peers.wait_until(lambda: len(ticks(t0)) >= 4, 10)
        seen = timed_ticks()
        last_before = max([v for t_, v in seen if t_ < t0] or [0])
        after = [v for t_, v in seen if t_ >= t0]
        assert len(after) >= 4, f"{what}: the script stopped ticking: {after}\n{gw.output()[-3000:]}"
        assert min(after) > last_before and after == sorted(after), \
            f"{what}: the script's counter started over ({last_before} before, {after} after)"
        offline = [m.json() for m in w.messages(topic("calc", "status")) if m.t >= t0 and status_state(m) == "offline"]
        assert not offline, f"{what}: the virtual device went offline: {offline}"
        evs = [j.get("event") for j in events(w, "boiler", after=t0)]
        assert not evs, f"{what}: the active alarm was announced again: {evs}"

    # 1. a Modbus device added in front: every device and tag id moves
    mb = counting_server(start_modbus, "extra")
    cfg["devices"] = [mdev(mb, "extra"), boiler, calc]
    t1, ch = reload()
    assert ch["devices"]["added"] == ["extra"], ch
    kept_across(t1, "a device added")
    assert ch.get("edge") == "kept", ch
    assert w.wait_for(lambda m: True, 10, topic=topic("extra", "telemetry"), after=t1), "the added device never came"
    t = time.monotonic()
    w.publish(topic("boiler", "command"), json.dumps({"id": "w2", "write": {"temp": 86}}), qos=1)
    assert wait_values(w, "calc", lambda v: v.get("double", {}).get("v") == 172, timeout=10, after=t), \
        "the expression tag is not computed after the reload"
    assert [j.get("event") for j in events(w, "boiler", after=t1)] == [], "the alarm moved"

    # 2. only the MQTT sink's settings: it restarts, the edge goes on
    cfg["mqtt"]["keepalive"] = "6s"
    t2, ch = reload()
    assert ch["sinks"]["restarted"] == ["mqtt"], ch
    kept_across(t2, "a sink setting changed")
    assert ch.get("edge") == "kept", ch

    # 3. the script changes: the edge restarts, the counter starts over
    script.write_text(src + "-- changed\n")
    t3, ch = reload()
    assert ch.get("edge") == "restarted", ch
    assert peers.wait_until(lambda: any(v <= 2 for v in ticks(t3)), 10), \
        f"the changed script did not start over: {ticks(t3)}"
    assert merged_values(w, "calc").get("ticks", {}).get("q") == "good"
    assert gw.alive()


# ------------------------------------------------------------ influx, ingest
def test_reload_with_the_influx_sink_loses_nothing(start_gateway, tmp_path):
    """The InfluxDB sink (issue 16): a reload that changes the devices keeps it
    (its section is the same: model hooks), one that changes its section
    restarts it (closed, opened again; meanwhile its thread stores what
    arrives in its buffer).  A device left alone keeps its connection, so its
    sim counter goes on: its points in InfluxDB 1.6 stay contiguous (no loss,
    no duplicate) across both reloads."""
    import influxdb  # pylint: disable=import-outside-toplevel
    from test_influx import DB, assert_contiguous, counters, influx_cfg, points, wait_points  # noqa: E501 pylint: disable=import-outside-toplevel
    s = influxdb.InfluxDB(tmp_path)
    try:
        s.create_db(DB)
        port = peers.free_port()
        cfg = gw_config(None, counters(ndev=2), buffer={"path": str(tmp_path / "buf")},
                        influx=influx_cfg(s.url), metrics={"listen": f"127.0.0.1:{port}"})
        gw = start_gateway(cfg)
        assert wait_points(s, "dev0", 5)

        def reload(check):
            write_cfg(gw, cfg)
            n = len(re.findall("reload: applied", gw.output()))
            gw.proc.send(signal.SIGHUP)
            assert peers.wait_until(lambda: len(re.findall("reload: applied", gw.output())) > n, 15), \
                gw.output()[-3000:]
            last = http_json(port)["config"]["last"]
            assert last["ok"], last
            check(last["changes"])
        cfg["devices"][1]["tags"].append({"name": "c9", "addr": "counter", "type": "int32"})
        reload(lambda ch: (ch["devices"]["changed"] == ["dev1"] and ch["sinks"]["kept"] == ["influx"]
                           and ch["sinks"]["restarted"] == []) or pytest.fail(str(ch)))
        time.sleep(1.5)
        cfg["influx"]["batch"] = {"interval": "300ms"}
        reload(lambda ch: (ch["devices"]["kept"] == 2 and ch["sinks"]["restarted"] == ["influx"])
               or pytest.fail(str(ch)))
        time.sleep(1.5)
        n = len(points(s, "dev0"))
        assert wait_points(s, "dev1", 1, field="c9"), "the changed device's new tag never reached InfluxDB"
        gw.stop()
        vals = [v for _, v in points(s, "dev0")]
        assert len(vals) >= n and vals[-1] >= 40, vals[-5:]
        assert_contiguous(vals, "dev0 across two reloads")
    finally:
        s.stop()


def test_ingest_config_reload_is_refused(broker, start_gateway, watch, tmp_path):
    """`fieldbridge ingest` does not reload its configuration (its MQTT
    subscriptions acknowledge only what the sinks stored): SIGHUP is refused
    with that reason and it keeps running; a gateway (`fieldbridge run`)
    refuses a reload to an ingest configuration the same way, with the
    running configuration kept."""
    import influxdb  # pylint: disable=import-outside-toplevel
    from test_ingest import Ingest, ingest_cfg, wait_connected  # pylint: disable=import-outside-toplevel
    from test_influx import DB  # pylint: disable=import-outside-toplevel
    s = influxdb.InfluxDB(tmp_path)
    ing = None
    try:
        s.create_db(DB)
        icfg = ingest_cfg("cloud-1", broker.port, s.url, tmp_path, telemetry=True)
        ing = Ingest(tmp_path, icfg, "ing")
        wait_connected(ing)
        ing.proc.send(signal.SIGHUP)
        assert peers.wait_until(lambda: "reload refused: an ingest configuration is not reloaded" in ing.output(),
                                10), ing.output()[-3000:]
        assert ing.proc.poll() is None
        assert ing.stop() == 0, ing.output()[-3000:]

        w = watch(broker.port)
        gw = start_gateway(gw_config(broker.port, [device(peers.free_port(), [{"name": "x", "addr": "hr:0"}])]))
        assert wait_status(w, "online")
        write_cfg(gw, icfg)
        t0 = time.monotonic()
        gw.proc.send(signal.SIGHUP)
        last = last_result(w, t0, "reload")
        assert last and not last["ok"] and "run it with fieldbridge ingest" in json.dumps(last), last
        assert gw.alive()
    finally:
        if ing and ing.proc.poll() is None:
            ing.stop()
        s.stop()


def test_gateway_commands_pass_the_sender_lists(broker, start_modbus, start_gateway, watch, tmp_path):
    """commands.allow applies to the gateway's own commands like to device
    writes, and commands.gateway.<cmd> narrows one command (docs/security.md#gateway-commands):
    refused with the reason on the command's answer topic, nothing carried
    out; SIGHUP (the administrator) is not a sender and still reloads."""
    srv = counting_server(start_modbus, "a")
    state = tmp_path / "state"
    cfg = fleet_cfg(broker.port, [mdev(srv, "a")], state, commands={"allow": ["sparkplug"]})
    w = watch(broker.port)
    gw = start_gateway(cfg)
    assert w.wait_for(lambda m: True, 20, topic=topic("a", "telemetry"))
    for cid, body in (("r-1", {"cmd": "reload"}), ("m-1", {"cmd": "maintenance", "on": True}),
                      ("d-1", {"cmd": "decommission", "confirm": GW_ID}),
                      ("c-1", {"cmd": "config", "config": to_yaml(cfg) + "\n"})):
        r = command(w, body, cid)
        assert r["ok"] is False and r["error"] == "commands from mqtt are not allowed (commands.allow: [sparkplug])", r
    assert not (state / "maintenance").exists() and not (state / "decommissioned").exists()
    assert not (state / "config" / "pending.yaml").exists()
    # the extensions' topics too: an OTA notify is answered on its /response topic
    t = time.monotonic()
    w.publish(topic(GW_ID, "ota/notify"), {"id": "o-1", "job": "j", "version": "9"}, qos=1)
    r = w.wait_for(lambda m: (m.json() or {}).get("id") == "o-1", 10, topic=topic(GW_ID, "ota/notify/response"),
                   after=t)
    assert r and "commands.allow" in r.json()["error"], w.messages(topic(GW_ID, "ota/complete"))
    assert "gateway command reload refused from mqtt:" in gw.output()
    # the administrator's SIGHUP is no sender: it reloads
    t = time.monotonic()
    gw.proc.send(signal.SIGHUP)
    last = last_result(w, t, action="reload")
    assert last and last["ok"] is True, last
    t = time.monotonic()
    gw.stop()
    # its last word, the offline status, has arrived: an "online" from now on is the next gateway's
    assert status(w, lambda j: j.get("online") is False, t)

    # commands.gateway: per command, after commands.allow
    cfg2 = dict(cfg, commands={"allow": ["mqtt"], "gateway": {"decommission": [], "reload": ["mqtt"],
                                                              "maintenance": ["http:operator"]}})
    t = time.monotonic()
    start_gateway(cfg2, name="lists")
    assert status(w, lambda j: j.get("online"), t)
    r = command(w, {"cmd": "decommission", "confirm": GW_ID}, "d-2")
    assert r["ok"] is False and r["error"] == \
        "decommission from mqtt is not allowed (commands.gateway.decommission: [])", r
    assert not (state / "decommissioned").exists()
    r = command(w, {"cmd": "maintenance", "on": True}, "m-2")
    assert r["ok"] is False and "(commands.gateway.maintenance: [http:operator])" in r["error"], r
    assert not (state / "maintenance").exists()
    r = command(w, {"cmd": "reload"}, "r-2")
    assert r["ok"] is True, r
    r = command(w, {"cmd": "status"}, "s-2")  # no list of its own: commands.allow alone
    assert r["ok"] is True and r["status"]["gateway"] == GW_ID, r


def test_remote_config_health_check_watches_the_whole_window(broker, start_modbus, start_gateway, watch, tmp_path):
    """A device healthy before the new version that drops out for a few
    seconds during the check and is back before its end fails it (sampled
    every second: docs/fleet.md#remote-configuration): rolled back, with the
    reason; it used to be looked at once, at the end, and kept."""
    srv = {n: counting_server(start_modbus, n) for n in ("a", "b")}
    state = tmp_path / "state"
    cfg = fleet_cfg(broker.port, [mdev(srv["a"], "a"), mdev(srv["b"], "b")], state, check="15s")
    w = watch(broker.port)
    start_gateway(cfg)
    for d in ("a", "b"):
        assert w.wait_for(lambda m: True, 20, topic=topic(d, "telemetry"))
    time.sleep(0.5)
    new = dict(cfg, version="v2", status_interval="2s")  # both devices kept as they are
    t0 = time.monotonic()
    r = command(w, {"cmd": "config", "version": "v2", "config": to_yaml(new) + "\n"}, "c-1")
    assert r["ok"] and r["changes"]["devices"]["kept"] == 2, r
    time.sleep(2.0)
    srv["a"].stop()  # the peer goes away for part of the window …
    assert w.wait_for(lambda m: status_state(m) == "offline", 10, topic=topic("a", "status"),
                      after=t0), "device a never went offline"
    time.sleep(2.5)
    srv["a"].start()  # … and is back well before its end
    back = w.wait_for(lambda m: True, 10, topic=topic("a", "telemetry"), after=time.monotonic())
    assert back and back.t < t0 + 15 - 2, "device a was not back before the window's end: the test proves nothing"
    st = status(w, lambda j: (j.get("config") or {}).get("last", {}).get("version") == "v2" and
                "health_check" not in j["config"]["last"], t0, timeout=30)
    assert st, w.messages(topic(GW_ID, "status"))[-1:]
    last = st["config"]["last"]
    assert last["ok"] is False and last.get("rolled_back") is True, last
    assert last["error"].startswith("health check failed: device a was offline during the check"), last
    assert st["config"]["version"] is None and st["config"]["source"] == "file", st["config"]
    assert not (state / "config" / "current.yaml").exists()


@pytest.mark.smoke
def test_reload_while_a_script_writes(broker, start_gateway, watch, tmp_path):
    """A Lua script writes on every 20 ms tick while the gateway reloads, with
    the edge restarted (the script changed) and kept (only a device added):
    the writes still queued at the reload belong to the script as it was and
    are answered to it; they are dropped with a log line before the old
    configuration is freed, never answered into freed memory (the ASan build,
    which runs this test, reported a heap-use-after-free before)."""
    script = tmp_path / "w.lua"
    body = "n = 0\nfunction on_timer(now)\n  n = n + 1\n  fb.write('plant/sp', n % 100)\n  fb.set('ticks', n)\nend\n"
    script.write_text(body)
    plant = {"name": "plant", "url": "sim://plant", "poll": "50ms",
             "tags": [{"name": "sp", "addr": "memory:initial=0", "access": "rw"}]}
    calc = {"name": "calc", "tags": [{"name": "ticks", "script": "w", "type": "uint32"}]}
    cfg = gw_config(broker.port, [plant, calc],
                    scripts=[{"name": "w", "file": str(script), "device": "calc", "timer": "20ms"}])
    w = watch(broker.port)
    gw = start_gateway(cfg)
    assert w.wait_for(lambda m: "sp" in ((m.json() or {}).get("values") or {}), 20, topic=topic("plant", "telemetry"))
    for i in range(6):
        if i % 2:
            script.write_text(body + f"-- version {i}\n")  # the edge restarts
        else:
            cfg["devices"] = cfg["devices"] + [{"name": f"spare{i}", "url": f"sim://spare{i}", "poll": "1s",
                                                "tags": [{"name": "c", "addr": "counter"}]}]  # the edge is kept
        write_cfg(gw, cfg)
        t0 = time.monotonic()
        gw.proc.send(signal.SIGHUP)
        last = last_result(w, t0, "reload")
        assert last and last["ok"], f"reload {i} failed: {last}\n{gw.output()[-3000:]}"
        time.sleep(0.3)
    # the script still writes after the reloads, and the gateway is healthy
    t1 = time.monotonic()
    assert w.wait_for(lambda m: True, 10, topic=topic("plant", "telemetry"), after=t1)
    assert gw.proc.poll() is None, gw.output()[-3000:]
