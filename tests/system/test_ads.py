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

Every test that takes the `ads` fixture runs three times: against the server
as a TwinCAT 3 PLC ("sum"), and as a device without sum commands and without
the symbol upload that refuses them with 0x701 service not supported
("nosum701") or 0x702 invalid index group ("nosum702") — TwinCAT 2 before sum
commands, BC/BX controllers, ADS simulators.  The driver must fall back to
single requests and per-name type look-ups and keep working.

Install the client: cd tests/peers/ads && npm ci (scripts/peers.sh does it).
"""
import json
import os
import re
import subprocess
import time
import urllib.request

import pytest

from conftest import ROOT, gw_config, merged_values, require, run_cli, wait_values, topic  # noqa: F401
import peers

SERVER = os.path.join(ROOT, "tests", "peers", "ads_server.py")
CLIENT_DIR = os.path.join(ROOT, "tests", "peers", "ads")
CLIENT_OK = os.path.isdir(os.path.join(CLIENT_DIR, "node_modules", "ads-client"))
NET_ID = "5.80.192.200.1.1"
# server modes: a TwinCAT 3 PLC, and devices without sum commands and upload
MODES = {"sum": [],
         "nosum701": ["--no-sum", "0x701", "--no-upload", "0x701"],
         "nosum702": ["--no-sum", "0x702", "--no-upload", "0x702"]}
MODE_CODE = {"sum": 0, "nosum701": 0x701, "nosum702": 0x702}


class AdsServer:
    """ads_server.py as a child; state set and read over its stdin/stdout."""

    def __init__(self, tmp_path, port=0, many=0, name="ads", mode="sum", args=()):
        self.mode = mode
        self.code = MODE_CODE.get(mode, 0)
        argv = ["/usr/bin/python3", SERVER, "--port", str(port), "--net-id", NET_ID, *MODES.get(mode, []), *args]
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


def _starter(tmp_path, mode):
    started = []

    def start(**kw):
        kw.setdefault("mode", mode)
        s = AdsServer(tmp_path, name=f"ads-{len(started)}", **kw)
        started.append(s)
        return s
    start.mode = mode
    return start, started


@pytest.fixture(params=list(MODES))
def ads(tmp_path, request):
    """Start ADS test servers in each mode (the test runs once per mode)."""
    start, started = _starter(tmp_path, request.param)
    yield start
    for s in started:
        s.stop()


@pytest.fixture
def ads1(tmp_path):
    """Start ADS test servers, once (mode="sum" unless given)."""
    start, started = _starter(tmp_path, "sum")
    yield start
    for s in started:
        s.stop()


def read_json(url, *addrs):
    r = run_cli("read", url, *addrs, "--json")
    try:
        return r, {x["addr"]: x for x in json.loads(r.stdout)}
    except json.JSONDecodeError:
        pytest.fail(f"read: rc {r.returncode}\nstdout {r.stdout}\nstderr {r.stderr}")


def _unit_golden(name):
    """A golden hex string from tests/unit/test_ads_proto.c (its decoder test)."""
    with open(os.path.join(ROOT, "tests", "unit", "test_ads_proto.c"), encoding="utf-8") as f:
        m = re.search(name + r'\[\] =\s*((?:"[0-9a-f ]*"\s*)+);', f.read())
    assert m, f"{name} not found in test_ads_proto.c"
    return "".join(re.findall(r'"([0-9a-f ]*)"', m.group(1))).replace(" ", "")


@pytest.mark.smoke
def test_server_validated_by_ads_client(ads):
    """An independent client (ads-client 2.1.0) agrees with our test server —
    in every mode: without sum commands and upload it sees exactly those
    refused with the mode's code, and the rest work."""
    require("ads-client", CLIENT_OK, "ads-client is not installed in tests/peers/ads: run scripts/peers.sh")
    srv = ads()
    srv.set("MAIN.nInt", -300)
    srv.call(op="raw_set", area="I", offset=0, hex="3412")
    srv.call(op="raw_set", area="Q", offset=0, hex="02")
    r = subprocess.run(["node", os.path.join(CLIENT_DIR, "validate.js"), str(srv.port), NET_ID,
                        "sum" if srv.mode == "sum" else "nosum"],
                       capture_output=True, text=True, timeout=60, cwd=CLIENT_DIR)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["deviceInfo"]["deviceName"] == "Plc30 App"
    assert out["state"]["adsState"] == 5
    assert out["handle"] == {"size": 2, "dataType": "INT"}          # TwinCAT 3 extended reply
    assert out["nInt"] == -300 and out["nIntAfter"] == -4321
    assert srv.get("MAIN.nInt") == 777                                # its last write
    assert out["notifications"][:2] == [-4321, 777]                  # initial value, then the change
    if srv.mode == "sum":
        assert [h["ok"] for h in out["multiHandles"]] == [True, True, False]
        assert out["multiHandles"][2]["code"] == 0x710
        assert out["multiHandles"][1]["type"] == "STRING(80)"
        assert out["fTemperature"] == 21.5 and out["sText"] == "hello ADS"
        assert out["sumRead"][2]["code"] == 0x710
        assert out["sumWrite"] == [{"ok": True, "code": 0}] and out["fTemperatureAfter"] == -7.25
        assert out["symbol"] == {"name": "MAIN.fTemperature", "type": "REAL", "size": 4, "indexGroup": 0x4040}
        assert out["arraySymbol"]["arrayInfo"] == [{"startIndex": 0, "length": 10}]
        assert out["arraySymbol"]["flags"] == 0x0008 and out["arraySymbol"]["arrayDimension"] == 1
        assert out["uploadFlags"]["flags"] == 0x1008 and len(out["uploadFlags"]["attributes"]) == 2
        assert out["dataType"]["members"] == [["fSpeed", "LREAL", 0, 8], ["nSteps", "DINT", 8, 4],
                                              ["sName", "STRING(20)", 12, 21]]
    else:  # refused with the mode's code, as a device without them does
        for k in ("sumHandlesErr", "sumReadErr", "sumWriteErr", "symbolsErr", "uploadInfoErr"):
            assert out[k] == srv.code, (k, out)
    # symbol info by name (0xF009): entries with flags u16 + arrayDim u16 as
    # ads-client reads them (a type GUID follows flag 0x0008, attributes 0x1000)
    av = out["info"]["MAIN.aValues"]
    assert av["type"] == "ARRAY [0..9] OF INT" and av["size"] == 20 and av["adsDataType"] == 2
    assert av["flags"] == 0x0008 and av["arrayDimension"] == 1
    assert av["arrayInfo"] == [{"startIndex": 0, "length": 10}] and len(av["typeGuid"]) == 32
    ft = out["info"]["MAIN.fTemperature"]
    assert ft["flags"] == 0x1008 and ft["arrayDimension"] == 0
    assert ft["attributes"] == [{"name": "unit", "value": "degC"}, {"name": "TcDisplayScale", "value": "0-100"}]
    assert out["info"]["MAIN.stRecipe.sName"]["type"] == "STRING(20)"
    assert out["info"]["MAIN.stRecipe.sName"]["size"] == 21
    assert out["info"]["MAIN.nAlias"]["type"] == "T_Alias" and out["info"]["MAIN.nAlias"]["adsDataType"] == 2
    assert out["infoMissing"] == 0x710
    # the very bytes our unit test decodes (ads_sym_next: flags 0x0008,
    # arrdim 1) are what this server sends and ads-client reads as above
    assert out["infoRaw"] == _unit_golden("golden_sym_avalues")
    # raw areas: %MW10, %MX12.3 (bit address 12*8+3) onto %MB12, %IW0, %QX0.1
    assert out["mw10"] == "2a01" and out["mb12"] == "08" and out["mx12_3"] == "01"
    assert out["iw0"] == "3412" and out["qx0_1"] == "01"
    assert srv.call(op="raw_get", area="M", offset=10, size=3)["hex"] == "2a0108"
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
    ("MAIN.nCount:DINT", 42), ("MAIN.fTemperature:REAL", 21.5), ("MAIN.nAlias", -7),
]
FB_TYPES = {"MAIN.bFlag": "bool", "MAIN.nSInt": "int8", "MAIN.nWord": "uint16", "MAIN.nLInt": "int64",
            "MAIN.fTemperature": "float32", "MAIN.fLReal": "float64", "MAIN.sText": "string",
            "MAIN.dtStamp": "string", "MAIN.nULInt": "uint64"}


