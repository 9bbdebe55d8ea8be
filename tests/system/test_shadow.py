"""test_shadow.py — the device shadow (issue 20; docs/fleet.md#device-shadow)
through the real binary against Mosquitto, the pymodbus test peer, the
ADS test server and snap7's S7 server: reported values and gateway settings,
a desired value validated and written through the command router to a
Modbus register, to an ADS variable and to S7 DB variables, the optimistic lock (version conflict), invalid desired
values rejected with a reason per tag, and a restart that keeps the version
and the desired state without writing again what was already applied.
"""
import os
import re
import time

from conftest import GW_ID, gw_config, reload_gateway, topic
from test_run import device

SH = topic(GW_ID, "shadow")


def shadow_cfg(state_dir, tags, **extra):
    s = {"tags": tags, "report_interval": "300ms", "retry_interval": "1s"}
    s.update(extra)
    return {"fleet": {"state_dir": str(state_dir)}, "shadow": s}


def get(w, token, timeout=10):
    t = time.monotonic()
    w.publish(f"{SH}/get", {"clientToken": token}, qos=1)
    m = w.wait_for(lambda m: (m.json() or {}).get("clientToken") == token, timeout, topic=f"{SH}/get/accepted",
                   after=t)
    assert m is not None, w.messages()[-20:]
    return m.json()


def started(w, timeout=20):
    """The shadow's first document (its reported gateway settings) has come:
    the gateway is connected and subscribed."""
    m = w.wait_for(lambda m: True, timeout, topic=f"{SH}/update/documents")
    assert m is not None, w.messages()[-20:]
    time.sleep(0.3)
    return m.json()


def update(w, body, timeout=10):
    """Publish an update; the accepted or rejected answer with its clientToken."""
    t = time.monotonic()
    w.publish(f"{SH}/update", body, qos=1)
    tok = body.get("clientToken")

    def match(m):
        return m.topic in (f"{SH}/update/accepted", f"{SH}/update/rejected") and m.t >= t and \
            (m.json() or {}).get("clientToken") == tok
    m = w.wait_for(match, timeout)
    assert m is not None, w.messages()[-20:]
    return m.topic.rsplit("/", 1)[1], m.json()


def reported(w, dev, tag, pred, timeout=15):
    """Wait until a get shows reported devices.dev.tag satisfying pred; the document."""
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline:
        n += 1
        d = get(w, f"poll-{n}")
        v = d["state"]["reported"].get("devices", {}).get(dev, {}).get(tag)
        if v is not None and pred(v):
            return d
        time.sleep(0.3)
    raise AssertionError(f"reported {dev}.{tag} never matched; last {d}")


