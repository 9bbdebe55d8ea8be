"""test_ingest.py — `fieldbridge ingest`: many gateways' MQTT telemetry into
InfluxDB, end to end with the real binary, a real Mosquitto and a real
InfluxDB 1.6.

  - JSON: a real gateway (`fieldbridge run`, mqtt: sink, sim devices) publishes;
    an ingest instance writes; every telemetry message the gateway published
    (recorded by a paho client) is in InfluxDB at its time stamp with its
    values and types; gateway status became health points.
  - Sparkplug B: a real gateway's sparkplug: sink; the metric types come from
    its births; an ingest instance started after the births asks for a
    Rebirth and then writes.
  - Scale-out: three ingest instances with one shared subscription group on
    one Mosquitto, QoS 1, persistent sessions, a buffer each; a publisher
    sends N numbered messages; one instance is killed with SIGKILL in the
    middle and started again: InfluxDB ends up with every message exactly
    once (N points, each number once), and the restarted instance picked up
    its session.

Run: FB_BIN=build/fieldbridge /usr/bin/python3 -m pytest tests/system/test_ingest.py -v
"""
import json
import os
import re
import signal
import subprocess
import time

import paho.mqtt.client as mqtt
import pytest

import influxdb
import peers
from conftest import GW_ID, SANITIZER_RE, SITE, fb_bin, gw_config, to_yaml

DB = "fleet"


@pytest.fixture
def influx(tmp_path):
    s = influxdb.InfluxDB(tmp_path, log_writes=False)
    s.create_db(DB)
    yield s
    s.stop()


class Broker:
    """Mosquitto that keeps what it queues for offline persistent sessions
    without a limit (the default drops beyond 1000 per client)."""

    def __init__(self, workdir, name="igbroker"):
        self.port = peers.free_port()
        conf = os.path.join(str(workdir), f"{name}.conf")
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence false",
                 "max_queued_messages 0", "max_inflight_messages 100", "log_dest stderr",
                 "log_type error", "log_type warning", "log_type notice", "connection_messages true"]
        if os.geteuid() == 0:
            lines.append("user root")
        with open(conf, "w", encoding="ascii") as f:
            f.write("\n".join(lines) + "\n")
        self.proc = peers.Proc(["mosquitto", "-c", conf], os.path.join(str(workdir), f"{name}.log"))
        peers.wait_port(self.port, 10, self.proc.p)

    def stop(self):
        self.proc.stop()


@pytest.fixture
def igbroker(tmp_path):
    b = Broker(tmp_path)
    yield b
    b.stop()


def ingest_cfg(name, broker_port, influx_url, tmp_path, **ingest):
    ig = {"url": f"mqtt://127.0.0.1:{broker_port}", "keepalive": "5s", "reconnect": {"min": "100ms", "max": "1s"}}
    ig.update(ingest)
    return {"gateway": {"id": name, "site": "cloud"}, "log": {"level": "info"}, "status_interval": "1s",
            "buffer": {"path": str(tmp_path / f"buf-{name}")},
            "ingest": ig,
            "influx": {"url": influx_url, "db": DB, "batch": {"interval": "100ms"},
                       "retry": {"min": "100ms", "max": "1s"}}}


class Ingest:
    def __init__(self, tmp_path, cfg, name):
        self.path = str(tmp_path / f"{name}.yaml")
        with open(self.path, "w", encoding="utf-8") as f:
            f.write(to_yaml(cfg) + "\n")
        self.log = str(tmp_path / f"{name}.log")
        self.name = name
        self.proc = None
        self.start()

    def start(self):
        self.proc = peers.Proc([fb_bin(), "ingest", "-c", self.path], self.log)

    def output(self):
        return self.proc.output()

    def stop(self):
        return self.proc.stop(signal.SIGTERM, 10)


@pytest.fixture
def ingests(tmp_path):
    started = []

    def start(cfg, name):
        i = Ingest(tmp_path, cfg, name)
        started.append(i)
        return i
    yield start
    problems = []
    for i in started:
        if i.proc.poll() is None:
            rc = i.stop()
            if rc != 0:  # e.g. a sanitizer abort at exit (leaks)
                problems.append(f"{i.name} exited with {rc} on SIGTERM at teardown ({i.log})")
        if SANITIZER_RE.search(i.output()):
            problems.append(f"sanitizer report in {i.log}:\n{i.output()[-6000:]}")
    if problems:
        pytest.fail("\n".join(problems))


def wait_connected(ing, timeout=10):
    assert peers.wait_until(lambda: "ingest: connected" in ing.output(), timeout), ing.output()[-2000:]


