"""test_run.py — `fieldbridge run -c FILE` against pymodbus and Mosquitto.

Telemetry (DESIGN.md §7): one message per device per poll cycle on
{site}/{area}/{line}/{device}/telemetry, payload
{"ts","seq","device","values":{"tag":{"v":..,"q":"good"}}}.  Commands on
.../command, responses on .../command/response (or the MQTT 5 response topic
with the correlation data echoed).  The gateway's own status on
{site}/_/_/{gateway id}/status: retained online on connect, offline as will
and on a clean stop.
"""
import json
import os
import re
import signal
import time

import pytest

import fbvalues as fv
import peers
from conftest import (GW_ID, GW_STATUS, gw_config, merged_values, status_state, topic,
                      wait_values)

DEV = "plc1"
TELE = topic(DEV, "telemetry")
CMD = topic(DEV, "command")
RESP = topic(DEV, "command/response")


def device(port, tags, name=DEV, unit=1, poll="200ms", **extra):
    d = {"name": name, "url": f"modbus-tcp://127.0.0.1:{port}?unit={unit}", "poll": poll,
         "timeout": "500ms"}
    d.update(extra)
    d["tags"] = tags
    return d


def good(v, tag):
    return tag in v and v[tag].get("q") == "good"


def ready(w, dev=DEV, timeout=20):
    """Wait for the first telemetry of dev, then a moment for the command subscription."""
    m = w.wait_for(lambda m: True, timeout, topic=topic(dev, "telemetry"))
    assert m is not None, f"no telemetry on {topic(dev, 'telemetry')} within {timeout}s; got {w.messages()[:5]}"
    time.sleep(0.5)
    return m


# --------------------------------------------------------------- telemetry
CASES, CASE_REGS = fv.layout(100)
BITREG = 0x8021


@pytest.mark.smoke
def test_telemetry_every_type_and_order(broker, start_modbus, start_gateway, watch):
    regs = dict(CASE_REGS)
    regs[40] = BITREG
    spec = {"units": {"1": {"hr": fv.regs_list(regs, 300), "ir": [1111, 0xFFFF] + fv.encode("float32", 3.5),
                            "co": [1, 0, 1], "di": [0, 1]}}}
    mb = start_modbus(spec)
    tags = []
    for c in CASES:
        t = {"name": c["name"], "addr": f"hr:{c['addr']}:{c['type']}"}
        if c["order"]:
            t["order"] = c["order"]
        tags.append(t)
    extra = [("bit0", "hr:40.0", True), ("bit1", "hr:40.1", False), ("bit15", "hr:40.15", True),
             ("ir0", "ir:0", 1111), ("ir1u", "ir:1:uint16", 65535), ("ir2f", "ir:2:float32", 3.5),
             ("co0", "co:0", True), ("co1", "co:1", False), ("di1", "di:1", True),
             ("m40101", "40101", fv.SAMPLES["int16"])]
    tags += [{"name": n, "addr": a} for n, a, _ in extra]
    w = watch(broker.port)
    start_gateway(gw_config(broker.port, [device(mb.port, tags)]))
    names = [c["name"] for c in CASES] + [n for n, _, _ in extra]
    m = wait_values(w, DEV, lambda v: all(good(v, n) for n in names), timeout=20)
    if m is None:
        last = merged_values(w, DEV)
        missing = {n: last.get(n) for n in names if not good(last, n)}
        pytest.fail(f"tags never good in one message: {missing}\nmessages: {w.messages(TELE)[-2:]}")
    j = m.json()
    assert j["device"] == DEV
    assert isinstance(j["seq"], int)
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", j["ts"]), j["ts"]
    v = j["values"]
    bad = []
    for c in CASES:
        if not fv.close(v[c["name"]]["v"], c["value"], c["type"]):
            bad.append(f"{c['name']}: got {v[c['name']]['v']!r} want {c['value']!r}")
    for n, _, want in extra:
        got = v[n]["v"]
        if (bool(got) if isinstance(want, bool) else got) != want:
            bad.append(f"{n}: got {got!r} want {want!r}")
    assert not bad, "\n".join(bad)
    # integers beyond 2^53 are exact integer text in the payload
    assert str(fv.SAMPLES["uint64"]) in m.text()
    # seq increases from message to message
    seqs = [x.json()["seq"] for x in w.messages(TELE)]
    assert all(b > a for a, b in zip(seqs, seqs[1:])), seqs


