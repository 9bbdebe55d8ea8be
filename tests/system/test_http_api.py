"""test_http_api.py — the HTTP API (`http:` section; docs/http-api.md) through
the real binary, against pymodbus and the simulator: every endpoint's answer
validated against docs/openapi.yaml, authentication and roles, TLS, the
event stream (live values, resume with Last-Event-ID, a slow subscriber that
must not hold anything up), config check and the redacted config, and
malformed, oversized and flooding requests that must get a clear 4xx while
the gateway keeps polling.
"""
import json
import os
import re
import socket
import ssl
import subprocess
import time

import pytest

import httpapi as H
import peers
from conftest import fb_bin, gw_config, reload_gateway, run_cli

pytestmark = pytest.mark.usefixtures()

SETPOINT = 20


def modbus_dev(port):
    return {"name": "press", "url": f"modbus-tcp://127.0.0.1:{port}?unit=1", "poll": "200ms",
            "tags": [{"name": "setpoint", "addr": f"hr:{SETPOINT}:int16", "access": "rw", "range": [0, 100],
                      "unit": "bar"},
                     {"name": "count", "addr": "hr:21"},
                     {"name": "ro", "addr": "hr:22", "access": "r"}]}


def sim_dev(name="sim", poll="100ms"):
    return {"name": name, "url": "sim://x?seed=3", "poll": poll,
            "tags": [{"name": "temperature", "addr": "sine:amp=10,period=5s,offset=20", "unit": "°C"},
                     {"name": "label", "addr": "const:\"PX-200\""},
                     {"name": "mem", "addr": "memory:initial=1", "access": "rw"}]}


@pytest.fixture
def api(tmp_path, start_modbus, start_gateway):
    """A gateway with a Modbus device (pymodbus), a simulated one and the API;
    returns a function taking extra `http:` keys (and devices, env)."""
    def start(devices=None, env=None, ca=None, **http):
        mb = start_modbus({"units": {"1": {"hr": [0] * 40}}})
        mb.write_hr(SETPOINT, [11])
        tokens = tmp_path / "http.tokens"
        H.write_tokens(tokens, ("op", "operator", H.OPERATOR), ("vi", "viewer", H.VIEWER))
        sec = {"listen": "127.0.0.1:0", "tokens": str(tokens), "plaintext_writes": True}
        sec.update(http)
        sec = {k: v for k, v in sec.items() if v is not None}
        devs = devices if devices is not None else [modbus_dev(mb.port), sim_dev()]
        gw = start_gateway(gw_config(None, devs, http=sec), env=env)
        port = H.api_port(gw)
        c = H.Client(port, H.OPERATOR, ca=ca)
        H.wait_for(lambda: all(v["q"] == "good" for v in c.get("/api/v1/values").json()["values"]), 15,
                   "every value good")
        return gw, port, mb, tokens
    return start


# ------------------------------------------------------------------ contract
@pytest.mark.smoke
def test_every_endpoint_matches_openapi(api):
    """Each endpoint answers as docs/openapi.yaml says (validated in Client)."""
    gw, port, mb, _ = api()
    c = H.Client(port, H.VIEWER)
    who = c.get("/api/v1/whoami").json()
    assert who == {"user": "vi", "role": "viewer", "tls": False, "can_write": False,
                   "gateway": "gw-test", "version": who["version"]}
    st = c.get("/api/v1/status").json()
    assert st["health"] == "ok" and set(st["devices"]) == {"press", "sim"} and "http" in st["sinks"]
    devs = c.get("/api/v1/devices").json()["devices"]
    assert [d["name"] for d in devs] == ["press", "sim"]
    assert devs[0]["state"] == "online" and devs[0]["ne107"] == "OK" and devs[0]["counters"]["requests"] > 0
    d = c.get("/api/v1/devices/press").json()
    assert d["poll_groups"] == [{"period_ms": 200, "tags": 3, "overruns": d["poll_groups"][0]["overruns"]}]
    tags = c.get("/api/v1/devices/press/tags").json()["tags"]
    sp = next(t for t in tags if t["name"] == "setpoint")
    assert sp["v"] == 11 and sp["q"] == "good" and sp["access"] == "rw" and sp["range"] == [0, 100]
    assert sp["unit"] == "bar" and sp["type"] == "int16" and sp["addr"] == f"hr:{SETPOINT}:int16"
    vals = c.get("/api/v1/values").json()
    assert vals["count"] == 6 and {(v["device"], v["tag"]) for v in vals["values"]} >= {("sim", "label")}
    one = c.get("/api/v1/values?device=sim&tag=label").json()
    assert one["count"] == 1 and one["values"][0]["v"] == "PX-200"
    assert c.get("/api/v1/values?tag=setpoint").json()["values"][0]["device"] == "press"
    assert c.get("/api/v1/values?device=nope").status == 404
    assert c.get("/api/v1/values?tag=nope").status == 404
    assert c.get("/api/v1/values?bogus=1").status == 400
    assert c.get("/api/v1/devices/nope").status == 404
    assert c.get("/api/v1/devices/nope/tags").status == 404
    r = c.get("/api/v1/openapi.yaml", token=None)
    assert r.status == 200 and r.body == open(H.OPENAPI_PATH, encoding="utf-8").read()
    # the page and its files, without a token (they hold no data)
    page = c.get("/", token=None)
    assert page.status == 200 and "text/html" in page.header("Content-Type")
    assert "default-src 'self'" in page.header("Content-Security-Policy")
    for f in ("/ui/app.js", "/ui/style.css", "/ui/icon.svg"):
        assert c.get(f, token=None).status == 200, f
    for bad in ("/ui/nope.js", "/ui/../api/v1/values", "/api/v1/", "/api/v1/devices/", "/index.html"):
        assert c.get(bad).status == 404, bad
    assert gw.alive()


