"""test_opcua.py — the OPC UA driver against a node-opcua 2.182.2 server (an
OPC UA stack that is not ours), through the real binary: `fieldbridge read` /
`write` of every built-in type, node ids in every form and browse paths,
arrays with --count, user-name login (RSA-OAEP encrypted password on a None
channel), small chunks and message limits, and `fieldbridge run` with polling
and with subscriptions publishing to MQTT, taking MQTT commands, renewing a
short-lived secure-channel token and resuming after the server was killed
and restarted.

The peer runs from tests/peers/opcua (install: cd tests/peers/opcua && npm ci);
it binds 127.0.0.1 on a free port.  The test sets and reads its variables over
the script's stdin.
"""
import json
import os
import subprocess
import time

import pytest

from conftest import ROOT, gw_config, require, run_cli, wait_values, topic  # noqa: F401
import peers

PEER_DIR = os.path.join(ROOT, "tests", "peers", "opcua")
NODE_OK = os.path.isdir(os.path.join(PEER_DIR, "node_modules", "node-opcua"))


@pytest.fixture(autouse=True)
def _need_node_opcua():
    require("opcua", NODE_OK, "node-opcua is not installed in tests/peers/opcua: run scripts/peers.sh")


class UAServer:
    """node server.js as a child; variables set and read over its stdin/stdout."""

    def __init__(self, tmp_path, port=None, extra=(), name="opcua", pki=None):
        self.port = port or peers.free_port()
        self.pki = pki or os.path.join(str(tmp_path), "ua-pki")
        argv = ["node", os.path.join(PEER_DIR, "server.js"), "--port", str(self.port), "--pki", self.pki,
                *[str(x) for x in extra]]
        self.err = open(os.path.join(str(tmp_path), f"{name}.log"), "ab")
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=self.err, cwd=PEER_DIR, start_new_session=True)
        line = ""
        for _ in range(50):  # node-opcua may print warnings on stdout first
            line = self.p.stdout.readline().decode()
            if not line or line.startswith("READY"):
                break
        assert line.startswith("READY"), f"OPC UA server did not start: {line!r}"
        peers.wait_port(self.port, 20, self.p)

    def _call(self, req):
        self.p.stdin.write((json.dumps(req) + "\n").encode())
        self.p.stdin.flush()
        for _ in range(50):  # skip node-opcua's own lines on stdout
            line = self.p.stdout.readline().decode()
            if line.startswith("{"):
                break
        ans = json.loads(line)
        assert ans.get("ok"), ans
        return ans

    def set(self, name, value):
        self._call({"op": "set", "name": name, "value": value})

    def get(self, name):
        return self._call({"op": "get", "name": name})["value"]

    def sessions(self):
        return self._call({"op": "sessions"})["sessions"]

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(timeout=5)

    def stop(self):
        if self.p.poll() is None:
            try:
                self.p.stdin.close()
            except OSError:
                pass
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=5)
        self.err.close()

    def url(self, q=""):
        return f"opc.tcp://127.0.0.1:{self.port}" + (f"?{q}" if q else "")


@pytest.fixture
def ua(tmp_path):
    started = []

    def start(**kw):
        s = UAServer(tmp_path, name=f"opcua-{len(started)}", **kw)
        started.append(s)
        return s
    yield start
    for s in started:
        s.stop()


def read_json(url, *addrs, extra=()):
    r = run_cli("read", url, *addrs, "--json", *extra)
    try:
        return r, {x["addr"]: x for x in json.loads(r.stdout)}
    except json.JSONDecodeError:
        pytest.fail(f"read: rc {r.returncode}\nstdout {r.stdout}\nstderr {r.stderr}")


EXPECTED = {
    "Boolean": ("bool", True),
    "SByte": ("int8", -5),
    "Byte": ("uint8", 200),
    "Int16": ("int16", -30000),
    "UInt16": ("uint16", 60000),
    "Int32": ("int32", -2000000000),
    "UInt32": ("uint32", 4000000000),
    "Int64": ("int64", -4294967298),
    "UInt64": ("uint64", 9223372036854775809),
    "Float": ("float32", 21.5),
    "Double": ("float64", 3.141592653589793),
    "String": ("string", "hello wörld"),
    "DateTime": ("string", "2024-03-01T12:30:45.123Z"),
    "Guid": ("string", "72962b91-fa75-4ae6-8d28-b404dc7daf63"),
    "ByteString": ("string", "deadbeef"),
    "LocalizedText": ("string", "Pump"),
    "NodeId": ("string", "ns=1;s=Double"),
    "StatusCode": ("uint32", 0x803C0000),
}


@pytest.mark.smoke
def test_read_every_builtin_type(ua):
    srv = ua()
    addrs = [f"ns=1;s={n}" for n in EXPECTED]
    r, vals = read_json(srv.url(), *addrs)
    assert r.returncode == 0, r.stderr
    for n, (typ, want) in EXPECTED.items():
        v = vals[f"ns=1;s={n}"]
        assert v["type"] == typ, (n, v)
        assert v["value"] == want, (n, v)


def test_node_id_forms_and_browse_paths(ua):
    srv = ua()
    r, vals = read_json(srv.url(), "i=2258", "ns=1;s=Counter", "/Objects/1:Demo/1:Deep/1:Level2/1:Level3/1:Leaf",
                        "/Objects/1:Demo/1:Nope", "ns=1;s=Missing", "ns=0;i=2259")
    assert vals["i=2258"]["quality"] == "good" and vals["i=2258"]["value"].endswith("Z")
    assert vals["/Objects/1:Demo/1:Deep/1:Level2/1:Level3/1:Leaf"]["value"] == 7
    assert vals["/Objects/1:Demo/1:Nope"]["quality"] == "BadNodeIdUnknown"
    assert vals["ns=1;s=Missing"]["quality"] == "BadNodeIdUnknown"
    assert vals["ns=0;i=2259"]["quality"] == "good"  # ServerStatus.State (an enumeration → int32)
    assert r.returncode == 1  # not all good
    r = run_cli("read", srv.url(), "ns=x;s=1")
    assert r.returncode == 2 and "namespace" in r.stderr