# -------------------------------------------------------------------- JSON
@pytest.mark.smoke
def test_json_from_a_gateway(igbroker, influx, ingests, watch, start_gateway, tmp_path):
    ing = ingests(ingest_cfg("ingest-1", igbroker.port, influx.url, tmp_path, telemetry=True,
                             types=[{"tag": "count", "type": "int64"}]), "ingest-1")
    wait_connected(ing)
    w = watch(igbroker.port, [f"{SITE}/assembly/01/press-01/telemetry"])
    devs = [{"name": "press-01", "url": "sim://p", "poll": "100ms", "area": "assembly", "line": "01",
             "tags": [{"name": "temperature", "addr": "sine:amp=10,period=60s,offset=20"},
                      {"name": "count", "addr": "counter:start=1000", "type": "uint32"},
                      {"name": "door", "addr": "square:period=1s", "type": "bool"},
                      {"name": "recipe", "addr": 'const:"PX \\"200\\", a=b"'},
                      {"name": "lost", "addr": "sine:dropout=1"},
                      {"name": "vib", "addr": "walk", "window": "1s"}]}]
    g = start_gateway(gw_config(igbroker.port, devs))
    assert peers.wait_until(lambda: len(w.messages()) >= 20, 15)
    g.stop()
    msgs = [m.json() for m in w.messages()]
    # every published message is in InfluxDB at its time stamp
    assert peers.wait_until(lambda: influx.count("press-01", "count", DB) >= len(msgs), 15), \
        (len(msgs), influx.count("press-01", "count", DB), ing.output()[-3000:])
    # each value lands at its own time stamp: the message's, or the value's
    # own "ts" when its source time differs by 1 ms or more (a slow poll, a
    # window's end), so one message may make points at two times
    expect = {}
    for m in msgs:
        for tag, v in m["values"].items():
            expect.setdefault(iso_ns(v.get("ts", m["ts"])), {})[tag] = v
    rows = {r["time"]: r for r in influx.rows('SELECT * FROM "press-01"', DB)}
    assert sorted(rows) == sorted(expect)
    for t, v in expect.items():
        r = rows[t]
        if "temperature" in v:
            assert r["temperature"] == pytest.approx(v["temperature"]["v"], abs=0, rel=1e-15)
        if "count" in v:
            assert r["count"] == v["count"]["v"]
        if "door" in v:
            assert r["door"] is v["door"]["v"]
        if "recipe" in v:
            assert r["recipe"] == 'PX "200", a=b'
        if "lost" in v:
            assert r.get("lost") is None and r["lost_quality"] == 0x80050000
        assert r["area"] == "assembly" and r["line"] == "01" and r["site"] == SITE
        if "vib" in v and "stats" in v["vib"]:
            assert r["vib_count"] == v["vib"]["stats"]["count"]
    ft = influx.field_types("press-01", DB)
    assert ft["temperature"] == "float" and ft["count"] == "integer" and ft["door"] == "boolean"
    assert ft["recipe"] == "string" and ft["vib_mean"] == "float"
    # the gateway's status became health points, tagged with its id and site
    assert peers.wait_until(lambda: influx.rows(
        f"SELECT * FROM fieldbridge_gateway WHERE gateway='{GW_ID}'", DB), 10)
    dev = influx.rows(f"SELECT * FROM fieldbridge_device WHERE gateway='{GW_ID}'", DB)
    assert dev and dev[0]["device"] == "press-01" and dev[0]["site"] == SITE
    ing.stop()
    assert re.search(r"ingest: \d+ messages received", ing.output())


def iso_ns(ts):
    import calendar
    m = re.match(r"(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+)\.(\d{3})Z", ts)
    y, mo, d, h, mi, s, ms = (int(x) for x in m.groups())
    return (calendar.timegm((y, mo, d, h, mi, s)) * 1000 + ms) * 1000000