def test_write_through_the_router(api):
    """A write goes through the one command router: validated like an MQTT
    command, carried out on the device (pymodbus holds the new value), logged
    with the source http:<user>; a refused write is 422 with the reason."""
    gw, port, mb, _ = api()
    c = H.Client(port, H.OPERATOR)
    r = c.post("/api/v1/devices/press/write", {"id": "w-1", "write": {"setpoint": 42}})
    assert r.status == 200, r.body
    assert r.json() == {"id": "w-1", "ok": True, "results": {"setpoint": {"ok": True}}}
    assert mb.read_hr(SETPOINT) == [42]
    H.wait_for(lambda: c.get("/api/v1/values?device=press&tag=setpoint").json()["values"][0]["v"] == 42, 5,
               "the new value read back")
    assert "write 42 from http:op: ok" in gw.output()
    # the router's checks: range, read-only, unknown tag, bad JSON, an old command
    r = c.post("/api/v1/devices/press/write", {"id": 7, "write": {"setpoint": 101}})
    assert r.status == 422 and r.json()["results"]["setpoint"] == {"ok": False, "error": "above maximum 100"}
    r = c.post("/api/v1/devices/press/write", {"write": {"ro": 1, "nope": 2}})
    res = r.json()["results"]
    assert r.status == 422 and res["ro"]["error"] == "tag is read-only" and res["nope"]["error"] == "no such tag"
    r = c.post("/api/v1/devices/press/write", "{\"write\": {\"setpoint\": ")
    assert r.status == 422 and r.json()["error"].startswith("invalid JSON"), r.body
    r = c.post("/api/v1/devices/press/write", {"write": {"setpoint": 5}, "extra": 1})
    assert r.status == 422 and "unknown key 'extra'" in r.json()["error"]
    assert c.post("/api/v1/devices/nope/write", {"write": {"x": 1}}).status == 404
    assert mb.read_hr(SETPOINT) == [42]
    assert "write 101 from http:op refused: above maximum 100" in gw.output()


# ---------------------------------------------------------------------- auth
def test_authentication_and_roles(api, tmp_path):
    """No token, an unknown token, a malformed header → 401 with
    WWW-Authenticate; a viewer's write → 403; every refusal is logged with
    the client address; a token added to the file works within seconds."""
    gw, port, mb, tokens = api()
    c = H.Client(port)
    for tok, why in ((None, "a bearer token is required"), ("fbt_wrong", "unknown token")):
        r = c.get("/api/v1/devices", token=tok)
        assert r.status == 401 and why in r.json()["error"]
        assert r.header("WWW-Authenticate") == 'Bearer realm="fieldbridge"'
    r = c.get("/api/v1/devices", token=None, headers={"Authorization": "Basic b3A6cGFzcw=="})
    assert r.status == 401 and "malformed Authorization" in r.json()["error"]
    r = c.post("/api/v1/devices/press/write", {"write": {"setpoint": 7}}, token=H.VIEWER)
    assert r.status == 403 and "role viewer may not" in r.json()["error"]
    r = c.post("/api/v1/devices/press/write", {"write": {"setpoint": 7}}, token=None)
    assert r.status == 401
    assert mb.read_hr(SETPOINT) == [11]
    out = gw.output()
    assert "http: refused GET /api/v1/devices from 127.0.0.1 (user -): 401 unknown token" in out
    assert "http: refused POST /api/v1/devices/press/write from 127.0.0.1 (user vi): 403 role viewer" in out
    # the tokens file is re-read when it changes: a new operator works, a removed one stops
    newtok = "fbt_new-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    H.write_tokens(tokens, ("op", "operator", H.OPERATOR), ("carol", "operator", newtok))
    H.wait_for(lambda: c.get("/api/v1/whoami", token=newtok).status == 200, 6, "the new token")
    assert c.get("/api/v1/whoami", token=H.VIEWER).status == 401
    r = c.post("/api/v1/devices/press/write", {"write": {"setpoint": 33}}, token=newtok)
    assert r.status == 200 and mb.read_hr(SETPOINT) == [33]
    assert "write 33 from http:carol: ok" in gw.output()
    # fieldbridge http-token makes a working entry
    out = run_cli("http-token", "dave", "viewer", "--append", str(tokens))
    assert out.returncode == 0, out.stderr
    tok = out.stdout.split("\n")[1].strip()
    assert tok.startswith("fbt_") and len(tok) == 47 and tok not in tokens.read_text()
    H.wait_for(lambda: c.get("/api/v1/whoami", token=tok).status == 200, 6, "the http-token token")
    assert c.get("/api/v1/whoami", token=tok).json()["role"] == "viewer"
    dup = run_cli("http-token", "dave", "operator", "--append", str(tokens))
    assert dup.returncode == 2 and "already has a token named 'dave'" in dup.stderr