def test_poll_groups_run_at_their_own_rates(broker, start_modbus, start_gateway, watch):
    mb = start_modbus({"units": {"1": {"hr": [1, 2, 3]}}})
    tags = [{"name": "fast", "addr": "hr:0", "poll": "100ms"},
            {"name": "medium", "addr": "hr:1", "poll": "500ms"},
            {"name": "slow", "addr": "hr:2", "poll": "1s"}]
    w = watch(broker.port)
    start_gateway(gw_config(broker.port, [device(mb.port, tags, poll="1s")]))
    ready(w)
    t0 = time.monotonic()
    time.sleep(4.0)
    counts = {"fast": 0, "medium": 0, "slow": 0}
    for m in w.messages(TELE):
        if t0 <= m.t < t0 + 4.0:
            for k in counts:
                if k in (m.json() or {}).get("values", {}):
                    counts[k] += 1
    assert 28 <= counts["fast"] <= 48, counts
    assert 6 <= counts["medium"] <= 10, counts
    assert 3 <= counts["slow"] <= 5, counts


def test_coalesced_read_split_after_exception_02(broker, start_modbus, start_gateway, watch):
    """Holes in a sparse block: the merged read 0..9 fails with 02, the gateway
    splits it; the tags around the hole read good, the tag in the hole is bad."""
    hr = {str(a): 100 + a for a in (0, 1, 2, 3, 5, 6, 7, 8, 9)}   # hole at 4
    mb = start_modbus({"units": {"1": {"hr": hr}}})
    tags = [{"name": "a", "addr": "hr:0"}, {"name": "b", "addr": "hr:3"},
            {"name": "hole", "addr": "hr:4"}, {"name": "c", "addr": "hr:5"},
            {"name": "d", "addr": "hr:8:int32"}]
    w = watch(broker.port)
    start_gateway(gw_config(broker.port, [device(mb.port, tags, options={"max_gap": 10})]))

    def split_ok(v):
        return all(good(v, t) for t in "abcd") and "hole" in v and v["hole"].get("q") == "bad"
    m = wait_values(w, DEV, split_ok, timeout=20)
    assert m is not None, f"never split: last values {merged_values(w, DEV)}"
    v = m.json()["values"]
    assert [v["a"]["v"], v["b"]["v"], v["c"]["v"]] == [100, 103, 105]
    assert v["d"]["v"] == (108 << 16) | 109
    assert v["hole"]["v"] is None, v["hole"]
    # and it stays split: the next messages are just as good
    t = time.monotonic()
    m2 = wait_values(w, DEV, split_ok, timeout=5, after=t + 0.01)
    assert m2 is not None


# ---------------------------------------------------------------- commands
def cmd_setup(broker, start_modbus, start_gateway, watch, version=5, **top):
    mb = start_modbus({"units": {"1": {"hr": [0] * 30}}})
    mb.write_hr(20, [11])
    tags = [{"name": "setpoint", "addr": "hr:20:int16", "access": "rw", "range": [0, 100]},
            {"name": "ro", "addr": "hr:21", "access": "r"},
            {"name": "f", "addr": "hr:22:float32", "access": "rw"}]
    w = watch(broker.port)
    gw = start_gateway(gw_config(broker.port, [device(mb.port, tags)],
                                 mqtt={"version": version}, **top))
    ready(w)
    return mb, w, gw


