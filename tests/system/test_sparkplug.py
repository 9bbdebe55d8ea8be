"""test_sparkplug.py — the Sparkplug B edge node against Mosquitto, judged by
the reference implementation's decoder (npm sparkplug-payload@1.0.3, via
tests/peers/sparkplug/decode.js), not by our own .proto.

The scripted host application is a paho client (conftest's Watcher) that
records spBv1.0/#, publishes NCMD/DCMD (payloads hand-encoded below from the
schema's field numbers) and STATE messages.

Run: /usr/bin/python3 -m pytest tests/system/test_sparkplug.py -v
"""
import json
import os
import struct
import subprocess
import time

import pytest

from conftest import GW_ID, ROOT, gw_config, require, run_cli  # noqa: F401  pylint: disable=unused-import

PEER = os.path.join(ROOT, "tests", "peers", "sparkplug")
GROUP = "G1"
EDGE = GW_ID


def need_peer():
    require("sparkplug", os.path.isdir(os.path.join(PEER, "node_modules", "sparkplug-payload")),
            "sparkplug-payload is not installed in tests/peers/sparkplug: run scripts/peers.sh")


def decode(msgs):
    """Decode recorded messages in order with the reference decoder."""
    need_peer()
    lines = "".join(json.dumps({"topic": m.topic, "hex": m.payload.hex()}) + "\n" for m in msgs)
    r = subprocess.run(["node", os.path.join(PEER, "decode.js")], input=lines, capture_output=True,
                       text=True, timeout=60, check=True)
    out = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
    for o in out:
        assert "error" not in o, o
    return out


def spb_msgs(w):
    return [m for m in w.messages() if m.topic.startswith("spBv1.0/") and "/STATE/" not in m.topic]


def kind(topic):
    return topic.split("/")[2]


def wait_kind(w, k, device=None, timeout=15.0, after=0.0):
    t = f"spBv1.0/{GROUP}/{k}/{EDGE}" + (f"/{device}" if device else "")
    return w.wait_for(lambda m: True, timeout, topic=t, after=after)


# ------------------------------------------------ a minimal protobuf writer
def _varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(num, wt, data):
    return _varint(num << 3 | wt) + data


def _ld(num, data):
    return _field(num, 2, _varint(len(data)) + data)


def metric(name=None, alias=None, datatype=None, **value):
    """Payload.Metric: name=1, alias=2, datatype=4; value fields int=10 long=11
    float=12 double=13 boolean=14 string=15."""
    b = b""
    if name is not None:
        b += _ld(1, name.encode())
    if alias is not None:
        b += _field(2, 0, _varint(alias))
    if datatype is not None:
        b += _field(4, 0, _varint(datatype))
    for k, v in value.items():
        if k == "int":
            b += _field(10, 0, _varint(v & 0xFFFFFFFF))
        elif k == "long":
            b += _field(11, 0, _varint(v))
        elif k == "float":
            b += _field(12, 5, struct.pack("<f", v))
        elif k == "double":
            b += _field(13, 1, struct.pack("<d", v))
        elif k == "bool":
            b += _field(14, 0, _varint(1 if v else 0))
        elif k == "string":
            b += _ld(15, v.encode())
    return b


def payload(*metrics, ts=None):
    b = _field(1, 0, _varint(ts if ts is not None else int(time.time() * 1000)))
    for m in metrics:
        b += _ld(2, m)
    return b


# ------------------------------------------------------------- set-up
def spb_cfg(port, devices, **extra):
    cfg = gw_config(None, devices)
    s = {"url": f"mqtt://127.0.0.1:{port}", "group": GROUP, "keepalive": "5s",
         "reconnect": {"min": "100ms", "max": "1s"}}
    s.update(extra)
    cfg["sparkplug"] = s
    # gw_config puts devices last; keep it that way for readability
    devs = cfg.pop("devices")
    cfg["devices"] = devs
    return cfg


def i16(v):
    return [v & 0xFFFF]


def words(fmt, v):
    raw = struct.pack(">" + fmt, v)
    return [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]


# holding registers, ABCD order
HR = {}
EXPECT = {}


def _reg(addr, name, typ, fmt, value, spb_type, expect=None):
    ws = words(fmt, value)
    for i, x in enumerate(ws):
        HR[str(addr + i)] = x
    EXPECT[name] = (f"hr:{addr}:{typ}", spb_type, value if expect is None else expect)