def test_anonymous_viewer_and_writes_need_tls(api):
    """anonymous: viewer lets anyone read; writes still need an operator
    token, and without TLS (plaintext_writes off) even the operator is refused."""
    gw, port, mb, _ = api(anonymous="viewer", plaintext_writes=None)
    c = H.Client(port)
    assert c.get("/api/v1/values", token=None).status == 200
    assert c.get("/api/v1/whoami", token=None).json()["user"] == "anonymous"
    r = c.post("/api/v1/devices/press/write", {"write": {"setpoint": 9}}, token=None)
    assert r.status == 403 and "needs operator" in r.json()["error"]
    r = c.post("/api/v1/devices/press/write", {"write": {"setpoint": 9}}, token=H.OPERATOR)
    assert r.status == 403 and "needs TLS" in r.json()["error"]
    assert c.get("/api/v1/whoami", token=H.OPERATOR).json()["can_write"] is False
    assert mb.read_hr(SETPOINT) == [11]


def test_config_errors_for_http(tmp_path):
    """Insecure combinations are config errors, reported file:line:col."""
    def check(http):
        p = tmp_path / "c.yaml"
        p.write_text("gateway: {id: g}\nhttp:\n" + "".join(f"  {k}: {v}\n" for k, v in http.items()))
        return run_cli("check", "-c", p)
    r = check({"listen": "\"0.0.0.0:8080\"", "anonymous": "viewer", "plaintext_writes": "true"})
    assert r.returncode == 2 and "c.yaml:5:21: http.plaintext_writes is only allowed on a loopback" in r.stderr
    r = check({"listen": "\"127.0.0.1:8080\""})
    assert r.returncode == 2 and "no tokens file and anonymous: none" in r.stderr
    r = check({"listen": "\"127.0.0.1:8080\"", "anonymous": "viewer", "buffer": "{path: /tmp}"})
    assert r.returncode == 2 and "unknown key 'buffer' in http" in r.stderr
    t = tmp_path / "t"
    t.write_text("a:admin:sha256:00\n")
    t.chmod(0o600)
    r = check({"listen": "\"127.0.0.1:8080\"", "tokens": str(t)})
    assert r.returncode == 2 and f"{t}:1: unknown role 'admin'" in r.stderr
    t.chmod(0o644)
    r = check({"listen": "\"127.0.0.1:8080\"", "tokens": str(t)})
    assert r.returncode == 2 and "group or others" in r.stderr


# ----------------------------------------------------------------------- TLS
def test_tls(api, certs):
    """With http.tls the API speaks TLS 1.2+ only, with our certificate;
    operator writes work without plaintext_writes; plain HTTP gets nothing."""
    gw, port, mb, _ = api(tls={"cert": certs.path("server.pem"), "key": certs.path("server.key")},
                          plaintext_writes=None, ca=certs.path("ca.pem"))
    c = H.Client(port, H.OPERATOR, ca=certs.path("ca.pem"))
    who = c.get("/api/v1/whoami").json()
    assert who["tls"] is True and who["can_write"] is True
    r = c.post("/api/v1/devices/press/write", {"write": {"setpoint": 55}})
    assert r.status == 200 and mb.read_hr(SETPOINT) == [55]
    # the certificate is checked: another CA's client refuses the server
    bad = H.Client(port, H.OPERATOR, ca=certs.path("otherca.pem"), validate_api=False)
    with pytest.raises(ssl.SSLError):
        bad.get("/api/v1/whoami")
    # TLS 1.1 is refused
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(certs.path("ca.pem"))
    try:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, ssl.SSLError):
        ctx = None
    if ctx is not None:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            with pytest.raises((ssl.SSLError, ConnectionResetError)):
                ctx.wrap_socket(s, server_hostname="127.0.0.1").do_handshake()
    # plain HTTP on the TLS port: no answer that a client could take for HTTP
    assert not H.raw(port, b"GET /api/v1/whoami HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 200")
    # the event stream over TLS
    ev = H.Events(port, H.VIEWER, ca=certs.path("ca.pem"))
    assert ev.status == 200 and ev.next()["event"] == "hello"
    ev.close()
    assert gw.alive()


