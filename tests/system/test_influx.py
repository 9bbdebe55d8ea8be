"""test_influx.py — the InfluxDB sink end to end: the real binary, a real
InfluxDB 1.6 (Debian's influxd, tests/peers/influxdb.py) and sim:// devices.

What is checked, and against what:
  - every value type is written and read back with InfluxDB's own type and the
    value's source time stamp; the reference is the same gateway's MQTT
    telemetry (a second sink fed the same batches), read by a paho client;
  - an InfluxDB outage: with a buffer nothing is lost and the counters come
    back contiguous; kill -9 of the gateway during an outage loses nothing
    that was buffered;
  - what goes over the wire (tests/peers/http_recorder.py, a small HTTP server
    in front of or instead of InfluxDB): retries with back-off on 5xx, 429 and
    time-outs, in order (max_inflight 1: the counters of successive requests
    never go back); no retry of a 4xx; a 400 "partial write" from the real
    InfluxDB (a type conflict) keeps the rest of the points and is not
    retried; the 2.x write API (/api/v2/write, org, bucket, token, gzip)
    against a recorded request whose body is then written to InfluxDB 1.6 to
    prove it is valid line protocol;
  - TLS: https to influxd with our CA; a client certificate demanded by the
    recorder (Python's ssl); a wrong CA is refused and retried.

Sim counters (`counter`) make loss and order visible: each read of a device
increments the value by one, so a device's points must read 0, 1, 2, ...

Run: FB_BIN=build/fieldbridge /usr/bin/python3 -m pytest tests/system/test_influx.py -v
"""
import gzip
import os
import re
import signal
import time

import pytest

import influxdb
import peers
from conftest import GW_ID, SITE, gw_config, reload_gateway, run_cli, topic
from http_recorder import HTTPRecorder

DB = "plant"


@pytest.fixture
def influx(tmp_path):
    s = influxdb.InfluxDB(tmp_path)
    s.create_db(DB)
    yield s
    s.stop()


def influx_cfg(url, **kw):
    c = {"url": url, "db": DB, "batch": {"interval": "200ms"}, "retry": {"min": "200ms", "max": "1s"},
         "timeout": "3s"}
    c.update(kw)
    return c


def counters(ndev=1, ntags=2, poll="100ms"):
    devs = []
    for d in range(ndev):
        devs.append({"name": f"dev{d}", "url": f"sim://c{d}", "poll": poll,
                     "tags": [{"name": f"c{t}", "addr": "counter", "type": "int32"} for t in range(ntags)]})
    return devs


def points(s, measurement, field="c0"):
    """[(time_ns, value)] of a field, in time order."""
    return [(r["time"], r[field]) for r in s.rows(f'SELECT "{field}" FROM "{measurement}"', DB)
            if r[field] is not None]


def wait_points(s, measurement, n, field="c0", timeout=20):
    return peers.wait_until(lambda: len(points(s, measurement, field)) >= n and points(s, measurement, field),
                            timeout, interval=0.2)


def assert_contiguous(vals, what):
    vals = list(vals)
    assert vals, f"{what}: no values"
    missing = sorted(set(range(vals[0], vals[-1] + 1)) - set(vals))
    assert not missing, f"{what}: missing {missing[:20]} (of {vals[0]}..{vals[-1]})"
    assert len(vals) == len(set(vals)), f"{what}: duplicates"


# ------------------------------------------------------------------ types
TYPES = [  # name, sim address, type, InfluxDB field type, expected value
    ("b", "const:1", "bool", "boolean", True),
    ("i8", "const:-128", "int8", "integer", -128),
    ("u8", "const:255", "uint8", "integer", 255),
    ("i16", "const:-32768", "int16", "integer", -32768),
    ("u16", "const:65535", "uint16", "integer", 65535),
    ("i32", "const:-2147483648", "int32", "integer", -2147483648),
    ("u32", "const:4294967295", "uint32", "integer", 4294967295),
    ("i64min", "const:-1e30", "int64", "integer", -9223372036854775808),
    ("i64max", "const:1e30", "int64", "integer", 9223372036854775807),
    ("u64", "const:9007199254740993", "uint64", "integer", 9007199254740992),
    ("f32", "const:0.1", "float32", "float", 0.1),
    ("f64", "const:1e300", "float64", "float", 1e300),
    ("whole", "const:21", "float64", "float", 21.0),
    ("s", 'const:"a \\"q\\", b=c\\\\d x"', "string", "string", 'a "q", b=c\\d x'),
]