_reg(0, "i16", "int16", "h", -1234, "Int16")
_reg(1, "u16", "uint16", "H", 65000, "UInt16")
_reg(2, "i32", "int32", "i", -123456789, "Int32")
_reg(4, "u32", "uint32", "I", 4000000000, "UInt32")
_reg(6, "i64", "int64", "q", -9007199254740993, "Int64", "-9007199254740993")
_reg(10, "u64", "uint64", "Q", 18446744073709551000, "UInt64", "18446744073709551000")
_reg(14, "f32", "float32", "f", 1.5, "Float")
_reg(16, "f64", "float64", "d", -2.25, "Double")
HR["20"] = 100  # setpoint (rw)


def modbus_device(port, poll="200ms"):
    tags = [{"name": n, "addr": a} for n, (a, _, _) in EXPECT.items()]
    tags.append({"name": "flag", "addr": "co:0"})
    tags.append({"name": "setpoint", "addr": "hr:20", "access": "rw", "range": [0, 1000]})
    return {"name": "plc", "url": f"modbus-tcp://127.0.0.1:{port}?unit=1", "poll": poll, "tags": tags}


def sim_device(poll="200ms"):
    return {"name": "sim", "url": "sim://sim", "poll": poll, "tags": [
        {"name": "i8", "addr": "const:-100", "type": "int8"},
        {"name": "u8", "addr": "const:200", "type": "uint8"},
        {"name": "b", "addr": "const:1", "type": "bool"},
        {"name": "s", "addr": "const:\"PX-200\""},
        {"name": "n", "addr": "counter"},
        {"name": "mem", "addr": "memory:initial=5", "type": "int32", "access": "rw"},
    ]}


def modbus_spec():
    return {"units": {"1": {"hr": {k: v for k, v in HR.items()} | {str(i): 0 for i in range(21, 30)},
                            "co": [True]}}}


def metrics_by_name(p):
    return {m["name"]: m for m in p["payload"]["metrics"]}


# ------------------------------------------------------------------- tests
@pytest.mark.smoke
def test_every_datatype_decoded_by_reference(broker, start_modbus, start_gateway, watch):
    need_peer()
    spec = modbus_spec()
    spec["units"]["1"]["hr"] = {k: v for k, v in spec["units"]["1"]["hr"].items()}
    mb = start_modbus(spec)
    w = watch(broker.port, topics=("spBv1.0/#",))
    start_gateway(spb_cfg(broker.port, [modbus_device(mb.port), sim_device()]))
    assert wait_kind(w, "DDATA", "sim", timeout=20), "no DDATA from sim"
    assert wait_kind(w, "DBIRTH", "plc", timeout=20), "no DBIRTH from plc"
    time.sleep(0.5)
    dec = decode(spb_msgs(w))
    kinds = [kind(d["topic"]) for d in dec]
    assert kinds[0] == "NBIRTH", kinds
    nb = metrics_by_name(dec[0])
    assert nb["bdSeq"]["type"] == "Int64" and nb["bdSeq"]["value"] == "0"
    assert nb["Node Control/Rebirth"]["value"] is False
    assert dec[0]["payload"]["seq"] == 0
    # DBIRTH before DDATA, per device
    for dev in ("plc", "sim"):
        idx = [i for i, d in enumerate(dec) if d["topic"].endswith("/" + dev)]
        assert kind(dec[idx[0]]["topic"]) == "DBIRTH", [dec[i]["topic"] for i in idx]
    birth = metrics_by_name(next(d for d in dec if d["topic"].endswith("DBIRTH/" + EDGE + "/plc")))
    for name, (_, spb_type, want) in EXPECT.items():
        m = birth[name]
        assert m["type"] == spb_type, (name, m)
        assert m["value"] == want, (name, m, want)
        assert m["properties"]["Quality"]["value"] == 192
        assert isinstance(m.get("alias"), int) and m.get("timestamp")
    assert birth["flag"]["type"] == "Boolean" and birth["flag"]["value"] is True
    sb = metrics_by_name(next(d for d in dec if d["topic"].endswith("DBIRTH/" + EDGE + "/sim")))
    assert sb["i8"]["type"] == "Int8" and sb["i8"]["value"] == -100
    assert sb["u8"]["type"] == "UInt8" and sb["u8"]["value"] == 200
    assert sb["b"]["type"] == "Boolean" and sb["b"]["value"] is True
    assert sb["s"]["type"] == "String" and sb["s"]["value"] == "PX-200"
    # DDATA: aliases only (no names on the wire), values resolved through the birth
    dd = [d for d in dec if kind(d["topic"]) == "DDATA" and d["topic"].endswith("/sim")]
    assert dd
    raw = [m for m in spb_msgs(w) if kind(m.topic) == "DDATA"]
    assert raw and b"counter" not in raw[0].payload and b"\x0a\x01n" not in raw[0].payload
    n = metrics_by_name(dd[-1])["n"]
    assert isinstance(n["value"], (int, float)) and n["properties"]["Quality"]["value"] == 192
    # seq: NBIRTH 0, then +1 per message
    seqs = [d["payload"].get("seq") for d in dec]
    for a, b in zip(seqs, seqs[1:]):
        assert b == (a + 1) % 256, seqs