# ------------------------------------------------------------- event stream
def test_events_values_status_and_resume(api):
    """hello, then the MQTT telemetry JSON of each batch as `values` events
    and device state changes as `status`; a client that reconnects with
    Last-Event-ID resumes exactly after the last event it saw."""
    gw, port, mb, _ = api()
    ev = H.Events(port, H.VIEWER)
    assert ev.status == 200 and "text/event-stream" in ev.headers
    h = ev.next()
    assert h["event"] == "hello" and h["data"]["resumed"] is False and h["data"]["role"] == "viewer"
    seen = []
    while len(seen) < 6:
        e = ev.next()
        if e["event"] == "values":
            seen.append(e)
    sims = [e for e in seen if e["data"]["device"] == "sim"]
    assert sims and set(sims[0]["data"]["values"]) == {"temperature", "label", "mem"}
    assert sims[0]["data"]["values"]["label"] == {"v": "PX-200", "q": "good"}
    seqs = [e["data"]["seq"] for e in seen]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    last = seen[-1]
    ev.close()
    time.sleep(0.5)
    ev2 = H.Events(port, H.VIEWER, last_id=last["id"])
    h2 = ev2.next()
    assert h2["event"] == "hello" and h2["data"]["resumed"] is True
    nxt = ev2.next()
    while nxt["event"] not in ("values", "status"):
        nxt = ev2.next()
    # the first event after the resume is the one right after the last one seen
    assert nxt["data"]["seq"] == last["data"]["seq"] + 1, (last, nxt)
    # a stopped Modbus server: a status event, then bad values
    mb.stop()
    st = None
    for _ in range(200):
        e = ev2.next()
        if e["event"] == "status" and e["data"]["device"] == "press":
            st = e["data"]
            break
    assert st and st["state"] == "offline" and st["reason"]
    ev2.close()
    # the tags turn Bad right after the status (runtime.c, conn_lost): wait for it
    def setpoint():
        return H.Client(port, H.VIEWER).get("/api/v1/values?device=press&tag=setpoint").json()["values"][0]
    peers.wait_until(lambda: setpoint()["q"] == "bad", 5, 0.05)
    bad = setpoint()
    assert bad["q"] == "bad" and bad["v"] is None and bad["reason"] == "BadCommunicationError"
    # an unknown or foreign event id: hello says not resumed
    ev3 = H.Events(port, H.VIEWER, last_id="1-1")
    assert ev3.next()["data"]["resumed"] is False
    ev3.close()


def test_slow_subscriber_does_not_hold_anything_up(api):
    """A subscriber that reads far slower than events come is disconnected
    once it is a whole events buffer behind; polling, the other subscribers
    and the API go on at full speed meanwhile.  (One that stops reading
    altogether holds only its socket until the connection times out.)"""
    devs = [{"name": f"s{i}", "url": "sim://x", "poll": "10ms",
             "tags": [{"name": f"t{k}", "addr": f"sine:amp=10,period={k + 2}s"} for k in range(40)]
             + [{"name": "label", "addr": "const:1"}]} for i in range(4)]
    gw, port, mb, _ = api(devices=devs, events_buffer="1MiB")
    c = H.Client(port, H.VIEWER)
    slow = socket.create_connection(("127.0.0.1", port))
    slow.sendall(f"GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {H.VIEWER}\r\n\r\n".encode())
    slow.settimeout(0.05)
    fast = H.Events(port, H.VIEWER)
    before = sum(d["counters"]["requests"] for d in c.get("/api/v1/devices").json()["devices"])
    t0 = time.monotonic()
    n, got, last_sip, closed = 0, 0, 0.0, False
    while time.monotonic() - t0 < 3 or not closed:
        assert time.monotonic() - t0 < 60, "the slow subscriber was not disconnected"
        if fast.next()["event"] == "values":
            n += 1
        if not closed and time.monotonic() - last_sip > 0.1:  # 4 KiB ten times a second: a fifteenth of the rate
            last_sip = time.monotonic()
            try:
                b = slow.recv(4096)
                got += len(b)
                closed = b == b""
            except socket.timeout:
                pass
            except ConnectionResetError:
                closed = True
        if time.monotonic() - t0 >= 3 and before is not None:
            after = sum(d["counters"]["requests"] for d in c.get("/api/v1/devices").json()["devices"])
            # 4 devices at 100/s for 3 s: about 1200 polls; allow for a busy machine
            assert after - before > 600, (before, after)
            assert n > 300, n
            before = None
    assert "an event subscriber fell" in gw.output()
    fast.close()
    slow.close()
    assert c.get("/api/v1/values?device=s0&tag=label").status == 200


