"""test_revpi.py — the Revolution Pi driver end to end, on a file-backed
process image (a 4096-byte file standing in for /dev/piControl0) and the
PiCtory fixture tests/unit/data/revpi/core_dio.rsc (RevPi Core at 0, DIO at
11: I_1 = byte 11 bit 0, I_9 = byte 12 bit 0, O_1 = byte 81 bit 0,
O_2 = byte 81 bit 1, RevPiLED = byte 6).

- an external writer (this test) flips input bits; the gateway, polling at
  cycle=20ms, publishes each edge in the telemetry of the next cycle;
- an MQTT command {"id":"1","write":{"O_1":true}} sets exactly that bit;
- SIGTERM and the write watchdog write the safe state.

Uses the fixtures of conftest.py (Mosquitto on a free port, the gateway
as a child process, FB_BIN selects the binary).
"""
import datetime
import os
import signal
import time

import pytest

from conftest import gw_config, run_cli, topic

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RSC = os.path.join(ROOT, "tests", "unit", "data", "revpi", "core_dio.rsc")
DEV = "revpi-001"
TELE = topic(DEV, "telemetry")
CMD = topic(DEV, "command")
RESP = topic(DEV, "command/response")
CYCLE = 0.020

I_1 = (11, 0)
I_2 = (11, 1)
I_9 = (12, 0)
O_1 = (81, 0)
O_2 = (81, 1)
LED = 6


class Image:
    """The process image file and an external writer, like another process on a RevPi."""

    def __init__(self, path):
        self.path = str(path)
        with open(self.path, "wb") as f:
            f.write(bytes(4096))

    def read(self):
        with open(self.path, "rb") as f:
            return bytearray(f.read())

    def set_bit(self, where, value):
        byte, bit = where
        fd = os.open(self.path, os.O_RDWR)
        try:
            b = os.pread(fd, 1, byte)[0]
            b = b | (1 << bit) if value else b & ~(1 << bit)
            os.pwrite(fd, bytes([b]), byte)
        finally:
            os.close(fd)

    def bit(self, where):
        byte, bit = where
        return bool(self.read()[byte] >> bit & 1)


def revpi_device(img, options=None, poll="20ms"):
    d = {"name": DEV, "url": f"revpi://{img.path}?config={RSC}&cycle=20ms", "poll": poll,
         "area": "_", "line": "_"}
    if options:
        d["options"] = options
    d["tags"] = [{"name": "I_1", "addr": "I_1"},
                 {"name": "I_2", "addr": "I_2"},
                 {"name": "I_9", "addr": "I_9"},
                 {"name": "O_1", "addr": "O_1", "access": "rw"},
                 {"name": "O_2", "addr": "O_2", "access": "rw"},
                 {"name": "RevPiLED", "addr": "RevPiLED", "access": "rw"}]
    return d