def response(w, cid, timeout=10, topic_=RESP):
    m = w.wait_for(lambda m: (m.json() or {}).get("id") == cid, timeout, topic=topic_)
    assert m is not None, f"no response {cid!r} on {topic_}; got {[x for x in w.messages() if 'command' in x.topic]}"
    return m.json()


@pytest.mark.smoke
def test_command_writes_register_and_responds(broker, start_modbus, start_gateway, watch):
    mb, w, gw = cmd_setup(broker, start_modbus, start_gateway, watch)
    w.publish(CMD, {"id": "c-1", "write": {"setpoint": 42, "f": -2.5}}, qos=1)
    r = response(w, "c-1")
    assert r["ok"] is True, r
    assert r["results"]["setpoint"]["ok"] is True and r["results"]["f"]["ok"] is True, r
    assert mb.read_hr(20) == [42]
    assert mb.read_hr(22, 2) == fv.encode("float32", -2.5)
    m = wait_values(w, DEV, lambda v: good(v, "setpoint") and v["setpoint"]["v"] == 42, timeout=5)
    assert m is not None, "telemetry does not show the written value"
    out = gw.output()
    assert "setpoint" in out and ("c-1" in out or CMD in out or "mqtt" in out.lower()), \
        "every write is logged with its source"


def test_command_mqtt5_response_topic_and_correlation(broker, start_modbus, start_gateway, watch):
    mb, w, _ = cmd_setup(broker, start_modbus, start_gateway, watch)
    corr = b"\x00\x01corr-77\xff"
    w.publish(CMD, {"id": "c-5", "write": {"setpoint": 55}}, qos=1,
              response_topic="test/replies/xyz", correlation=corr)
    m = w.wait_for(lambda m: True, 10, topic="test/replies/xyz")
    assert m is not None, f"nothing on the MQTT 5 response topic; got {[x for x in w.messages() if 'command' in x.topic or 'repl' in x.topic]}"
    assert m.json()["id"] == "c-5" and m.json()["ok"] is True, m
    assert m.props is not None and getattr(m.props, "CorrelationData", None) == corr, m.props
    assert mb.read_hr(20) == [55]


def test_command_mqtt311(broker, start_modbus, start_gateway, watch):
    mb, w, _ = cmd_setup(broker, start_modbus, start_gateway, watch, version="3.1.1")
    w.publish(CMD, {"id": "c-311", "write": {"setpoint": 31}}, qos=1)
    assert response(w, "c-311")["ok"] is True
    assert mb.read_hr(20) == [31]


@pytest.mark.smoke
def test_command_qos0_refused(broker, start_modbus, start_gateway, watch):
    mb, w, gw = cmd_setup(broker, start_modbus, start_gateway, watch)
    w.publish(CMD, {"id": "c-q0", "write": {"setpoint": 7}}, qos=0)
    r = response(w, "c-q0")
    assert r["ok"] is False, r
    assert "qos" in json.dumps(r).lower(), f"the reason should mention QoS: {r}"
    time.sleep(0.5)
    assert mb.read_hr(20) == [11], "a refused command must not write"
    assert gw.alive()


@pytest.mark.parametrize("payload,cid,tag", [
    ("this is not json", None, None),
    ('{"id": "c-nw"}', "c-nw", None),
    ('{"id": "c-u", "write": {"nosuch": 1}}', "c-u", "nosuch"),
    ('{"id": "c-t", "write": {"setpoint": "abc"}}', "c-t", "setpoint"),
    ('{"id": "c-r", "write": {"setpoint": 500}}', "c-r", "setpoint"),
    ('{"id": "c-n", "write": {"setpoint": -1}}', "c-n", "setpoint"),
    ('{"id": "c-ro", "write": {"ro": 1}}', "c-ro", "ro"),
    ('{"id": "c-old", "ts": "2020-01-01T00:00:00Z", "write": {"setpoint": 5}}', "c-old", None),
], ids=["not-json", "no-write", "unknown-tag", "wrong-type", "above-range", "below-range",
        "not-writable", "too-old"])
