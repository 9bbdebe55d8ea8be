"""test_vibration.py — vibration condition monitoring end to end (issue 18):
the real binary, a real Mosquitto and a paho subscriber.

What is checked: features of a recorded waveform (a WAV file of a known sine:
RMS A/√2, velocity A/(2πf)/√2, kurtosis 1.5, crest √2, ISO zone D and its
alarm); a waveform read from a real Modbus peer (pymodbus holding registers,
an int16 array scaled to m/s²) with the same known answers; the shipped
scenario examples/conveyor-pdm.yaml raising its anomaly alarm after the
outer-race defect appears (and the ISO zone staying A); the learnt baseline
surviving kill -9 (restored at once, not learnt again) and its learning state
in the gateway status.

Run: /usr/bin/python3 -m pytest tests/system/test_vibration.py -v
"""
import json
import math
import os
import re
import signal
import struct
import wave
from datetime import datetime, timezone

import pytest

import peers
from conftest import (GW_STATUS, ROOT, SANITIZER_RE, gw_config, merged_values, reload_gateway, run_cli, status_state,
                      to_yaml, topic)
from conftest import wait_values as wait_tele


def last_values(w, dev):
    """The latest telemetry values of a device, name → (v, q)."""
    out = {}
    for m in w.messages(topic(dev, "telemetry")):
        j = m.json()
        for k, v in (j or {}).get("values", {}).items():
            out[k] = (v.get("v"), v.get("q"))
    return out


def wait_values(w, dev, names, timeout=20.0):
    def have():
        v = last_values(w, dev)
        return v if all(n in v and v[n][1] == "good" for n in names) else None
    v = peers.wait_until(have, timeout)
    assert v, f"no good values for {names} within {timeout}s; have {last_values(w, dev)}"
    return v


def alarm_events(w, dev):
    return [m.json() for m in w.messages(topic(dev, "alarm")) if (m.json() or {}).get("type") == "event"]


