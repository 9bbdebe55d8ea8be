"""test_s7.py — the S7 driver against snap7's S7Server (npm node-snap7 1.0.9,
an S7comm implementation that is not ours), through the real binary:
`fieldbridge read` / `write` with s7:// URLs for every type, item errors
(missing DB) as bad qualities with the reason, PDU-bound splitting of large
values and many items, and `fieldbridge run` publishing S7 values to MQTT,
taking MQTT commands and reconnecting after the PLC went away.

The peer runs from tests/peers/s7 (install: cd tests/peers/s7 &&
npm_config_nodedir=/usr npm ci); it binds 127.0.0.1 on a free port.  The
test holds the server's memory and sets / reads it over the script's stdin.
"""
import json
import math
import os
import struct
import subprocess
import time

import pytest

from conftest import ROOT, gw_config, require, run_cli, wait_values, topic  # noqa: F401
import peers

PEER_DIR = os.path.join(ROOT, "tests", "peers", "s7")
NODE_OK = os.path.isdir(os.path.join(PEER_DIR, "node_modules", "node-snap7"))


@pytest.fixture(autouse=True)
def _need_node_snap7():
    require("s7", NODE_OK, "node-snap7 is not installed in tests/peers/s7: run scripts/peers.sh")


class S7Server:
    """node s7_server.js as a child; memory set and read over its stdin/stdout."""

    def __init__(self, tmp_path, dbs=((1, 512),), port=None, extra=(), name="s7"):
        self.port = port or peers.free_port()
        self.dbs = dbs
        argv = ["node", os.path.join(PEER_DIR, "s7_server.js"), "--port", str(self.port),
                "--mk", "64", "--pe", "16", "--pa", "16", "--ct", "32", "--tm", "32", *extra]
        for n, size in dbs:
            argv += ["--db", f"{n}:{size}"]
        self.err = open(os.path.join(str(tmp_path), f"{name}.log"), "ab")
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=self.err, cwd=PEER_DIR, start_new_session=True)
        line = self.p.stdout.readline().decode()
        assert line.startswith("READY"), f"S7 server did not start: {line!r}"
        peers.wait_port(self.port, 10, self.p)

    def _call(self, req):
        self.p.stdin.write((json.dumps(req) + "\n").encode())
        self.p.stdin.flush()
        ans = json.loads(self.p.stdout.readline())
        assert ans.get("ok"), ans
        return ans

    def set(self, start, data, db=1, area="DB"):
        self._call({"op": "set", "area": area, "db": db, "start": start, "hex": bytes(data).hex()})

    def get(self, start, size, db=1, area="DB"):
        return bytes.fromhex(self._call({"op": "get", "area": area, "db": db, "start": start,
                                         "size": size})["hex"])

    def stop(self):
        if self.p.poll() is None:
            try:
                self.p.stdin.close()
            except OSError:
                pass
            try:
                self.p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=5)
        self.err.close()

    def url(self, q="rack=0&slot=1"):
        return f"s7://127.0.0.1:{self.port}?{q}"


@pytest.fixture
def s7(tmp_path):
    started = []

    def start(**kw):
        s = S7Server(tmp_path, name=f"s7-{len(started)}", **kw)
        started.append(s)
        return s
    yield start
    for s in started:
        s.stop()


def read_json(url, *addrs):
    r = run_cli("read", url, *addrs, "--json")
    try:
        return r, {x["addr"]: x for x in json.loads(r.stdout)}
    except json.JSONDecodeError:
        pytest.fail(f"read: rc {r.returncode}\nstdout {r.stdout}\nstderr {r.stderr}")