def test_seq_wraps_rebirth_and_deaths(broker, start_gateway, watch):
    need_peer()
    w = watch(broker.port, topics=("spBv1.0/#",))
    dev = {"name": "fast", "url": "sim://f", "poll": "20ms", "tags": [{"name": "n", "addr": "counter"}]}
    gw = start_gateway(spb_cfg(broker.port, [dev]))
    assert wait_kind(w, "NBIRTH", timeout=15)
    assert peers_wait(lambda: len(spb_msgs(w)) >= 320, 30), len(spb_msgs(w))
    dec = decode(spb_msgs(w))
    seqs = [d["payload"]["seq"] for d in dec]
    assert seqs[0] == 0
    for a, b in zip(seqs, seqs[1:]):
        assert b == (a + 1) % 256
    assert 255 in seqs and seqs.count(0) >= 2  # wrapped
    # Rebirth on NCMD: a new NBIRTH with seq 0 and the same bdSeq, then DBIRTH
    t0 = time.monotonic()
    w.publish(f"spBv1.0/{GROUP}/NCMD/{EDGE}", payload(metric("Node Control/Rebirth", datatype=11, bool=True)), qos=0)
    nb = wait_kind(w, "NBIRTH", after=t0, timeout=10)
    assert nb, "no rebirth"
    db = wait_kind(w, "DBIRTH", "fast", after=nb.t, timeout=10)
    assert db
    d2 = decode([nb, db])
    assert d2[0]["payload"]["seq"] == 0 and metrics_by_name(d2[0])["bdSeq"]["value"] == "0"
    assert d2[1]["payload"]["seq"] == 1
    # reboot is refused by default
    w.publish(f"spBv1.0/{GROUP}/NCMD/{EDGE}", payload(metric("Node Control/Reboot", datatype=11, bool=True)), qos=0)
    assert peers_wait(lambda: "Reboot refused" in gw.output(), 5)
    assert gw.alive()
    # kill -9: the broker publishes the will, NDEATH with the NBIRTH's bdSeq and no seq
    t1 = time.monotonic()
    gw.proc.kill9()
    nd = wait_kind(w, "NDEATH", after=t1, timeout=20)
    assert nd, "no will NDEATH after kill -9"
    dn = decode([nd])[0]
    assert "seq" not in dn["payload"]
    assert metrics_by_name(dn)["bdSeq"]["value"] == "0"


def test_bdseq_per_connect_and_sigterm_ndeath(broker, start_gateway, watch):
    need_peer()
    dev = {"name": "d", "url": "sim://d", "poll": "200ms", "tags": [{"name": "n", "addr": "counter"}]}
    gw = start_gateway(spb_cfg(broker.port, [dev]))
    w = watch(broker.port, topics=("spBv1.0/#",))
    assert wait_kind(w, "NBIRTH", timeout=15) or True
    broker.restart()
    w2 = watch(broker.port, topics=("spBv1.0/#",))
    nb = wait_kind(w2, "NBIRTH", timeout=5)
    if not nb:
        # the gateway may have reconnected and been born before this watcher
        # subscribed (births are not retained): ask for a rebirth, which keeps
        # the session's bdSeq
        w2.publish(f"spBv1.0/{GROUP}/NCMD/{EDGE}",
                   payload(metric("Node Control/Rebirth", datatype=11, bool=True)), qos=0)
        nb = wait_kind(w2, "NBIRTH", timeout=20)
    assert nb, "no NBIRTH after the broker restart"
    assert metrics_by_name(decode([nb])[0])["bdSeq"]["value"] == "1"
    t0 = time.monotonic()
    assert gw.stop() == 0
    nd = wait_kind(w2, "NDEATH", after=t0, timeout=10)
    assert nd, "no NDEATH on SIGTERM"
    assert metrics_by_name(decode([nd])[0])["bdSeq"]["value"] == "1"
    # the DDEATH of the device came before the node's death
    ks = [kind(m.topic) for m in spb_msgs(w2)]
    assert ks.index("DDEATH") < ks.index("NDEATH")