@pytest.mark.smoke
def test_read_every_type(ads):
    """Types from the symbol upload — or, where the PLC refuses it, from the
    symbol info of each name (0xF009; an alias by its ADST code)."""
    srv = ads()
    srv.call(op="reset_stats")
    r, vals = read_json(srv.url(), *[a for a, _ in TYPES])
    assert r.returncode == 0, r.stderr
    for addr, want in TYPES:
        got = vals[addr]
        assert got["quality"] == "good" and got["value"] == want, (addr, got)
    for addr, t in FB_TYPES.items():
        assert vals[addr]["type"] == t, (addr, vals[addr])
    st = srv.stats()["stats"]
    untyped = sum(1 for a, _ in TYPES if ":" not in a)
    if srv.mode == "sum":
        assert st.get("cmd2:0xF00B") == 1 and "cmd9:0xF009" not in st, st
    else:  # one look-up per untyped name, and the reads one by one
        assert st.get("cmd9:0xF009") == untyped, st
        assert st.get("cmd9:0xF003") == len(TYPES) and st.get("cmd2:0xF005") == len(TYPES), st
        assert st.get("cmd9:0xF082") == 1 and "cmd9:0xF080" not in st, st  # one refused try
    # count over an array symbol reads its elements from its lower bound
    srv.call(op="reset_stats")
    r, vals = read_json(srv.url(), "MAIN.aReals", "--count", "5")
    assert [v["value"] for v in vals.values()] == [1.5, 2.5, 3.5, 4.5, 5.5]
    if srv.mode != "sum":  # one look-up for the whole run
        assert srv.stats()["stats"].get("cmd9:0xF009") == 1


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