def test_too_many_subscribers(api):
    gw, port, mb, _ = api(max_events=2, max_connections=8)
    a, b = H.Events(port, H.VIEWER), H.Events(port, H.VIEWER)
    r = H.Client(port, H.VIEWER, validate_api=True).get("/api/v1/events")
    assert r.status == 503 and r.header("Retry-After") == "5", (r.headers, r.body)
    a.close()
    time.sleep(0.3)
    c = H.wait_for(lambda: (lambda e: e if e.status == 200 else e.close())(H.Events(port, H.VIEWER)), 20,
                   "a free subscriber slot after one left")
    c.close()
    b.close()


# ---------------------------------------------------------------- malformed
def test_malformed_and_oversized_requests(api):
    """Clear 4xx answers for what a client gets wrong; the gateway carries on."""
    gw, port, mb, _ = api(max_body="4KiB", rate_limit=0)
    c = H.Client(port, H.OPERATOR)
    # a body larger than max_body, announced and chunked
    r = c.post("/api/v1/devices/press/write", "x" * 5000)
    assert r.status == 413 and "http.max_body" in r.json()["error"]
    chunked = (b"POST /api/v1/devices/press/write HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
               + H.OPERATOR.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"".join(b"400\r\n" + b"y" * 1024 + b"\r\n" for _ in range(6)) + b"0\r\n\r\n")
    ans = H.raw(port, chunked)
    assert ans.startswith(b"HTTP/1.1 413"), ans[:200]
    # a header larger than the connection's memory
    ans = H.raw(port, b"GET /api/v1/values HTTP/1.1\r\nHost: x\r\nX-Big: " + b"z" * 100000 + b"\r\n\r\n")
    assert ans[:12] in (b"HTTP/1.1 431", b"HTTP/1.1 413", b"HTTP/1.1 414"), ans[:200]
    # not HTTP at all, a bad method, an unknown method on a known path
    ans = H.raw(port, b"\x16\x03\x01\x00\xff garbage\r\n\r\n")
    assert ans == b"" or ans.startswith(b"HTTP/1.1 400"), ans[:100]
    r = c.request("DELETE", "/api/v1/devices")
    assert r.status == 405 and r.header("Allow") == "GET, HEAD, OPTIONS"
    r = c.request("GET", "/api/v1/devices/press/write")
    assert r.status == 405 and r.header("Allow") == "POST, OPTIONS"
    assert c.get("/api/v1/values?" + "&".join(f"a{i}=1" for i in range(40))).status == 400
    # a bad Content-Length
    ans = H.raw(port, b"POST /api/v1/devices/press/write HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                + H.OPERATOR.encode() + b"\r\nContent-Length: 12abc\r\n\r\n{}")
    assert ans[:12] in (b"HTTP/1.1 400", b"HTTP/1.1 413"), ans[:200]
    # cross-origin: a POST from a foreign page is refused, preflight too
    r = c.post("/api/v1/devices/press/write", {"write": {"setpoint": 1}}, headers={"Origin": "http://evil.example"})
    assert r.status == 403 and "cross-origin" in r.json()["error"]
    r = c.request("OPTIONS", "/api/v1/devices/press/write", headers={"Origin": "http://evil.example"})
    assert r.status == 403 and r.header("Access-Control-Allow-Origin") is None
    # the page's own origin is fine
    r = c.post("/api/v1/devices/press/write", {"write": {"setpoint": 12}},
               headers={"Origin": f"http://127.0.0.1:{port}", "Host": f"127.0.0.1:{port}"})
    assert r.status == 200, r.body
    assert mb.read_hr(SETPOINT) == [12]
    assert gw.alive()
    v = c.get("/api/v1/values?device=sim&tag=temperature").json()["values"][0]
    time.sleep(0.3)
    assert c.get("/api/v1/values?device=sim&tag=temperature").json()["values"][0]["ts"] != v["ts"]


def test_cors_allowed_origin(api):
    gw, port, mb, _ = api(cors=["https://scada.example:8443"])
    c = H.Client(port, H.OPERATOR)
    o = {"Origin": "https://scada.example:8443"}
    r = c.request("OPTIONS", "/api/v1/devices/press/write", headers=o)
    assert r.status == 204 and r.header("Access-Control-Allow-Origin") == o["Origin"]
    assert "Authorization" in r.header("Access-Control-Allow-Headers")
    r = c.post("/api/v1/devices/press/write", {"write": {"setpoint": 13}}, headers=o)
    assert r.status == 200 and r.header("Access-Control-Allow-Origin") == o["Origin"]
    assert c.get("/api/v1/values", headers={"Origin": "https://other"}).header("Access-Control-Allow-Origin") is None


def test_rate_limit(api):
    """More than rate_limit requests per second from one address: 429 with
    Retry-After, logged; the next second it is served again."""
    gw, port, mb, _ = api(rate_limit=5)
    time.sleep(1.2)  # let the bucket refill after the fixture's requests
    c = H.Client(port, H.VIEWER)
    codes = [c.get("/api/v1/whoami").status for _ in range(30)]
    assert codes.count(200) >= 10 and codes.count(429) >= 10, codes
    r = c.get("/api/v1/whoami")
    assert r.status == 429 and r.header("Retry-After") == "1" and "rate_limit" in r.json()["error"]
    time.sleep(1.1)
    assert c.get("/api/v1/whoami").status == 200
    assert "429 too many requests" in gw.output()


# ------------------------------------------------------------------- config
def test_config_check_matches_the_cli(api, tmp_path):
    """POST /api/v1/config/check gives the diagnostics `fieldbridge check`
    prints for the same text in place of the running config."""
    gw, port, mb, _ = api()
    c = H.Client(port, H.OPERATOR)
    bad = ("gateway: {id: g}\n"
           "devices:\n"
           "  - name: d\n"
           "    url: \"modbus-tcp://127.0.0.1:1\"\n"
           "    pol: 1s\n"
           "    tags:\n"
           "      - {name: t, addr: \"hr:70000\"}\n")
    r = c.post("/api/v1/config/check", bad, headers={"Content-Type": "application/yaml"})
    assert r.status == 200, r.body
    res = r.json()
    assert res["ok"] is False and res["errors"] >= 2 and res["summary"] is None
    # the CLI on the same text at the same path gives the same lines
    path = os.path.join(str(tmp_path), "gw0.yaml")  # the running config's path
    saved = open(path, encoding="utf-8").read()
    try:
        open(path, "w", encoding="utf-8").write(bad)
        cli = run_cli("check", "-c", path)
    finally:
        open(path, "w", encoding="utf-8").write(saved)
    assert cli.returncode == 2
    assert [d["text"] for d in res["diagnostics"]] == cli.stderr.strip().split("\n")
    d0 = next(d for d in res["diagnostics"] if d["severity"] == "error")
    assert (d0["line"], d0["col"], d0["severity"]) == (5, 5, "error") and "did you mean 'poll'" in d0["message"], d0
    good = "gateway: {id: g}\ndevices:\n  - name: d\n    url: \"sim://x\"\n    tags: [{name: t, addr: \"const:1\"}]\n"
    res = c.post("/api/v1/config/check", good).json()
    assert res["ok"] is True and res["errors"] == 0 and "device d  sim://x" in res["summary"]
    # hostile YAML is refused like by the CLI, and the gateway lives on
    res = c.post("/api/v1/config/check", "a: " + "[" * 5000).json()
    assert res["ok"] is False
    assert c.post("/api/v1/config/check", good, token=H.VIEWER).status == 403
    assert gw.alive()


def test_running_config_redacted(api, tmp_path):
    """GET /api/v1/config: the file as loaded, comments kept, secrets out."""
    gw, port, mb, _ = api(devices=[sim_dev()])
    path = os.path.join(str(tmp_path), "gw0.yaml")
    text = open(path, encoding="utf-8").read()
    c = H.Client(port, H.VIEWER)
    r = c.get("/api/v1/config").json()
    assert r["path"] == path and r["yaml"] == text and r["redacted"] == []
    # the loader refuses literal secrets, but text it ignores (x- keys, YAML
    # anchors) can still hold one: shown as ***, comments and layout kept
    cfg = ("# plant config\n"
           "gateway: {id: g}\n"
           "x-vendor:                    # notes from the integrator\n"
           "  api_token: abc123\n"
           "  plc: \"opc.tcp://op:s3cr3t@10.0.0.5:4840?password=pw2\"\n"
           "  tokens: /etc/fieldbridge/http.tokens\n"
           "http:\n"
           "  listen: \"127.0.0.1:0\"\n"
           f"  tokens: \"{tmp_path / 'http.tokens'}\"\n"
           "devices:\n"
           "  - name: d\n"
           "    url: \"sim://x?seed=1\"\n"
           "    tags: [{name: t, addr: \"const:1\"}]\n")
    from conftest import Gateway  # pylint: disable=import-outside-toplevel
    g2 = Gateway(tmp_path, cfg, name="red")
    try:
        port2 = H.api_port(g2)
        r = H.Client(port2, H.VIEWER).get("/api/v1/config").json()
        y = r["yaml"]
        assert "abc123" not in y and "s3cr3t" not in y and "pw2" not in y, y
        assert "# plant config" in y and "# notes from the integrator" in y
        assert 'api_token: "***"' in y and '"opc.tcp://op:***@10.0.0.5:4840?password=***"' in y
        assert "tokens: /etc/fieldbridge/http.tokens" in y  # a file name, not a secret
        assert [(x["line"], x["key"]) for x in r["redacted"]] == [(4, "api_token"), (5, "plc")]
    finally:
        g2.stop()


def test_gateway_stops_cleanly_with_open_streams_and_a_pending_write(tmp_path, start_modbus, start_gateway):
    """SIGTERM while subscribers are connected and a write waits for a device
    that does not answer: the gateway exits 0 within its usual time."""
    tokens = tmp_path / "t"
    H.write_tokens(tokens, ("op", "operator", H.OPERATOR))
    # a Modbus "device" that accepts the connection and never answers
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    dev = {"name": "mute", "url": f"modbus-tcp://127.0.0.1:{silent.getsockname()[1]}?unit=1&timeout=3s",
           "poll": "10s", "tags": [{"name": "sp", "addr": "hr:0", "access": "rw"}]}
    gw = start_gateway(gw_config(None, [dev, sim_dev()], http={"listen": "127.0.0.1:0", "tokens": str(tokens),
                                                                "plaintext_writes": True, "write_timeout": "30s"}))
    port = H.api_port(gw)
    subs = [H.Events(port, H.OPERATOR) for _ in range(3)]
    for s in subs:
        assert s.next()["event"] == "hello"
    body = json.dumps({"write": {"sp": 1}}).encode()
    w = socket.create_connection(("127.0.0.1", port))
    w.sendall(b"POST /api/v1/devices/mute/write HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + H.OPERATOR.encode()
              + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    time.sleep(0.5)
    t0 = time.monotonic()
    rc = gw.stop()
    assert rc == 0, gw.output()[-3000:]
    assert time.monotonic() - t0 < 8
    w.settimeout(2)
    try:
        ans = w.recv(4096)
    except OSError:
        ans = b""
    # answered by the router (the connection refuses writes while it stops) or by the API
    assert ans == b"" or ans.startswith(b"HTTP/1.1 5") or (ans.startswith(b"HTTP/1.1 422")
                                                           and b"shutting down" in ans), ans
    for s in subs:
        s.close()
    w.close()
    silent.close()


def test_off_by_default_and_no_microhttpd_loaded(tmp_path, start_gateway):
    """Without http: (and metrics:) nothing listens and libmicrohttpd is not
    loaded; without influx: (or a download) libcurl and the ≈ 25 libraries it
    brings (Kerberos, LDAP, GnuTLS through librtmp, ...) are not mapped either."""
    gw = start_gateway(gw_config(None, [sim_dev()]))
    H.wait_for(lambda: "started:" in gw.output(), 10, "start")
    pid = gw.proc.p.pid
    maps = open(f"/proc/{pid}/maps", encoding="utf-8").read()
    for lib in ("libmicrohttpd", "libcurl", "libgnutls", "libkrb5", "libldap"):
        assert lib not in maps, lib
    # no listening TCP socket among the process's descriptors (from /proc: a bare Debian has no ss)
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table, encoding="ascii").read().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # state LISTEN, our inode
                listening.append(f[1])
    assert listening == [], listening
    assert os.path.exists(fb_bin())


def test_alarms_view_events_and_ack(api):
    """GET /api/v1/alarms shows each device's alarm summary; transitions
    arrive as `alarm` events (the MQTT alarm event JSON, checked against
    docs/alarm.schema.json); an operator acknowledges through the write
    endpoint (the command router), a viewer may not, and the event names
    the HTTP user."""
    boiler = {"name": "boiler", "url": "sim://boiler", "poll": "100ms",
              "tags": [{"name": "temp", "addr": "memory:initial=50", "access": "rw", "range": [-100, 500],
                        "alarms": {"hi": {"limit": 80, "deadband": 5, "message": "Boiler hot"}}}]}
    gw, port, _, _ = api(devices=[sim_dev(), boiler])
    op, vi = H.Client(port, H.OPERATOR), H.Client(port, H.VIEWER)
    schema = json.load(open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "alarm.schema.json")))
    import jsonschema

    def alarm_event(ev, pred):
        for _ in range(400):
            e = ev.next()
            if e["event"] == "alarm" and pred(e["data"]):
                jsonschema.validate(e["data"], schema)
                return e["data"]
        pytest.fail("no such alarm event")

    a = vi.get("/api/v1/alarms").json()  # validated against openapi.yaml by the client
    assert [d["device"] for d in a["devices"]] == ["boiler"]  # only devices with alarms
    assert a["devices"][0]["active"] == 0 and a["devices"][0]["alarms"] == []
    jsonschema.validate(a["devices"][0], schema)

    ev = H.Events(port, H.VIEWER)
    assert ev.next()["event"] == "hello"
    r = op.post("/api/v1/devices/boiler/write", {"write": {"temp": 85}})
    assert r.status == 200, r.body
    raised = alarm_event(ev, lambda j: j.get("event") == "raised")
    assert raised["alarm"] == "temp/hi" and raised["value"] == 85 and raised["message"] == "Boiler hot"
    s = vi.get("/api/v1/alarms").json()["devices"][0]
    assert s["active"] == 1 and s["unacked"] == 1 and [x["alarm"] for x in s["alarms"]] == ["temp/hi"]

    # a viewer may not acknowledge; an operator may, through the router
    assert vi.post("/api/v1/devices/boiler/write", {"ack": ["temp/hi"]}).status == 403
    bad = op.post("/api/v1/devices/boiler/write", {"ack": ["temp/nope"]})
    assert bad.status == 422 and bad.json()["ok"] is False
    r = op.post("/api/v1/devices/boiler/write", {"ack": ["temp/hi"], "comment": "seen"})
    assert r.status == 200 and r.json()["results"] == {"temp/hi": {"ok": True}}, r.body
    ack = alarm_event(ev, lambda j: j.get("event") == "acknowledged")
    assert ack["by"] == "http:op" and ack["comment"] == "seen" and ack["state"] == "active_acked"
    s = vi.get("/api/v1/alarms").json()["devices"][0]
    assert s["active"] == 1 and s["unacked"] == 0
    op.post("/api/v1/devices/boiler/write", {"write": {"temp": 60}})
    assert alarm_event(ev, lambda j: j.get("event") == "cleared")["state"] == "normal"
    H.wait_for(lambda: vi.get("/api/v1/alarms").json()["devices"][0]["alarms"] == [], 5, "summary cleared")
    ev.close()


