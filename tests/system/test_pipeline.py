"""test_pipeline.py — end-to-end checks of the per-tag pipeline and the
operational surface through `fieldbridge run`: NaN/inf never written as
numbers, scaling (and its inversion on command writes), deadband with
report-by-exception, JSON log lines, the Prometheus /metrics endpoint."""
import json
import time
import urllib.request

import fbvalues as fv
import peers
from conftest import gw_config, topic, wait_values
from test_run import CMD, DEV, TELE, device, good, ready, response


def test_nan_and_inf_are_null_and_bad(broker, start_modbus, start_gateway, watch):
    hr = [0x7FC0, 0x0000, 0x7F80, 0x0000] + fv.encode("float32", 1.25)
    mb = start_modbus({"units": {"1": {"hr": hr}}})
    tags = [{"name": "nan", "addr": "hr:0:float32"}, {"name": "inf", "addr": "hr:2:float32"},
            {"name": "ok", "addr": "hr:4:float32"}]
    w = watch(broker.port)
    start_gateway(gw_config(broker.port, [device(mb.port, tags)]))
    m = wait_values(w, DEV, lambda v: all(k in v for k in ("nan", "inf", "ok")), timeout=15)
    assert m is not None, w.messages(TELE)[-2:]
    v = m.json()["values"]
    assert v["ok"] == {"v": 1.25, "q": "good"} or (v["ok"]["v"] == 1.25 and v["ok"]["q"] == "good"), v
    for k in ("nan", "inf"):
        assert v[k]["v"] is None and v[k]["q"] == "bad", f"{k}: {v[k]} (payload {m.text()})"
    assert "NaN" not in m.text() and "Infinity" not in m.text()


def test_scaling_and_inverse_on_write(broker, start_modbus, start_gateway, watch):
    mb = start_modbus({"units": {"1": {"hr": [250, 0]}}})
    tags = [{"name": "temp", "addr": "hr:0:int16", "scale": {"factor": 0.1, "offset": -10},
             "access": "rw"},
            {"name": "pct", "addr": "hr:1:uint16", "scale": {"raw": [0, 27648], "eng": [0, 100]},
             "access": "rw"}]
    w = watch(broker.port)
    start_gateway(gw_config(broker.port, [device(mb.port, tags)]))
    m = wait_values(w, DEV, lambda v: good(v, "temp"), timeout=15)
    assert m is not None
    assert abs(m.json()["values"]["temp"]["v"] - 15.0) < 1e-9, m      # 250 * 0.1 - 10
    ready(w)
    w.publish(CMD, {"id": "s-1", "write": {"temp": 2.5, "pct": 50}}, qos=1)
    r = response(w, "s-1")
    assert r["ok"] is True, r
    assert mb.read_hr(0, 2) == [125, 13824], mb.read_hr(0, 2)          # (2.5+10)/0.1, 50% of 27648


def test_deadband_reports_by_exception(broker, start_modbus, start_gateway, watch):
    mb = start_modbus({"units": {"1": {"hr": [100]}}})
    tags = [{"name": "x", "addr": "hr:0", "deadband": 10, "heartbeat": "60s"}]
    w = watch(broker.port)
    start_gateway(gw_config(broker.port, [device(mb.port, tags, poll="100ms")]))
    assert wait_values(w, DEV, lambda v: good(v, "x") and v["x"]["v"] == 100, timeout=15)
    time.sleep(0.5)
    t = time.monotonic()
    mb.write_hr(0, [105])                       # inside the deadband: not published
    time.sleep(1.5)
    xs = [m.json()["values"]["x"]["v"] for m in w.messages(TELE)
          if m.t >= t and "x" in (m.json() or {}).get("values", {})]
    assert xs == [], f"values inside the deadband were published: {xs}"
    mb.write_hr(0, [120])                       # outside: published once
    m = wait_values(w, DEV, lambda v: "x" in v and v["x"]["v"] == 120, timeout=5, after=t)
    assert m is not None, [x.text() for x in w.messages(TELE)[-3:]]
    time.sleep(1.0)
    n = sum(1 for m in w.messages(TELE) if m.t >= t and "x" in (m.json() or {}).get("values", {}))
    assert n == 1, f"an unchanged value was published {n} times inside the deadband"


def test_json_log_lines(broker, start_modbus, start_gateway, watch):
    mb = start_modbus({"units": {"1": {"hr": [1]}}})
    w = watch(broker.port)
    gw = start_gateway(gw_config(broker.port, [device(mb.port, [{"name": "x", "addr": "hr:0"}])],
                                 log={"level": "info", "format": "json"}))
    ready(w)
    gw.stop()
    lines = [ln for ln in gw.output().splitlines() if ln.strip()]
    assert lines, "no log output"
    for ln in lines:
        try:
            j = json.loads(ln)
        except ValueError:
            raise AssertionError(f"not a JSON log line: {ln!r}") from None
        assert isinstance(j, dict), ln


def test_metrics_endpoint(broker, start_modbus, start_gateway, watch):
    mb = start_modbus({"units": {"1": {"hr": [1]}}})
    port = peers.free_port()
    w = watch(broker.port)
    start_gateway(gw_config(broker.port, [device(mb.port, [{"name": "x", "addr": "hr:0"}])],
                            metrics={"listen": f"127.0.0.1:{port}"}))
    ready(w)
    time.sleep(1)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.status == 200
        text = r.read().decode()
    assert DEV in text, f"no per-device metrics for {DEV}:\n{text[:2000]}"
    assert "# TYPE" in text, text[:500]
    status = w.messages(topic("gw-test", "status"))
    assert status, "no gateway status"


