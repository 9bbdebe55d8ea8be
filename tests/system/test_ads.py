"""test_ads.py — the ADS driver against tests/peers/ads_server.py, a fake
TwinCAT 3 PLC of our own (no ADS server exists as a package).  Because that
server is ours, it is first validated by an ADS client that is not: the npm
ads-client 2.1.0 (tests/peers/ads/validate.js) must read, write, take handles
in both reply forms, use sum commands, receive notifications and parse the
symbol and data-type uploads.  Then, through the real binary:
`fieldbridge read` / `write` with ads:// URLs for every type, sum reads of
hundreds of symbols in one round trip (counted at the server), handle
re-resolution after a simulated download, notifications without read
traffic, ADS error codes as qualities and messages, `fieldbridge run`
publishing to MQTT and an MQTT command writing, and the UDP add-route.

Install the client: cd tests/peers/ads && npm ci (scripts/peers.sh does it).
"""
import json
import os
import subprocess
import time

import pytest

from conftest import ROOT, gw_config, require, run_cli, wait_values, topic  # noqa: F401
import peers

SERVER = os.path.join(ROOT, "tests", "peers", "ads_server.py")
CLIENT_DIR = os.path.join(ROOT, "tests", "peers", "ads")
CLIENT_OK = os.path.isdir(os.path.join(CLIENT_DIR, "node_modules", "ads-client"))
NET_ID = "5.80.192.200.1.1"


class AdsServer:
    """ads_server.py as a child; state set and read over its stdin/stdout."""

    def __init__(self, tmp_path, port=0, many=0, name="ads"):
        argv = ["/usr/bin/python3", SERVER, "--port", str(port), "--net-id", NET_ID]
        if many:
            argv += ["--many", str(many)]
        self.err = open(os.path.join(str(tmp_path), f"{name}.log"), "ab")
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err,
                                  start_new_session=True)
        line = self.p.stdout.readline().decode()
        assert line.startswith("READY"), f"ADS server did not start: {line!r}"
        self.port = int(line.split()[1])
        self.udp_port = int(line.split()[2])
        peers.wait_port(self.port, 10, self.p)

    def call(self, **req):
        self.p.stdin.write((json.dumps(req) + "\n").encode())
        self.p.stdin.flush()
        ans = json.loads(self.p.stdout.readline())
        assert ans.get("ok"), ans
        return ans

    def set(self, name, value):
        self.call(op="set", name=name, value=value)

    def get(self, name):
        return self.call(op="get", name=name)["value"]

    def stats(self):
        return self.call(op="stats")

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

    def url(self, q=""):
        return f"ads://127.0.0.1:{self.port}?net_id={NET_ID}&port=851" + (f"&{q}" if q else "")


@pytest.fixture
def ads(tmp_path):
    started = []

    def start(**kw):
        s = AdsServer(tmp_path, name=f"ads-{len(started)}", **kw)
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


@pytest.mark.smoke
def test_server_validated_by_ads_client(ads):
    """An independent client (ads-client 2.1.0) agrees with our test server."""
    require("ads-client", CLIENT_OK, "ads-client is not installed in tests/peers/ads: run scripts/peers.sh")
    srv = ads()
    srv.set("MAIN.nInt", -300)
    r = subprocess.run(["node", os.path.join(CLIENT_DIR, "validate.js"), str(srv.port), NET_ID],
                       capture_output=True, text=True, timeout=60, cwd=CLIENT_DIR)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["deviceInfo"]["deviceName"] == "Plc30 App"
    assert out["state"]["adsState"] == 5
    assert out["handle"] == {"size": 2, "dataType": "INT"}          # TwinCAT 3 extended reply
    assert out["nInt"] == -300 and out["nIntAfter"] == -4321
    assert srv.get("MAIN.nInt") == 777                                # its last write
    assert [h["ok"] for h in out["multiHandles"]] == [True, True, False]
    assert out["multiHandles"][2]["code"] == 0x710
    assert out["multiHandles"][1]["type"] == "STRING(80)"
    assert out["fTemperature"] == 21.5 and out["sText"] == "hello ADS"
    assert out["sumRead"][2]["code"] == 0x710
    assert out["sumWrite"] == [{"ok": True, "code": 0}] and out["fTemperatureAfter"] == -7.25
    assert out["notifications"][:2] == [-4321, 777]                  # initial value, then the change
    assert out["symbol"] == {"name": "MAIN.fTemperature", "type": "REAL", "size": 4, "indexGroup": 0x4040}
    assert out["arraySymbol"]["arrayInfo"] == [{"startIndex": 0, "length": 10}]
    assert out["dataType"]["members"] == [["fSpeed", "LREAL", 0, 8], ["nSteps", "DINT", 8, 4],
                                          ["sName", "STRING(20)", 12, 21]]
    assert out["afterDelete"] == 0x710