def test_dcmd_writes_modbus_and_sim(broker, start_modbus, start_gateway, watch):
    need_peer()
    mb = start_modbus(modbus_spec())
    w = watch(broker.port, topics=("spBv1.0/#",))
    gw = start_gateway(spb_cfg(broker.port, [modbus_device(mb.port), sim_device()]))
    assert wait_kind(w, "DBIRTH", "plc", timeout=20)
    assert wait_kind(w, "DBIRTH", "sim", timeout=20)
    # by name, as a Double for a uint16 register
    w.publish(f"spBv1.0/{GROUP}/DCMD/{EDGE}/plc", payload(metric("setpoint", datatype=10, double=321.0)), qos=0)
    assert peers_wait(lambda: mb.read_hr(20)[0] == 321, 10), mb.read_hr(20)
    # out of range: refused by the validator, register unchanged
    w.publish(f"spBv1.0/{GROUP}/DCMD/{EDGE}/plc", payload(metric("setpoint", datatype=10, double=5000.0)), qos=0)
    assert peers_wait(lambda: "DCMD from" in gw.output() and "failed" in gw.output(), 10)
    assert mb.read_hr(20)[0] == 321
    # by alias (learnt from the DBIRTH), sim memory tag
    db = decode([wait_kind(w, "DBIRTH", "sim")])[0]
    alias = metrics_by_name(db)["mem"]["alias"]
    t0 = time.monotonic()
    w.publish(f"spBv1.0/{GROUP}/DCMD/{EDGE}/sim", payload(metric(alias=alias, int=-42)), qos=0)

    def mem_is(v):
        msgs = [m for m in spb_msgs(w) if m.t >= t0]
        for d in decode([m for m in spb_msgs(w) if kind(m.topic) in ("NBIRTH", "DBIRTH")] + msgs):
            if d["topic"].endswith("DDATA/" + EDGE + "/sim"):
                m = metrics_by_name(d).get("mem")
                if m and m["value"] == v:
                    return True
        return False
    assert peers_wait(lambda: mem_is(-42), 10)


def test_primary_host_state(broker, start_gateway, watch):
    need_peer()
    host = watch(broker.port, topics=("spBv1.0/#",))
    now = int(time.time() * 1000)
    host.publish("spBv1.0/STATE/scada", json.dumps({"online": False, "timestamp": now}), retain=True)
    dev = {"name": "d", "url": "sim://d", "poll": "200ms", "tags": [{"name": "n", "addr": "counter"}]}
    gw = start_gateway(spb_cfg(broker.port, [dev], primary_host="scada"))
    assert peers_wait(lambda: "waiting" in gw.output() or "connected to" in gw.output(), 10)
    time.sleep(1.5)
    assert not [m for m in spb_msgs(host) if kind(m.topic) == "NBIRTH"], "born before the host was online"
    t0 = time.monotonic()
    host.publish("spBv1.0/STATE/scada", json.dumps({"online": True, "timestamp": now + 1}), retain=True)
    nb = wait_kind(host, "NBIRTH", after=t0, timeout=10)
    assert nb, "no NBIRTH after STATE online"
    b0 = metrics_by_name(decode([nb])[0])["bdSeq"]["value"]
    # a stale STATE (older time stamp) is ignored
    t1 = time.monotonic()
    host.publish("spBv1.0/STATE/scada", json.dumps({"online": False, "timestamp": now}), retain=True)
    time.sleep(1.0)
    assert not [m for m in spb_msgs(host) if kind(m.topic) == "NDEATH" and m.t >= t1]
    # offline: NDEATH and a reconnect, which waits again
    t2 = time.monotonic()
    host.publish("spBv1.0/STATE/scada", json.dumps({"online": False, "timestamp": now + 2}), retain=True)
    nd = wait_kind(host, "NDEATH", after=t2, timeout=10)
    assert nd, "no NDEATH after the primary host went offline"
    assert metrics_by_name(decode([nd])[0])["bdSeq"]["value"] == b0
    time.sleep(1.5)
    assert not [m for m in spb_msgs(host) if kind(m.topic) == "NBIRTH" and m.t >= t2]
    t3 = time.monotonic()
    host.publish("spBv1.0/STATE/scada", json.dumps({"online": True, "timestamp": now + 3}), retain=True)
    nb2 = wait_kind(host, "NBIRTH", after=t3, timeout=15)
    assert nb2
    assert int(metrics_by_name(decode([nb2])[0])["bdSeq"]["value"]) == (int(b0) + 1) % 256