def test_status_reason_is_not_cut(broker, start_gateway, watch, tmp_path):
    """Issue 12: a device's status reason was cut at 95 bytes, mid-word. A connect
    error with a long path (here a serial line that does not exist) arrives whole."""
    line = tmp_path
    for i in range(4):
        line = line / f"plant-seven-line-three-cabinet-{i}"
    port = str(line / "ttyUSB-rs485")
    dev = {"name": "rtu", "url": f"modbus-rtu://{port}?unit=1", "poll": "200ms",
           "tags": [{"name": "x", "addr": "hr:0"}]}
    w = watch(broker.port)
    start_gateway(gw_config(broker.port, [dev]))
    m = w.wait_for(lambda m: (m.json() or {}).get("reason"), 15, topic=topic("rtu", "status"))
    assert m is not None, w.messages(topic("rtu", "status"))
    reason = m.json()["reason"]
    assert len(port) > 150
    assert port in reason and reason.endswith("No such file or directory"), reason


def test_numbers_in_shortest_decimal_form(broker, start_modbus, start_gateway, watch):
    """Issue 12: 777 with factor 0.01 was published as 7.7700000000000005 (777 × 0.01 in
    binary), and float32 statistics as 7.769999980926514; the payload text must say 7.77."""
    hr = [777, 13824] + fv.encode("float32", 7.77) + [259]
    mb = start_modbus({"units": {"1": {"hr": hr}}})
    tags = [{"name": "cents", "addr": "hr:0:int16", "scale": {"factor": 0.01}},
            {"name": "pct", "addr": "hr:1:uint16", "scale": {"raw": [0, 27648], "eng": [0, 100]}},
            {"name": "f", "addr": "hr:2:float32", "window": "10s"},
            {"name": "fs", "addr": "hr:2:float32", "scale": {"factor": 1, "offset": 0}},
            {"name": "k3", "addr": "hr:4:int16", "scale": {"factor": 0.03}}]
    w = watch(broker.port)
    start_gateway(gw_config(broker.port, [device(mb.port, tags)]))
    m = wait_values(w, DEV, lambda v: all(good(v, k) for k in ("cents", "pct", "f", "fs", "k3")), timeout=15)
    assert m is not None, w.messages(TELE)[-2:]
    text = m.text()
    for want in ('"cents":{"v":7.77,', '"pct":{"v":50,', '"f":{"v":7.77,', '"fs":{"v":7.77,',
                 '"k3":{"v":7.77,', '"min":7.77', '"max":7.77'):
        assert want in text, f"{want} not in {text}"
    assert "7.7700000000000005" not in text and "7.769999" not in text, text


def test_refused_reading_published_as_raw(broker, start_modbus, start_gateway, watch):
    """Issue 12: a value refused by plausibility was "v": null and lost; the reading
    now travels as "raw" (v stays null for bad quality)."""
    mb = start_modbus({"units": {"1": {"hr": [150, 20]}}})
    tags = [{"name": "level", "addr": "hr:0", "range": [0, 100]},
            {"name": "ok", "addr": "hr:1", "range": [0, 100]}]
    w = watch(broker.port)
    start_gateway(gw_config(broker.port, [device(mb.port, tags)]))
    m = wait_values(w, DEV, lambda v: "level" in v and good(v, "ok"), timeout=15)
    assert m is not None, w.messages(TELE)[-2:]
    v = m.json()["values"]
    lv = {k: x for k, x in v["level"].items() if k != "ts"}
    assert lv == {"v": None, "raw": 150, "q": "bad", "reason": "BadOutOfRange"}, v
    assert m.text().index('"raw"') > m.text().index('"level":{"v":null'), m.text()
    assert "raw" not in v["ok"], v


def test_step_accepted_after_consistent_samples(broker, start_modbus, start_gateway, watch):
    """A real step (10 → 100 with max_rate 1/s) is accepted after spike_accept samples
    that agree, instead of after 90 s when max_rate × time would cover it."""
    mb = start_modbus({"units": {"1": {"hr": [10]}}})
    tags = [{"name": "x", "addr": "hr:0", "max_rate": 1, "spike_accept": 3}]
    w = watch(broker.port)
    start_gateway(gw_config(broker.port, [device(mb.port, tags, poll="200ms")]))
    assert wait_values(w, DEV, lambda v: good(v, "x") and v["x"]["v"] == 10, timeout=15)
    t = time.monotonic()
    mb.write_hr(0, [100])
    m = wait_values(w, DEV, lambda v: good(v, "x") and v["x"]["v"] == 100, timeout=10, after=t)
    assert m is not None, [x.text() for x in w.messages(TELE) if x.t >= t][:6]
    xs = [x.json()["values"]["x"] for x in w.messages(TELE) if x.t >= t and x.t <= m.t]
    bad = [x for x in xs if x["q"] == "bad"]
    assert len(bad) == 2 and all(x["raw"] == 100 and x["reason"] == "BadSensorFailure" for x in bad), xs