# (address, expected value) — types come from the PLC's symbol upload
TYPES = [
    ("MAIN.bFlag", True), ("MAIN.nByte", 0xAB), ("MAIN.nUSInt", 200), ("MAIN.nSInt", -2),
    ("MAIN.nWord", 65534), ("MAIN.nUInt", 0x1234), ("MAIN.nInt", -300), ("MAIN.nDWord", 0xDEADBEEF),
    ("MAIN.nUDInt", 4000000000), ("MAIN.nDInt", -100000), ("MAIN.nLWord", 2 ** 63 + 5),
    ("MAIN.nULInt", 2 ** 64 - 1), ("MAIN.nLInt", -(2 ** 62)), ("MAIN.fTemperature", 21.5),
    ("MAIN.fLReal", 3.141592653589793), ("MAIN.sText", "hello ADS"), ("MAIN.tTime", 5000),
    ("MAIN.tLTime", 1500000000), ("MAIN.todTime", 3600000), ("MAIN.dDate", "2024-03-01"),
    ("MAIN.dtStamp", "2024-02-29T13:14:15"), ("MAIN.aValues[3]", 30), ("MAIN.aReals[5]", 5.5),
    ("MAIN.stRecipe.fSpeed", 12.5), ("MAIN.stRecipe.sName", "bread"),
    ("MAIN.nCount:DINT", 42), ("MAIN.fTemperature:REAL", 21.5),
]
FB_TYPES = {"MAIN.bFlag": "bool", "MAIN.nSInt": "int8", "MAIN.nWord": "uint16", "MAIN.nLInt": "int64",
            "MAIN.fTemperature": "float32", "MAIN.fLReal": "float64", "MAIN.sText": "string",
            "MAIN.dtStamp": "string", "MAIN.nULInt": "uint64"}


@pytest.mark.smoke
def test_read_every_type(ads):
    srv = ads()
    r, vals = read_json(srv.url(), *[a for a, _ in TYPES])
    assert r.returncode == 0, r.stderr
    for addr, want in TYPES:
        got = vals[addr]
        assert got["quality"] == "good" and got["value"] == want, (addr, got)
    for addr, t in FB_TYPES.items():
        assert vals[addr]["type"] == t, (addr, vals[addr])
    # count over an array symbol reads its elements from its lower bound
    r, vals = read_json(srv.url(), "MAIN.aReals", "--count", "5")
    assert [v["value"] for v in vals.values()] == [1.5, 2.5, 3.5, 4.5, 5.5]


WRITES = [
    ("MAIN.bFlag", "false", False), ("MAIN.nSInt", "-128", -128), ("MAIN.nUInt", "65535", 65535),
    ("MAIN.nInt", "-1234", -1234), ("MAIN.nDInt", "-2000000000", -2000000000),
    ("MAIN.nUDInt", "4294967295", 4294967295), ("MAIN.nLInt", str(-(2 ** 63)), -(2 ** 63)),
    ("MAIN.nULInt", str(2 ** 64 - 2), 2 ** 64 - 2), ("MAIN.fTemperature", "-12.5", -12.5),
    ("MAIN.fLReal", "2.718281828459045", 2.718281828459045), ("MAIN.sText", "grüß", "grüß"),
    ("MAIN.tTime", "1000", 1000), ("MAIN.dtStamp", "2024-01-02T03:04:05", 1704164645),
    ("MAIN.dDate", "2025-12-31", 1767139200), ("MAIN.aValues[9]", "-9", -9),
    ("MAIN.stRecipe.nSteps", "99", 99), ("MAIN.nCount:DINT", "7", 7),
]