def test_device_loss_ddeath_and_dbirth(broker, start_modbus, start_gateway, watch):
    need_peer()
    mb = start_modbus(modbus_spec())
    w = watch(broker.port, topics=("spBv1.0/#",))
    start_gateway(spb_cfg(broker.port, [modbus_device(mb.port)]))
    assert wait_kind(w, "DBIRTH", "plc", timeout=20)
    t0 = time.monotonic()
    mb.stop()
    assert wait_kind(w, "DDEATH", "plc", after=t0, timeout=15), "no DDEATH when the Modbus server stopped"
    t1 = time.monotonic()
    mb.start()
    db = wait_kind(w, "DBIRTH", "plc", after=t1, timeout=30)
    assert db, "no DBIRTH when the Modbus server came back"
    m = metrics_by_name(decode([m for m in spb_msgs(w) if kind(m.topic) == "NBIRTH"][:1] + [db])[1])
    assert m["i32"]["value"] == -123456789 and m["i32"]["properties"]["Quality"]["value"] == 192


def test_bad_values_are_null_in_births_and_data(broker, start_modbus, start_gateway, watch):
    """Issue 12: a Bad value was is_null in DDATA but 0 with Quality 0 in DBIRTH. Births
    and data alike: a bad metric has no value (is_null) and Quality 0; a reading refused
    by plausibility travels in the property Raw (judged by the reference decoder)."""
    need_peer()
    mb = start_modbus({"units": {"1": {"hr": {"0": 150, "1": 5}}}})
    dev = {"name": "plc", "url": f"modbus-tcp://127.0.0.1:{mb.port}?unit=1", "poll": "200ms", "tags": [
        {"name": "oor", "addr": "hr:0", "range": [0, 100]},   # refused: BadOutOfRange, Raw 150
        {"name": "ok", "addr": "hr:1", "range": [0, 100]},
        {"name": "gone", "addr": "hr:50"},                     # exception 02 from the server
    ]}
    w = watch(broker.port, topics=("spBv1.0/#",))
    start_gateway(spb_cfg(broker.port, [dev]))
    assert wait_kind(w, "DBIRTH", "plc", timeout=20), "no DBIRTH"
    assert wait_kind(w, "DDATA", "plc", timeout=10), "no DDATA"
    dec = decode(spb_msgs(w))
    birth = metrics_by_name(next(d for d in dec if kind(d["topic"]) == "DBIRTH"))
    data = [metrics_by_name(d) for d in dec if kind(d["topic"]) == "DDATA"]
    assert birth["ok"]["value"] == 5 and birth["ok"]["properties"]["Quality"]["value"] == 192, birth["ok"]
    assert "Raw" not in birth["ok"]["properties"]
    for where, m in [("DBIRTH", birth)] + [("DDATA", d) for d in data]:
        if "oor" in m:
            assert m["oor"]["value"] is None, (where, m["oor"])
            assert m["oor"]["properties"]["Quality"]["value"] == 0, (where, m["oor"])
            assert m["oor"]["properties"]["Raw"] == {"type": "Int16", "value": 150}, (where, m["oor"])
        if "gone" in m:
            assert m["gone"]["value"] is None, (where, m["gone"])
            assert m["gone"]["properties"]["Quality"]["value"] == 0, (where, m["gone"])
            assert "Raw" not in m["gone"]["properties"], (where, m["gone"])
    assert any("oor" in d and "gone" in d for d in data), data
    assert birth["oor"]["type"] == "Int16" and birth["gone"]["type"] == "Int16"