def dt_bcd(y, mo, d, h, mi, s, ms, wd):
    b = lambda v: (v // 10) << 4 | (v % 10)  # noqa: E731
    return bytes([b(y % 100), b(mo), b(d), b(h), b(mi), b(s), b(ms // 10), (ms % 10) << 4 | wd])


# (address, bytes at its offset in DB1, expected value)
TYPES = [
    ("DB1.DBX0.3", b"\x08", True),
    ("DB1.DBB1", b"\xab", 0xAB),
    ("DB1.DBB2:sint", b"\xfe", -2),
    ("DB1.DBB3:char", b"A", "A"),
    ("DB1.DBW4", b"\xff\xfe", 65534),
    ("DB1.DBW6:int", b"\xff\xfe", -2),
    ("DB1.DBW8:uint", b"\x12\x34", 0x1234),
    ("DB1.DBD10", b"\xde\xad\xbe\xef", 0xDEADBEEF),
    ("DB1.DBD14:dint", struct.pack(">i", -100000), -100000),
    ("DB1.DBD18:udint", struct.pack(">I", 4000000000), 4000000000),
    ("DB1.DBD22:real", struct.pack(">f", 21.5), 21.5),
    ("DB1.DBB26:lreal", struct.pack(">d", math.pi), math.pi),
    ("DB1.DBD34:time", struct.pack(">i", -5000), -5000),
    ("DB1.DBD38:tod", struct.pack(">I", 3600000), 3600000),
    ("DB1.DBW42:date", struct.pack(">H", 12478), "2024-03-01"),
    ("DB1.DBB44:dt", dt_bcd(2024, 2, 29, 13, 14, 15, 678, 5), "2024-02-29T13:14:15.678"),
    ("DB1.DBB52:string[10]", bytes([10, 5]) + "héllo".encode("latin-1") + bytes(5), "héllo"),
    ("DB1.DBB64:wstring[4]", struct.pack(">HH", 4, 3) + "日😀".encode("utf-16-be") + bytes(2), "日😀"),
    ("DB1.DBB76:lint", struct.pack(">q", -(2 ** 62)), -(2 ** 62)),
    ("DB1.DBB84:ulint", struct.pack(">Q", 2 ** 63 + 5), 2 ** 63 + 5),
]


@pytest.mark.smoke
def test_read_every_type(s7):
    srv = s7()
    for addr, raw, _ in TYPES:
        start = int("".join(c for c in addr.split(".")[1].split(":")[0] if c.isdigit()))
        srv.set(start, raw)
    srv.set(2, b"\x41\xa8\x00\x00", area="MK")    # MD2 = 21.0
    srv.set(0, b"\x02", area="PE")                # I0.1
    srv.set(1, b"\x80", area="PA")                # Q1.7
    # snap7's server keeps counter n at byte n >> 1 of its buffer (its quirk: a
    # CPU numbers counters, and the wire carries the element number); C0 is
    # unambiguous
    srv.set(0, b"\x00\x2a", area="CT")
    r, vals = read_json(srv.url(), *[a for a, _, _ in TYPES], "MD2:real", "I0.1", "Q1.7", "I0.0", "C0")
    assert r.returncode == 0, r.stderr
    for addr, _, want in TYPES:
        got = vals[addr]
        assert got["quality"] == "good", got
        if isinstance(want, float):
            assert got["value"] == pytest.approx(want, rel=1e-12), got
        else:
            assert got["value"] == want, (addr, got)
    assert vals["MD2:real"]["value"] == 21.0
    assert vals["I0.1"]["value"] is True and vals["I0.0"]["value"] is False
    assert vals["Q1.7"]["value"] is True
    assert vals["C0"]["value"] == 42
    # text output keeps the order of the command line
    r = run_cli("read", srv.url(), "DB1.DBW6:int", "DB1.DBD22:real", "DB1.DBX0.3")
    assert r.returncode == 0
    assert r.stdout.split("\n")[:3] == ["DB1.DBW6:int -2", "DB1.DBD22:real 21.5", "DB1.DBX0.3 true"]


# (address, value text, expected bytes at its offset)
WRITES = [
    ("DB1.DBX0.3", "true", 0, b"\x08"),
    ("DB1.DBB1", "171", 1, b"\xab"),
    ("DB1.DBW6:int", "-300", 6, struct.pack(">h", -300)),
    ("DB1.DBD14:dint", "-100000", 14, struct.pack(">i", -100000)),
    ("DB1.DBD22:real", "-12.5", 22, struct.pack(">f", -12.5)),
    ("DB1.DBB26:lreal", "3.141592653589793", 26, struct.pack(">d", math.pi)),
    ("DB1.DBD34:time", "-5000", 34, struct.pack(">i", -5000)),
    ("DB1.DBW42:date", "2024-03-01", 42, struct.pack(">H", 12478)),
    ("DB1.DBB44:dt", "2024-02-29T13:14:15.678", 44, dt_bcd(2024, 2, 29, 13, 14, 15, 678, 5)),
    ("DB1.DBB52:string[10]", "héllo", 52, bytes([10, 5]) + "héllo".encode("latin-1") + bytes(5)),
    ("DB1.DBB64:wstring[4]", "日😀", 64, struct.pack(">HH", 4, 3) + "日😀".encode("utf-16-be") + bytes(2)),
    ("DB1.DBB84:ulint", str(2 ** 63 + 5), 84, struct.pack(">Q", 2 ** 63 + 5)),
]


def test_write_every_type(s7):
    srv = s7()
    for addr, text, start, want in WRITES:
        r = run_cli("write", srv.url(), addr, text)
        assert r.returncode == 0, (addr, r.stdout, r.stderr)
        assert srv.get(start, len(want)) == want, addr
    # bits leave their neighbours alone
    srv.set(100, b"\xf0")
    assert run_cli("write", srv.url(), "DB1.DBX100.0", "1").returncode == 0
    assert run_cli("write", srv.url(), "DB1.DBX100.7", "0").returncode == 0
    assert srv.get(100, 1) == b"\x71"
    # other areas
    assert run_cli("write", srv.url(), "MW4:int", "-2").returncode == 0
    assert srv.get(4, 2, area="MK") == b"\xff\xfe"
    assert run_cli("write", srv.url(), "Q0.1", "true").returncode == 0
    assert srv.get(0, 1, area="PA") == b"\x02"
    assert run_cli("write", srv.url(), "C0", "4660").returncode == 0
    assert srv.get(0, 2, area="CT") == b"\x12\x34"
    # value outside the type's range: usage error, nothing written
    srv.set(6, b"\x00\x00")
    r = run_cli("write", srv.url(), "DB1.DBW6:int", "40000")
    assert r.returncode == 2
    assert srv.get(6, 2) == b"\x00\x00"
    r = run_cli("write", srv.url(), "DB1.DBB52:string[10]", "far too long text")
    assert r.returncode != 0 and "STRING[10]" in r.stderr + r.stdout


@pytest.mark.smoke
def test_missing_db_is_bad_with_reason(s7):
    srv = s7()
    srv.set(0, b"\x00\x07")
    r, vals = read_json(srv.url(), "DB1.DBW0", "DB99.DBW0", "DB1.DBW600")
    assert r.returncode == 1
    assert vals["DB1.DBW0"]["quality"] == "good" and vals["DB1.DBW0"]["value"] == 7
    assert vals["DB99.DBW0"]["quality"] == "BadNodeIdUnknown" and vals["DB99.DBW0"]["value"] is None
    assert "object does not exist" in r.stderr and "DB99" in r.stderr
    assert vals["DB1.DBW600"]["quality"] == "BadNodeIdUnknown"
    assert "address out of range" in r.stderr
    r = run_cli("write", srv.url(), "DB99.DBW0", "1")
    assert r.returncode == 1 and "object does not exist" in r.stderr


def test_merged_read_with_one_bad_address_splits(s7):
    """A tag beyond the DB end inside a merged range must not take its neighbours down."""
    srv = s7(dbs=((1, 64),))
    srv.set(0, b"\x00\x05")
    srv.set(20, b"\x00\x06")
    r, vals = read_json(srv.url(), "DB1.DBW0", "DB1.DBW20", "DB1.DBB60:string[10]")
    assert vals["DB1.DBW0"]["value"] == 5 and vals["DB1.DBW20"]["value"] == 6, (vals, r.stderr)
    assert vals["DB1.DBB60:string[10]"]["quality"] == "BadNodeIdUnknown"


def test_large_values_and_many_items_fit_the_pdu(s7):
    """PDU 240: a 1004-byte WSTRING spans five requests; 30 DBs need two requests (≤ 19 items)."""
    dbs = tuple((n, 64) for n in range(2, 32)) + ((1, 2048),)
    srv = s7(dbs=dbs)
    text = "".join(chr(0x41 + i % 26) if i % 7 else "ß" for i in range(500))
    raw = struct.pack(">HH", 500, 500) + text.encode("utf-16-be")
    srv.set(100, raw)
    for n in range(2, 32):
        srv.set(0, struct.pack(">h", -n), db=n)
    addrs = [f"DB{n}.DBW0:int" for n in range(2, 32)]
    r, vals = read_json(srv.url("rack=0&slot=1&pdu=240"), "DB1.DBB100:wstring[500]", *addrs)
    assert r.returncode == 0, r.stderr
    assert vals["DB1.DBB100:wstring[500]"]["value"] == text
    for n in range(2, 32):
        assert vals[f"DB{n}.DBW0:int"]["value"] == -n
    # a write larger than one PDU goes out in PDU − 28 byte pieces (the CLI and
    # the command path carry at most 256 bytes of text: 120 chars = 484 bytes here)
    text2 = "".join(chr(0x61 + i % 26) for i in range(120))
    r = run_cli("write", srv.url("pdu=240"), "DB1.DBB100:wstring[500]", text2)
    assert r.returncode == 0, r.stderr
    assert srv.get(100, 4) == struct.pack(">HH", 500, 120)
    assert srv.get(104, 240).decode("utf-16-be") == text2
    assert srv.get(344, 760) == bytes(760)  # the rest is cleared


def test_connect_errors_are_clear(s7):
    port = peers.free_port()
    r = run_cli("read", f"s7://127.0.0.1:{port}", "DB1.DBW0")
    assert r.returncode == 1 and "connect to 127.0.0.1" in r.stderr
    r = run_cli("read", "s7://127.0.0.1?rack=9", "DB1.DBW0")
    assert r.returncode == 2 and "rack" in r.stderr
    r = run_cli("read", "s7://127.0.0.1", "DB1.DBW0:real")
    assert r.returncode == 2 and "REAL is 4 bytes" in r.stderr


def test_gateway_publishes_s7_and_takes_commands(s7, broker, start_gateway, watch):
    srv = s7()
    port = srv.port
    srv.set(0, struct.pack(">f", 21.5) + struct.pack(">h", -7) + b"\x01")
    dev = {"name": "plc-01", "url": srv.url(), "poll": "200ms", "timeout": "500ms",
           "tags": [{"name": "temp", "addr": "DB1.DBD0:real", "unit": "°C"},
                    {"name": "count", "addr": "DB1.DBW4:int"},
                    {"name": "run", "addr": "DB1.DBX6.0", "access": "rw"},
                    {"name": "setpoint", "addr": "DB1.DBD8", "type": "float32", "access": "rw"},
                    {"name": "label", "addr": "DB1.DBB20", "type": "string[12]", "access": "rw"},
                    {"name": "ghost", "addr": "DB42.DBW0"}]}
    w = watch(broker.port)
    gw = start_gateway(gw_config(broker.port, [dev]))

    def good(v, n):
        return n in v and v[n].get("q") == "good"
    m = wait_values(w, "plc-01", lambda v: good(v, "temp") and good(v, "count") and "ghost" in v,
                    timeout=20)
    assert m is not None, gw.output()[-3000:]
    v = m.json()["values"]
    assert v["temp"]["v"] == 21.5 and v["count"]["v"] == -7 and v["run"]["v"] is True
    assert v["ghost"]["v"] is None and v["ghost"]["reason"] == "BadNodeIdUnknown"
    assert "object does not exist" in gw.output()

    # a value changed in the PLC shows up
    srv.set(4, struct.pack(">h", 1234))
    assert wait_values(w, "plc-01", lambda v: good(v, "count") and v["count"]["v"] == 1234,
                       timeout=10) is not None

    # MQTT command → S7 write
    w.publish(topic("plc-01", "command"),
              {"id": "s7-1", "write": {"setpoint": 42.25, "run": False, "label": "batch-7"}}, qos=1)
    resp = w.wait_for(lambda m: (m.json() or {}).get("id") == "s7-1", 10,
                      topic=topic("plc-01", "command/response"))
    assert resp is not None and resp.json()["ok"] is True, resp and resp.json()
    assert srv.get(8, 4) == struct.pack(">f", 42.25)
    assert srv.get(6, 1) == b"\x00"
    assert srv.get(20, 9) == bytes([12, 7]) + b"batch-7"

    # the PLC goes away and comes back on the same port: the gateway reconnects
    t = time.monotonic()
    srv.stop()
    m = wait_values(w, "plc-01", lambda v: "temp" in v and v["temp"].get("q") != "good",
                    timeout=10, after=t)
    assert m is not None and m.json()["values"]["temp"]["v"] is None, gw.output()[-3000:]
    srv2 = s7(port=port)
    srv2.set(0, struct.pack(">f", -3.0))
    t = time.monotonic()
    m = wait_values(w, "plc-01", lambda v: good(v, "temp") and v["temp"]["v"] == -3.0, timeout=20,
                    after=t)
    assert m is not None, gw.output()[-3000:]


def test_half_open_plc_detected_by_timeout(s7, broker, start_gateway, watch):
    """A PLC that stops answering (SIGSTOP: the TCP connection stays up) gives
    BadTimeout within the device timeout, and values come back after SIGCONT."""
    import signal
    srv = s7()
    srv.set(0, struct.pack(">h", 11))
    dev = {"name": "plc-02", "url": srv.url(), "poll": "200ms", "timeout": "300ms",
           "tags": [{"name": "count", "addr": "DB1.DBW0:int"}]}
    w = watch(broker.port)
    gw = start_gateway(gw_config(broker.port, [dev]))
    assert wait_values(w, "plc-02", lambda v: v.get("count", {}).get("v") == 11, timeout=20), \
        gw.output()[-2000:]
    t = time.monotonic()
    os.kill(srv.p.pid, signal.SIGSTOP)
    try:
        m = wait_values(w, "plc-02", lambda v: v.get("count", {}).get("q") not in (None, "good"),
                        timeout=10, after=t)
        assert m is not None, gw.output()[-3000:]
        assert time.monotonic() - t < 5
        assert "no answer within" in gw.output()
    finally:
        os.kill(srv.p.pid, signal.SIGCONT)
    srv.set(0, struct.pack(">h", 12))
    t = time.monotonic()
    assert wait_values(w, "plc-02", lambda v: v.get("count", {}).get("v") == 12, timeout=20,
                       after=t), gw.output()[-3000:]


def test_refused_items_are_counted_and_shown_in_ne107(s7, broker, start_gateway, watch):
    """DB42 does not exist in the PLC ("object does not exist" for that item in
    a reply that succeeds): the device is online and its DB1 tag good, but each
    refused read counts in the error counter and NE107 is Maintenance required
    (GET /status, /metrics) — not OK with errors 0."""
    from test_health import metric, status_of, wait_status
    srv = s7()
    srv.set(0, struct.pack(">h", 5))
    port = peers.free_port()
    dev = {"name": "plc-03", "url": srv.url(), "poll": "200ms", "timeout": "500ms",
           "tags": [{"name": "count", "addr": "DB1.DBW0:int", "access": "rw"},
                    {"name": "ghost", "addr": "DB42.DBW0"}]}
    w = watch(broker.port)
    gw = start_gateway(gw_config(broker.port, [dev], metrics={"listen": f"127.0.0.1:{port}"}))
    assert wait_values(w, "plc-03", lambda v: v.get("count", {}).get("q") == "good" and "ghost" in v,
                       timeout=20), gw.output()[-3000:]
    time.sleep(2.5)  # beyond the 1 s status interval
    st = wait_status(port, "plc-03", lambda s: s["errors"] >= 5)
    assert st["state"] == "online" and st["errors"] >= 5, st
    assert st["ne107"] == "Maintenance required", st
    assert metric(port, "fieldbridge_device_errors_total", "plc-03") >= 5
    assert metric(port, "fieldbridge_device_bad_tags", "plc-03") == 1
    # a write is counted once
    w.publish(topic("plc-03", "command"), {"id": "c", "write": {"count": 6}}, qos=1)
    r = w.wait_for(lambda m: (m.json() or {}).get("id") == "c", 10, topic=topic("plc-03", "command/response"))
    assert r is not None and r.json()["ok"] is True, r and r.json()
    assert srv.get(0, 2) == struct.pack(">h", 6)
    assert metric(port, "fieldbridge_device_writes_total", "plc-03") == 1


def test_reload_keeps_the_connection_and_its_plan(s7, broker, start_gateway, watch):
    """A config reload that renumbers every tag (a device added in front)
    keeps the S7 connection and its read plan, laid out for the negotiated
    PDU, with the tag ids moved on: no reconnect, and values arrive under
    the right names."""
    import signal  # pylint: disable=import-outside-toplevel
    from conftest import to_yaml  # pylint: disable=import-outside-toplevel
    srv = s7()
    srv.set(0, struct.pack(">f", 1.5) + struct.pack(">h", 3))
    dev = {"name": "plc-r", "url": srv.url(), "poll": "100ms", "timeout": "500ms",
           "tags": [{"name": "temp", "addr": "DB1.DBD0:real"}, {"name": "count", "addr": "DB1.DBW4:int"}]
           + [{"name": f"b{i}", "addr": f"DB1.DBB{100 + i}"} for i in range(30)]}
    w = watch(broker.port)
    cfg = gw_config(broker.port, [dev])
    gw = start_gateway(cfg)
    assert wait_values(w, "plc-r", lambda v: v.get("count", {}).get("v") == 3, timeout=20), gw.output()[-3000:]
    cfg["devices"] = [{"name": "sim-front", "url": "sim://f", "poll": "1s",
                       "tags": [{"name": f"s{i}", "addr": "counter"} for i in range(9)]}, dev]
    with open(gw.path, "w", encoding="utf-8") as f:
        f.write(to_yaml(cfg) + "\n")
    gw.proc.send(signal.SIGHUP)
    assert peers.wait_until(lambda: "reload: applied" in gw.output(), 10), gw.output()[-3000:]
    srv.set(4, struct.pack(">h", 4321))
    t = time.monotonic()
    m = wait_values(w, "plc-r", lambda v: v.get("count", {}).get("v") == 4321, timeout=5, after=t)
    assert m is not None, gw.output()[-3000:]
    v = m.json()["values"]
    assert v["temp"]["v"] == 1.5 and set(v) == {"temp", "count", *(f"b{i}" for i in range(30))}, v
    after = gw.output().split("reload requested", 1)[1]
    assert "[plc-r] connected (" not in after and "connection lost" not in after, after[-2000:]