@pytest.mark.smoke
def test_every_type_with_its_type_and_time(influx, broker, watch, start_gateway):
    w = watch(broker.port, [topic("types", "telemetry")])
    tags = [{"name": n, "addr": a, "type": t} for n, a, t, _, _ in TYPES]
    tags.append({"name": "u64max", "addr": "const:1e30", "type": "uint64"})  # beyond int64: not writable
    tags.append({"name": "lost", "addr": "sine:dropout=1"})                   # always BadCommunicationError
    tags.append({"name": "w", "addr": "ramp:min=0,max=10,period=1s", "window": "1s"})
    cfg = gw_config(broker.port, [{"name": "types", "url": "sim://t", "poll": "200ms", "tags": tags}],
                    influx=influx_cfg(influx.url))
    g = start_gateway(cfg)
    assert wait_points(influx, "types", 5, field="i8"), g.output()[-3000:]
    g.stop()
    ftypes = influx.field_types("types", DB)
    for name, _, _, itype, _ in TYPES:
        assert ftypes.get(name) == itype, f"{name}: InfluxDB says {ftypes.get(name)}, want {itype}"
        assert ftypes.get(name + "_quality") == "integer"
    assert "u64max" not in ftypes and ftypes.get("u64max_quality") == "integer"
    assert "lost" not in ftypes and ftypes.get("lost_quality") == "integer"
    for sfx in ("_mean", "_stddev", "_min", "_max"):
        assert ftypes.get("w" + sfx) == "float"
    assert ftypes.get("w_count") == "integer"

    rows = influx.rows('SELECT * FROM "types"', DB)
    assert rows
    r = rows[-1]
    assert r["site"] == SITE and r["device"] == "types" and r["gateway"] == GW_ID and r.get("area") is None
    for name, _, _, _, want in TYPES:
        assert r[name] == want, f"{name}: {r[name]!r} != {want!r}"
        assert r[name + "_quality"] == 0
    assert r["u64max_quality"] == 0x803C0000  # BadOutOfRange: 2^64-1 is no InfluxDB integer
    assert r["lost_quality"] == 0x80050000    # BadCommunicationError, no value written
    assert r.get("lost") is None and r.get("u64max") is None

    # every telemetry value (MQTT, same batches) is in InfluxDB at its source time
    msgs = [m.json() for m in w.messages()]
    assert len(msgs) >= 5
    by_ms = {}
    for row in rows:
        by_ms.setdefault(row["time"] // 1000000, []).append(row)
    assert any(row["time"] % 1000000 for row in rows), "ns precision: the sub-ms part of the source time is kept"
    checked = 0
    for m in msgs:
        for name, v in m["values"].items():
            ts = v.get("ts", m["ts"])
            ms = iso_ms(ts)
            # a value carries its own "ts" only when its source time is 1 ms or
            # more away from the message's (docs/mqtt.md): without one, its
            # InfluxDB point may lie in the neighbouring millisecond
            near = (0,) if "ts" in v else (0, 1, -1)
            cands = [r for d in near for r in by_ms.get(ms + d, [])
                     if any(r.get(k) is not None for k in r if k == name or k.startswith(name + "_"))]
            assert cands, f"no point at {ts} ({ms}) for {name}"
            if v["q"] == "good" and name in dict((n, 1) for n, *_ in TYPES):
                assert any(r[name] == v["v"] or (isinstance(v["v"], float) and isinstance(r[name], float) and abs(r[name] - v["v"]) < 1e-12)
                           for r in cands), f"{name} at {ts}: influx {[r[name] for r in cands]!r}, mqtt {v['v']!r}"
                checked += 1
    assert checked >= 5 * len(TYPES)


def iso_ms(ts):
    import calendar
    m = re.match(r"(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+)\.(\d{3})Z", ts)
    y, mo, d, h, mi, s, ms = (int(x) for x in m.groups())
    return calendar.timegm((y, mo, d, h, mi, s)) * 1000 + ms


def test_precision_ms_quality_tag_and_map(influx, start_gateway):
    devs = [{"name": "press-01", "url": "sim://p", "poll": "100ms", "area": "assembly", "line": "01",
             "tags": [{"name": "temperature", "addr": "const:20"},
                      {"name": "speed", "addr": "const:5", "range": [0, 1]},   # out of range: bad
                      {"name": "hidden", "addr": "const:1"}]}]
    cfg = gw_config(None, devs, influx=influx_cfg(
        influx.url, precision="ms", quality="tag", measurement="machines",
        tags={"plant": "{site}", "machine": "{device}", "line": "L{line}"},
        map=[{"device": "press-*", "tag": "temp*", "field": "{tag}_c"},
             {"tag": "hidden", "skip": True}]))
    g = start_gateway(cfg)
    assert peers.wait_until(lambda: influx.rows('SELECT * FROM "machines" WHERE quality=\'good\'', DB), 15), \
        g.output()[-3000:]
    time.sleep(0.5)
    g.stop()
    good = influx.rows('SELECT * FROM "machines" WHERE quality=\'good\'', DB)
    bad = influx.rows('SELECT * FROM "machines" WHERE quality=\'bad\'', DB)
    assert good and bad
    assert all(r["time"] % 1000000 == 0 for r in good + bad), "ms precision"
    assert good[0]["temperature_c"] == 20 and good[0]["plant"] == SITE and good[0]["machine"] == "press-01"
    assert good[0]["line"] == "L01"
    assert good[0].get("temperature_c_quality") is None  # good values carry no quality field in tag mode
    assert bad[0]["speed_quality"] == 0x803C0000 and bad[0].get("speed") is None
    keys = influx.field_types("machines", DB)
    assert "hidden" not in keys and "hidden_quality" not in keys
    assert "temperature" not in keys


def test_alarm_events_are_points(influx, start_gateway, tmp_path):
    """Alarm transitions (issue 18) are written as fieldbridge_alarm points: a
    sine crosses the limit, and each raise and clear is one point with the
    alarm's tags and typed fields (buffered like telemetry)."""
    devs = [{"name": "boiler", "url": "sim://b", "poll": "100ms",
             "tags": [{"name": "temp", "addr": "sine:amp=20,period=2s,offset=80",
                       "alarms": {"hi": {"limit": 90, "deadband": 1, "message": "Boiler hot",
                                         "priority": "high"}}}]}]
    cfg = gw_config(None, devs, influx=influx_cfg(influx.url), buffer={"path": str(tmp_path / "buf")})
    g = start_gateway(cfg)
    ok = peers.wait_until(lambda: len(influx.rows('SELECT * FROM "fieldbridge_alarm"', DB)) >= 2, 20)
    assert ok, g.output()[-3000:]
    rows = influx.rows('SELECT * FROM "fieldbridge_alarm"', DB)
    raised = [r for r in rows if r["event"] == "raised"]
    cleared = [r for r in rows if r["event"] == "cleared"]
    assert raised and cleared, rows
    r = raised[0]
    assert r["device"] == "boiler" and r["alarm"] == "temp/hi" and r["kind"] == "hi" and r["priority"] == "high"
    assert r["state"] == "active_unacked" and r["active"] is True and r["acked"] is False
    assert r["value"] >= 90 and r["message"] == "Boiler hot" and r["severity"] == 700
    assert r["gateway"] == GW_ID and r["site"] == SITE
    assert cleared[0]["state"] == "cleared_unacked" and cleared[0]["active"] is False
    types = influx.field_types("fieldbridge_alarm", DB)
    assert types["active"] == "boolean" and types["severity"] == "integer" and types["value"] == "float"


# ----------------------------------------------------------------- outages
def test_outage_buffered_delivered_contiguous(influx, start_gateway, tmp_path):
    cfg = gw_config(None, counters(ndev=2), buffer={"path": str(tmp_path / "buf")},
                    influx=influx_cfg(influx.url))
    g = start_gateway(cfg)
    assert wait_points(influx, "dev0", 5)
    influx.stop()
    time.sleep(6)
    assert g.alive()
    influx.start()
    time.sleep(1)
    g.stop()  # a clean stop delivers what is left, or keeps it in the buffer
    # a second run delivers whatever the first could not before it stopped
    g2 = start_gateway(cfg, name="gw-again")
    time.sleep(3)
    g2.stop()
    for dev in ("dev0", "dev1"):
        pts = points(influx, dev)
        t0 = pts[0][0]
        run1 = [v for t, v in pts if v is not None]
        # the first run's values: from 0 up to the largest before the restart (counters restart at 0)
        first = []
        for v in run1:
            if first and v < first[-1]:
                break
            first.append(v)
        assert_contiguous(first, dev)
        assert first[0] == 0 and first[-1] >= 60, f"{dev}: {first[0]}..{first[-1]} after {t0}"
    assert "retrying" in g.output() or "attempt" in g.output(), "the outage must have been seen"


def test_kill9_during_outage_nothing_lost(influx, start_gateway, tmp_path):
    cfg = gw_config(None, counters(ndev=1), buffer={"path": str(tmp_path / "buf")},
                    influx=influx_cfg(influx.url))
    g = start_gateway(cfg)
    assert wait_points(influx, "dev0", 3)
    influx.stop()
    time.sleep(3)
    g.proc.kill9()
    influx.start()
    g2 = start_gateway(cfg, name="gw-after-kill")
    time.sleep(4)
    g2.stop()
    vals = [v for _, v in points(influx, "dev0")]
    first = []
    for v in vals:
        if first and v < first[-1]:
            break
        first.append(v)
    assert_contiguous(first, "dev0 before kill -9")
    assert first[0] == 0 and first[-1] >= 25, f"{first[0]}..{first[-1]}: the buffered values came back"
    assert "buffered records" in g2.output()


# ------------------------------------------------------------ over the wire
def req_counters(req):
    """The c0 values of dev0 in one request, in order."""
    out = []
    for line in req.lines():
        if line.startswith("dev0,"):
            m = re.search(r"(?:^| |,)c0=(-?\d+)i", line)
            if m:
                out.append(int(m.group(1)))
    return out


def test_retry_5xx_429_timeout_in_order(influx, start_gateway):
    rec = HTTPRecorder(upstream=f"127.0.0.1:{influx.port}")
    try:
        rec.push(("status", 503, b'{"error":"overloaded"}', {}),
                 ("status", 500, b'{"error":"engine: cache-max-memory-size exceeded"}', {}),
                 ("status", 429, b'{"error":"too many requests"}', {"Retry-After": "1"}),
                 ("hang", 4),
                 ("close",))
        cfg = gw_config(None, counters(ndev=1), influx=influx_cfg(rec.url, timeout="1s"))
        g = start_gateway(cfg)
        assert wait_points(influx, "dev0", 30, timeout=30), g.output()[-3000:]
        g.stop()
        writes = rec.writes()
        assert len(writes) >= 6
        # the refused bodies came again, identical, and the first success carries the first values
        assert writes[0].raw == writes[1].raw == writes[2].raw == writes[3].raw == writes[4].raw == writes[5].raw
        # 429 with Retry-After: 1 → the next attempt waited at least that long
        assert writes[3].t - writes[2].t >= 0.95
        seq = [v for r in writes[5:] for v in req_counters(r)]
        assert seq == sorted(seq), "requests delivered out of order"
        vals = [v for _, v in points(influx, "dev0")]
        assert_contiguous(vals, "dev0")
        assert vals[0] == 0
        out = g.output()
        assert "HTTP 503" in out and "overloaded" in out
    finally:
        rec.stop()


def test_reload_keeps_the_sink_its_connection_and_every_point(influx, start_modbus, start_gateway):
    """A config reload that adds an unrelated Modbus device in front of the
    others (every device and tag id moves) keeps the sink (docs/fleet.md):
    it is not closed and opened again, its one connection to the server
    stays (every write comes over the same TCP connection), no point is lost
    or written twice (the counters in InfluxDB stay contiguous from 0), the
    kept device's points keep their series and the new device's arrive under
    its own name."""
    rec = HTTPRecorder(upstream=f"127.0.0.1:{influx.port}")
    try:
        mb = start_modbus({"units": {"1": {"hr": [0] * 32}}, "counters": [{"unit": 1, "addr": 20, "period_ms": 50}]})
        cfg = gw_config(None, counters(ndev=1), influx=influx_cfg(rec.url))
        g = start_gateway(cfg)
        assert wait_points(influx, "dev0", 5), g.output()[-3000:]
        cfg["devices"].insert(0, {"name": "press", "url": f"modbus-tcp://127.0.0.1:{mb.port}?unit=1",
                                  "poll": "100ms", "tags": [{"name": "n", "addr": "hr:20"}]})
        ch = reload_gateway(g, cfg)
        assert ch["devices"]["added"] == ["press"] and ch["devices"]["kept"] == 1, ch
        assert ch["sinks"]["kept"] == ["influx"] and ch["sinks"]["restarted"] == [], ch
        assert wait_points(influx, "press", 5, field="n"), g.output()[-3000:]
        n = len(points(influx, "dev0"))
        assert wait_points(influx, "dev0", n + 5)
        g.stop()
        vals = [v for _, v in points(influx, "dev0")]
        assert vals[0] == 0
        assert_contiguous(vals, "dev0 across the reload")
        assert {r["device"] for r in influx.rows('SELECT * FROM "press"', DB)} == {"press"}
        writes = rec.writes()
        assert len({r.peer_port for r in writes}) == 1, [(r.peer_port, r.t) for r in writes]
        out = g.output()
        assert out.count(": writing to ") == 1 and "influx: kept across the reload" in out, out[-3000:]
    finally:
        rec.stop()


def test_4xx_not_retried(influx, start_gateway):
    rec = HTTPRecorder(upstream=f"127.0.0.1:{influx.port}")
    try:
        rec.push(("status", 400, b'{"error":"unable to parse everything"}', {}))
        cfg = gw_config(None, counters(ndev=1), influx=influx_cfg(rec.url))
        g = start_gateway(cfg)
        assert wait_points(influx, "dev0", 10), g.output()[-3000:]
        g.stop()
        writes = rec.writes()
        refused = req_counters(writes[0])
        assert refused, "the first request carried values"
        assert writes[1].raw != writes[0].raw, "a 400 was retried"
        vals = {v for _, v in points(influx, "dev0")}
        assert not vals & set(refused), "the refused body was written after all"
        assert "unable to parse everything" in g.output() and "dropped" in g.output()
    finally:
        rec.stop()


def test_partial_write_type_conflict(influx, start_gateway):
    # the shard of this week already holds dev0's c0 as a float (InfluxDB 1.x
    # types fields per shard and measurement): dev0's points conflict and are
    # refused whole (a point with one bad field is dropped), dev1's are written
    t = time.time_ns() - 10**9
    assert influx.write(DB, f"dev0,device=dev0,site={SITE} c0=1.5 {t}")[0] == 204
    rec = HTTPRecorder(upstream=f"127.0.0.1:{influx.port}")
    try:
        cfg = gw_config(None, counters(ndev=2), influx=influx_cfg(rec.url))
        g = start_gateway(cfg)
        assert wait_points(influx, "dev1", 10), g.output()[-3000:]
        g.stop()
        out = g.output()
        assert "partial write" in out and "field type conflict" in out
        bodies = [r.raw for r in rec.writes()]
        assert len(bodies) == len(set(bodies)), "a partial write was retried"
        assert any(req_counters(r) for r in rec.writes()), "dev0 was sent"
        assert [v for _, v in points(influx, "dev0", "c0")] == [1.5]
        assert_contiguous([v for _, v in points(influx, "dev1", "c1")], "dev1")
    finally:
        rec.stop()


def test_auth_error_keeps_data(tmp_path, start_gateway):
    s = influxdb.InfluxDB(tmp_path, name="authdb", auth=("admin", "right"))
    try:
        s.create_db(DB)
        pw = tmp_path / "pw"
        pw.write_text("wrong\n")
        pw.chmod(0o600)
        cfg = gw_config(None, counters(ndev=1), buffer={"path": str(tmp_path / "buf")},
                        influx=influx_cfg(s.url, username="admin", password_file=str(pw)))
        g = start_gateway(cfg)
        assert peers.wait_until(lambda: "HTTP 401" in g.output(), 10), g.output()[-3000:]
        time.sleep(2)
        g.stop()
        assert "check influx credentials" in g.output()
        assert "kept in the buffer" in g.output() or "points not delivered" in g.output()
        # the right password: the buffered values arrive
        pw.write_text("right\n")
        g2 = start_gateway(cfg, name="gw-right")
        assert peers.wait_until(lambda: len(points(s, "dev0")) > 10, 15), g2.output()[-3000:]
        g2.stop()
        first = []
        for _, v in points(s, "dev0"):
            if first and v < first[-1]:
                break
            first.append(v)
        assert first[0] == 0 and len(first) >= 15
        assert_contiguous(first, "dev0")
    finally:
        s.stop()


def test_api_v2_recorded_request(influx, start_gateway, tmp_path):
    rec = HTTPRecorder()  # answers 204
    try:
        tok = tmp_path / "token"
        tok.write_text("s3cr3t-t0ken==\n")
        tok.chmod(0o600)
        devs = [{"name": "press-01", "url": "sim://v2", "poll": "100ms", "area": "hall.1",
                 "tags": [{"name": "temperature", "addr": "const:21.5"},
                          {"name": "count", "addr": "counter", "type": "uint16"},
                          {"name": "label", "addr": 'const:"x=y \\"z\\""'}]}]
        cfg = gw_config(None, devs, influx={"url": rec.url + "/influx", "org": "acme corp", "bucket": "plant/raw",
                                            "token_file": str(tok), "precision": "ms", "gzip": True,
                                            "batch": {"interval": "200ms"}, "health": False})
        g = start_gateway(cfg)
        assert peers.wait_until(lambda: len(rec.writes()) >= 3, 10), g.output()[-3000:]
        g.stop()
        r = rec.writes()[0]
        assert r.method == "POST" and r.path == "/influx/api/v2/write"
        assert r.query == {"org": "acme corp", "bucket": "plant/raw", "precision": "ms"}
        assert r.headers["authorization"] == "Token s3cr3t-t0ken=="
        # the token is sent, never printed (a debug-level log, check; docs/security.md#secrets)
        assert "s3cr3t-t0ken" not in g.output()
        chk = run_cli("check", "-c", g.path)
        assert chk.returncode == 0 and "s3cr3t-t0ken" not in chk.stdout + chk.stderr, chk.stdout
        assert r.headers["content-encoding"] == "gzip" and r.raw[:2] == b"\x1f\x8b"
        assert r.headers["content-type"].startswith("text/plain")
        assert "expect" not in r.headers
        assert len(r.raw) < len(r.body)
        line = r.lines()[0]
        assert line.startswith(f"press-01,area=hall.1,device=press-01,gateway={GW_ID},site={SITE} "), line
        assert re.search(r" \d{13}$", line), f"ms time stamp: {line}"
        # the body is valid line protocol: InfluxDB 1.6 takes it whole
        for req in rec.writes():
            st, body = influx.write(DB, req.body.decode(), precision="ms")
            assert st == 204, body
        row = influx.rows('SELECT * FROM "press-01"', DB)[0]
        assert row["temperature"] == 21.5 and row["label"] == 'x=y "z"' and row["area"] == "hall.1"
        assert influx.field_types("press-01", DB)["count"] == "integer"
    finally:
        rec.stop()


# --------------------------------------------------------------------- TLS
def test_tls_influxd_ca_and_wrong_ca(tmp_path, certs, start_gateway):
    s = influxdb.InfluxDB(tmp_path, name="tlsdb", certs=certs)
    try:
        s.create_db(DB)
        good = gw_config(None, counters(ndev=1), influx=influx_cfg(s.url, tls={"ca": certs.path("ca.pem")}))
        g = start_gateway(good)
        assert wait_points(s, "dev0", 5), g.output()[-3000:]
        g.stop()
        bad = gw_config(None, counters(ndev=1), influx=influx_cfg(s.url, tls={"ca": certs.path("otherca.pem")}))
        g2 = start_gateway(bad, name="gw-badca")
        assert peers.wait_until(lambda: "retrying" in g2.output(), 10)
        g2.stop()
        assert re.search(r"SSL certificate|certificate verify|unable to get local issuer", g2.output()), \
            g2.output()[-2000:]
    finally:
        s.stop()


def test_tls_client_certificate(certs, start_gateway):
    rec = HTTPRecorder(certs=certs, require_client_cert=True)
    try:
        cfg = gw_config(None, counters(ndev=1), influx=influx_cfg(
            rec.url, tls={"ca": certs.path("ca.pem"), "cert": certs.path("client.pem"),
                          "key": certs.path("client.key")}))
        g = start_gateway(cfg)
        assert peers.wait_until(lambda: len(rec.writes()) >= 2, 10), g.output()[-3000:]
        g.stop()
        nocert = gw_config(None, counters(ndev=1), influx=influx_cfg(rec.url, tls={"ca": certs.path("ca.pem")}))
        before = len(rec.writes())
        g2 = start_gateway(nocert, name="gw-nocert")
        assert peers.wait_until(lambda: "retrying" in g2.output(), 10)
        g2.stop()
        assert len(rec.writes()) == before, "a client without a certificate got through"
    finally:
        rec.stop()


def test_check_describes_the_sink(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("gateway: {id: g}\ninflux: {url: \"http://127.0.0.1:8086\", db: plant, precision: ms}\n"
                 "devices: []\n")
    r = run_cli("check", "-c", str(p))
    assert r.returncode == 0, r.stderr
    assert "sink influx  http://127.0.0.1:8086/write?db=plant&precision=ms" in r.stdout
    p.write_text("gateway: {id: g}\ninflux: {url: \"http://127.0.0.1:8086\", db: plant, quality: maybe}\n")
    r = run_cli("check", "-c", str(p))
    assert r.returncode == 2
    assert re.search(r"c\.yaml:2:\d+: influx\.quality", r.stderr), r.stderr