def test_store_and_forward_historical(tmp_path, start_broker, start_gateway, watch):
    need_peer()
    broker = start_broker()
    dev = {"name": "d", "url": "sim://d", "poll": "100ms", "tags": [{"name": "n", "addr": "counter"}]}
    # NBIRTH is QoS 0 and not kept for absent subscribers: the gateway retries only every 5 s,
    # so the test's new subscriber is in place before the gateway is back (with 100ms..1s it
    # sometimes reconnected first on a loaded machine and its NBIRTH went to nobody)
    start_gateway(spb_cfg(broker.port, [dev], buffer={"path": str(tmp_path / "buf")},
                          reconnect={"min": "5s", "max": "5s"}))
    w = watch(broker.port, topics=("spBv1.0/#",))
    assert wait_kind(w, "DDATA", "d", timeout=15)
    port = broker.port
    broker.stop()
    time.sleep(2.0)
    broker.start()
    assert broker.port == port
    w2 = watch(port, topics=("spBv1.0/#",))
    nb = wait_kind(w2, "NBIRTH", timeout=20)
    assert nb
    assert peers_wait(lambda: any(kind(m.topic) == "DDATA" for m in spb_msgs(w2)), 10)
    time.sleep(1.0)
    dec = decode(spb_msgs(w2))
    assert kind(dec[0]["topic"]) == "NBIRTH"
    assert metrics_by_name(dec[0])["bdSeq"]["value"] == "1"
    hist = [d for d in dec if kind(d["topic"]) == "DDATA" and
            any(m.get("isHistorical") for m in d["payload"]["metrics"])]
    assert hist, "no historical DDATA after the reconnect"
    first_data = next(i for i, d in enumerate(dec) if kind(d["topic"]) == "DDATA")
    births = [i for i, d in enumerate(dec) if kind(d["topic"]) in ("NBIRTH", "DBIRTH")]
    assert births and births[0] < first_data
    # bdSeq persisted in the buffer directory
    assert os.path.exists(tmp_path / "buf" / "sparkplug.bdseq")


def test_spb_dump(broker, start_gateway):
    dev = {"name": "d", "url": "sim://d", "poll": "200ms", "tags": [{"name": "n", "addr": "counter"}]}
    start_gateway(spb_cfg(broker.port, [dev]))
    r = run_cli("spb-dump", f"mqtt://127.0.0.1:{broker.port}", "--count", "3", "--timeout", "15s", timeout=30)
    assert r.returncode == 0, r.stderr
    assert f"spBv1.0/{GROUP}/" in r.stdout
    assert "seq" in r.stdout and "Int64" in r.stdout or "UInt64" in r.stdout or "DDATA" in r.stdout


def test_spb_dump_mid_stream_hint_and_rebirth(broker, start_gateway, watch):
    """Issue 12: a dump started after the births shows aliases without names. It now says
    why; with --rebirth it asks the edge node (NCMD Node Control/Rebirth) and shows names."""
    dev = {"name": "d", "url": "sim://d", "poll": "200ms", "tags": [{"name": "n", "addr": "counter"}]}
    w = watch(broker.port, topics=("spBv1.0/#",))
    start_gateway(spb_cfg(broker.port, [dev]))
    assert wait_kind(w, "DDATA", "d", timeout=15), "gateway not publishing"
    url = f"mqtt://127.0.0.1:{broker.port}"
    r = run_cli("spb-dump", url, "--count", "2", "--timeout", "15s", timeout=30)
    assert r.returncode == 0, r.stderr
    assert f"spBv1.0/{GROUP}/DDATA/{EDGE}/d" in r.stdout, r.stdout
    assert "(no name)" in r.stdout and "--rebirth" in r.stdout, r.stdout
    assert r.stdout.count("no birth of") == 1, r.stdout   # said once per node
    t0 = time.monotonic()
    r = run_cli("spb-dump", url, "--rebirth", "--count", "8", "--timeout", "20s", timeout=40)
    assert r.returncode == 0, r.stderr
    assert f"asked for a Rebirth on spBv1.0/{GROUP}/NCMD/{EDGE}" in r.stdout, r.stdout
    assert f"spBv1.0/{GROUP}/NBIRTH/{EDGE}" in r.stdout, r.stdout
    # after the births, DATA metrics have their names and datatypes
    after = r.stdout.split(f"spBv1.0/{GROUP}/DBIRTH/{EDGE}/d", 1)
    assert len(after) == 2 and '"n" alias' in after[1].split("DDATA", 1)[-1], r.stdout
    # the gateway really got an NCMD with Rebirth = true (judged by the reference decoder)
    ncmd = wait_kind(w, "NCMD", after=t0, timeout=5)
    assert ncmd, "no NCMD seen"
    m = metrics_by_name(decode([ncmd])[0])["Node Control/Rebirth"]
    assert m["type"] == "Boolean" and m["value"] is True, m