def test_arrays_with_count(ua):
    srv = ua()
    r, vals = read_json(srv.url(), "ns=1;s=DoubleArray", extra=("--count", "5"))
    assert [vals[f"ns=1;s=DoubleArray[{i}]"]["value"] for i in range(4)] == [1.5, 2.5, 3.5, 4.5]
    # BadIndexRangeNoData (the core names it by its hex code until fb_q_name knows it)
    assert vals["ns=1;s=DoubleArray[4]"]["quality"] in ("BadIndexRangeNoData", "0x80370000")
    r, vals = read_json(srv.url(), "ns=1;s=StringArray", extra=("--count", "3"))
    assert [vals[f"ns=1;s=StringArray[{i}]"]["value"] for i in range(3)] == ["a", "bb", "ccc"]


def test_explicit_types_convert(ua):
    srv = ua()
    r, vals = read_json(srv.url(), "ns=1;s=Double:int32", "ns=1;s=Int32:string", "ns=1;s=UInt32:int16")
    assert vals["ns=1;s=Double:int32"]["value"] == 3
    assert vals["ns=1;s=Int32:string"]["value"] == "-2000000000"
    assert vals["ns=1;s=UInt32:int16"]["quality"] == "BadOutOfRange"


def test_write_takes_the_type_from_the_server(ua):
    srv = ua()
    cases = [("Double", "-2.25", -2.25), ("Float", "0.5", 0.5), ("Int16", "-7", -7), ("Byte", "17", 17),
             ("Int64", "-9000000000", "-9000000000"), ("UInt32", "4000000001", 4000000001),
             ("SByte", "-128", -128)]
    for name, text, want in cases:
        r = run_cli("write", srv.url(), f"ns=1;s={name}", text)
        assert r.returncode == 0, (name, r.stderr)
        assert srv.get(name) == want, name
    # strings and booleans: the CLI parses the value text by the tag type
    assert run_cli("write", srv.url(), "ns=1;s=String:string", "grüße").returncode == 0
    assert srv.get("String") == "grüße"
    assert run_cli("write", srv.url(), "ns=1;s=Boolean:bool", "false").returncode == 0
    assert srv.get("Boolean") is False
    assert run_cli("write", srv.url(), "ns=1;s=UInt64:uint64", "18446744073709551615").returncode == 0
    assert srv.get("UInt64") == "18446744073709551615"
    r = run_cli("write", srv.url(), "ns=1;s=Byte", "300")
    assert r.returncode == 2 and ("outside the range of Byte" in r.stderr or "300 is out of range for uint8" in r.stderr), r.stderr
    r = run_cli("write", srv.url(), "ns=1;s=ReadOnly", "1")
    assert r.returncode == 1 and "BadNotWritable" in r.stderr
    assert srv.get("ReadOnly") == 42


def test_user_name_login(ua, tmp_path):
    srv = ua()
    good = tmp_path / "ua.pass"
    good.write_text("secret\n")
    good.chmod(0o600)
    bad = tmp_path / "bad.pass"
    bad.write_text("nope")
    bad.chmod(0o600)
    r = run_cli("read", srv.url(f"user=operator&password_file={good}"), "ns=1;s=Double")
    assert r.returncode == 0, r.stderr
    r = run_cli("read", srv.url(f"user=operator&password_file={bad}"), "ns=1;s=Double")
    assert r.returncode == 1 and "BadUserAccessDenied" in r.stderr
    good.chmod(0o644)
    r = run_cli("read", srv.url(f"user=operator&password_file={good}"), "ns=1;s=Double")
    assert r.returncode == 2 and "chmod 600" in r.stderr  # a usage/config error (issue 12)