def test_requests_per_read(ads):
    """300 symbols (the elements of an array, each its own handle).  With sum
    commands: one sum read-write for the handles, one sum read for the values,
    one sum write to release the handles.  Without: one refused sum
    read-write, then one request per handle, per value and per release —
    counted at the server."""
    srv = ads()
    srv.call(op="reset_stats")
    r = run_cli("read", srv.url(), "GVL.aBig", "--count", "300", "--json")
    assert r.returncode == 0, r.stderr
    vals = json.loads(r.stdout)
    assert [v["value"] for v in vals] == [i * 3 for i in range(300)]
    st = srv.stats()["stats"]
    assert srv.stats()["handles"] == 0, st   # all released
    if srv.mode != "sum":
        assert st.get("cmd9:0xF082") == 1, st                     # tried once, refused
        assert "cmd9:0xF080" not in st and "cmd9:0xF081" not in st, st  # never tried again
        assert st.get("cmd9:0xF003") == 300, st                   # handles
        assert st.get("cmd2:0xF005") == 300, st                   # values
        assert st.get("cmd3:0xF006") == 300, st                   # releases
        assert st.get("cmd9:0xF009") == 1, st                     # the type, once for the run
        return
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
                    {"name": "ghost", "addr": "MAIN.gone:INT"},
                    {"name": "speed", "addr": "%MD14", "type": "float32"},
                    {"name": "levels", "addr": "%IW0", "count": 2}]}
    srv.call(op="raw_set", area="M", offset=14, hex="0000c03f")
    srv.call(op="raw_set", area="I", offset=0, hex="01000200")
    w = watch(broker.port)
    gw = start_gateway(gw_config(broker.port, [dev]))
    m = wait_values(w, "plc-ads", lambda v: good(v, "temp") and good(v, "count") and "ghost" in v, timeout=20)
    assert m is not None, gw.output()[-3000:]
    v = m.json()["values"]
    assert v["temp"]["v"] == 21.5 and v["count"]["v"] == 42 and v["flag"]["v"] is True
    assert v["speed"]["v"] == 1.5, v   # config type: on a raw address
    assert v["levels[0]"]["v"] == 1 and v["levels[1]"]["v"] == 2, v   # count: the next words
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
    # without sum commands: said once (not again after the reconnect), and no
    # sum command after the first refused one on each connection
    said = gw.output().count("answers sum commands")
    if srv.mode == "sum":
        assert said == 0, gw.output()[-3000:]
    else:
        assert said == 1, gw.output()[-3000:]
        st = srv.stats()["stats"]
        assert st.get("cmd9:0xF082", 0) + st.get("cmd9:0xF080", 0) <= st.get("connections", 0), st