def wait_hr(mb, addr, value, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if mb.read_hr(addr)[0] == value:
            return True
        time.sleep(0.1)
    return mb.read_hr(addr)[0] == value


def modbus_gateway(broker, mb, state_dir):
    tags = [{"name": "temp", "addr": "hr:0"},
            {"name": "sp", "addr": "hr:1", "access": "rw", "range": [0, 100]},
            {"name": "mode", "addr": "hr:2", "access": "rw"}]
    return gw_config(broker.port, [device(mb.port, tags, poll="100ms")],
                     **shadow_cfg(state_dir, {"plc1": ["temp", "sp", "mode"]}))


def test_shadow_modbus_desired_version_conflict_restart(broker, start_modbus, start_gateway, watch, tmp_path):
    mb = start_modbus({"units": {"1": {"hr": [21, 5, 1]}}})
    w = watch(broker.port, topics=(f"{SH}/#",))
    state = tmp_path / "state"
    cfg = modbus_gateway(broker, mb, state)
    gw = start_gateway(cfg)
    first = started(w)
    assert first["current"]["state"]["reported"]["gateway"]["id"] == GW_ID, first

    # reported: the chosen tags' values and the gateway's settings
    d = reported(w, "plc1", "sp", lambda v: v == 5)
    rep = d["state"]["reported"]
    assert rep["devices"]["plc1"] == {"temp": 21, "sp": 5, "mode": 1}, rep
    assert rep["gateway"]["id"] == GW_ID and rep["gateway"]["state"] == "online", rep
    assert "delta" not in d["state"], d
    assert isinstance(d["metadata"]["reported"]["devices"]["plc1"]["sp"]["timestamp"], int), d
    v0 = d["version"]

    # a desired value with the current version: accepted, written to the register
    kind, a = update(w, {"state": {"desired": {"devices": {"plc1": {"sp": 42}}}}, "version": v0,
                         "clientToken": "t-1"})
    assert kind == "accepted", a
    assert a["version"] == v0 + 1 and a["state"]["desired"] == {"devices": {"plc1": {"sp": 42}}}, a
    assert isinstance(a["metadata"]["desired"]["devices"]["plc1"]["sp"]["timestamp"], int), a
    delta = w.wait_for(lambda m: (m.json() or {}).get("clientToken") == "t-1", 5, topic=f"{SH}/update/delta")
    assert delta is not None and delta.json()["state"] == {"devices": {"plc1": {"sp": 42}}}, w.messages()[-10:]
    assert wait_hr(mb, 1, 42), mb.read_hr(1)
    # the gateway reads it back: reported catches up, the delta goes
    d = reported(w, "plc1", "sp", lambda v: v == 42)
    assert "delta" not in d["state"], d
    assert d["state"]["desired"] == {"devices": {"plc1": {"sp": 42}}}, d
    applied = d["metadata"]["desired"]["devices"]["plc1"]["sp"]
    assert "applied" in applied and "pending" not in applied, applied

    # the optimistic lock: an update naming an old version is refused, nothing written
    kind, r = update(w, {"state": {"desired": {"devices": {"plc1": {"sp": 43}}}}, "version": v0,
                         "clientToken": "t-stale"})
    assert kind == "rejected" and r["code"] == 409 and "version" in r["message"], r
    time.sleep(0.5)
    assert mb.read_hr(1)[0] == 42
    d = get(w, "after-conflict")
    assert d["state"]["desired"]["devices"]["plc1"]["sp"] == 42, d

    # invalid desired values: each refused with its reason, nothing changes
    kind, r = update(w, {"state": {"desired": {"devices": {"plc1": {"sp": 1000, "temp": 3, "nope": 1,
                                                                      "mode": "fast"},
                                                             "ghost": {"x": 1}}}},
                         "clientToken": "t-bad"})
    assert kind == "rejected" and r["code"] == 400, r
    errs = r["errors"]["devices"]
    assert "maximum" in errs["plc1"]["sp"], errs
    assert "read-only" in errs["plc1"]["temp"], errs
    assert "no such tag" in errs["plc1"]["nope"], errs
    assert errs["plc1"]["mode"], errs
    assert "no such device" in errs["ghost"]["*"], errs
    assert get(w, "after-bad")["version"] == d["version"]
    assert mb.read_hr(1)[0] == 42 and mb.read_hr(2)[0] == 1
    kind, r = update(w, {"state": {"desired": {"gateway": {"id": "x"}}}, "clientToken": "t-gw"})
    assert kind == "rejected" and "reported" in r["errors"]["gateway"], r
    kind, r = update(w, {"state": {"reported": {"devices": {"plc1": {"sp": 1}}}}, "clientToken": "t-rep"})
    assert kind == "rejected" and r["code"] == 400 and "reported" in r["message"], r

    # a restart: the kept document comes back; what was applied is not written again
    v_before = get(w, "before-stop")["version"]
    assert gw.stop() == 0
    mb.write_hr(1, [7])  # an operator changes the setpoint at the machine meanwhile
    t_restart = time.monotonic()
    gw2 = start_gateway(cfg, name="gw-again")
    assert w.wait_for(lambda m: True, 20, topic=f"{SH}/update/documents", after=t_restart)
    time.sleep(0.3)
    d = reported(w, "plc1", "sp", lambda v: v == 7)
    assert d["version"] > v_before, (d["version"], v_before)
    assert d["state"]["desired"] == {"devices": {"plc1": {"sp": 42}}}, d
    assert d["state"]["delta"] == {"devices": {"plc1": {"sp": 42}}}, d
    time.sleep(1.5)  # longer than retry_interval: a replay would have come by now
    assert mb.read_hr(1)[0] == 7, "the applied desired value was written again after the restart"
    assert "from shadow:" not in gw2.output(), gw2.output()[-3000:]
    # deleting the desired value (null) clears the delta
    kind, a = update(w, {"state": {"desired": {"devices": {"plc1": {"sp": None}}}}, "clientToken": "t-del"})
    assert kind == "accepted", a
    d = get(w, "after-del")
    assert "delta" not in d["state"] and d["state"]["desired"] == {}, d
    assert mb.read_hr(1)[0] == 7


def test_shadow_pending_write_retried_when_device_returns(broker, start_modbus, start_gateway, watch, tmp_path):
    """A desired value for a device that is offline stays pending (the delta
    says why) and is written once the device is back."""
    mb = start_modbus({"units": {"1": {"hr": [21, 5, 1]}}})
    w = watch(broker.port, topics=(f"{SH}/#",))
    start_gateway(modbus_gateway(broker, mb, tmp_path / "state"))
    started(w)
    reported(w, "plc1", "sp", lambda v: v == 5)
    mb.stop()
    time.sleep(1.5)
    kind, a = update(w, {"state": {"desired": {"devices": {"plc1": {"sp": 60}}}}, "clientToken": "t-off"})
    assert kind == "accepted", a
    m = w.wait_for(lambda m: "error" in str((m.json() or {}).get("metadata")), 10, topic=f"{SH}/update/delta")
    assert m is not None, w.messages()[-10:]
    meta = m.json()["metadata"]["devices"]["plc1"]["sp"]
    assert meta["pending"] is True and meta["error"], meta
    mb.start()
    assert wait_hr(mb, 1, 60, timeout=20), mb.read_hr(1)
    d = reported(w, "plc1", "sp", lambda v: v == 60)
    assert "pending" not in d["metadata"]["desired"]["devices"]["plc1"]["sp"], d


def test_shadow_kept_across_reloads_that_change_devices(broker, start_modbus, start_gateway, watch, tmp_path):
    """A reload that adds an unrelated Modbus device in front (every device
    and tag id moves), then one that adds a tag to the shadow's device
    (`plc1: "*"` takes it in), keeps the shadow running (docs/fleet.md): it
    is not opened again, its version goes on, the reported values follow the
    right tags under the new ids (the new device's value never lands on a
    shadow tag), and desired values are written to the right registers — the
    new tag's too."""
    mb = start_modbus({"units": {"1": {"hr": [21, 5, 1, 0]}}})
    aux = start_modbus({"units": {"1": {"hr": [9, 9, 9, 9]}}}, name="aux")
    w = watch(broker.port, topics=(f"{SH}/#",))
    tags = [{"name": "temp", "addr": "hr:0"},
            {"name": "sp", "addr": "hr:1", "access": "rw", "range": [0, 100]}]
    cfg = gw_config(broker.port, [device(mb.port, tags, poll="100ms")],
                    **shadow_cfg(tmp_path / "state", {"plc1": "*"}))
    gw = start_gateway(cfg)
    started(w)
    v0 = reported(w, "plc1", "sp", lambda v: v == 5)["version"]

    cfg["devices"].insert(0, device(aux.port, [{"name": "temp", "addr": "hr:0"}], name="aux", poll="100ms"))
    ch = reload_gateway(gw, cfg)
    assert ch["devices"]["added"] == ["aux"] and ch["devices"]["kept"] == 1, ch
    assert "shadow" in ch["sinks"]["kept"] and ch["sinks"]["restarted"] == [], ch
    mb.write_hr(0, [33])
    d = reported(w, "plc1", "temp", lambda v: v == 33)
    assert d["version"] > v0, (d["version"], v0)
    assert set(d["state"]["reported"]["devices"]) == {"plc1"}, d  # aux is in no shadow reference
    assert d["state"]["reported"]["devices"]["plc1"] == {"temp": 33, "sp": 5}, d
    kind, a = update(w, {"state": {"desired": {"devices": {"plc1": {"sp": 42}}}}, "version": d["version"],
                         "clientToken": "after-1"})
    assert kind == "accepted" and a["version"] == d["version"] + 1, a
    assert wait_hr(mb, 1, 42), mb.read_hr(1)
    assert aux.read_hr(1)[0] == 9

    cfg["devices"][1]["tags"].append({"name": "extra", "addr": "hr:3", "access": "rw"})
    ch = reload_gateway(gw, cfg)
    assert ch["devices"]["changed"] == ["plc1"] and "shadow" in ch["sinks"]["kept"], ch
    # the new tag's first value is reported (a version of its own), then a desired value for it
    v1 = reported(w, "plc1", "extra", lambda v: v == 0)["version"]
    assert v1 > a["version"], (v1, a)
    kind, a = update(w, {"state": {"desired": {"devices": {"plc1": {"extra": 7}}}}, "version": v1,
                         "clientToken": "after-2"})
    assert kind == "accepted" and a["version"] == v1 + 1, a
    assert wait_hr(mb, 3, 7), mb.read_hr(3)
    d = reported(w, "plc1", "extra", lambda v: v == 7)
    assert d["state"]["reported"]["devices"]["plc1"] == {"temp": 33, "sp": 42, "extra": 7}, d
    assert "delta" not in d["state"], d
    out = gw.output()
    assert len(re.findall(r"shadow: \d+ tags, version", out)) == 1, "the shadow was opened again"
    assert out.count("shadow: kept across the reload") == 2, out[-3000:]


def test_shadow_ads_variable(broker, start_gateway, watch, tmp_path):
    """The seed's scenario: a PLC variable (ADS) set from the cloud twin."""
    from test_ads import AdsServer  # pylint: disable=import-outside-toplevel
    srv = AdsServer(tmp_path)
    try:
        w = watch(broker.port, topics=(f"{SH}/#",))
        tags = [{"name": "temperature", "addr": "MAIN.fTemperature"},
                {"name": "setpoint", "addr": "MAIN.fSetpoint", "access": "rw", "range": [20, 250]}]
        dev = {"name": "oven", "url": srv.url(), "poll": "100ms", "tags": tags}
        cfg = gw_config(broker.port, [dev], **shadow_cfg(tmp_path / "state", {"oven": "*"}))
        start_gateway(cfg)
        started(w)
        d = reported(w, "oven", "temperature", lambda v: abs(v - 21.5) < 1e-6)
        kind, r = update(w, {"state": {"desired": {"devices": {"oven": {"setpoint": 300}}}}, "clientToken": "a-0"})
        assert kind == "rejected" and "maximum" in r["errors"]["devices"]["oven"]["setpoint"], r
        kind, a = update(w, {"state": {"desired": {"devices": {"oven": {"setpoint": 180.5}}}},
                             "version": d["version"], "clientToken": "a-1"})
        assert kind == "accepted", a
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and srv.get("MAIN.fSetpoint") != 180.5:
            time.sleep(0.1)
        assert srv.get("MAIN.fSetpoint") == 180.5
        d = reported(w, "oven", "setpoint", lambda v: v == 180.5)
        assert "delta" not in d["state"], d
    finally:
        srv.stop()


def test_shadow_config_errors(tmp_path):
    from conftest import run_cli, to_yaml  # pylint: disable=import-outside-toplevel
    cfg = gw_config(1883, [device(5020, [{"name": "sp", "addr": "hr:1", "access": "rw"}])],
                    shadow={"tags": {"plc1": ["sp", "nope"], "ghost": "*"}})
    p = os.path.join(str(tmp_path), "bad.yaml")
    with open(p, "w", encoding="utf-8") as f:
        f.write(to_yaml(cfg) + "\n")
    r = run_cli("check", "-c", p)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "shadow: needs fleet.state_dir or shadow.file" in r.stderr, r.stderr
    assert "device plc1 has no tag nope" in r.stderr, r.stderr
    assert "no device named ghost" in r.stderr, r.stderr
    assert p + ":" in r.stderr, r.stderr


def test_shadow_s7_variable(broker, start_gateway, watch, tmp_path):
    """The twin of an S7 PLC (snap7's S7Server, tests/peers/s7): desired values
    for writable DB variables are validated (range) and become writes that
    reach the PLC's memory; the reported values follow and the delta empties."""
    import struct  # pylint: disable=import-outside-toplevel
    from conftest import require  # pylint: disable=import-outside-toplevel
    from test_s7 import NODE_OK, S7Server  # pylint: disable=import-outside-toplevel
    require("s7", NODE_OK, "node-snap7 is not installed in tests/peers/s7: run scripts/peers.sh")
    srv = S7Server(tmp_path)
    try:
        srv.set(0, struct.pack(">f", 176.5) + b"\x00\x00" + b"\x00" + b"\x00" + struct.pack(">f", 175.0))
        w = watch(broker.port, topics=(f"{SH}/#",))
        tags = [{"name": "temperature", "addr": "DB1.DBD0:real"},
                {"name": "heating", "addr": "DB1.DBX6.0", "access": "rw"},
                {"name": "setpoint", "addr": "DB1.DBD8:real", "access": "rw", "range": [20, 250]}]
        dev = {"name": "oven", "url": srv.url(), "poll": "100ms", "timeout": "500ms", "tags": tags}
        cfg = gw_config(broker.port, [dev], **shadow_cfg(tmp_path / "state", {"oven": "*"}))
        start_gateway(cfg)
        started(w)
        d = reported(w, "oven", "setpoint", lambda v: v == 175.0)
        assert d["state"]["reported"]["devices"]["oven"]["temperature"] == 176.5, d
        kind, r = update(w, {"state": {"desired": {"devices": {"oven": {"setpoint": 300, "temperature": 1}}}},
                             "clientToken": "s7-0"})
        assert kind == "rejected" and r["code"] == 400, r
        errs = r["errors"]["devices"]["oven"]
        assert "maximum" in errs["setpoint"] and "read-only" in errs["temperature"], r
        assert srv.get(8, 4) == struct.pack(">f", 175.0)  # nothing written
        kind, a = update(w, {"state": {"desired": {"devices": {"oven": {"setpoint": 180.5, "heating": True}}}},
                             "version": d["version"], "clientToken": "s7-1"})
        assert kind == "accepted", a
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (srv.get(8, 4) != struct.pack(">f", 180.5) or srv.get(6, 1) != b"\x01"):
            time.sleep(0.1)
        assert srv.get(8, 4) == struct.pack(">f", 180.5) and srv.get(6, 1) == b"\x01"
        d = reported(w, "oven", "setpoint", lambda v: v == 180.5)
        d = reported(w, "oven", "heating", lambda v: v is True)
        assert "delta" not in d["state"], d
        assert d["metadata"]["desired"]["devices"]["oven"]["setpoint"].get("applied"), d["metadata"]
    finally:
        srv.stop()