def test_malformed_command_rejected(broker, start_modbus, start_gateway, watch, payload, cid, tag):
    mb, w, gw = cmd_setup(broker, start_modbus, start_gateway, watch,
                          commands={"max_age": "30s"})
    t = time.monotonic()
    w.publish(CMD, payload, qos=1)
    if cid is None:
        m = w.wait_for(lambda m: True, 10, topic=RESP, after=t)
        assert m is not None, "a malformed command still gets a response with the reason"
        r = m.json()
        assert isinstance(r, dict), m
    else:
        r = response(w, cid)
    assert r["ok"] is False, r
    text = json.dumps(r)
    assert "error" in text, f"no reason given: {r}"
    if tag:
        assert r["results"][tag]["ok"] is False and r["results"][tag].get("error"), r
    time.sleep(0.3)
    assert mb.read_hr(20) == [11] and mb.read_hr(21) == [0], "a refused command must not write"
    # the gateway keeps running and still obeys good commands
    assert gw.alive(), gw.output()[-3000:]
    w.publish(CMD, {"id": "c-after", "write": {"setpoint": 12}}, qos=1)
    assert response(w, "c-after")["ok"] is True
    assert mb.read_hr(20) == [12]


# --------------------------------------------------------------------- TLS
def test_mutual_tls(start_broker, start_modbus, start_gateway, watch, certs):
    broker = start_broker(certs=certs)
    mb = start_modbus({"units": {"1": {"hr": [321]}}})
    w = watch(broker.port, certs=certs)
    tls = {"ca": certs.path("ca.pem"), "cert": certs.path("client.pem"), "key": certs.path("client.key")}
    start_gateway(gw_config(None, [device(mb.port, [{"name": "x", "addr": "hr:0"}])],
                            mqtt={"url": f"mqtts://127.0.0.1:{broker.port}", "tls": tls}))
    m = wait_values(w, DEV, lambda v: good(v, "x") and v["x"]["v"] == 321, timeout=20)
    assert m is not None, f"no telemetry over mutual TLS; broker log:\n{broker.output()[-2000:]}"


def test_tls_wrong_ca_does_not_connect(start_broker, start_modbus, start_gateway, watch, certs):
    broker = start_broker(certs=certs)
    mb = start_modbus({"units": {"1": {"hr": [321]}}})
    w = watch(broker.port, certs=certs)
    tls = {"ca": certs.path("otherca.pem"), "cert": certs.path("client.pem"),
           "key": certs.path("client.key")}
    gw = start_gateway(gw_config(None, [device(mb.port, [{"name": "x", "addr": "hr:0"}])],
                                 mqtt={"url": f"mqtts://127.0.0.1:{broker.port}", "tls": tls}))
    time.sleep(5)
    assert not w.messages(TELE), "connected although the broker's certificate is not from our CA"
    assert gw.alive(), "a TLS failure is retried, not fatal"
    out = gw.output()
    assert re.search(r"(?i)(tls|ssl|certif|verif|handshake)", out), \
        f"the TLS failure should be logged:\n{out[-3000:]}"


def test_password_file_readable_by_others_refused(broker, start_modbus, start_gateway, tmp_path):
    pw = tmp_path / "mqtt.pass"
    pw.write_text("secret\n")
    os.chmod(pw, 0o644)
    mb = start_modbus({"units": {"1": {"hr": [1]}}})
    gw = start_gateway(gw_config(broker.port, [device(mb.port, [{"name": "x", "addr": "hr:0"}])],
                                 mqtt={"username": "u", "password_file": str(pw)}))
    rc = gw.wait(15)
    assert rc == 2, f"rc={rc}; output:\n{gw.output()[-2000:]}"
    assert "mqtt.pass" in gw.output(), gw.output()