def peers_wait(pred, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return bool(pred())


def test_reload_rebirths_with_the_new_devices(broker, start_gateway, watch):
    """A config reload that removes a device, adds one and renumbers the rest
    (their aliases move): the session stays (same bdSeq, no NDEATH), the
    removed device gets DDEATH, and everything is born again — NBIRTH seq 0
    and DBIRTHs whose aliases every later DDATA uses; a kept simulated device
    goes on counting where it was."""
    need_peer()
    import signal  # pylint: disable=import-outside-toplevel
    from conftest import to_yaml  # pylint: disable=import-outside-toplevel

    def sim(name):
        return {"name": name, "url": f"sim://{name}", "poll": "100ms", "tags": [{"name": "n", "addr": "counter"}]}
    w = watch(broker.port, topics=("spBv1.0/#",))
    cfg = spb_cfg(broker.port, [sim("s1"), sim("s2")])
    gw = start_gateway(cfg)
    assert wait_kind(w, "DDATA", "s2", timeout=20)
    time.sleep(1.0)
    cfg["devices"] = [sim("s2"), sim("s3")]
    with open(gw.path, "w", encoding="utf-8") as f:
        f.write(to_yaml(cfg) + "\n")
    t0 = time.monotonic()
    gw.proc.send(signal.SIGHUP)
    nb = wait_kind(w, "NBIRTH", after=t0, timeout=10)
    assert nb, f"no rebirth after the reload\n{gw.output()[-3000:]}"
    assert wait_kind(w, "DDEATH", "s1", after=t0, timeout=5), "no DDEATH for the removed device"
    assert wait_kind(w, "DDATA", "s3", after=t0, timeout=10), "the added device never published"
    time.sleep(1.0)
    assert not [m for m in w.messages() if m.t >= t0 and kind(m.topic) == "NDEATH"], "the session was not kept"
    dec = decode(spb_msgs(w))
    nbirths = [d for d in dec if kind(d["topic"]) == "NBIRTH"]
    assert len(nbirths) == 2, [d["topic"] for d in dec]
    assert metrics_by_name(nbirths[0])["bdSeq"]["value"] == metrics_by_name(nbirths[1])["bdSeq"]["value"]
    assert nbirths[1]["payload"]["seq"] == 0
    after = dec[dec.index(nbirths[1]):]
    births = {}
    for d in after:
        dev = d["topic"].split("/")[-1]
        if kind(d["topic"]) == "DBIRTH":
            births[dev] = {m["alias"]: m["name"] for m in d["payload"]["metrics"]}
        elif kind(d["topic"]) == "DDATA":
            assert dev in births, f"DDATA of {dev} before its DBIRTH"
            for m in d["payload"]["metrics"]:
                assert births[dev].get(m["alias"]) == "n", (dev, m, births[dev])
        assert dev != "s1" or kind(d["topic"]) == "DDEATH" or d is nbirths[1], d["topic"]
    before = [d for d in dec[:dec.index(nbirths[1])] if kind(d["topic"]) == "DDATA" and d["topic"].endswith("/s2")]
    after_s2 = [d for d in after if kind(d["topic"]) == "DDATA" and d["topic"].endswith("/s2")]
    last_before = float(before[-1]["payload"]["metrics"][0]["value"])
    first_after = float(after_s2[0]["payload"]["metrics"][0]["value"])
    assert first_after >= last_before, (last_before, first_after)  # the counter went on, not from 0