def test_bad_messages_are_counted_not_fatal(igbroker, influx, ingests, tmp_path):
    cfg = ingest_cfg("ingest-bad", igbroker.port, influx.url, tmp_path, telemetry=True)
    cfg["metrics"] = {"listen": f"127.0.0.1:{peers.free_port()}"}
    ing = ingests(cfg, "ingest-bad")
    wait_connected(ing)
    c = mqtt.Client(client_id="badpub", protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", igbroker.port)
    c.loop_start()
    for p in (b"not json", b'{"values":{"a":{"v":[1]}}}', b"\xff\xfe", b'{"values":{"ok":{"v":1,"q":"good"}}}'):
        c.publish("s/_/_/dev/telemetry", p, qos=1).wait_for_publish(5)
    c.loop_stop()
    c.disconnect()
    assert peers.wait_until(lambda: influx.count("dev", "ok", DB) == 1, 10), ing.output()[-2000:]
    port = cfg["metrics"]["listen"].split(":")[1]
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert re.search(r'fieldbridge_source_messages_total\{source="ingest"\} 4', text), text
    assert re.search(r'fieldbridge_source_errors_total\{source="ingest"\} 3', text), text
    assert "(dropped)" in ing.output()


# --------------------------------------------------------------- Sparkplug
def spb_gateway(port):
    devs = [{"name": "press-01", "url": "sim://s", "poll": "100ms",
             "tags": [{"name": "temperature", "addr": "const:21.5"},
                      {"name": "count", "addr": "counter", "type": "int32"},
                      {"name": "on", "addr": "const:1", "type": "bool"},
                      {"name": "recipe", "addr": 'const:"PX-200"'}]}]
    cfg = gw_config(None, devs)
    cfg["sparkplug"] = {"url": f"mqtt://127.0.0.1:{port}", "group": "plant", "keepalive": "5s",
                        "reconnect": {"min": "100ms", "max": "1s"}}
    return cfg


def test_sparkplug_types_from_births(igbroker, influx, ingests, start_gateway, tmp_path):
    ing = ingests(ingest_cfg("ingest-spb", igbroker.port, influx.url, tmp_path, sparkplug={"group": "plant"}),
                  "ingest-spb")
    wait_connected(ing)
    g = start_gateway(spb_gateway(igbroker.port))
    assert peers.wait_until(lambda: influx.count("press-01", "count", DB) >= 20, 15), ing.output()[-3000:]
    g.stop()
    ft = influx.field_types("press-01", DB)
    assert ft["temperature"] == "float" and ft["count"] == "integer" and ft["on"] == "boolean"
    assert ft["recipe"] == "string"
    rows = influx.rows('SELECT * FROM "press-01"', DB)
    assert rows[0]["gateway"] == GW_ID and rows[0]["site"] == "plant"  # group → site, edge node → gateway
    vals = [r["count"] for r in rows if r["count"] is not None]
    assert vals == sorted(vals) and len(set(vals)) == len(vals)
    assert all(r["temperature_quality"] == 0 for r in rows if r["temperature"] is not None)


def test_sparkplug_late_instance_asks_for_rebirth(igbroker, influx, ingests, start_gateway, tmp_path):
    g = start_gateway(spb_gateway(igbroker.port))
    time.sleep(2)  # births are long gone when the instance starts
    ing = ingests(ingest_cfg("ingest-late", igbroker.port, influx.url, tmp_path, sparkplug=True), "ingest-late")
    assert peers.wait_until(lambda: "asked for a Rebirth" in ing.output(), 10), ing.output()[-2000:]
    assert peers.wait_until(lambda: influx.count("press-01", "count", DB) >= 5, 10), ing.output()[-3000:]
    assert influx.field_types("press-01", DB)["count"] == "integer"
    g.stop()


# ---------------------------------------------------------------- scale-out
def publisher(port, ndev, n, rate, name="pub"):
    """Publish n messages per device (QoS 1), numbered, at about `rate` messages/s in total."""
    c = mqtt.Client(client_id=name, protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(200)
    c.connect("127.0.0.1", port)
    c.loop_start()
    base = 1795860000000  # ms
    infos = []
    t0 = time.monotonic()
    k = 0
    for i in range(n):
        for d in range(ndev):
            ts = base + i
            dt = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts // 1000)) + f".{ts % 1000:03d}Z"
            msg = {"ts": dt, "seq": i, "device": f"d{d}", "values": {"n": {"v": i, "q": "good"}}}
            infos.append(c.publish(f"site/a/l/d{d}/telemetry", json.dumps(msg), qos=1))
            k += 1
            ahead = k / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
    for inf in infos:
        inf.wait_for_publish(30)
    c.loop_stop()
    c.disconnect()


def test_three_instances_shared_every_message_once(igbroker, influx, ingests, tmp_path):
    # 4000 messages, published faster than the instances write them (each
    # acknowledges a message only once its buffer holds it), so every
    # instance has a backlog at the broker when one of them is killed: what
    # the broker sent it or queued for it is kept in its persistent session
    NDEV, N = 4, 1000
    inst = [ingests(ingest_cfg(f"ig{k}", igbroker.port, influx.url, tmp_path, telemetry=True, share="writers",
                               types=[{"tag": "n", "type": "int64"}]), f"ig{k}") for k in range(3)]
    for i in inst:
        wait_connected(i)
    import threading
    th = threading.Thread(target=publisher, args=(igbroker.port, NDEV, N, 5000))
    th.start()
    time.sleep(0.4)
    inst[1].proc.kill9()  # in the middle of the stream
    time.sleep(1.5)
    inst[1].start()       # same client id: the broker resumes its session
    th.join(60)
    assert not th.is_alive()

    def complete():
        return all(influx.count(f"d{d}", "n", DB) >= N for d in range(NDEV))
    assert peers.wait_until(complete, 30), [influx.count(f"d{d}", "n", DB) for d in range(NDEV)]
    time.sleep(1)
    for d in range(NDEV):
        vals = [r["n"] for r in influx.rows(f'SELECT "n" FROM "d{d}"', DB)]
        assert sorted(vals) == list(range(N)), f"d{d}: {len(vals)} points, missing " \
                                               f"{sorted(set(range(N)) - set(vals))[:10]}"
    for i in inst:
        i.stop()
    outs = [i.output() for i in inst]
    got = [int(m) for o in (outs[0], outs[2]) for m in re.findall(r"ingest: (\d+) messages received", o)]
    # the restarted instance's log holds both runs: only the second one printed its count
    got1 = [int(m) for m in re.findall(r"ingest: (\d+) messages received", outs[1])]
    assert len(got) == 2 and all(g > 0 for g in got) and got1 and got1[-1] > 0, (got, got1)
    assert "the broker resumed our session" in outs[1]


def test_acknowledged_only_once_buffered(igbroker, influx, ingests, tmp_path):
    """InfluxDB down and a small buffer that blocks when full: the instance
    stops acknowledging once the buffer is full, so the broker keeps the
    rest; after kill -9 and a restart (InfluxDB back) every message arrives.
    An instance that acknowledged what was only queued in memory would lose
    the messages between the full buffer and the kill."""
    influx.stop()
    cfg = ingest_cfg("ig-small", igbroker.port, influx.url, tmp_path, telemetry=True,
                     types=[{"tag": "n", "type": "int64"}])
    cfg["buffer"].update({"max_size": "64KiB", "full": "block"})
    ing = ingests(cfg, "ig-small")
    wait_connected(ing)
    NDEV, N = 2, 600  # about 1200 records of ~150 bytes: twice what the buffer holds
    publisher(igbroker.port, NDEV, N, 3000)
    assert peers.wait_until(lambda: "holding the producers back" in ing.output(), 15), ing.output()[-2000:]
    time.sleep(1)
    ing.proc.kill9()
    influx.start()
    ing.start()
    assert peers.wait_until(lambda: all(influx.count(f"d{d}", "n", DB) >= N for d in range(NDEV)), 40), \
        ([influx.count(f"d{d}", "n", DB) for d in range(NDEV)], ing.output()[-2000:])
    for d in range(NDEV):
        vals = sorted(r["n"] for r in influx.rows(f'SELECT "n" FROM "d{d}"', DB))
        assert vals == list(range(N))
    assert "the broker resumed our session" in ing.output()


def test_run_and_ingest_take_their_own_configs(tmp_path):
    from conftest import run_cli
    ig = tmp_path / "ig.yaml"
    ig.write_text(to_yaml(ingest_cfg("ig-x", 1883, "http://127.0.0.1:8086", tmp_path, telemetry=True)) + "\n")
    gw = tmp_path / "gw.yaml"
    gw.write_text("gateway: {id: g}\ninflux: {url: \"http://127.0.0.1:8086\", db: x}\ndevices: []\n")
    r = run_cli("run", "-c", str(ig))
    assert r.returncode == 2 and "is an ingest config: run it with fieldbridge ingest" in r.stderr, r.stderr
    r = run_cli("ingest", "-c", str(gw))
    assert r.returncode == 2 and "has no ingest: section" in r.stderr, r.stderr
    r = run_cli("help", "ingest")
    assert r.returncode == 0 and "usage: fieldbridge ingest -c FILE" in r.stdout
    r = run_cli("check", "-c", str(ig))
    assert r.returncode == 0 and "source ingest" in r.stdout and "sink influx" in r.stdout, r.stdout + r.stderr
    # the model's sections in an ingest config would be read by nobody: refused where they are
    for extra in ("alarms: {}", "scripts: {}", "control: {period: 100ms, loops: []}", "vibration: {threads: 2}"):
        bad = tmp_path / "bad.yaml"
        bad.write_text(ig.read_text() + extra + "\n")
        r = run_cli("check", "-c", str(bad))
        key = extra.split(":")[0]
        assert r.returncode != 0 and f"{key}: and ingest: do not go together" in r.stderr, (extra, r.stderr)
    # but the metrics endpoint serves an ingest instance too (examples/ingest-influx.yaml has one)
    ok = tmp_path / "metrics.yaml"
    ok.write_text(ig.read_text() + 'metrics: {listen: "127.0.0.1:9101"}\n')
    r = run_cli("check", "-c", str(ok))
    assert r.returncode == 0 and "source ingest" in r.stdout, r.stdout + r.stderr