def test_notifications_without_polling(ads, broker, start_gateway, watch):
    srv = ads()
    dev = {"name": "plc-note", "url": srv.url("mode=notify"), "poll": "100ms",
           "tags": [{"name": "count", "addr": "MAIN.nCount"},
                    {"name": "text", "addr": "MAIN.sText"},
                    {"name": "temp", "addr": "MAIN.fTemperature"},
                    {"name": "flags", "addr": "%MW10"}]}
    srv.call(op="raw_set", area="M", offset=10, hex="0700")
    w = watch(broker.port)
    gw = start_gateway(gw_config(broker.port, [dev]))
    assert wait_values(w, "plc-note", lambda v: good(v, "count") and v["count"]["v"] == 42 and good(v, "flags"),
                       timeout=20), gw.output()[-3000:]
    st = srv.stats()
    assert st["notes"] == 4, st
    srv.call(op="reset_stats")
    for i in range(5):
        srv.set("MAIN.nCount", 100 + i)
        t = time.monotonic()
        assert wait_values(w, "plc-note", lambda v, i=i: v.get("count", {}).get("v") == 100 + i,
                           timeout=5, after=t), gw.output()[-2000:]
    srv.set("MAIN.sText", "pushed")
    assert wait_values(w, "plc-note", lambda v: v.get("text", {}).get("v") == "pushed", timeout=5)
    srv.call(op="raw_set", area="M", offset=10, hex="0901")
    assert wait_values(w, "plc-note", lambda v: v.get("flags", {}).get("v") == 0x109, timeout=5)
    st = srv.stats()["stats"]
    # no value reads at all: only notifications (and the 2 s symbol-version check)
    assert "cmd9:0xF080" not in st and "cmd2:0xF005" not in st, st
    assert st.get("notes_sent", 0) >= 6, st
    assert st.get("cmd2:0xF008", 0) <= 4, st
    # a download: notifications are added again and keep delivering
    srv.call(op="download")
    time.sleep(2.5)
    srv.set("MAIN.nCount", 4242)
    srv.call(op="raw_set", area="M", offset=10, hex="0a00")
    t = time.monotonic()
    assert wait_values(w, "plc-note", lambda v: v.get("count", {}).get("v") == 4242 and v.get("flags", {}).get("v") == 10,
                       timeout=10, after=t), gw.output()[-3000:]
    # (stats reset after the first 4) the download re-adds the 3 symbol
    # notifications; the one on the raw address stays as it was
    assert srv.stats()["stats"].get("notes_added") == 3, srv.stats()
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


def test_add_route_over_udp(ads1, tmp_path):
    assert _cli_has(["ads", "add-route"]), "fieldbridge ads add-route --help shows no usage"
    srv = ads1()
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
    if srv.mode != "sum":  # no upload: say so, and what still works
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert f"has no symbol upload (ADS error 0x{srv.code:X}" in r.stderr, r.stderr
        assert "Names still read and write" in r.stderr and "MAIN.x:DINT" in r.stderr, r.stderr
        return
    assert r.returncode == 0, r.stderr
    lines = {ln.split()[0]: ln.split() for ln in r.stdout.splitlines() if ln.strip()}
    assert lines["MAIN.fTemperature"][1:3] == ["REAL", "float32"]
    assert lines["MAIN.sText"][1:3] == ["STRING(80)", "string"]
    assert lines["MAIN.stRecipe"][1:3] == ["ST_Recipe", "struct"]
    assert lines["MAIN.nAlias"][1:3] == ["T_Alias", "int16"]