def test_small_chunks_and_message_limits(ua):
    """8 KiB chunks both ways: 300 ReadValueIds make a two-chunk request, the
    300 array values a response of about 90 chunks; then a smaller message limit."""
    srv = ua(extra=("--chunk", 8192, "--many", 300))
    r, vals = read_json(srv.url("chunk=8192"), "ns=1;s=ManyArray", extra=("--count", "300"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert all(vals[f"ns=1;s=ManyArray[{i}]"]["value"] == i for i in range(300))
    # a response above our announced MaxMessageSize: node-opcua honours the
    # limit and faults the request (a server that did not would hit our
    # receive check: "larger than our limit"); either way a clear failure
    r = run_cli("read", srv.url("chunk=8192&max_message=65536"), "ns=1;s=ManyArray", "--count", "300")
    assert r.returncode == 1 and ("larger than our limit" in r.stderr or "Read refused" in r.stderr), r.stderr[-2000:]


def test_reads_are_batched_within_max_nodes_per_read(ua):
    srv = ua(extra=("--max-read", 50, "--many", 120))
    r, vals = read_json(srv.url(), "ns=1;s=ManyArray", extra=("--count", "120"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert all(vals[f"ns=1;s=ManyArray[{i}]"]["value"] == i for i in range(120))


def test_connect_errors_are_clear(ua):
    port = peers.free_port()
    r = run_cli("read", f"opc.tcp://127.0.0.1:{port}", "i=2258")
    assert r.returncode == 1 and "connect to 127.0.0.1" in r.stderr
    r = run_cli("read", "opc.tcp://127.0.0.1:4840?bogus=1", "i=2258")
    assert r.returncode == 2 and "unknown opc.tcp URL key" in r.stderr
    r = run_cli("read", "opc.tcp://127.0.0.1:4840?security_policy=None&security_mode=Sign", "i=2258")
    assert r.returncode == 2 and "needs security_policy=Basic256Sha256" in r.stderr
    for bad in ("auth_retry=0s", "auth_retry=5x", "auth_retry=2d"):
        r = run_cli("read", f"opc.tcp://127.0.0.1:4840?{bad}", "i=2258")
        assert r.returncode == 2 and "auth_retry=" in r.stderr and "1s to 24h" in r.stderr, (bad, r.stderr)
    r = run_cli("read", "opc.tcp://127.0.0.1:4840?check_names=maybe", "i=2258")
    assert r.returncode == 2 and "expected warn, refuse or off" in r.stderr, r.stderr


def good(v, n):
    return n in v and v[n].get("q") == "good"


def test_gateway_polls_and_takes_commands(ua, broker, start_gateway, watch):
    srv = ua(extra=("--lifetime", 3000))
    dev = {"name": "ua-01", "url": srv.url("lifetime=2s"), "poll": "200ms", "timeout": "1s",
           "tags": [{"name": "temp", "addr": "ns=1;s=Double", "access": "rw"},
                    {"name": "count", "addr": "ns=1;s=Int32", "type": "int32", "access": "rw"},
                    {"name": "label", "addr": "ns=1;s=String", "type": "string", "access": "rw"},
                    {"name": "leaf", "addr": "/Objects/1:Demo/1:Deep/1:Level2/1:Level3/1:Leaf", "type": "int32"},
                    {"name": "ghost", "addr": "ns=1;s=Ghost"}]}
    w = watch(broker.port)
    gw = start_gateway(gw_config(broker.port, [dev]))
    m = wait_values(w, "ua-01", lambda v: good(v, "temp") and good(v, "leaf") and "ghost" in v, timeout=20)
    assert m is not None, gw.output()[-3000:]
    v = m.json()["values"]
    assert v["temp"]["v"] == 3.141592653589793 and v["leaf"]["v"] == 7 and v["label"]["v"] == "hello wörld"
    assert v["ghost"]["reason"] == "BadNodeIdUnknown"
    srv.set("Int32", 1234)
    assert wait_values(w, "ua-01", lambda v: v.get("count", {}).get("v") == 1234, timeout=10)
    w.publish(topic("ua-01", "command"), {"id": "ua-1", "write": {"temp": 42.25, "count": -5, "label": "batch-7"}},
              qos=1)
    resp = w.wait_for(lambda m: (m.json() or {}).get("id") == "ua-1", 10, topic=topic("ua-01", "command/response"))
    assert resp is not None and resp.json()["ok"] is True, resp and resp.json()
    assert srv.get("Double") == 42.25 and srv.get("Int32") == -5 and srv.get("String") == "batch-7"
    # the 2 s token was renewed on the way (no reconnect)
    time.sleep(3)
    assert "(renewed)" in gw.output()
    assert "reconnecting" not in gw.output()


def test_gateway_subscription_survives_server_restart(ua, broker, start_gateway, watch, tmp_path):
    srv = ua(extra=("--tick", 100))
    port = srv.port
    dev = {"name": "ua-02", "url": srv.url("mode=subscribe"), "poll": "200ms", "timeout": "1s",
           "tags": [{"name": "counter", "addr": "ns=1;s=Counter", "type": "uint32"},
                    {"name": "temp", "addr": "ns=1;s=Double"}]}
    w = watch(broker.port)
    gw = start_gateway(gw_config(broker.port, [dev]))
    m = wait_values(w, "ua-02", lambda v: good(v, "counter"), timeout=20)
    assert m is not None, gw.output()[-3000:]
    # values change within about one publishing interval
    srv.set("Double", 7.5)
    t = time.monotonic()
    assert wait_values(w, "ua-02", lambda v: v.get("temp", {}).get("v") == 7.5, timeout=5, after=t)
    assert time.monotonic() - t < 2
    # unchanged values are not published again: temp appears only when it changes
    time.sleep(1)
    later = [m for m in w.messages(topic("ua-02", "telemetry")) if m.t > t + 0.6]
    assert later and all("temp" not in (m.json().get("values") or {}) for m in later)
    # kill -9 and restart on the same port: values resume without restarting the gateway
    t = time.monotonic()
    srv.kill()
    m = wait_values(w, "ua-02", lambda v: v.get("counter", {}).get("q") not in (None, "good"), timeout=15, after=t)
    assert m is not None, gw.output()[-3000:]
    srv2 = ua(port=port, extra=("--tick", 100), pki=srv.pki)
    t = time.monotonic()
    m = wait_values(w, "ua-02", lambda v: good(v, "counter") and v["counter"]["v"] < 1000, timeout=30, after=t)
    assert m is not None, gw.output()[-3000:]
    assert gw.alive()
    assert srv2.sessions() == 1  # no flood of sessions after the reconnects


def test_browse_prints_the_tree(ua):
    """`fieldbridge browse` prints the server's tree, continued with BrowseNext."""
    srv = ua(extra=("--many", 450))
    r = run_cli("browse", srv.url("depth=3"))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "1:Demo  ns=1;s=Demo  Object" in out
    assert "1:Double  ns=1;s=Double  Variable  Double  rw  (float64)" in out
    assert "1:ReadOnly  ns=1;s=ReadOnly  Variable  Double  r-" in out
    # 451 children of Many: more than one Browse answer, continued with BrowseNext
    assert out.count("1:Item0") == 450 and "1:Item0449" in out


SEC = "security_policy=Basic256Sha256&security_mode={mode}&pki={pki}"


@pytest.mark.parametrize("mode", ["Sign", "SignAndEncrypt"])
def test_basic256sha256(ua, tmp_path, mode):
    """Sign and SignAndEncrypt: an untrusted server is refused with the command
    that trusts it; after that copy reads, writes, user login and 8 KiB chunks work."""
    srv = ua(extra=("--chunk", 8192, "--many", 300))
    pki = tmp_path / "pki"
    q = SEC.format(mode=mode, pki=pki)
    r = run_cli("read", srv.url(q), "ns=1;s=Double")
    assert r.returncode == 1 and "not trusted" in r.stderr and "cp " in r.stderr, r.stderr
    assert (pki / "own" / "cert.der").exists() and oct((pki / "own" / "key.pem").stat().st_mode & 0o777) == "0o600"
    rejected = list((pki / "rejected").glob("*.der"))
    assert len(rejected) == 1
    os.makedirs(pki / "trusted", exist_ok=True)
    (pki / "trusted" / rejected[0].name).write_bytes(rejected[0].read_bytes())
    r, vals = read_json(srv.url(q), "ns=1;s=Double", "ns=1;s=String")
    assert r.returncode == 0, r.stderr
    assert vals["ns=1;s=Double"]["value"] == 3.141592653589793 and vals["ns=1;s=String"]["value"] == "hello wörld"
    assert run_cli("write", srv.url(q), "ns=1;s=Double", "6.5").returncode == 0
    assert srv.get("Double") == 6.5
    pw = tmp_path / "ua.pass"
    pw.write_text("secret\n")
    pw.chmod(0o600)
    r = run_cli("read", srv.url(q + f"&user=operator&password_file={pw}&chunk=8192"), "ns=1;s=ManyArray",
                "--count", "300", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    assert [x["value"] for x in json.loads(r.stdout)] == list(range(300))


def test_trust_on_first_use(ua, tmp_path):
    srv = ua()
    pki = tmp_path / "pki"
    q = SEC.format(mode="SignAndEncrypt", pki=pki) + "&trust_server=auto"
    r = run_cli("read", srv.url(q), "ns=1;s=Double")
    assert r.returncode == 0, r.stderr
    assert len(list((pki / "trusted").glob("*.der"))) == 1
    # from now on the list alone is enough
    r = run_cli("read", srv.url(SEC.format(mode="Sign", pki=pki)), "ns=1;s=Double")
    assert r.returncode == 0, r.stderr


def test_gateway_encrypted_subscription_with_renewal(ua, broker, start_gateway, watch, tmp_path):
    srv = ua(extra=("--tick", 100))
    q = SEC.format(mode="SignAndEncrypt", pki=tmp_path / "pki") + "&trust_server=auto&lifetime=2s&mode=subscribe"
    dev = {"name": "ua-03", "url": srv.url(q), "poll": "200ms", "timeout": "1s",
           "tags": [{"name": "counter", "addr": "ns=1;s=Counter", "type": "uint32"},
                    {"name": "temp", "addr": "ns=1;s=Double", "access": "rw"}]}
    w = watch(broker.port)
    gw = start_gateway(gw_config(broker.port, [dev]))
    assert wait_values(w, "ua-03", lambda v: good(v, "counter"), timeout=20), gw.output()[-3000:]
    w.publish(topic("ua-03", "command"), {"id": "ua-3", "write": {"temp": -1.5}}, qos=1)
    resp = w.wait_for(lambda m: (m.json() or {}).get("id") == "ua-3", 10, topic=topic("ua-03", "command/response"))
    assert resp is not None and resp.json()["ok"] is True
    assert srv.get("Double") == -1.5
    time.sleep(5)  # two token renewals under encryption
    t = time.monotonic()
    assert wait_values(w, "ua-03", lambda v: good(v, "counter"), timeout=5, after=t)
    out = gw.output()
    assert out.count("(renewed)") >= 2 and "reconnecting" not in out, out[-3000:]


def make_user_cert(d, name, days=30):
    """A self-signed user certificate (DER and PEM) and its key (chmod 600) made with openssl."""
    key, pem, der = d / f"{name}.key", d / f"{name}.pem", d / f"{name}.der"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(pem),
                    "-days", str(days), "-subj", f"/CN={name}", "-addext", f"subjectAltName=URI:urn:{name}",
                    "-addext", "keyUsage=critical,digitalSignature,nonRepudiation,keyEncipherment,dataEncipherment"],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-in", str(pem), "-outform", "DER", "-out", str(der)], check=True)
    os.chmod(key, 0o600)
    return pem, key, der


def test_x509_user_identity(ua, tmp_path):
    """X509IdentityToken: a user certificate the server trusts logs in (None channel and
    Aes128_Sha256_RsaOaep SignAndEncrypt); one it does not trust is refused with a clear message."""
    alice = make_user_cert(tmp_path, "alice")
    mallory = make_user_cert(tmp_path, "mallory")
    spki = tmp_path / "ua-pki"
    os.makedirs(spki / "user" / "trusted" / "certs")
    (spki / "user" / "trusted" / "certs" / "alice.der").write_bytes(alice[2].read_bytes())
    srv = ua(extra=("--strict-users",), pki=str(spki))
    r = run_cli("read", srv.url(f"user_cert={alice[0]}&user_key={alice[1]}"), "ns=1;s=Double")
    assert r.returncode == 0 and "3.14159" in r.stdout, r.stderr
    # DER certificate, on an encrypted channel (the token signature uses the channel's policy)
    q = (f"user_cert={alice[2]}&user_key={alice[1]}&security_policy=Aes128_Sha256_RsaOaep"
         f"&security_mode=SignAndEncrypt&pki={tmp_path / 'pki'}&trust_server=auto")
    r = run_cli("read", srv.url(q), "ns=1;s=Double")
    assert r.returncode == 0 and "3.14159" in r.stdout, r.stderr
    r = run_cli("read", srv.url(f"user_cert={mallory[0]}&user_key={mallory[1]}"), "ns=1;s=Double")
    assert r.returncode != 0
    assert "refused the X.509 certificate login: BadIdentityTokenRejected" in r.stderr, r.stderr
    assert "trust list" in r.stderr
    # a key that belongs to another certificate, and a key file others can read
    r = run_cli("read", srv.url(f"user_cert={alice[0]}&user_key={mallory[1]}"), "ns=1;s=Double")
    assert r.returncode != 0 and "does not belong to" in r.stderr, r.stderr
    os.chmod(alice[1], 0o644)
    r = run_cli("read", srv.url(f"user_cert={alice[0]}&user_key={alice[1]}"), "ns=1;s=Double")
    assert r.returncode != 0 and "alice.key" in r.stderr, r.stderr
    r = run_cli("read", srv.url(f"user_cert={alice[0]}"), "ns=1;s=Double")
    assert r.returncode == 2 and "user_cert= and user_key= go together" in r.stderr


def test_mutual_authentication(ua, tmp_path):
    """Both sides authenticate: a server that trusts only known client
    application certificates (--strict-clients) refuses fieldbridge until its
    certificate is in the server's trust list, and says which file to give
    it; with --strict-users the X.509 user identity must be trusted too.
    Then the same with a client certificate issued by a plant CA: the server
    trusts the CA (and has its CRL), not the certificate itself."""
    import shutil  # pylint: disable=import-outside-toplevel
    spki = tmp_path / "ua-pki"
    # the plant CA of the last part, trusted with its CRL from the start (it trusts none
    # of the certificates used before it)
    ca = peers.OpensslCA(tmp_path, "plant-ca")
    trusted = spki / "server" / "trusted" / "certs"
    os.makedirs(trusted, exist_ok=True)
    os.makedirs(spki / "server" / "trusted" / "crl", exist_ok=True)
    shutil.copy(ca.crl()[1], spki / "server" / "trusted" / "crl" / "plant-ca.crl")
    shutil.copy(ca.der, trusted / "plant-ca.der")
    srv = ua(extra=("--strict-clients", "--strict-users"), pki=str(spki))

    def restart(srv):
        """The server's administrator changed its trust list: node-opcua watches
        its folders, but under load it missed a file copied in for 15 s and more
        (BadSecurityChecksFailed, BadCertificateRevocationUnknown), so it is
        restarted on the same store.  It keeps refusing a certificate left in
        rejected/: emptied first."""
        srv.stop()
        for f in (spki / "server" / "rejected").glob("*"):
            f.unlink()
        return ua(extra=("--strict-clients", "--strict-users"), pki=str(spki))
    pki = tmp_path / "pki"
    alice = make_user_cert(tmp_path, "alice")
    os.makedirs(spki / "user" / "trusted" / "certs", exist_ok=True)
    (spki / "user" / "trusted" / "certs" / "alice.der").write_bytes(alice[2].read_bytes())
    q = SEC.format(mode="SignAndEncrypt", pki=pki) + "&trust_server=auto&check_names=off"
    r = run_cli("read", srv.url(q), "ns=1;s=Double")
    assert r.returncode == 1, r.stderr
    assert ("OpenSecureChannel refused: BadSecurityChecksFailed (the server does not trust our certificate? "
            f"add {pki}/own/cert.der to its trusted clients)") in r.stderr, r.stderr
    # the server's administrator accepts our certificate
    shutil.copy(pki / "own" / "cert.der", trusted / "fieldbridge.der")
    srv = restart(srv)
    r = run_cli("read", srv.url(q), "ns=1;s=Double")
    assert r.returncode == 0 and "3.14159" in r.stdout, r.stderr
    r = run_cli("read", srv.url(q + f"&user_cert={alice[0]}&user_key={alice[1]}"), "ns=1;s=Double")
    assert r.returncode == 0 and "3.14159" in r.stdout, r.stderr

    # a client certificate from the plant CA, which the server trusts (with its CRL)
    pem, key, der = ca.issue("fieldbridge-app", "fieldbridge", san="DNS:localhost", uri="urn:fieldbridge:client",
                             ua=True)
    shutil.copy(der, pki / "own" / "cert.der")
    shutil.copy(key, pki / "own" / "key.pem")
    os.chmod(pki / "own" / "key.pem", 0o600)
    (trusted / "fieldbridge.der").unlink()
    srv = restart(srv)
    r = run_cli("read", srv.url(q), "ns=1;s=Double")
    assert r.returncode == 0 and "3.14159" in r.stdout, r.stderr


def _ca_server(ua, tmp_path, name, chain=True):
    """A node-opcua server with a certificate issued by a sub CA of a root CA
    (made with openssl ca); the certificate file holds the chain (leaf, sub CA)
    or the leaf alone."""
    root = peers.OpensslCA(tmp_path, f"{name}-root")
    sub = peers.OpensslCA(tmp_path, f"{name}-sub", parent=root)
    pem, key, der = sub.issue(f"{name}-srv", "ua-server", san="IP:127.0.0.1,DNS:localhost",
                              uri="urn:test:ua-server", ua=True)
    cert = tmp_path / f"{name}-cert.pem"
    with open(pem, encoding="ascii") as a, open(sub.pem, encoding="ascii") as b:
        cert.write_text(a.read() + (b.read() if chain else ""))
    srv = ua(extra=("--cert", cert, "--key", key, "--app-uri", "urn:test:ua-server"))
    return srv, root, sub, pem, der


def _client_pki(tmp_path, name, root, sub, crls=True, issuers=False):
    import shutil  # pylint: disable=import-outside-toplevel
    pki = tmp_path / name
    os.makedirs(pki / "trusted")
    os.makedirs(pki / "crl")
    shutil.copy(root.der, pki / "trusted" / "root.der")
    if issuers:
        os.makedirs(pki / "issuers")
        shutil.copy(sub.der, pki / "issuers" / "sub.der")
    if crls:
        shutil.copy(root.crl()[0], pki / "crl" / "root.crl")
        shutil.copy(sub.crl()[1], pki / "crl" / "sub.der")
    return pki


def test_ca_chain_and_crl(ua, tmp_path):
    """A server certificate issued by a sub CA (the server sends the chain) is
    trusted through the root CA in pki/trusted with both CRLs in pki/crl;
    without the CRLs it is refused (BadCertificateRevocationUnknown) unless
    revocation=if_present; once the sub CA is revoked by the root
    (BadCertificateIssuerRevoked) or the certificate by the sub CA
    (BadCertificateRevoked) it is refused — also with trust_server=auto, and
    also when the certificate itself was copied into pki/trusted."""
    import shutil  # pylint: disable=import-outside-toplevel
    srv, root, sub, srv_pem, srv_der = _ca_server(ua, tmp_path, "c1")
    pki = _client_pki(tmp_path, "pki", root, sub)

    def read(p, extra=""):
        return run_cli("read", srv.url(SEC.format(mode="SignAndEncrypt", pki=p) + "&check_names=off" + extra),
                       "ns=1;s=Double")
    r = read(pki)
    assert r.returncode == 0 and "3.14159" in r.stdout, r.stderr
    assert not list((pki / "rejected").glob("*")) if (pki / "rejected").exists() else True
    # the password is encrypted with the leaf of the chain, the session signatures cover the leaf
    pw = tmp_path / "pw"
    pw.write_text("secret\n")
    pw.chmod(0o600)
    r = read(pki, f"&user=operator&password_file={pw}")
    assert r.returncode == 0, r.stderr

    nocrl = _client_pki(tmp_path, "pki-nocrl", root, sub, crls=False)
    r = read(nocrl)
    assert r.returncode == 1 and ("the server certificate chain is refused: unable to get certificate CRL at "
                                  "/CN=ua-server (BadCertificateRevocationUnknown)") in r.stderr, r.stderr
    r = read(nocrl, "&revocation=if_present")
    assert r.returncode == 0, r.stderr

    # the root revokes the sub CA
    root.revoke(sub.pem)
    shutil.copy(root.crl(name="crl2")[0], pki / "crl" / "root.crl")
    r = read(pki)
    assert r.returncode == 1 and ("certificate revoked at /CN=fieldbridge test c1-sub "
                                  "(BadCertificateIssuerRevoked)") in r.stderr, r.stderr
    r = read(nocrl, "&revocation=if_present")  # no CRLs there: nothing known to be revoked
    assert r.returncode == 0, r.stderr
    shutil.copy(root.crl(name="crl2")[0], nocrl / "crl" / "root.crl")
    r = read(nocrl, "&revocation=if_present")  # a CRL that is present is checked
    assert r.returncode == 1 and "(BadCertificateIssuerRevoked)" in r.stderr, r.stderr

    # the sub CA revokes the server's certificate; trust on first use does not override it
    fresh = _client_pki(tmp_path, "pki-fresh", root, sub)  # the root's CRL from before: the sub CA is fine
    sub.revoke(srv_pem)
    shutil.copy(sub.crl(name="crl2")[1], fresh / "crl" / "sub.der")
    r = read(fresh, "&trust_server=auto")
    assert r.returncode == 1 and "certificate revoked at /CN=ua-server (BadCertificateRevoked)" in r.stderr, r.stderr
    assert not [p for p in (fresh / "trusted").glob("*") if p.name != "root.der"]
    # the certificate itself in the trust list: the CRL still applies
    shutil.copy(srv_der, fresh / "trusted" / "server.der")
    r = read(fresh)
    assert r.returncode == 1 and "the server certificate is revoked (on the CRL of" in r.stderr, r.stderr
    assert "BadCertificateRevoked" in r.stderr


def test_ca_chain_from_issuers(ua, tmp_path):
    """A server that sends only its own certificate: the sub CA comes from
    pki/issuers (trusted only through the root in pki/trusted)."""
    srv, root, sub, _, _ = _ca_server(ua, tmp_path, "c2", chain=False)
    q = "&check_names=off"
    pki = _client_pki(tmp_path, "pki", root, sub, issuers=True)
    r = run_cli("read", srv.url(SEC.format(mode="Sign", pki=pki) + q), "ns=1;s=Double")
    assert r.returncode == 0 and "3.14159" in r.stdout, r.stderr
    lone = _client_pki(tmp_path, "pki-lone", root, sub)  # no issuers/: the chain cannot be built
    r = run_cli("read", srv.url(SEC.format(mode="Sign", pki=lone) + q), "ns=1;s=Double")
    assert r.returncode == 1 and "not in" in r.stderr and "not issued by a CA there" in r.stderr, r.stderr


@pytest.mark.parametrize("mode", ["Sign", "SignAndEncrypt"])
def test_aes128_sha256_rsaoaep(ua, tmp_path, mode):
    srv = ua(extra=("--chunk", 8192, "--many", 1500))
    pw = tmp_path / "pw"
    pw.write_text("secret\n")
    os.chmod(pw, 0o600)
    url = srv.url(f"security_policy=Aes128_Sha256_RsaOaep&security_mode={mode}&pki={tmp_path / 'pki'}"
                  f"&trust_server=auto&user=operator&password_file={pw}&chunk=8192")
    # a 12 KB response and a 40 KB request: several chunks each way under the AES-128 keys
    r, vals = read_json(url, "ns=1;s=ManyArray")
    assert r.returncode == 0 and vals["ns=1;s=ManyArray"]["value"] == 0, r.stderr
    ghosts = [f"ns=1;s=Ghost{i:02d}" + "x" * 600 for i in range(62)]  # unknown nodes with long ids
    r, vals = read_json(url, *ghosts, "ns=1;s=Item1499")
    assert vals["ns=1;s=Item1499"]["value"] == 1499, r.stderr
    assert all(vals[g]["quality"] == "BadNodeIdUnknown" for g in ghosts), vals[ghosts[0]]
    r = run_cli("write", url, "ns=1;s=String:string", "aes-128")
    assert r.returncode == 0 and srv.get("String") == "aes-128", r.stderr


def test_percent_deadband(ua, broker, start_gateway, watch):
    """deadband: "10%" becomes a server-side PercentDeadband on an analog node (EURange 0..100);
    a node without EURange is refused by the server and monitored without it (logged)."""
    srv = ua()
    dev = {"name": "ua-pct", "url": srv.url("mode=subscribe"), "poll": "200ms", "timeout": "1s",
           "tags": [{"name": "level", "addr": "ns=1;s=Level", "deadband": "10%"},
                    {"name": "temp", "addr": "ns=1;s=Double", "deadband": "10%"}]}
    w = watch(broker.port)
    gw = start_gateway(gw_config(broker.port, [dev]))
    m = wait_values(w, "ua-pct", lambda v: good(v, "level"), timeout=20)
    assert m is not None, gw.output()[-3000:]
    assert "refused the percent deadband on ns=1;s=Double" in gw.output()
    # 1 → 5: 400 % of the last value (our own deadband passes it) but 4 % of the EURange: the server holds it back
    t = time.monotonic()
    srv.set("Level", 5)
    time.sleep(1.5)
    assert not [m for m in w.messages(topic("ua-pct", "telemetry"))
                if m.t > t and "level" in (m.json().get("values") or {})]
    srv.set("Level", 30)
    assert wait_values(w, "ua-pct", lambda v: v.get("level", {}).get("v") == 30, timeout=5, after=t)
    # the node without EURange still delivers changes (no server-side deadband)
    srv.set("Double", 100)
    assert wait_values(w, "ua-pct", lambda v: v.get("temp", {}).get("v") == 100, timeout=5, after=t)


def test_refused_nodes_are_counted_and_shown_in_ne107(ua, broker, start_gateway, watch):
    """A node the server does not have (BadNodeIdUnknown) next to a good one,
    polled and subscribed: each device is online, but its error counter grows
    (polling: every cycle; subscribed: the server's report) and NE107 stays
    Maintenance required while the tag is Bad — not OK with errors 0."""
    from test_health import metric, status_of
    srv = ua()
    port = peers.free_port()
    tags = [{"name": "temp", "addr": "ns=1;s=Double"}, {"name": "ghost", "addr": "ns=1;s=Ghost"}]
    devs = [{"name": "ua-poll", "url": srv.url(), "poll": "200ms", "timeout": "1s", "tags": tags},
            {"name": "ua-sub", "url": srv.url("mode=subscribe"), "poll": "200ms", "timeout": "1s", "tags": tags}]
    w = watch(broker.port)
    gw = start_gateway(gw_config(broker.port, devs, metrics={"listen": f"127.0.0.1:{port}"}))
    for d in ("ua-poll", "ua-sub"):
        m = wait_values(w, d, lambda v: good(v, "temp") or v.get("ghost", {}).get("reason") == "BadNodeIdUnknown",
                        timeout=20)
        assert m is not None, gw.output()[-3000:]
    time.sleep(2.5)  # beyond the 1 s status interval
    for d, least in (("ua-poll", 5), ("ua-sub", 1)):
        st = status_of(port, d)
        assert st["state"] == "online" and st["errors"] >= least, (d, st)
        assert st["ne107"] == "Maintenance required", (d, st)
        assert metric(port, "fieldbridge_device_bad_tags", d) == 1, d


def logins(srv):
    return srv._call({"op": "logins"})


def test_wrong_password_backs_off_long(ua, broker, start_gateway, watch, tmp_path):
    """A wrong password (node-opcua answers ActivateSession with BadUserAccessDenied):
    the tags carry BadUserAccessDenied, not BadCommunicationError; the device is
    offline (NE107 Failure); the next login waits auth_retry (default 5 min, so
    one attempt in the window; auth_retry=2s: one every 2 s instead of the
    0.5 s… back-off of a network failure), and the certificate host-name
    warning (node-opcua's certificate names the machine, not 127.0.0.1) is
    logged once, not at every attempt; check_names=off does not compare names."""
    from test_health import status_of
    srv = ua()
    bad = tmp_path / "bad.pass"
    bad.write_text("wrong\n")
    bad.chmod(0o600)
    port = peers.free_port()
    sec = f"security_policy=Basic256Sha256&security_mode=SignAndEncrypt&pki={tmp_path / 'pki'}&trust_server=auto"
    q = f"{sec}&user=operator&password_file={bad}"
    devs = [{"name": "ua-pw", "url": srv.url(q + "&auth_retry=2s"), "poll": "200ms", "timeout": "2s",
             "tags": [{"name": "temp", "addr": "ns=1;s=Double"}]}]
    w = watch(broker.port)
    gw = start_gateway(gw_config(broker.port, devs, metrics={"listen": f"127.0.0.1:{port}"}))
    m = wait_values(w, "ua-pw", lambda v: "temp" in v, timeout=20)
    assert m is not None, gw.output()[-3000:]
    t0 = time.monotonic()
    v = m.json()["values"]["temp"]
    assert v["v"] is None and v["q"] == "bad" and v["reason"] == "BadUserAccessDenied", v
    st = status_of(port, "ua-pw")
    assert st["state"] == "offline" and st["ne107"] == "Failure", st
    n0 = logins(srv)["refused"]
    time.sleep(7.0)
    n = logins(srv)["refused"] - n0
    # every 2 s: 3 or 4 more in 7 s (a network-failure back-off would have made about 5 by
    # then and would keep doubling only up to 30 s)
    assert 2 <= n <= 4, f"{n} login attempts in 7 s with auth_retry=2s\n{gw.output()[-3000:]}"
    out = gw.output()
    assert out.count("does not name the host 127.0.0.1") == 1, \
        f"certificate warning logged {out.count('does not name the host 127.0.0.1')} times"
    assert "retry in 2.0s" in out
    # no BadCommunicationError in between: the quality stays the login's
    vals = [x.json()["values"]["temp"] for x in w.messages(topic("ua-pw", "telemetry")) if x.t >= t0 - 1]
    assert all(x.get("reason") == "BadUserAccessDenied" for x in vals), vals
    gw.stop()

    # the default: minutes, i.e. no second attempt in the window; check_names=off: no warning
    devs = [{"name": "ua-pw2", "url": srv.url(q + "&check_names=off"), "poll": "200ms", "timeout": "2s",
             "tags": [{"name": "temp", "addr": "ns=1;s=Double"}]}]
    n0 = logins(srv)["refused"]
    gw2 = start_gateway(gw_config(broker.port, devs), name="gw-default")
    assert wait_values(w, "ua-pw2", lambda v: v.get("temp", {}).get("reason") == "BadUserAccessDenied",
                       timeout=20), gw2.output()[-3000:]
    time.sleep(5.0)
    assert logins(srv)["refused"] - n0 == 1, gw2.output()[-3000:]
    assert "retry in 300.0s" in gw2.output()
    assert "does not name the host" not in gw2.output()


def test_reload_keeps_the_session_and_its_subscription(ua, broker, start_gateway, watch):
    """A config reload that renumbers every tag (a device added in front)
    keeps the OPC UA session and its monitored items (the driver's adopt):
    the server sees no new session and values keep arriving by subscription,
    under the right tag names."""
    import signal  # pylint: disable=import-outside-toplevel
    from conftest import to_yaml  # pylint: disable=import-outside-toplevel
    srv = ua(extra=("--tick", 100))
    dev = {"name": "ua-r", "url": srv.url("mode=subscribe"), "poll": "200ms", "timeout": "1s",
           "tags": [{"name": "counter", "addr": "ns=1;s=Counter", "type": "uint32"},
                    {"name": "temp", "addr": "ns=1;s=Double"},
                    {"name": "leaf", "addr": "/Objects/1:Demo/1:Deep/1:Level2/1:Level3/1:Leaf"}]}
    w = watch(broker.port)
    cfg = gw_config(broker.port, [dev])
    gw = start_gateway(cfg)
    assert wait_values(w, "ua-r", lambda v: good(v, "counter"), timeout=20), gw.output()[-3000:]
    assert srv.sessions() == 1
    cfg["devices"] = [{"name": "sim-front", "url": "sim://f", "poll": "1s",
                       "tags": [{"name": f"s{i}", "addr": "counter"} for i in range(5)]}, dev]
    with open(gw.path, "w", encoding="utf-8") as f:
        f.write(to_yaml(cfg) + "\n")
    t0 = time.monotonic()
    gw.proc.send(signal.SIGHUP)
    assert peers.wait_until(lambda: "reload: applied" in gw.output(), 10), gw.output()[-3000:]
    assert '"kept":1' in gw.output().split("reload: applied", 1)[1].split("\n", 1)[0], gw.output()[-2000:]
    srv.set("Double", 42.25)
    t1 = time.monotonic()
    assert wait_values(w, "ua-r", lambda v: v.get("temp", {}).get("v") == 42.25, timeout=5, after=t1), \
        gw.output()[-3000:]
    m = wait_values(w, "ua-r", lambda v: good(v, "counter") and set(v) <= {"counter", "temp", "leaf"}, timeout=5,
                    after=t1)
    assert m is not None
    assert wait_values(w, "sim-front", lambda v: "s0" in v, timeout=5, after=t0)
    assert srv.sessions() == 1, "the reload opened a new session"
    assert "session open" not in gw.output().split("reload requested", 1)[1], "reconnected on reload"

def test_browse_yaml_is_config_that_checks(ua, tmp_path):
    """`fieldbridge browse URL --yaml` turns the address space into a device
    entry with one tag per variable (name from the browse path, node id as
    address, type and access as the server declares them) that `fieldbridge
    check` accepts and that reads the server's values when run."""
    srv = ua()
    r = run_cli("browse", srv.url("depth=3"), "--yaml")
    assert r.returncode == 0, r.stderr
    y = r.stdout
    assert '- {name: "Demo.Scalars.Double", addr: "ns=1;s=Double", type: float64, access: rw}' in y, y
    assert '- {name: "Demo.ReadOnly", addr: "ns=1;s=ReadOnly", type: float64}' in y, y
    assert '# not a single value' not in y or 'ns=1;s=' in y
    cfg = tmp_path / "browsed.yaml"
    cfg.write_text("gateway: {id: g}\ndevices:\n" + "\n".join("  " + ln for ln in y.splitlines()) + "\n")
    chk = run_cli("check", "-c", cfg)
    assert chk.returncode == 0, chk.stderr + "\n" + cfg.read_text()
    # the listing without --yaml is unchanged
    assert "1:Double  ns=1;s=Double  Variable  Double  rw  (float64)" in run_cli("browse", srv.url("depth=3")).stdout


def test_browse_over_the_http_api(ua, tmp_path, start_gateway):
    """GET /api/v1/browse?url=… (operator): the same variables as data and
    as YAML; a viewer is refused; a driver without browse says why."""
    import httpapi as H  # pylint: disable=import-outside-toplevel
    srv = ua()
    tokens = tmp_path / "t"
    H.write_tokens(tokens, ("op", "operator", H.OPERATOR), ("vi", "viewer", H.VIEWER))
    gw = start_gateway(gw_config(None, [{"name": "s", "url": "sim://x", "tags": [{"name": "t", "addr": "const:1"}]}],
                                 http={"listen": "127.0.0.1:0", "tokens": str(tokens), "plaintext_writes": True}))
    port = H.api_port(gw)
    c = H.Client(port, H.OPERATOR)
    from urllib.parse import quote  # pylint: disable=import-outside-toplevel
    r = c.get("/api/v1/browse?url=" + quote(srv.url("depth=3"), safe=""))
    assert r.status == 200, r.body
    b = r.json()
    items = {i["addr"]: i for i in b["items"]}
    assert b["driver"] == "opcua" and b["count"] == len(b["items"])
    assert items["ns=1;s=Double"] == {"name": "Demo.Scalars.Double", "addr": "ns=1;s=Double", "type": "float64",
                                      "access": "rw", "note": "Double"}
    assert items["ns=1;s=ReadOnly"]["access"] == "r"
    assert b["yaml"] == run_cli("browse", srv.url("depth=3"), "--yaml").stdout
    assert c.get("/api/v1/browse?url=" + quote(srv.url(), safe=""), token=H.VIEWER).status == 403
    r = c.get("/api/v1/browse?url=" + quote("modbus-tcp://127.0.0.1:1", safe=""))
    assert r.status == 400 and "nothing to browse" in r.json()["error"]
    r = c.get("/api/v1/browse?url=" + quote(f"opc.tcp://127.0.0.1:{peers.free_port()}?timeout=500ms", safe=""))
    assert r.status == 502, r.body
    assert c.get("/api/v1/browse").status == 400
    assert "http: browse opc.tcp://127.0.0.1" in gw.output()