# ------------------------------------------------------------ status, will
def wait_status(w, state, timeout=10, after=0.0):
    return w.wait_for(lambda m: status_state(m) == state, timeout, topic=GW_STATUS, after=after)


@pytest.mark.smoke
def test_online_status_retained(broker, start_modbus, start_gateway, watch):
    mb = start_modbus({"units": {"1": {"hr": [1]}}})
    w = watch(broker.port)
    start_gateway(gw_config(broker.port, [device(mb.port, [{"name": "x", "addr": "hr:0"}])]))
    assert wait_status(w, "online"), f"no online status on {GW_STATUS}; got {w.messages()[:5]}"
    ready(w)
    late = watch(broker.port, topics=[GW_STATUS])
    m = late.wait_for(lambda m: True, 5)
    assert m is not None and m.retain and status_state(m) == "online", m
    dev_status = w.messages(topic(DEV, "status"))
    assert dev_status, f"no device status on {topic(DEV, 'status')}"


def test_will_after_kill9(broker, start_modbus, start_gateway, watch):
    mb = start_modbus({"units": {"1": {"hr": [1]}}})
    w = watch(broker.port)
    gw = start_gateway(gw_config(broker.port, [device(mb.port, [{"name": "x", "addr": "hr:0"}])]))
    assert wait_status(w, "online"), w.messages()[:5]
    ready(w)
    t = time.monotonic()
    gw.proc.kill9()
    m = wait_status(w, "offline", timeout=15, after=t)
    assert m is not None, f"no offline will on {GW_STATUS}: {w.messages(GW_STATUS)}"
    late = watch(broker.port, topics=[GW_STATUS])
    m = late.wait_for(lambda m: True, 5)
    assert m is not None and m.retain and status_state(m) == "offline", m


@pytest.mark.smoke
def test_sigterm_publishes_offline_and_exits_0(broker, start_modbus, start_gateway, watch):
    mb = start_modbus({"units": {"1": {"hr": [1]}}})
    w = watch(broker.port)
    gw = start_gateway(gw_config(broker.port, [device(mb.port, [{"name": "x", "addr": "hr:0"}])]))
    assert wait_status(w, "online")
    ready(w)
    t = time.monotonic()
    gw.proc.send(signal.SIGTERM)
    rc = gw.wait(15)
    assert rc == 0, f"rc={rc}\n{gw.output()[-3000:]}"
    assert wait_status(w, "offline", timeout=5, after=t), w.messages(GW_STATUS)


def test_sigint_exits_0(broker, start_modbus, start_gateway, watch):
    mb = start_modbus({"units": {"1": {"hr": [1]}}})
    w = watch(broker.port)
    gw = start_gateway(gw_config(broker.port, [device(mb.port, [{"name": "x", "addr": "hr:0"}])]))
    ready(w)
    gw.proc.send(signal.SIGINT)
    assert gw.wait(15) == 0, gw.output()[-3000:]


# --------------------------------------------------------------- restarts
def test_modbus_server_restart(broker, start_modbus, start_gateway, watch):
    mb = start_modbus({"units": {"1": {"hr": [77]}}})
    w = watch(broker.port)
    start_gateway(gw_config(broker.port, [device(mb.port, [{"name": "x", "addr": "hr:0"}])]))
    assert wait_values(w, DEV, lambda v: good(v, "x") and v["x"]["v"] == 77)
    t = time.monotonic()
    mb.stop()

    def went_bad(m):
        if m.t < t:
            return False
        if m.topic == TELE:
            v = (m.json() or {}).get("values", {})
            return "x" in v and v["x"].get("q") != "good"
        return m.topic == topic(DEV, "status") and status_state(m) == "offline"
    assert w.wait_for(went_bad, 15), f"quality never went bad: {w.messages()[-5:]}"
    time.sleep(1)
    t2 = time.monotonic()
    mb.start()  # same port
    m = wait_values(w, DEV, lambda v: good(v, "x") and v["x"]["v"] == 77, timeout=30, after=t2)
    assert m is not None, f"no recovery after the Modbus server came back: {w.messages()[-5:]}"