def test_raw_addresses(ads):
    """%M/%I/%Q by byte offset (the only way into a PLC without symbols, such
    as a BC controller): inside the sum read with sum commands, plain reads of
    0x4020/0x4021/0xF020/0xF031 without."""
    srv = ads()
    srv.call(op="raw_set", area="M", offset=10, hex="2a01" + "08" + "00" + "0000c03f")  # %MW10, %MB12, %MD14
    srv.call(op="raw_set", area="M", offset=20, hex="6869210000000000")                 # %MB20 'hi!'
    srv.call(op="raw_set", area="I", offset=0, hex="3412")
    srv.call(op="raw_set", area="Q", offset=4, hex="00002040")
    srv.call(op="reset_stats")
    addrs = ["%MW10", "%MX12.3", "%MX12.4", "%MD14:REAL", "%MB20:STRING(7)", "%IW0", "%IB1:SINT", "%QD4:REAL",
             "MAIN.nCount"]
    r, vals = read_json(srv.url(), *addrs)
    assert r.returncode == 0, r.stderr
    got = {a: vals[a]["value"] for a in addrs}
    assert got == {"%MW10": 0x12a, "%MX12.3": True, "%MX12.4": False, "%MD14:REAL": 1.5, "%MB20:STRING(7)": "hi!",
                   "%IW0": 0x1234, "%IB1:SINT": 0x12, "%QD4:REAL": 2.5, "MAIN.nCount": 42}, got
    assert vals["%MX12.3"]["type"] == "bool" and vals["%MW10"]["type"] == "uint16"
    st = srv.stats()["stats"]
    if srv.mode == "sum":
        assert st.get("cmd9:0xF080") == 1 and "cmd2:0x4020" not in st, st   # one sum read for all
    else:
        assert st.get("cmd2:0x4020") == 3 and st.get("cmd2:0x4021") == 2, st
        assert st.get("cmd2:0xF020") == 2 and st.get("cmd2:0xF030") == 1, st
    # count: the next values of the type (bits: the next bits)
    r, vals = read_json(srv.url(), "%MB10", "--count", "3")
    assert [v["value"] for v in vals.values()] == [0x2a, 0x01, 0x08]
    r, vals = read_json(srv.url(), "%MX12.2", "--count", "3")
    assert [v["value"] for v in vals.values()] == [False, True, False]
    # writes: a bit, a word, a REAL into the outputs
    for addr, text in (("%MX12.5", "true"), ("%MW10", "513"), ("%QD4:REAL", "-3.25")):
        r = run_cli("write", srv.url(), addr, text)
        assert r.returncode == 0, (addr, r.stderr)
    assert srv.call(op="raw_get", area="M", offset=10, size=3)["hex"] == "010228"   # bit 5 set next to bit 3
    assert srv.call(op="raw_get", area="Q", offset=4, size=4)["hex"] == "000050c0"
    # beyond the area: the device's code as quality, not a crash
    r, vals = read_json(srv.url(), "%IW300")
    assert r.returncode == 1 and vals["%IW300"]["quality"] == "BadNodeIdUnknown", r.stderr
    r = run_cli("read", srv.url(), "%MX1.9")
    assert r.returncode == 2 and "BYTE.BIT" in r.stderr