def parse_ts(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def values(m):
    j = m.json()
    return j.get("values") if isinstance(j, dict) else None


def start(tmp_path, broker, start_gateway, watch, options=None):
    img = Image(tmp_path / "piControl0")
    w = watch(broker.port)
    gw = start_gateway(gw_config(broker.port, [revpi_device(img, options)]))
    m = w.wait_for(lambda m: (values(m) or {}).get("I_1", {}).get("q") == "good", 20, topic=TELE)
    assert m is not None, f"no good telemetry on {TELE}; got {w.messages()[:5]}\n{gw.output()[-3000:]}"
    time.sleep(0.5)  # the command subscription
    return img, w, gw


def response(w, cid, timeout=10):
    m = w.wait_for(lambda m: (m.json() or {}).get("id") == cid, timeout, topic=RESP)
    assert m is not None, f"no response {cid!r}; got {[x for x in w.messages() if 'command' in x.topic]}"
    return m.json()


@pytest.mark.smoke
def test_edges_published_within_one_cycle(tmp_path, broker, start_gateway, watch):
    img, w, gw = start(tmp_path, broker, start_gateway, watch)
    for n, (where, name) in enumerate([(I_1, "I_1"), (I_9, "I_9"), (I_1, "I_1"), (I_2, "I_2")] * 2):
        want = not img.bit(where)
        time.sleep(0.05)
        t_flip = time.monotonic()
        wall_flip = time.time()
        img.set_bit(where, want)
        m = w.wait_for(lambda m, name=name, want=want: (values(m) or {}).get(name, {}).get("v") is want,
                       5, topic=TELE, after=t_flip)
        assert m is not None, f"edge {n} of {name} never published\n{gw.output()[-2000:]}"
        # telemetry read before the flip may still arrive after it (a few 20 ms cycles can be in
        # transit on a loaded machine); that the edge was read in the first cycle after the flip
        # is checked by its source time stamp below
        arrived = [x for x in w.messages(TELE) if t_flip <= x.t <= m.t]
        assert len(arrived) <= 4, f"edge {n} of {name} published {len(arrived)} messages after the flip"
        read_at = parse_ts(m.json()["ts"])
        assert read_at - wall_flip <= CYCLE + 0.030, \
            f"edge {n} read {1000 * (read_at - wall_flip):.1f} ms after the flip (cycle 20 ms)"
        assert m.t - t_flip < 0.5, f"edge {n} took {m.t - t_flip:.3f}s to reach the broker"
    assert gw.alive()


@pytest.mark.smoke
def test_command_sets_only_that_bit(tmp_path, broker, start_gateway, watch):
    img, w, gw = start(tmp_path, broker, start_gateway, watch)
    # other processes' bits in the same byte and elsewhere
    img.set_bit((81, 5), True)
    img.set_bit((81, 7), True)
    img.set_bit(I_9, True)
    before = img.read()
    w.publish(CMD, {"id": "1", "write": {"O_1": True}}, qos=1)
    r = response(w, "1")
    assert r["ok"] is True, r
    after = img.read()
    assert after[81] == before[81] | 0x01, f"byte 81 {before[81]:#04x} -> {after[81]:#04x}"
    diff = [i for i in range(4096) if before[i] != after[i]]
    assert diff == [81], f"bytes changed: {diff}"
    m = w.wait_for(lambda m: (values(m) or {}).get("O_1", {}).get("v") is True, 5, topic=TELE)
    assert m is not None, "telemetry does not show the written output"
    # inputs are not writable
    w.publish(CMD, {"id": "2", "write": {"I_1": True}}, qos=1)
    assert response(w, "2")["ok"] is False
    assert not img.bit(I_1)
    assert gw.alive()


@pytest.mark.smoke
def test_sigterm_writes_safe_state(tmp_path, broker, start_gateway, watch):
    img, w, gw = start(tmp_path, broker, start_gateway, watch,
                       options={"safe": "O_1=0,O_2=1,RevPiLED=0"})
    w.publish(CMD, {"id": "s1", "write": {"O_1": True, "O_2": False, "RevPiLED": 3}}, qos=1)
    assert response(w, "s1")["ok"] is True
    img.set_bit(I_2, True)
    img.set_bit((81, 6), True)
    before = img.read()
    assert before[81] & 0x03 == 0x01 and before[LED] == 3
    rc = gw.stop(signal.SIGTERM)
    assert rc == 0, f"exit code {rc}\n{gw.output()[-2000:]}"
    after = img.read()
    assert not img.bit(O_1) and img.bit(O_2) and after[LED] == 0, \
        f"safe state not written: byte81={after[81]:#04x} LED={after[LED]}\n{gw.output()[-2000:]}"
    diff = [i for i in range(4096) if before[i] != after[i]]
    assert sorted(diff) == [LED, 81], f"bytes changed: {diff}"
    assert after[81] & 0x40, "another process' bit was clobbered"
    assert img.bit(I_2)
    assert "safe state written" in gw.output()


def test_watchdog_writes_safe_state(tmp_path, broker, start_gateway, watch):
    img, w, gw = start(tmp_path, broker, start_gateway, watch,
                       options={"safe": "O_1=0", "watchdog": "1s"})
    w.publish(CMD, {"id": "w1", "write": {"O_1": True}}, qos=1)
    assert response(w, "w1")["ok"] is True
    t0 = time.monotonic()
    assert img.bit(O_1)
    while img.bit(O_1) and time.monotonic() - t0 < 5:
        time.sleep(0.02)
    dt = time.monotonic() - t0
    assert not img.bit(O_1), "the watchdog never wrote the safe state"
    assert 0.8 <= dt <= 1.6, f"watchdog fired after {dt:.2f}s (configured 1s)"
    assert "watchdog" in gw.output()
    # a new command is obeyed again (the watchdog re-arms)
    w.publish(CMD, {"id": "w2", "write": {"O_1": True}}, qos=1)
    assert response(w, "w2")["ok"] is True
    assert img.bit(O_1)


def test_command_source_lost_writes_safe_state(tmp_path, broker, start_gateway, watch):
    """north_loss=1s: the broker goes away → after about a second without any
    northbound connection the outputs go to their safe values; once the broker
    is back, commands are obeyed again."""
    img, w, gw = start(tmp_path, broker, start_gateway, watch,
                       options={"safe": "O_1=0,RevPiLED=0", "north_loss": "1s"})
    w.publish(CMD, {"id": "n1", "write": {"O_1": True, "RevPiLED": 5}}, qos=1)
    assert response(w, "n1")["ok"] is True
    assert img.bit(O_1) and img.read()[LED] == 5
    time.sleep(1.5)  # connected: nothing happens however long no command comes
    assert img.bit(O_1), "safe state written while the command source was connected"
    port = broker.port
    broker.stop()
    t0 = time.monotonic()
    while img.bit(O_1) and time.monotonic() - t0 < 10:
        time.sleep(0.02)
    dt = time.monotonic() - t0
    assert not img.bit(O_1) and img.read()[LED] == 0, f"safe state not written\n{gw.output()[-2000:]}"
    assert dt <= 6, f"safe state after {dt:.2f}s (north_loss 1s + MQTT keepalive detection)"
    t1 = time.monotonic()  # the log line follows the write
    while "command source lost" not in gw.output() and time.monotonic() - t1 < 3:
        time.sleep(0.05)
    assert "command source lost" in gw.output()
    broker.restart()
    assert broker.port == port
    w2 = watch(broker.port)
    time.sleep(3)  # reconnect with backoff, resubscribe
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        w2.publish(CMD, {"id": "n2", "write": {"O_1": True}}, qos=1)
        if w2.wait_for(lambda m: (m.json() or {}).get("id") == "n2", 2, topic=RESP):
            break
    assert img.bit(O_1), "command not obeyed after the command source came back"
    assert gw.alive()


def test_example_config_checks(tmp_path):
    r = run_cli("check", "-c", os.path.join(ROOT, "examples", "revpi-dio.yaml"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_browse_lists_variables(tmp_path):
    img = Image(tmp_path / "piControl0")
    img.set_bit(I_9, True)
    r = run_cli("browse", f"revpi://{img.path}?config={RSC}")
    assert r.returncode == 0, r.stderr
    assert "DIO 1" in r.stdout and "I_9" in r.stdout and "bit:12.0" in r.stdout, r.stdout


AIO_RSC = os.path.join(ROOT, "tests", "unit", "data", "revpi", "connect_aio_dio.rsc")


def put_i16(img, offset, value):
    fd = os.open(img.path, os.O_RDWR)
    try:
        os.pwrite(fd, int(value).to_bytes(2, "little", signed=True), offset)
    finally:
        os.close(fd)


@pytest.mark.smoke
def test_aio_values_are_signed(tmp_path, broker, start_gateway, watch):
    """connect_aio_dio.rsc: Connect 4 at 0, AIO at 9 (InputValue_1 = bytes 9-10,
    flow_in = renamed InputValue_3 at 13, RTDValue_1 at 21, InputStatus_1 at 17,
    OutputValue_1 at 29), DIO at 98 (I_1 = byte 98 bit 0, Counter_1 at 102).
    The AIO's words are INT16: -250 mV is published as -250, a command writes
    -1000 as 0xFC18, and `fieldbridge read` / `browse` agree; the DIO's values
    stay unsigned, and :uint16 still reads the raw word."""
    img = Image(tmp_path / "piControl0")
    put_i16(img, 9, -250)
    put_i16(img, 13, 10000)
    put_i16(img, 21, -2000)
    raw = img.read()
    raw[17] = 0x81
    raw[98] = 0x01
    raw[102:106] = b"\xff\xff\xff\xff"
    with open(img.path, "r+b") as f:
        f.write(raw)
    dev = {"name": DEV, "url": f"revpi://{img.path}?config={AIO_RSC}&cycle=20ms", "poll": "20ms",
           "area": "_", "line": "_",
           "tags": [{"name": "ain1", "addr": "InputValue_1", "unit": "mV"},
                    {"name": "ain1_raw", "addr": "InputValue_1:uint16"},
                    {"name": "flow", "addr": "flow_in"},
                    {"name": "rtd1", "addr": "RTDValue_1", "scale": {"factor": 0.1}, "unit": "°C"},
                    {"name": "ain1_status", "addr": "InputStatus_1"},
                    {"name": "aout1", "addr": "OutputValue_1", "access": "rw"},
                    {"name": "start", "addr": "I_1"},
                    {"name": "count", "addr": "Counter_1"}]}
    w = watch(broker.port)
    gw = start_gateway(gw_config(broker.port, [dev]))
    want = {"ain1": -250, "ain1_raw": 65286, "flow": 10000, "ain1_status": 0x81, "start": True,
            "count": 4294967295}
    m = w.wait_for(lambda m: all((values(m) or {}).get(k, {}).get("v") == v for k, v in want.items()),
                   20, topic=TELE)
    assert m is not None, f"values not as expected: {[values(x) for x in w.messages(TELE)][-2:]}\n" \
                          f"{gw.output()[-3000:]}"
    assert abs(values(m)["rtd1"]["v"] - (-200.0)) < 1e-9, values(m)["rtd1"]
    assert all(v["q"] == "good" for v in values(m).values()), values(m)
    time.sleep(0.5)  # the command subscription
    w.publish(CMD, {"id": "a1", "write": {"aout1": -1000}}, qos=1)
    r = response(w, "a1")
    assert r["ok"] is True, r
    assert img.read()[29:31] == b"\x18\xfc", img.read()[29:31]
    m = w.wait_for(lambda m: (values(m) or {}).get("aout1", {}).get("v") == -1000, 5, topic=TELE)
    assert m is not None, "telemetry does not show the written AIO output"
    assert gw.alive()

    r = run_cli("read", f"revpi://{img.path}?config={AIO_RSC}", "InputValue_1", "RTDValue_1", "Counter_1")
    assert r.returncode == 0, r.stderr
    assert "-250" in r.stdout and "-2000" in r.stdout and "4294967295" in r.stdout, r.stdout
    r = run_cli("browse", f"revpi://{img.path}?config={AIO_RSC}")
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.strip().startswith("InputValue_1 "))
    assert "int16" in line and "-250" in line, line


def test_items_past_the_image_are_counted_and_shown_in_ne107(tmp_path, broker, start_gateway, watch):
    """The image file is cut to 100 bytes while the gateway runs: the tag at
    byte 300 is refused (BadNodeIdUnknown) every cycle and counted as a failed
    item, the tags inside keep reading, the device stays online and NE107 says
    Maintenance required in GET /status — not OK with errors 0, and not the
    whole device offline."""
    import peers
    from test_health import metric, status_of, wait_status
    img = Image(tmp_path / "piControl0")
    port = peers.free_port()
    dev = revpi_device(img)
    dev["tags"].append({"name": "far", "addr": "word:300"})
    w = watch(broker.port)
    gw = start_gateway(gw_config(broker.port, [dev], metrics={"listen": f"127.0.0.1:{port}"}))
    assert w.wait_for(lambda m: (values(m) or {}).get("far", {}).get("q") == "good", 20, topic=TELE), \
        gw.output()[-3000:]
    assert status_of(port, DEV)["ne107"] == "OK"
    os.truncate(img.path, 100)
    t = time.monotonic()
    m = w.wait_for(lambda m: (values(m) or {}).get("far", {}).get("reason") == "BadNodeIdUnknown", 5,
                   topic=TELE, after=t)
    assert m is not None, gw.output()[-3000:]
    img.set_bit(I_1, True)
    assert w.wait_for(lambda m: (values(m) or {}).get("I_1", {}).get("v") is True, 5, topic=TELE, after=t), \
        "the tags inside the image stopped reading"
    time.sleep(1.5)  # beyond the 1 s status interval
    st = wait_status(port, DEV, lambda s: s["errors"] >= 10)
    assert st["state"] == "online" and st["errors"] >= 10, st
    assert st["ne107"] == "Maintenance required", st
    assert metric(port, "fieldbridge_device_bad_tags", DEV) == 1
    assert metric(port, "fieldbridge_device_reconnects_total", DEV) == 0
    assert "the process image ends at byte 100" in gw.output()


def test_reload_keeps_the_process_image_open(tmp_path, broker, start_gateway, watch):
    """A config reload that renumbers every tag (a device added in front)
    keeps the process image and the device's state (its addresses resolved
    from PiCtory, its cycle): no reopen, and edges arrive under the right
    names."""
    import peers  # pylint: disable=import-outside-toplevel
    from conftest import to_yaml  # pylint: disable=import-outside-toplevel
    img = Image(tmp_path / "piControl0")
    w = watch(broker.port)
    cfg = gw_config(broker.port, [revpi_device(img)])
    gw = start_gateway(cfg)
    assert w.wait_for(lambda m: (values(m) or {}).get("I_1", {}).get("q") == "good", 20, topic=TELE), \
        gw.output()[-3000:]
    cfg["devices"] = [{"name": "sim-front", "url": "sim://f", "poll": "1s",
                       "tags": [{"name": f"s{i}", "addr": "counter"} for i in range(4)]}, revpi_device(img)]
    with open(gw.path, "w", encoding="utf-8") as f:
        f.write(to_yaml(cfg) + "\n")
    gw.proc.send(signal.SIGHUP)
    assert peers.wait_until(lambda: "reload: applied" in gw.output(), 10), gw.output()[-3000:]
    for where, name in ((I_1, "I_1"), (I_9, "I_9")):
        want = not img.bit(where)
        t = time.monotonic()
        img.set_bit(where, want)
        m = w.wait_for(lambda m, name=name, want=want: (values(m) or {}).get(name, {}).get("v") is want,
                       5, topic=TELE, after=t)
        assert m is not None, gw.output()[-3000:]
        assert set(values(m)) <= {"I_1", "I_2", "I_9", "O_1", "O_2", "RevPiLED"}, values(m)
    after = gw.output().split("reload requested", 1)[1]
    assert f"[{DEV}] connected (" not in after, after[-2000:]