def test_write_every_type(ads):
    srv = ads()
    for addr, text, want in WRITES:
        r = run_cli("write", srv.url(), addr, text)
        assert r.returncode == 0, (addr, r.stdout, r.stderr)
        name = addr.split(":")[0]
        got = srv.get(name)
        assert got == want or (isinstance(want, str) and got == want), (addr, got)
    assert srv.get("MAIN.aValues")[9] == -9 and srv.get("MAIN.aValues")[8] == 80
    # out of the PLC type's range: usage error, nothing written
    r = run_cli("write", srv.url(), "MAIN.nSInt", "200")
    assert r.returncode == 2 and srv.get("MAIN.nSInt") == -128
    r = run_cli("write", srv.url(), "MAIN.sShort", "far too long for ten")
    assert r.returncode == 2 and srv.get("MAIN.sShort") == "abc"
    # handles are released when the connection closes
    assert srv.stats()["handles"] == 0


def test_wstring_read_write(ads):
    """WSTRING(n): UTF-16 on the wire, UTF-8 in fieldbridge, 4-byte characters
    included; text longer than n characters is refused and nothing written."""
    srv = ads()
    r, vals = read_json(srv.url(), "MAIN.wsText")
    assert r.returncode == 0, r.stderr
    assert vals["MAIN.wsText"]["value"] == "Grüße €\U0001F600", vals
    assert vals["MAIN.wsText"]["type"] == "string"
    r = run_cli("write", srv.url(), "MAIN.wsText", "Ωmega 😀 ok")
    assert r.returncode == 0, r.stderr
    assert srv.get("MAIN.wsText") == "Ωmega 😀 ok"
    r = run_cli("write", srv.url(), "MAIN.wsText", "x" * 21)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert srv.get("MAIN.wsText") == "Ωmega 😀 ok"


def test_sum_read_is_one_round_trip(ads):
    """300 symbols (the elements of an array, each its own handle): one sum
    read-write for the handles, one sum read for the values, one sum write to
    release the handles — counted at the server."""
    srv = ads()
    srv.call(op="reset_stats")
    r = run_cli("read", srv.url(), "GVL.aBig", "--count", "300", "--json")
    assert r.returncode == 0, r.stderr
    vals = json.loads(r.stdout)
    assert [v["value"] for v in vals] == [i * 3 for i in range(300)]
    st = srv.stats()["stats"]
    assert st.get("cmd9:0xF082") == 1, st   # 300 handles
    assert st.get("cmd9:0xF080") == 1, st   # 300 values (+ the symbol version)
    assert st.get("cmd9:0xF081") == 1, st   # releasing them
    assert st.get("sum_subs") == 901, st
    assert "cmd2:0xF005" not in st, st
    # max_sum splits: 301 sub-reads in frames of 100 → 4 frames, sent back to back
    srv.call(op="reset_stats")
    r = run_cli("read", srv.url("max_sum=100"), "GVL.aBig", "--count", "300", "--json")
    assert r.returncode == 0
    assert [v["value"] for v in json.loads(r.stdout)][-1] == 897
    st = srv.stats()["stats"]
    assert st.get("cmd9:0xF080") == 4 and st.get("cmd9:0xF082") == 3, st