def test_reload_keeps_the_api_its_port_and_event_streams(tmp_path, start_modbus, start_gateway):
    """A config reload that adds a Modbus device (first in the list: every
    device and tag id moves) keeps the API running (docs/fleet.md): the same
    port although it listens on 127.0.0.1:0 (a restart would get another),
    an open event stream goes on without reconnecting and carries the new
    device's values, /values shows the new device next to the others' latest
    values, a write reaches the right device's register under the new ids,
    and /config shows the new configuration's text."""
    mb = start_modbus({"units": {"1": {"hr": [0] * 40}}})
    mb.write_hr(SETPOINT, [11])
    mb2 = start_modbus({"units": {"1": {"hr": [0] * 40}}}, name="second")
    mb2.write_hr(5, [77])
    tokens = tmp_path / "http.tokens"
    H.write_tokens(tokens, ("op", "operator", H.OPERATOR), ("vi", "viewer", H.VIEWER))
    cfg = gw_config(None, [modbus_dev(mb.port), sim_dev()],
                    http={"listen": "127.0.0.1:0", "tokens": str(tokens), "plaintext_writes": True})
    gw = start_gateway(cfg)
    port = H.api_port(gw)
    c = H.Client(port, H.OPERATOR)
    H.wait_for(lambda: all(v["q"] == "good" for v in c.get("/api/v1/values").json()["values"]), 15,
               "every value good")
    ev = H.Events(port, H.VIEWER)
    assert ev.next()["event"] == "hello"
    seqs = []
    while len(seqs) < 3:
        e = ev.next()
        if e["event"] == "values" and e["data"]["device"] == "sim":
            seqs.append(e["data"]["seq"])

    cfg["devices"].insert(0, {"name": "press2", "url": f"modbus-tcp://127.0.0.1:{mb2.port}?unit=1",
                              "poll": "200ms", "tags": [{"name": "level", "addr": "hr:5"}]})
    ch = reload_gateway(gw, cfg)
    assert ch["devices"]["added"] == ["press2"] and ch["devices"]["kept"] == 2, ch
    assert ch["sinks"]["kept"] == ["http"] and ch["sinks"]["restarted"] == [], ch

    # the open stream reads on: no new hello, the new device's values come on it
    new = None
    for _ in range(1000):
        try:
            e = ev.next()
        except (EOFError, OSError) as x:
            pytest.fail(f"the event stream ended at the reload ({x})")
        assert e["event"] != "hello", "the stream started again"
        if e["event"] == "values" and e["data"]["device"] == "sim":
            seqs.append(e["data"]["seq"])
        if e["event"] == "values" and e["data"]["device"] == "press2":
            new = e["data"]
            break
    assert new and new["values"]["level"]["v"] == 77, new
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
    ev.close()
    # the same listener: started once, answering on its port
    assert len(re.findall(r"http: API.* on https?://", gw.output())) == 1, gw.output()[-3000:]
    assert "http: kept across the reload" in gw.output()
    vals = {(v["device"], v["tag"]): v for v in c.get("/api/v1/values").json()["values"]}
    assert set(vals) == {("press2", "level"), ("press", "setpoint"), ("press", "count"), ("press", "ro"),
                         ("sim", "temperature"), ("sim", "label"), ("sim", "mem")}, vals
    H.wait_for(lambda: c.get("/api/v1/values?device=press2").json()["values"][0]["v"] == 77, 5, "press2 level")
    assert vals[("press", "setpoint")]["v"] == 11 and vals[("sim", "label")]["v"] == "PX-200", vals
    r = c.post("/api/v1/devices/press/write", {"id": "after-reload", "write": {"setpoint": 42}})
    assert r.status == 200, r.body
    assert mb.read_hr(SETPOINT) == [42] and mb2.read_hr(SETPOINT) == [0]
    assert "press2" in c.get("/api/v1/config").json()["yaml"]
    assert gw.alive()