def test_untyped_names_without_upload(ads1):
    """A PLC without the symbol upload: the type of an untyped name comes from
    its symbol info (0xF009) — covered in every `ads` test — else from the
    TwinCAT 3 extended handle reply; a PLC that offers neither gets a message
    that names the fix.  TwinCAT 2 without 0xF00F uploads with 0xF00C."""
    # no upload, no symbol info: the extended handle reply (size, type name)
    srv = ads1(args=["--no-upload", "0x701", "--refuse", "0xF009=0x701"])
    r, vals = read_json(srv.url(), "MAIN.nInt", "MAIN.sText", "MAIN.stRecipe.fSpeed")
    assert r.returncode == 0, r.stderr
    assert [vals[a]["value"] for a in ("MAIN.nInt", "MAIN.sText", "MAIN.stRecipe.fSpeed")] == [-300, "hello ADS", 12.5]
    r, vals = read_json(srv.url(), "MAIN.aReals", "--count", "5")
    assert r.returncode == 0 and [v["value"] for v in vals.values()] == [1.5, 2.5, 3.5, 4.5, 5.5], r.stderr
    time.sleep(0.2)
    assert srv.stats()["handles"] == 0   # the look-up handles were given back
    # ... and only the classic 4-byte handle reply: untyped names cannot work
    srv = ads1(args=["--no-upload", "0x701", "--refuse", "0xF009=0x702", "--classic-handles"])
    r = run_cli("read", srv.url(), "MAIN.nInt")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "cannot learn the type of 'MAIN.nInt'" in r.stderr and "0xF009" in r.stderr, r.stderr
    assert "give it in the address (MAIN.nInt:REAL" in r.stderr, r.stderr
    r, vals = read_json(srv.url(), "MAIN.nInt:INT")   # typed: fine
    assert r.returncode == 0 and vals["MAIN.nInt:INT"]["value"] == -300, r.stderr
    r = run_cli("read", srv.url(), "MAIN.nope")        # an unknown name is still called that
    assert r.returncode == 2 and "symbol not found" in r.stderr, r.stderr
    # TwinCAT 2 style: no 0xF00F (nor data types), the older 0xF00C upload info
    srv = ads1(args=["--refuse", "0xF00F=0x701", "--refuse", "0xF00E=0x701"])
    srv.call(op="reset_stats")
    r, vals = read_json(srv.url(), "MAIN.nInt", "MAIN.nAlias", "MAIN.aValues[2]")
    assert r.returncode == 0, r.stderr
    assert [vals[a]["value"] for a in ("MAIN.nInt", "MAIN.nAlias", "MAIN.aValues[2]")] == [-300, -7, 20]
    st = srv.stats()["stats"]
    assert st.get("cmd2:0xF00C") == 1 and st.get("cmd2:0xF00B") == 1 and "cmd9:0xF009" not in st, st
    r = run_cli("browse", srv.url())
    assert r.returncode == 0 and "MAIN.fTemperature" in r.stdout, r.stderr