def write_wav(path, fs, seconds, amp, freq):
    """Mono PCM16: amp (fraction of full scale) · sin(2π·freq·t)."""
    with wave.open(path, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(fs)
        frames = bytearray()
        for i in range(int(fs * seconds)):
            frames += struct.pack("<h", int(round(amp * 32767 * math.sin(2 * math.pi * freq * i / fs))))
        f.writeframes(bytes(frames))


@pytest.mark.smoke
def test_wav_recording_features(tmp_path, broker, start_gateway, watch):
    """A recording of a 100 Hz sine at half full scale, scaled so that full scale is 20 m/s²: an
    acceleration amplitude of 10 m/s².  Every feature has a known value."""
    write_wav(str(tmp_path / "rec.wav"), 8192, 2, 0.5, 100)
    A = 0.5 * 32767 / 32768 * 20  # what the PCM16 samples hold, × the scale
    dev = {"name": "pump", "url": "file://rec.wav", "poll": "200ms",  # five blocks a second: time-lapse
           "tags": [{"name": "acc", "addr": "0", "scale": {"factor": 20},
                     "vibration": {"fs": 8192, "block": 8192, "unit": "m/s2",
                                   "iso": {"group": 2, "mounting": "rigid"}}}]}
    w = watch(broker.port)
    start_gateway(gw_config(broker.port, [dev]))
    names = ["acc.rms", "acc.velocity_rms", "acc.kurtosis", "acc.crest_factor", "acc.skewness", "acc.peak",
             "acc.iso_zone"]
    v = wait_values(w, "pump", names)
    assert abs(v["acc.rms"][0] - A / math.sqrt(2)) / (A / math.sqrt(2)) < 0.002, v
    vel = A / (2 * math.pi * 100) / math.sqrt(2) * 1000  # mm/s
    assert abs(v["acc.velocity_rms"][0] - vel) / vel < 0.005, (v["acc.velocity_rms"], vel)
    assert abs(v["acc.kurtosis"][0] - 1.5) < 0.01
    assert abs(v["acc.crest_factor"][0] - math.sqrt(2)) < 0.01
    assert abs(v["acc.skewness"][0]) < 0.01
    assert abs(v["acc.peak"][0] - A) / A < 0.002
    assert v["acc.iso_zone"][0] == "D"  # 11.25 mm/s > 4.5
    # the waveform itself is not published, its features are
    assert "acc" not in last_values(w, "pump")
    ev = peers.wait_until(lambda: [e for e in alarm_events(w, "pump")
                                   if e["alarm"] == "acc/iso_zone_d" and e["event"] == "raised"], 10)
    assert ev, alarm_events(w, "pump")
    assert abs(ev[0]["value"] - vel) / vel < 0.005
    assert ev[0]["by"] == "vibration:pump/acc"
    assert ev[0]["priority"] == "high"
    assert any(e["alarm"] == "acc/iso_zone_c" and e["event"] == "raised" for e in alarm_events(w, "pump"))


def test_modbus_waveform(tmp_path, broker, start_gateway, start_modbus, watch):
    """A sensor's sample buffer in holding registers of a real Modbus peer (pymodbus): 1024 int16
    values of a 64 Hz sine of 10000 counts at 1024 Hz, scaled by 0.0005 to 5 m/s²."""
    n, fs, f, counts = 1024, 1024, 64, 10000
    hr = [int(round(counts * math.sin(2 * math.pi * f * i / fs))) & 0xFFFF for i in range(n)]
    mb = start_modbus({"units": {"1": {"hr": hr + [0] * 8}}})
    dev = {"name": "fan", "url": f"modbus-tcp://127.0.0.1:{mb.port}?unit=1", "poll": "500ms",
           "tags": [{"name": "acc", "addr": "hr:0:int16", "scale": {"factor": 0.0005},
                     "vibration": {"fs": fs, "block": n, "iso": {}}},
                    {"name": "after", "addr": "hr:1024"}]}
    w = watch(broker.port)
    start_gateway(gw_config(broker.port, [dev]))
    v = wait_values(w, "fan", ["acc.rms", "acc.velocity_rms", "acc.iso_zone", "after"])
    A = counts * 0.0005
    assert abs(v["acc.rms"][0] - A / math.sqrt(2)) < 1e-3 * A, v
    vel = A / (2 * math.pi * f) / math.sqrt(2) * 1000
    assert abs(v["acc.velocity_rms"][0] - vel) / vel < 0.005, (v["acc.velocity_rms"], vel)
    assert v["acc.iso_zone"][0] == "D"
    assert v["after"][0] == 0  # the ordinary tag of the same group still read
    # 1024 registers in requests of at most 125: 9 requests per waveform read (+1 for `after`)
    st = peers.wait_until(lambda: next((m.json() for m in reversed(w.messages(GW_STATUS))
                                        if (m.json() or {}).get("vibration", {}).get("fan/acc", {}).get("blocks", 0)
                                        >= 2), None), 10)
    assert st, "no status with two analysed blocks"
    d = st["devices"]["fan"]
    assert d["errors"] == 0
    blocks = st["vibration"]["fan/acc"]["blocks"]
    assert d["requests"] >= 10 * blocks


def test_modbus_waveform_refused_read(tmp_path, broker, start_gateway, start_modbus, watch):
    """A buffer the device does not have in full (600 registers mapped, a block of 1024 asked for):
    the request past the end gets exception 02, the waveform is Bad (its features too), the group's
    ordinary tag is still read, and the error is counted."""
    mb = start_modbus({"units": {"1": {"hr": [7] * 600}}})
    dev = {"name": "fan", "url": f"modbus-tcp://127.0.0.1:{mb.port}?unit=1", "poll": "500ms",
           "tags": [{"name": "acc", "addr": "hr:0:int16", "vibration": {"fs": 1024, "block": 1024}},
                    {"name": "first", "addr": "hr:1"}]}
    w = watch(broker.port)
    g = start_gateway(gw_config(broker.port, [dev]))
    v = peers.wait_until(lambda: (lambda x: x if "acc.rms" in x and "first" in x else None)(last_values(w, "fan")), 20)
    assert v, last_values(w, "fan")
    assert v["first"] == (7, "good")
    assert v["acc.rms"][1] != "good" and v["acc.rms"][0] is None, v
    st = peers.wait_until(lambda: next((m.json() for m in reversed(w.messages(GW_STATUS))
                                        if (m.json() or {}).get("devices", {}).get("fan", {}).get("errors", 0) >= 1),
                                       None), 10)
    assert st, "the refused request is not counted"
    # requests of 125 registers: 0, 125, 250, 375 answered, the one at 500 refused
    assert "waveform read hr:500 (125 registers) failed" in g.output(), g.output()[-2000:]


def _example(tmp_path, port, onset, learn):
    with open(os.path.join(ROOT, "examples", "conveyor-pdm.yaml"), encoding="utf-8") as f:
        text = f.read()
    assert "onset=3h" in text and "learn_blocks: 60" in text
    text = text.replace("onset=3h", f"onset={onset}").replace("learn_blocks: 60", f"learn_blocks: {learn}")
    text = text.replace("status_interval: 10s", "status_interval: 1s")
    p = tmp_path / "conveyor-pdm.yaml"
    p.write_text(text)
    return str(p), {"FB_MQTT_URL": f"mqtt://127.0.0.1:{port}", "FB_BUFFER_DIR": str(tmp_path / "buf")}


def test_conveyor_example_raises_anomaly(tmp_path, broker, watch):
    """examples/conveyor-pdm.yaml, with the defect's onset moved from 3 h to 40 min of operation
    (20 s at accel=120) and a 10-block baseline so that the test takes half a minute."""
    path, env = _example(tmp_path, broker.port, "40m", 10)
    w = watch(broker.port)
    dev = "conveyor-01"
    tele = f"plant/conveyors/line-2/{dev}/telemetry"
    alarm = f"plant/conveyors/line-2/{dev}/alarm"
    g = peers.Proc([os.environ.get("FB_BIN", os.path.join(ROOT, "build", "fieldbridge")), "run", "-c", path],
                   str(tmp_path / "gw.log"), env={**os.environ, **env})
    try:
        ev = w.wait_for(lambda m: (m.json() or {}).get("type") == "event" and m.json().get("alarm") == "accel/anomaly"
                        and m.json().get("event") == "raised", timeout=60, topic=alarm)
        assert ev, f"no anomaly alarm; log:\n{g.output()[-3000:]}"
        j = ev.json()
        assert j["kind"] == "external" and j["priority"] == "low"
        assert j["by"].startswith("vibration:conveyor-01/accel (")
        # learnt from blocks before the onset (20 s), raised after it
        first = min(m.t for m in w.messages(tele))
        assert ev.t - first > 19, ev.t - first
        vals = {}
        for m in w.messages(tele):
            for k, v in m.json()["values"].items():
                vals.setdefault(k, []).append(v)
        assert len(vals) == 20, sorted(vals)  # every feature tag of the channel
        bpfo = [v["v"] for v in vals["accel.envelope.bpfo"] if v["q"] == "good"]
        healthy = sorted(bpfo[:10])[5]
        assert max(bpfo) > 3 * healthy, bpfo  # the BPFO line rose above the healthy motor's
        assert {v["v"] for v in vals["accel.iso_zone"]} == {"A"}  # the ISO velocity hardly sees it
        out = g.output()
        assert "baseline learnt from 10 blocks" in out
    finally:
        g.stop()
    assert not SANITIZER_RE.search(g.output()), g.output()[-3000:]


def _status_channel(w, name, pred, timeout=20.0, after=0.0):
    def find():
        for m in reversed(w.messages(GW_STATUS)):
            if m.t < after:
                continue
            ch = ((m.json() or {}).get("vibration") or {}).get(name)
            if ch and pred(ch):
                return ch
        return None
    return peers.wait_until(find, timeout)


@pytest.mark.smoke
def test_baseline_survives_kill9(tmp_path, broker, start_gateway, watch):
    """The baseline is learnt, saved crash-safe next to the buffer, and after kill -9 restored at
    once: the restarted gateway does not learn again (its status says learnt from the first
    message on, and the anomaly score is published Good from the first block)."""
    buf = tmp_path / "buf"
    dev = {"name": "m", "url": "sim://m?seed=3", "poll": "100ms",
           "tags": [{"name": "acc", "addr": "motor:rpm=1500",
                     "vibration": {"fs": 8192, "block": 2048, "speed": "1500rpm",
                                   "anomaly": {"learn_blocks": 15}}}]}
    cfg = gw_config(broker.port, [dev], buffer={"path": str(buf)})
    w = watch(broker.port)
    g = start_gateway(cfg)
    ch = _status_channel(w, "m/acc", lambda c: c.get("baseline") == "learning")
    assert ch and ch["learn_blocks"] == 15, "the status shows the learning state"
    ch = _status_channel(w, "m/acc", lambda c: c.get("baseline") == "learnt")
    assert ch, f"never learnt: {g.output()[-2000:]}"
    path = buf / "vibration-baseline.json"
    saved = json.loads(path.read_text())
    assert saved["format"] == "fieldbridge vibration baseline"
    c = saved["channels"][0]
    assert c["tag"] == "m/acc" and c["learned"] == 15
    rms = next(f for f in c["features"] if f["name"] == "rms")
    assert rms["n"] == 15 and rms["mean"] > 0
    g.proc.kill9()
    assert not (buf / "vibration-baseline.json.tmp").exists()
    t0 = peers.time.monotonic()
    restart = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    g2 = start_gateway(cfg, name="again")
    # (a status sent before the analysis has read the saved baseline shows no baseline state)
    first = w.wait_for(lambda m: "baseline" in ((m.json() or {}).get("vibration", {}).get("m/acc") or {}), timeout=15,
                       topic=GW_STATUS, after=t0)
    assert first, "no status after the restart"
    assert first.json()["vibration"]["m/acc"]["baseline"] == "learnt", first.json()["vibration"]
    # the first anomaly scores after the restart are numbers, not BadWaitingForInitialData (the
    # buffer may deliver records of before the kill again: at least once; only new ones count)
    def new(x):
        j = x.json() or {}
        return "acc.anomaly" in j.get("values", {}) and j.get("ts", "") >= restart
    m = w.wait_for(new, timeout=10, topic=topic("m", "telemetry"))
    assert m and m.json()["values"]["acc.anomaly"]["q"] == "good", m
    assert re.search(r"baseline restored \(15 of 15 blocks learnt\)", g2.output())
    assert json.loads(path.read_text())["channels"][0]["features"] == c["features"]  # not relearnt


def test_baseline_relearnt_when_settings_change(tmp_path, broker, start_gateway, watch):
    """A baseline learnt with other analysis settings is not trusted: learnt again, and said so."""
    buf = tmp_path / "buf"

    def cfg(fs):
        return gw_config(broker.port, [{"name": "m", "url": "sim://m?seed=3", "poll": "100ms",
                                        "tags": [{"name": "acc", "addr": "motor:rpm=1500",
                                                  "vibration": {"fs": fs, "block": 2048,
                                                                "anomaly": {"learn_blocks": 5}}}]}],
                         buffer={"path": str(buf)})
    w = watch(broker.port)
    g = start_gateway(cfg(8192))
    assert _status_channel(w, "m/acc", lambda c: c.get("baseline") == "learnt")
    g.stop()
    t0 = peers.time.monotonic()
    g2 = start_gateway(cfg(4096), name="other")
    assert _status_channel(w, "m/acc", lambda c: c.get("baseline") == "learning", after=t0)
    assert "learnt with other analysis settings: learning again" in g2.output()


VIB_CFG = """\
gateway: {id: gw1, site: s}
devices:
  - name: m
    url: "sim://m?seed=1"
    poll: 1s
    tags:
      - name: acc
        addr: "motor:rpm=1500"
        vibration:
          fs: 8192
          block: 4096
          speed: 1500rpm
          bearing: {balls: 9, ball_diameter: 7.94, pitch_diameter: 39.04}
          envelope: {band: [1000, 3000]}
          iso: {group: 2, mounting: rigid}
          anomaly: {learn_blocks: 20, z: 4}
"""


def _check(tmp_path, text):
    p = tmp_path / "vib.yaml"
    p.write_text(text)
    return str(p), run_cli("check", "-c", str(p))


def _err_at(r, path, line, col, words):
    out = r.stdout + r.stderr
    assert r.returncode == 2, f"rc={r.returncode}\n{out}"
    m = re.search(re.escape(path) + r":(\d+):(\d+): (.*)", out)
    assert m, f"no {path}:line:col: in\n{out}"
    assert (int(m.group(1)), int(m.group(2))) == (line, col), (m.group(0), line, col)
    assert words in m.group(3), (m.group(3), words)


def test_vibration_config_good(fb, tmp_path):
    path, r = _check(tmp_path, VIB_CFG)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("old,new,line,col,words", [
    ("fs: 8192", "fs: -5", 10, 15, "fs"),                                      # a negative rate
    ("block: 4096", "block: 4095", 11, 18, "even"),                            # an odd block
    ("speed: 1500rpm", "speed: fast", 12, 18, "speed"),                        # not a speed
    ("pitch_diameter: 39.04", "pitch_diameter: 5", 13, 68, "pitch_diameter"),  # D ≤ d
    ("band: [1000, 3000]", "band: [1000, 9000]", 14, 28, "Nyquist"),             # above Nyquist
    ("group: 2", "group: 7", 15, 24, "group"),
    ("z: 4", "z: banana", 16, 42, "z"),
    ("          fs: 8192\n", "          fs: 8192\n          colour: red\n", 11, 11, "colour"),
])
def test_vibration_config_errors(fb, tmp_path, old, new, line, col, words):
    """Every bad value of a vibration: section is reported at its file:line:col, exit 2."""
    assert old in VIB_CFG
    path, r = _check(tmp_path, VIB_CFG.replace(old, new))
    _err_at(r, path, line, col, words)


def test_waveform_addresses_refused(fb, tmp_path):
    """A Modbus waveform must be numbers in registers that exist; a simulated plant is no waveform."""
    base = VIB_CFG.replace('url: "sim://m?seed=1"', 'url: "modbus-tcp://127.0.0.1:5020?unit=1"')
    for addr, words in (("co:0", "holding or input registers"),
                        ("hr:0:string[4]", "numbers"),
                        ("hr:64000:float32", "65536 registers")):
        path, r = _check(tmp_path, base.replace('addr: "motor:rpm=1500"', f'addr: "{addr}"'))
        _err_at(r, path, 8, 15, words)
    path, r = _check(tmp_path, VIB_CFG.replace('addr: "motor:rpm=1500"', 'addr: "valve:travel=5s"'))
    _err_at(r, path, 8, 15, "not a waveform")


def test_check_notes_baselines_without_buffer(fb, tmp_path):
    """Without a buffer directory the baselines cannot be kept: check says so (and passes)."""
    path, r = _check(tmp_path, VIB_CFG)
    assert r.returncode == 0
    assert "baselines but no buffer: directory" in r.stdout + r.stderr
    path, r = _check(tmp_path, VIB_CFG + f"buffer: {{path: {tmp_path / 'buf'}}}\n")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "baselines but no buffer" not in r.stdout + r.stderr


# ---------------------------------------------------------------- reload (issue 20)
# The analysis restarts on the new model at every reload; what a channel learnt carries over by its
# waveform tag's path when the baseline stays valid (docs/vibration.md#reload).

POLL = 0.5  # one block of 4096 samples at 8192 Hz per poll: one window per poll, in real time


def _vdev(**vib):
    v = {"fs": 8192, "block": 4096, "speed": "1500rpm", "anomaly": {"learn_blocks": 4}}
    v.update(vib)
    return {"name": "m", "url": "sim://m?seed=3", "poll": "500ms",
            "tags": [{"name": "acc", "addr": "motor:rpm=1500", "vibration": v}]}


def _cdev(name):
    return {"name": name, "url": f"sim://{name}", "poll": "100ms", "tags": [{"name": "n", "addr": "counter"}]}


def _ts(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def _feature_times(w, tag="acc.rms", after=0.0):
    """Source time stamps of the channel's published results (one per analysed block)."""
    out = []
    for m in w.messages(topic("m", "telemetry")):
        if m.t < after:
            continue
        v = ((m.json() or {}).get("values") or {}).get(tag)
        if v and v.get("q") == "good":
            out.append(_ts(v.get("ts") or m.json()["ts"]))
    return sorted(set(out))


def _refused(gw, cfg, timeout=15):
    """Write cfg, SIGHUP, and return the refusal's log line (fails when it is applied)."""
    pat = re.compile(r"reload(?:: applied \((\{.*\})\)| refused: (.*))")
    n = len(pat.findall(gw.output()))
    with open(gw.path, "w", encoding="utf-8") as f:
        f.write(to_yaml(cfg) + "\n")
    gw.proc.send(signal.SIGHUP)
    found = peers.wait_until(lambda: (lambda x: x[n] if len(x) > n else None)(pat.findall(gw.output())), timeout)
    assert found, "no reload result in the log:\n" + gw.output()[-3000:]
    assert not found[0], f"an invalid configuration was applied: {found[0]}"
    return found[1]


@pytest.mark.smoke
@pytest.mark.parametrize("buffered", [False, True], ids=["memory", "buffer"])
def test_reload_adding_a_device_keeps_the_analysis_going(tmp_path, broker, start_gateway, watch, buffered):
    """A running analysis with a learnt baseline (kept in memory only, or also in the buffer
    directory's file) gets a reload that adds an unrelated device: applied, the waveform device and
    the other one are kept (not restarted, no offline status), every window's result still comes
    (no block missed across the reload), and the baseline carries over in memory — still learnt,
    the anomaly score Good from the first block after the reload, nothing learnt again, nothing
    read back from the file."""
    extra = {"buffer": {"path": str(tmp_path / "buf")}} if buffered else {}
    cfg = gw_config(broker.port, [_vdev(), _cdev("c")], **extra)
    w = watch(broker.port)
    g = start_gateway(cfg)
    assert _status_channel(w, "m/acc", lambda c: c.get("baseline") == "learnt"), g.output()[-2000:]
    peers.time.sleep(2 * POLL)
    blocks0 = _status_channel(w, "m/acc", lambda c: True)["blocks"]
    t0 = peers.time.monotonic()
    wall0 = peers.time.time()
    cfg["devices"].append(_cdev("new"))
    ch = reload_gateway(g, cfg)
    assert ch["devices"]["added"] == ["new"] and ch["devices"]["changed"] == [], ch
    assert ch["devices"]["kept"] == 2, ch
    assert ch["vibration"] == {"analysis": "restarted", "added": [], "removed": [], "changed": [],
                               "unchanged": ["m/acc"], "relearning": []}, ch
    assert wait_tele(w, "new", lambda v: "n" in v, timeout=10, after=t0), "the added device never came"
    # the first result after the reload already compares with the learnt baseline
    m = wait_tele(w, "m", lambda v: "acc.anomaly" in v, timeout=10, after=peers.time.monotonic())
    assert m and m.json()["values"]["acc.anomaly"]["q"] == "good", m and m.json()
    peers.time.sleep(3 * POLL)
    times = [t for t in _feature_times(w) if t > wall0 - 3 * POLL]
    assert times and times[0] < wall0 and times[-1] > wall0 + 2 * POLL, (times, wall0)  # across the reload
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert max(gaps) < 1.5 * POLL, f"a window was missed across the reload: gaps {gaps}"
    for d in ("m", "c"):
        assert not [x for x in w.messages(topic(d, "status")) if x.t > t0 and status_state(x) == "offline"], d
    ch = _status_channel(w, "m/acc", lambda c: True, after=peers.time.monotonic())
    assert ch and ch["baseline"] == "learnt" and ch["blocks"] > blocks0, (ch, blocks0)  # counted on
    out = g.output()
    assert out.count("baseline learnt from 4 blocks") == 1, "learnt again after the reload"
    assert "learning the baseline again" not in out and "learning again" not in out
    assert "baseline restored" not in out
    if buffered:
        saved = json.loads((tmp_path / "buf" / "vibration-baseline.json").read_text())
        assert saved["channels"][0]["tag"] == "m/acc" and saved["channels"][0]["learned"] == 4, saved


def test_reload_applies_a_changed_vibration_setting(tmp_path, broker, start_gateway, watch):
    """A reload that changes the analysis of a channel takes effect: a new band's feature tag is
    published, ISO zones appear, and the anomaly baseline — learnt for other settings (the
    learning length is part of what it depends on) — is learnt again, as the answer says."""
    cfg = gw_config(broker.port, [_vdev()])
    w = watch(broker.port)
    g = start_gateway(cfg)
    assert _status_channel(w, "m/acc", lambda c: c.get("baseline") == "learnt"), g.output()[-2000:]
    assert "acc.band.low" not in merged_values(w, "m")
    t0 = peers.time.monotonic()
    cfg["devices"] = [_vdev(bands={"low": [10, 500]}, iso={"group": 2, "mounting": "rigid"},
                            anomaly={"learn_blocks": 6})]
    ch = reload_gateway(g, cfg)
    v = ch["vibration"]
    assert v["analysis"] == "restarted" and v["changed"] == ["m/acc"] and v["relearning"] == ["m/acc"], ch
    m = wait_tele(w, "m", lambda x: "acc.band.low" in x and "acc.iso_zone" in x, timeout=10, after=t0)
    assert m, merged_values(w, "m", after=t0)
    vals = m.json()["values"]
    assert vals["acc.band.low"]["q"] == "good" and vals["acc.band.low"]["v"] > 0, vals
    assert vals["acc.iso_zone"]["v"] in ("A", "B", "C", "D"), vals
    st = _status_channel(w, "m/acc", lambda c: c.get("learn_blocks") == 6, after=t0)
    assert st, "the new learning length is not in the status"
    assert _status_channel(w, "m/acc", lambda c: c.get("learn_blocks") == 6 and c.get("baseline") == "learnt",
                           after=t0), "the baseline was not learnt again"
    assert "baseline learnt from 6 blocks" in g.output()
    assert "learning the baseline again (6 blocks)" in g.output()


@pytest.mark.smoke
def test_reload_removes_and_adds_the_analysis(tmp_path, broker, start_gateway, watch):
    """A reload to a configuration without waveform tags (and without the vibration: section) stops
    the analysis cleanly: no more results, the other device goes on; a reload that adds them back
    starts it again and results come.  The gateway stops cleanly afterwards (under ASan: every
    block pool freed with every block back)."""
    cfg = gw_config(broker.port, [_vdev(), _cdev("c")], vibration={"threads": 2})
    w = watch(broker.port)
    g = start_gateway(cfg)
    assert wait_tele(w, "m", lambda v: "acc.rms" in v, timeout=20)
    without = gw_config(broker.port, [_cdev("c")])
    ch = reload_gateway(g, without)
    assert ch["vibration"] == {"analysis": "stopped", "added": [], "removed": ["m/acc"], "changed": [],
                               "unchanged": [], "relearning": []}, ch
    assert ch["devices"]["removed"] == ["m"] and ch["devices"]["kept"] == 1, ch
    t1 = peers.time.monotonic()
    assert wait_tele(w, "c", lambda v: "n" in v, timeout=10, after=t1 + 1.0), "the other device stopped"
    assert not [m for m in w.messages(topic("m", "telemetry")) if m.t > t1 + 0.5], "results after the stop"
    assert "vibration" not in (_last_status(w) or {"vibration": 1})
    ch = reload_gateway(g, cfg)
    assert ch["vibration"]["analysis"] == "started" and ch["vibration"]["added"] == ["m/acc"], ch
    t2 = peers.time.monotonic()
    assert wait_tele(w, "m", lambda v: v.get("acc.rms", {}).get("q") == "good", timeout=10, after=t2)
    assert _status_channel(w, "m/acc", lambda c: c.get("blocks", 0) >= 1, after=t2)
    assert g.stop() == 0, g.output()[-3000:]


def _last_status(w):
    for m in reversed(w.messages(GW_STATUS)):
        j = m.json()
        if isinstance(j, dict) and "devices" in j:
            return j
    return None


def test_invalid_vibration_reload_is_refused(tmp_path, broker, start_gateway, watch):
    """An invalid vibration setting is refused with its file:line:col and the running analysis goes
    on unchanged; a valid change after it is applied."""
    cfg = gw_config(broker.port, [_vdev()])
    w = watch(broker.port)
    g = start_gateway(cfg)
    assert wait_tele(w, "m", lambda v: "acc.rms" in v, timeout=20)
    bad = gw_config(broker.port, [_vdev(block=4095)])
    why = _refused(g, bad)
    assert "the running one stays" in why, why
    assert re.search(r"gw0\.yaml:\d+:\d+: vibration\.block: 4095 samples: a block must be an even number", g.output())
    t1 = peers.time.monotonic()
    m = wait_tele(w, "m", lambda v: v.get("acc.rms", {}).get("q") == "good", timeout=10, after=t1)
    assert m, "the running analysis stopped"
    assert g.alive()
    ch = reload_gateway(g, gw_config(broker.port, [_vdev(bands={"low": [10, 500]})]))
    assert ch["vibration"]["changed"] == ["m/acc"], ch
    assert wait_tele(w, "m", lambda v: "acc.band.low" in v, timeout=10, after=t1)


@pytest.mark.smoke
def test_reload_that_fails_midway_resumes_the_analysis(tmp_path, broker, start_gateway, watch):
    """A reload that fails after the analysis was stopped — the edge thread cannot pause because a
    script is blocked in a read (here on a named pipe the test holds shut) — is undone: refused
    with the reason, the analysis resumes on its learnt baseline (results Good again, nothing
    learnt again), the kept devices go on, the added one never appears; once the script is
    released a later reload applies.  Under ASan: the undone analysis frees nothing twice."""
    flag, fifo = tmp_path / "block-now", tmp_path / "hold"
    os.mkfifo(fifo)
    (tmp_path / "hold.lua").write_text(f"""
function on_timer(now)
  local f = io.open("{flag}", "r")
  if f then
    f:close()
    os.remove("{flag}")
    fb.warn("blocking on the pipe")
    local p = io.open("{fifo}", "r")
    if p then p:read("a"); p:close() end
  end
end
""")
    cfg = gw_config(broker.port, [_vdev(), _cdev("c")],
                    scripts=[{"name": "hold", "file": str(tmp_path / "hold.lua"), "timer": "100ms",
                              "libraries": ["io", "os"]}])
    w = watch(broker.port)
    g = start_gateway(cfg)
    assert _status_channel(w, "m/acc", lambda c: c.get("baseline") == "learnt"), g.output()[-2000:]
    flag.write_text("1")
    released = False
    try:
        assert peers.wait_until(lambda: "blocking on the pipe" in g.output(), 10), g.output()[-2000:]
        cfg2 = gw_config(broker.port, [_vdev(), _cdev("c"), _cdev("new")], scripts=cfg["scripts"])
        why = _refused(g, cfg2, timeout=30)
        assert "the edge thread did not pause" in why, why
        t1 = peers.time.monotonic()
        fd = os.open(fifo, os.O_WRONLY)  # the script's read returns: the edge thread runs again
        os.close(fd)
        released = True
    finally:
        if not released:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    m = wait_tele(w, "m", lambda v: v.get("acc.anomaly", {}).get("q") == "good", timeout=10, after=t1)
    assert m, f"the analysis did not resume:\n{g.output()[-3000:]}"
    assert wait_tele(w, "c", lambda v: "n" in v, timeout=10, after=t1), "the kept device stopped"
    assert not w.messages(topic("new", "telemetry")), "the refused configuration's device ran"
    ch = _status_channel(w, "m/acc", lambda c: c.get("baseline") == "learnt", after=t1)
    assert ch, "the baseline is no longer learnt after the undo"
    out = g.output()
    assert "reload undo" not in out, out[-3000:]
    assert out.count("baseline learnt from 4 blocks") == 1 and "learning the baseline again" not in out, out[-3000:]
    ch = reload_gateway(g, cfg2, timeout=20)
    assert ch["devices"]["added"] == ["new"] and ch["vibration"]["unchanged"] == ["m/acc"], ch
    assert wait_tele(w, "new", lambda v: "n" in v, timeout=10, after=peers.time.monotonic())
    assert g.stop() == 0, g.output()[-3000:]