def test_broker_restart(broker, start_modbus, start_gateway, watch):
    mb = start_modbus({"units": {"1": {"hr": [5]}}})
    w = watch(broker.port)
    gw = start_gateway(gw_config(broker.port, [device(mb.port, [{"name": "x", "addr": "hr:0"}])]))
    ready(w)
    w.close()
    broker.stop()
    time.sleep(2)
    broker.start()
    w2 = watch(broker.port)
    m = wait_values(w2, DEV, lambda v: good(v, "x"), timeout=20)
    assert m is not None, f"no telemetry after the broker restarted:\n{gw.output()[-3000:]}"
    assert gw.alive()
    # the online status is published again (retained) after the reconnect
    assert wait_status(w2, "online", timeout=5), w2.messages(GW_STATUS)


def test_run_with_bad_config_exits_2(start_gateway, broker):
    cfg = gw_config(broker.port, [device(1, [{"name": "x", "addr": "hr:0"}], bogus_key=1)])
    gw = start_gateway(cfg)
    rc = gw.wait(15)
    assert rc == 2, f"rc={rc}\n{gw.output()[-2000:]}"
    assert re.search(re.escape(gw.path) + r":\d+:\d+:.*bogus_key", gw.output()), gw.output()


def test_modbus_descriptor_beyond_select_refused(start_modbus, tmp_path):
    """A gateway with more than ~1000 descriptors open (a thousand Modbus
    connections): libmodbus waits with select(), which cannot take a
    descriptor ≥ 1024 — the process used to abort on the first read ("bit
    out of range 0 - FD_SETSIZE").  Now that connection is refused with a
    clear error and the gateway keeps running.  The descriptors are simulated
    by 1,030 inherited ones, so the first connection lands beyond 1023."""
    import resource  # pylint: disable=import-outside-toplevel
    import subprocess  # pylint: disable=import-outside-toplevel
    from conftest import fb_bin, require, to_yaml  # pylint: disable=import-outside-toplevel
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    require("nofile", hard == resource.RLIM_INFINITY or hard >= 1200,
            f"needs 1,200 open files (ulimit -Hn is {hard})")
    if soft != resource.RLIM_INFINITY and soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1200, hard))
    mb = start_modbus({"units": {"1": {"hr": [7] * 10}}})
    cfg = gw_config(None, [device(mb.port, [{"name": "r0", "addr": "hr:0"}], poll="100ms")])
    cfg["log"] = {"level": "info"}
    path = tmp_path / "fd.yaml"
    path.write_text(to_yaml(cfg) + "\n")
    def fill_descriptors():  # in the child: 3..1030 taken, so its first socket is 1031
        null = os.open("/dev/null", os.O_RDONLY)
        os.set_inheritable(null, True)
        for fd in range(3, 1031):
            if fd != null:
                os.dup2(null, fd)  # dup2'd descriptors are inherited
    log = open(tmp_path / "fd.log", "wb")  # pylint: disable=consider-using-with
    p = subprocess.Popen([fb_bin(), "run", "-c", str(path)], stdout=log, stderr=subprocess.STDOUT,  # pylint: disable=subprocess-popen-preexec-fn
                         close_fds=False, preexec_fn=fill_descriptors, start_new_session=True)
    try:
        ok = peers.wait_until(lambda: "beyond what libmodbus can wait on" in (tmp_path / "fd.log").read_text(),
                              10, 0.1)
        time.sleep(0.5)
        alive = p.poll() is None
        out = (tmp_path / "fd.log").read_text()
        assert ok and alive, f"alive={alive} rc={p.poll()}\n{out[-2000:]}"
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=10)
        log.close()
    assert rc == 0, f"exit code {rc}"