def test_errors_map_to_quality_and_messages(ads):
    srv = ads()
    # an unknown symbol with a given type: BadNodeIdUnknown, the code and text in the log
    r, vals = read_json(srv.url(), "MAIN.nInt", "MAIN.nope:INT")
    assert r.returncode == 1
    assert vals["MAIN.nInt"]["quality"] == "good"
    assert vals["MAIN.nope:INT"]["quality"] == "BadNodeIdUnknown"
    assert "0x710" in r.stderr and "symbol not found" in r.stderr
    # an unknown symbol without a type: the type cannot be learnt → usage error
    r = run_cli("read", srv.url(), "MAIN.nope")
    assert r.returncode == 2 and "symbol not found" in r.stderr
    # wrong AMS port (runtime stopped / not there): 0x6
    r = run_cli("read", f"ads://127.0.0.1:{srv.port}?net_id={NET_ID}&port=852", "MAIN.nInt:INT")
    assert r.returncode == 1 and "0x6" in r.stderr and "target port not found" in r.stderr
    # wrong NetId: 0x7, no route
    r = run_cli("read", f"ads://127.0.0.1:{srv.port}?net_id=1.2.3.4.1.1&port=851", "MAIN.nInt:INT")
    assert r.returncode == 1 and "0x7" in r.stderr and "route" in r.stderr
    # every request refused with an ADS code
    srv.call(op="error", code=0x704, where="ads")
    r, vals = read_json(srv.url(), "MAIN.nInt:INT")
    assert vals["MAIN.nInt:INT"]["quality"] == "BadNotReadable", r.stderr
    r = run_cli("write", srv.url(), "MAIN.nInt:INT", "1")
    assert r.returncode == 1 and "0x704" in r.stderr
    srv.call(op="error", code=0)
    # nobody listening
    r = run_cli("read", f"ads://127.0.0.1:{peers.free_port()}?net_id={NET_ID}", "MAIN.nInt:INT")
    assert r.returncode == 1 and "connect to" in r.stderr
    # URL errors are usage errors
    r = run_cli("read", "ads://127.0.0.1?port=851", "MAIN.nInt:INT")
    assert r.returncode == 2 and "net_id" in r.stderr
    r = run_cli("read", srv.url(), "MAIN.nInt:FLOAT")
    assert r.returncode == 2 and "unknown ADS type" in r.stderr


def good(v, n):
    return n in v and v[n].get("q") == "good"


def test_gateway_publishes_ads_and_takes_commands(ads, broker, start_gateway, watch):
    srv = ads()
    dev = {"name": "plc-ads", "url": srv.url(), "poll": "200ms", "timeout": "500ms",
           "tags": [{"name": "temp", "addr": "MAIN.fTemperature", "unit": "°C"},
                    {"name": "count", "addr": "MAIN.nCount"},
                    {"name": "flag", "addr": "MAIN.bFlag", "access": "rw"},
                    {"name": "setpoint", "addr": "MAIN.fSetpoint", "access": "rw"},
                    {"name": "label", "addr": "MAIN.sShort", "access": "rw"},
                    {"name": "ghost", "addr": "MAIN.gone:INT"}]}
    w = watch(broker.port)
    gw = start_gateway(gw_config(broker.port, [dev]))
    m = wait_values(w, "plc-ads", lambda v: good(v, "temp") and good(v, "count") and "ghost" in v, timeout=20)
    assert m is not None, gw.output()[-3000:]
    v = m.json()["values"]
    assert v["temp"]["v"] == 21.5 and v["count"]["v"] == 42 and v["flag"]["v"] is True
    assert v["ghost"]["v"] is None and v["ghost"]["reason"] == "BadNodeIdUnknown"
    srv.set("MAIN.nCount", 1234)
    assert wait_values(w, "plc-ads", lambda v: v.get("count", {}).get("v") == 1234, timeout=10)
    w.publish(topic("plc-ads", "command"),
              {"id": "ads-1", "write": {"setpoint": 42.25, "flag": False, "label": "batch-7"}}, qos=1)
    resp = w.wait_for(lambda m: (m.json() or {}).get("id") == "ads-1", 10,
                      topic=topic("plc-ads", "command/response"))
    assert resp is not None and resp.json()["ok"] is True, resp and resp.json()
    assert srv.get("MAIN.fSetpoint") == 42.25
    assert srv.get("MAIN.bFlag") is False
    assert srv.get("MAIN.sShort") == "batch-7"

    # a PLC download: symbols move, old handles answer 0x710 — re-resolved
    srv.call(op="download")
    srv.set("MAIN.nCount", 555)
    t = time.monotonic()
    m = wait_values(w, "plc-ads", lambda v: v.get("count", {}).get("v") == 555, timeout=10, after=t)
    assert m is not None, gw.output()[-3000:]
    assert "PLC program changed" in gw.output()

    # the PLC drops the connection: reconnect, new handles
    srv.call(op="drop")
    srv.set("MAIN.nCount", 556)
    t = time.monotonic()
    assert wait_values(w, "plc-ads", lambda v: v.get("count", {}).get("v") == 556, timeout=15, after=t), \
        gw.output()[-3000:]