def _http_json(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.read().decode()


def _device_errors(metrics_text, dev):
    m = re.search(r'^fieldbridge_device_errors_total\{[^}]*device="' + re.escape(dev) + r'"[^}]*\} (\d+)',
                  metrics_text, re.M)
    return int(m.group(1)) if m else None


def test_failed_reads_count_as_errors(ads, broker, start_gateway, watch):
    """A PLC that refuses every read, and a symbol the PLC does not have: every
    failed item is counted in the device's errors (/metrics, /status and the
    gateway status message), so the device is not reported healthy."""
    refusing, ghost = ads(), ads()
    refusing.call(op="error", code=0x704, where="ads")   # every request: access not permitted
    devs = [{"name": "plc-refuse", "url": refusing.url(), "poll": "200ms",
             "tags": [{"name": "a", "addr": "MAIN.nInt:INT"}, {"name": "b", "addr": "%MW10"}]},
            {"name": "plc-ghost", "url": ghost.url(), "poll": "200ms",
             "tags": [{"name": "gone", "addr": "MAIN.gone:INT"}, {"name": "count", "addr": "MAIN.nCount:DINT"}]}]
    port = peers.free_port()
    w = watch(broker.port)
    gw = start_gateway(gw_config(broker.port, devs, metrics={"listen": f"127.0.0.1:{port}"}))
    assert wait_values(w, "plc-refuse", lambda v: v.get("a", {}).get("reason") == "BadNotReadable", timeout=20), \
        gw.output()[-3000:]
    assert wait_values(w, "plc-ghost", lambda v: good(v, "count") and v.get("gone", {}).get("reason") ==
                       "BadNodeIdUnknown", timeout=20), gw.output()[-3000:]
    time.sleep(1.0)

    def status_ok(m):
        j = m.json() or {}
        d = j.get("devices", {})
        return all(d.get(n, {}).get("errors", 0) > 0 for n in ("plc-refuse", "plc-ghost"))
    st_msg = w.wait_for(status_ok, 10, topic=topic("gw-test", "status"))
    assert st_msg is not None, [m.text() for m in w.messages(topic("gw-test", "status"))][-2:]
    text = _http_json(port, "/metrics")
    status = json.loads(_http_json(port, "/status"))
    for name in ("plc-refuse", "plc-ghost"):
        assert _device_errors(text, name) and _device_errors(text, name) > 0, (name, text[:3000])
        d = status["devices"][name]
        assert d["state"] == "online" and d["errors"] > 0 and d["ne107"] != "OK", (name, d)
    # the healthy tag of plc-ghost keeps its value: counting changes no quality
    assert merged_values(w, "plc-ghost")["count"]["v"] == 42


def test_controller_without_symbols(ads1):
    """A BC-style controller: no sum commands, no upload, no symbols at all
    (0xF003/0xF009 refused).  Raw addresses work; a name reads Bad with a log
    line that points to them."""
    srv = ads1(args=["--no-sum", "0x701", "--no-upload", "0x701", "--refuse", "0xF003=0x701",
                     "--refuse", "0xF009=0x701", "--refuse", "0xF008=0x701"])
    srv.call(op="raw_set", area="M", offset=0, hex="e803")
    r, vals = read_json(srv.url(), "%MW0", "%MX0.3", "MAIN.nInt:INT")
    assert r.returncode == 1, r.stderr
    assert vals["%MW0"]["value"] == 1000 and vals["%MX0.3"]["value"] is True
    assert vals["MAIN.nInt:INT"]["quality"] == "BadCommunicationError"
    assert "0x701" in r.stderr and "use raw addresses such as %MW10" in r.stderr, r.stderr
    r = run_cli("write", srv.url(), "%MW0", "7")
    assert r.returncode == 0 and srv.call(op="raw_get", area="M", offset=0, size=2)["hex"] == "0700", r.stderr


def test_reload_keeps_handles_and_notifications(ads1, broker, start_gateway, watch):
    """A config reload that renumbers every tag (a device added in front)
    keeps the ADS connection, its handles and its notifications (the driver's
    adopt moves them to the new model and re-tags them with the new ids):
    no new connection, handle or notification on the PLC, and pushed values
    arrive under the right names."""
    import signal  # pylint: disable=import-outside-toplevel
    from conftest import to_yaml  # pylint: disable=import-outside-toplevel
    srv = ads1()
    dev = {"name": "plc-r", "url": srv.url("mode=notify"), "poll": "100ms",
           "tags": [{"name": "count", "addr": "MAIN.nCount", "type": "int32"},
                    {"name": "temp", "addr": "MAIN.fTemperature", "type": "float64"}]}
    w = watch(broker.port)
    cfg = gw_config(broker.port, [dev])
    gw = start_gateway(cfg)
    assert wait_values(w, "plc-r", lambda v: good(v, "count"), timeout=20), gw.output()[-3000:]
    time.sleep(0.5)
    before = srv.stats()["stats"]
    cfg["devices"] = [{"name": "sim-front", "url": "sim://f", "poll": "1s",
                       "tags": [{"name": f"s{i}", "addr": "counter"} for i in range(7)]}, dev]
    with open(gw.path, "w", encoding="utf-8") as f:
        f.write(to_yaml(cfg) + "\n")
    gw.proc.send(signal.SIGHUP)
    assert peers.wait_until(lambda: "reload: applied" in gw.output(), 10), gw.output()[-3000:]
    for i in range(3):
        srv.set("MAIN.nCount", 777 + i)
        t = time.monotonic()
        assert wait_values(w, "plc-r", lambda v, i=i: v.get("count", {}).get("v") == 777 + i and set(v) <= {"count", "temp"},
                           timeout=5, after=t), gw.output()[-3000:]
    after = srv.stats()["stats"]
    for k in ("connections", "notes_added", "cmd9:0xF082", "cmd2:0xF003", "cmd9:0xF003"):
        assert after.get(k, 0) == before.get(k, 0), (k, before, after)

def test_browse_yaml(ads1, tmp_path):
    """`browse --yaml`: one read-only tag per symbol with a plain type; structs
    and arrays listed as comments; the result passes `fieldbridge check`."""
    srv = ads1()
    r = run_cli("browse", srv.url(), "--yaml")
    assert r.returncode == 0, r.stderr
    y = r.stdout
    assert '- {name: "MAIN.fTemperature", addr: "MAIN.fTemperature", type: float32}  # REAL' in y, y
    assert "# not a single value: MAIN.stRecipe (ST_Recipe)" in y, y
    cfg = tmp_path / "b.yaml"
    cfg.write_text("gateway: {id: g}\ndevices:\n" + "\n".join("  " + ln for ln in y.splitlines()) + "\n")
    chk = run_cli("check", "-c", cfg)
    assert chk.returncode == 0, chk.stderr + cfg.read_text()