def test_notifications_without_polling(ads, broker, start_gateway, watch):
    srv = ads()
    dev = {"name": "plc-note", "url": srv.url("mode=notify"), "poll": "100ms",
           "tags": [{"name": "count", "addr": "MAIN.nCount"},
                    {"name": "text", "addr": "MAIN.sText"},
                    {"name": "temp", "addr": "MAIN.fTemperature"}]}
    w = watch(broker.port)
    gw = start_gateway(gw_config(broker.port, [dev]))
    assert wait_values(w, "plc-note", lambda v: good(v, "count") and v["count"]["v"] == 42, timeout=20), \
        gw.output()[-3000:]
    st = srv.stats()
    assert st["notes"] == 3, st
    srv.call(op="reset_stats")
    for i in range(5):
        srv.set("MAIN.nCount", 100 + i)
        t = time.monotonic()
        assert wait_values(w, "plc-note", lambda v, i=i: v.get("count", {}).get("v") == 100 + i,
                           timeout=5, after=t), gw.output()[-2000:]
    srv.set("MAIN.sText", "pushed")
    assert wait_values(w, "plc-note", lambda v: v.get("text", {}).get("v") == "pushed", timeout=5)
    st = srv.stats()["stats"]
    # no value reads at all: only notifications (and the 2 s symbol-version check)
    assert "cmd9:0xF080" not in st and "cmd2:0xF005" not in st, st
    assert st.get("notes_sent", 0) >= 6, st
    assert st.get("cmd2:0xF008", 0) <= 4, st
    # a download: notifications are added again and keep delivering
    srv.call(op="download")
    time.sleep(2.5)
    srv.set("MAIN.nCount", 4242)
    t = time.monotonic()
    assert wait_values(w, "plc-note", lambda v: v.get("count", {}).get("v") == 4242, timeout=10, after=t), \
        gw.output()[-3000:]
    # after a reconnect too
    srv.call(op="drop")
    time.sleep(0.5)
    srv.set("MAIN.nCount", 4343)
    t = time.monotonic()
    assert wait_values(w, "plc-note", lambda v: v.get("count", {}).get("v") == 4343, timeout=15, after=t), \
        gw.output()[-3000:]


def _cli_has(cmd):
    r = run_cli(*cmd, "--help")
    return r.returncode == 0 and "usage" in (r.stdout + r.stderr).lower() and "ads" in (r.stdout + r.stderr).lower()


def test_add_route_over_udp(ads, tmp_path):
    assert _cli_has(["ads", "add-route"]), "fieldbridge ads add-route --help shows no usage"
    srv = ads()
    pw = tmp_path / "pw"
    pw.write_text("1\n")
    pw.chmod(0o600)
    r = run_cli("ads", "add-route", "127.0.0.1", "--port", srv.udp_port, "--net-id", "127.0.0.1.1.1",
                "--user", "Administrator", "--password-file", pw, "--route-name", "edge-01",
                "--address", "127.0.0.1")
    assert r.returncode == 0, r.stderr
    assert "added" in r.stdout
    assert srv.call(op="routes")["routes"] == [{"name": "edge-01", "net_id": "127.0.0.1.1.1", "host": "127.0.0.1"}]
    pw.write_text("wrong\n")
    r = run_cli("ads", "add-route", "127.0.0.1", "--port", srv.udp_port, "--net-id", "127.0.0.1.1.1",
                "--user", "Administrator", "--password-file", pw)
    assert r.returncode == 1 and "wrong user name or password" in r.stderr
    r = run_cli("ads", "add-route", "127.0.0.1", "--port", peers.free_port(), "--net-id", "127.0.0.1.1.1",
                "--user", "Administrator", "--password-file", pw, "--timeout", "500ms")
    assert r.returncode == 1 and "no answer" in r.stderr


def test_browse_lists_symbols(ads):
    srv = ads()
    r = run_cli("browse", srv.url())
    assert r.returncode == 0, r.stderr
    lines = {ln.split()[0]: ln.split() for ln in r.stdout.splitlines() if ln.strip()}
    assert lines["MAIN.fTemperature"][1:3] == ["REAL", "float32"]
    assert lines["MAIN.sText"][1:3] == ["STRING(80)", "string"]
    assert lines["MAIN.stRecipe"][1:3] == ["ST_Recipe", "struct"]
