"""test_security.py — the security features against real peers (docs/security.md):

- who may command: `commands.allow` and a tag's `write_roles`, through the one
  router, for MQTT commands and Sparkplug DCMDs (Mosquitto, pymodbus);
- secrets never printed: a whole run at debug level, `check`, the status JSON
  (MQTT and GET /status) and /metrics searched for the broker password;
- certificate expiry warnings (log, status JSON, /metrics) for certificates
  made by openssl at test time;
- CRLs for MQTT (Mosquitto with a CA-signed server certificate, revoked or not;
  a chain through an intermediate CA, revoked by the root);
- the metrics endpoint over TLS;
- the start-up warning when running as root without need.

OPC UA mutual authentication and CA chains with CRLs are in test_opcua.py.

Run: FB_BIN=build/fieldbridge /usr/bin/python3 -m pytest tests/system/test_security.py -v
"""
import json
import os
import re
import shutil
import socket
import time
import urllib.error
import urllib.request

import peers
from conftest import GW_ID, GW_STATUS, gw_config, run_cli, topic

DEV = "plc1"
CMD = topic(DEV, "command")
RESP = topic(DEV, "command/response")


def modbus_dev(port, tags):
    return {"name": DEV, "url": f"modbus-tcp://127.0.0.1:{port}?unit=1", "poll": "200ms",
            "timeout": "500ms", "tags": tags}


def response(w, cid, timeout=10):
    m = w.wait_for(lambda m: (m.json() or {}).get("id") == cid, timeout, topic=RESP)
    assert m is not None, f"no response {cid!r}; got {[x for x in w.messages() if 'command' in x.topic]}"
    return m.json()


def wait(pred, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


# ------------------------------------------------------------ who may command
def _cmd_gateway(broker, mb, start_gateway, commands, name):
    tags = [{"name": "setpoint", "addr": "hr:10", "access": "rw"},
            {"name": "limit", "addr": "hr:11", "access": "rw", "write_roles": ["sparkplug"]}]
    cfg = gw_config(broker.port, [modbus_dev(mb.port, tags)], commands=commands)
    cfg["sparkplug"] = {"url": f"mqtt://127.0.0.1:{broker.port}", "group": "G1", "keepalive": "5s",
                        "reconnect": {"min": "100ms", "max": "1s"}}
    cfg["devices"] = cfg.pop("devices")
    return start_gateway(cfg, name=name)


def test_command_allow_list_and_write_roles(broker, start_modbus, start_gateway, watch):
    """commands.allow refuses a whole command from an unlisted source and a
    tag's write_roles one tag, both with the reason in the answer and the log;
    the sources listed get through (MQTT JSON commands and Sparkplug DCMDs go
    through the same router)."""
    from test_sparkplug import metric, payload  # pylint: disable=import-outside-toplevel
    mb = start_modbus({"units": {"1": {"hr": {str(i): 0 for i in range(20)}}}})
    w = watch(broker.port)
    dcmd = f"spBv1.0/G1/DCMD/{GW_ID}/{DEV}"

    # 1. only Sparkplug may command: the MQTT command is refused as a whole
    gw = _cmd_gateway(broker, mb, start_gateway, {"allow": ["sparkplug"]}, "only-spb")
    assert w.wait_for(lambda m: True, 20, topic=topic(DEV, "telemetry")), "no telemetry"
    assert w.wait_for(lambda m: True, 20, topic=f"spBv1.0/G1/DBIRTH/{GW_ID}/{DEV}"), "no DBIRTH"
    time.sleep(0.5)
    w.publish(CMD, {"id": "a-1", "write": {"setpoint": 7}}, qos=1)
    r = response(w, "a-1")
    assert r == {"id": "a-1", "ok": False,
                 "error": "commands from mqtt are not allowed (commands.allow: [sparkplug])"}, r
    assert wait(lambda: "command refused from mqtt:" in gw.output(), 5), gw.output()[-2000:]
    assert "commands from mqtt are not allowed" in gw.output()
    assert mb.read_hr(10) == [0]
    w.publish(dcmd, payload(metric("setpoint", datatype=3, int=8)), qos=0)
    assert wait(lambda: mb.read_hr(10) == [8], 10), mb.read_hr(10)
    gw.stop()

    # 2. both may command, but only Sparkplug may write `limit`
    gw = _cmd_gateway(broker, mb, start_gateway, {"allow": ["mqtt", "sparkplug"]}, "roles")
    t0 = time.monotonic()
    assert w.wait_for(lambda m: True, 20, topic=topic(DEV, "telemetry"), after=t0), "no telemetry"
    assert w.wait_for(lambda m: True, 20, topic=f"spBv1.0/G1/DBIRTH/{GW_ID}/{DEV}", after=t0), "no DBIRTH"
    time.sleep(0.5)
    w.publish(CMD, {"id": "b-1", "write": {"setpoint": 9, "limit": 99}}, qos=1)
    r = response(w, "b-1")
    assert r["ok"] is False and r["results"]["setpoint"] == {"ok": True}, r
    assert r["results"]["limit"] == {"ok": False, "error": "not allowed for mqtt (write_roles: [sparkplug])"}, r
    assert mb.read_hr(10, 2) == [9, 0]
    assert wait(lambda: "write 99 from mqtt:" in gw.output() and "refused: not allowed for mqtt" in gw.output(),
                5), gw.output()[-2000:]
    w.publish(dcmd, payload(metric("limit", datatype=3, int=55)), qos=0)
    assert wait(lambda: mb.read_hr(11) == [55], 10), mb.read_hr(11)


def test_write_roles_across_http_and_mqtt(broker, start_modbus, start_gateway, watch, tmp_path):
    """The HTTP API's writes carry the source `http` and the token's role:
    a tag with write_roles ["http:operator"] is written by an operator
    through the API and refused to MQTT, in the same router."""
    import httpapi as H  # pylint: disable=import-outside-toplevel
    mb = start_modbus({"units": {"1": {"hr": {str(i): 0 for i in range(20)}}}})
    tokens = tmp_path / "http.tokens"
    H.write_tokens(tokens, ("op", "operator", H.OPERATOR), ("vi", "viewer", H.VIEWER))
    tags = [{"name": "setpoint", "addr": "hr:10", "access": "rw", "write_roles": ["http:operator"]},
            {"name": "free", "addr": "hr:11", "access": "rw"}]
    w = watch(broker.port)
    gw = start_gateway(gw_config(broker.port, [modbus_dev(mb.port, tags)],
                                 commands={"allow": ["mqtt", "http:operator"]},
                                 http={"listen": "127.0.0.1:0", "tokens": str(tokens), "plaintext_writes": True}))
    c = H.Client(H.api_port(gw), H.OPERATOR)
    H.wait_for(lambda: all(v["q"] == "good" for v in c.get("/api/v1/values").json()["values"]), 15, "values")
    r = c.post(f"/api/v1/devices/{DEV}/write", {"id": "h-1", "write": {"setpoint": 42}})
    assert r.status == 200 and r.json()["ok"] is True, r.body
    assert mb.read_hr(10) == [42]
    assert w.wait_for(lambda m: True, 15, topic=topic(DEV, "telemetry"))
    time.sleep(0.5)
    w.publish(CMD, {"id": "m-1", "write": {"setpoint": 7, "free": 8}}, qos=1)
    res = response(w, "m-1")["results"]
    assert res["setpoint"] == {"ok": False, "error": "not allowed for mqtt (write_roles: [http:operator])"}, res
    assert res["free"] == {"ok": True}
    assert mb.read_hr(10, 2) == [42, 8]
    assert "write 42 from http:op: ok" in gw.output()


def test_command_flood_is_bounded(broker, start_gateway, watch):
    """A flood of commands for a device that does not answer (a TCP server that
    accepts and stays silent) cannot queue without bound: past 256 waiting
    commands the router answers "busy" at once, with the request's id; and a
    full queue does not hold up the shutdown."""
    import socket  # pylint: disable=import-outside-toplevel
    import threading  # pylint: disable=import-outside-toplevel
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    held = []
    stop = threading.Event()

    def accept():
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(silent.accept()[0])
            except OSError:
                pass
    th = threading.Thread(target=accept, daemon=True)
    th.start()
    try:
        dev = modbus_dev(silent.getsockname()[1], [{"name": "sp", "addr": "hr:0", "access": "rw"}])
        dev["timeout"] = "1s"
        # only the answers and the device status: a subscriber to everything would get its own 400
        # commands back as well, and the broker queues at most 1000 messages per subscriber
        # (max_queued_messages) beyond the 20 in flight — the answers would be dropped behind them
        w = watch(broker.port, topics=(RESP, topic(DEV, "status")))
        gw = start_gateway(gw_config(broker.port, [dev], commands={"timeout": "2s"}))
        assert w.wait_for(lambda m: True, 20, topic=topic(DEV, "status")), "gateway not connected"
        time.sleep(0.5)
        n = 400
        for i in range(n):
            w.publish(CMD, {"id": f"f-{i}", "write": {"sp": i}}, qos=1)
        busy = wait(lambda: len([m for m in w.messages(RESP) if "busy" in m.text()]) >= 100, 20)
        answers = [m.json() for m in w.messages(RESP) if "busy" in m.text()]
        assert busy, f"{len(answers)} busy answers to {n} commands"
        assert all(a["ok"] is False and a["error"] == "busy: 256 commands are waiting for their devices; try "
                   "again later" and a["id"].startswith("f-") for a in answers), answers[:3]
        assert len({a["id"] for a in answers}) == len(answers)
        # logged, but not once per refused command
        assert 1 <= gw.output().count("busy: 256 commands are waiting") <= 3, gw.output()[-3000:]
        # stopping does not work through the queue (each command would wait for the silent
        # device): the waiting commands are answered as not executed, and the gateway exits
        t0 = time.monotonic()
        assert gw.stop(timeout=10) == 0
        assert time.monotonic() - t0 < 8, f"stopping took {time.monotonic() - t0:.1f}s"
        # the gateway has handed its answers to the broker before it exited; the broker passes
        # them on to this subscriber 20 unacknowledged at a time (its max_inflight_messages)

        def stopping_answers():
            return [m.json() for m in w.messages(RESP) if "the gateway is stopping" in m.text()]
        wait(lambda: len(stopping_answers()) >= 200, 10)
        stopping = stopping_answers()
        assert len(stopping) >= 200, len(stopping)
        assert all(a["id"].startswith("f-") and a["ok"] is False for a in stopping)
    finally:
        stop.set()
        th.join(2)
        for c in held:
            c.close()
        silent.close()


# ------------------------------------------------------------ secrets
MQTT_PW = "Mq-7fT2xQ9-pw"       # mqtt: from the environment
SPB_PW = "Spb-4kR8wZ1-pw"       # sparkplug: from a password file
UA_PW = "Ua-9hN3vB6-pw"         # OPC UA user name login: from a password file


def test_secrets_never_printed(start_broker, start_gateway, watch, tmp_path):
    """A whole run at debug level with three secrets — the MQTT password from
    the environment, the Sparkplug password and an OPC UA user password from
    0600 files, each really used for a login — and none of them appears in the
    log, in `check`, in the status JSON (MQTT and GET /status) or in /metrics.
    One is also where a log line quotes it (a mix-up: the Sparkplug client id
    set from the password variable, which libmosquitto's debug lines name): it
    is printed as [secret]."""
    from conftest import require  # pylint: disable=import-outside-toplevel
    from test_opcua import NODE_OK, UAServer  # pylint: disable=import-outside-toplevel
    require("opcua", NODE_OK, "node-opcua is not installed in tests/peers/opcua: run scripts/peers.sh")
    broker = start_broker(users={"edge": MQTT_PW, "spb": SPB_PW, "watcher": "watch-pw"})
    srv = UAServer(tmp_path, extra=("--password", UA_PW), name="ua-secrets")
    try:
        spb_pw = tmp_path / "spb.pass"
        spb_pw.write_text(SPB_PW + "\n")
        spb_pw.chmod(0o600)
        ua_pw = tmp_path / "ua.pass"
        ua_pw.write_text(UA_PW + "\n")
        ua_pw.chmod(0o600)
        mport = peers.free_port()
        ua = {"name": "ua", "url": srv.url(f"user=operator&password_file={ua_pw}"), "poll": "200ms",
              "tags": [{"name": "d", "addr": "ns=1;s=Double"}]}
        cfg = gw_config(broker.port, [ua], mqtt={"username": "edge", "password": "${FB_TEST_MQTT_PW}"},
                        metrics={"listen": f"127.0.0.1:{mport}"})
        cfg["sparkplug"] = {"url": f"mqtt://127.0.0.1:{broker.port}", "group": "G1", "username": "spb",
                            "password_file": str(spb_pw), "client_id": "${FB_TEST_SPB_ID}",
                            "reconnect": {"min": "100ms", "max": "1s"}}
        cfg["devices"] = cfg.pop("devices")
        env = {"FB_TEST_MQTT_PW": MQTT_PW, "FB_TEST_SPB_ID": MQTT_PW}
        import paho.mqtt.client as mqtt  # pylint: disable=import-outside-toplevel
        sub = mqtt.Client(client_id="watcher", protocol=mqtt.MQTTv5)
        sub.username_pw_set("watcher", "watch-pw")
        got = []
        sub.on_message = lambda c, u, m: got.append((m.topic, m.payload.decode("utf-8", "replace")))
        sub.on_connect = lambda c, u, f, rc, p=None: c.subscribe("#", qos=1)
        sub.connect("127.0.0.1", broker.port)
        sub.loop_start()
        gw = start_gateway(cfg, env=env)
        try:
            # every login worked: telemetry with a good OPC UA value, Sparkplug births
            assert wait(lambda: any(t == topic("ua", "telemetry") and '"q":"good"' in p for t, p in got), 20), \
                gw.output()[-3000:]
            assert wait(lambda: any(t.startswith("spBv1.0/G1/DBIRTH/") for t, p in got), 20), gw.output()[-3000:]
            assert wait(lambda: any(t == GW_STATUS for t, p in got), 10)
            status_http = http(mport, "/status")
            metrics = http(mport, "/metrics")
            r = run_cli("check", "-c", gw.path, env=env)
            assert r.returncode == 0, r.stderr
        finally:
            sub.loop_stop()
            sub.disconnect()
        gw.stop()
        log = gw.output()
        # the mix-up: libmosquitto's debug lines name the client id, and show the mask
        assert "sparkplug: libmosquitto: Client [secret] sending CONNECT" in log, log[-3000:]
        everything = {"log": log, "check": r.stdout + r.stderr, "status (HTTP)": status_http, "metrics": metrics,
                      "MQTT": "\n".join(p for t, p in got)}
        for where, text in everything.items():
            for pw in (MQTT_PW, SPB_PW, UA_PW):
                assert pw not in text, f"secret {pw} printed in {where}"
        assert "debug" in log and len(log) > 2000  # it was a chatty run
    finally:
        srv.stop()


# ------------------------------------------------------------ privileges
def _privs_run(argv_prefix, cfg, tmp):
    """Run the gateway with argv_prefix (setpriv/unshare) for a moment; its output."""
    import subprocess  # pylint: disable=import-outside-toplevel
    from conftest import fb_bin, to_yaml  # pylint: disable=import-outside-toplevel
    path = os.path.join(tmp, f"gw-{len(os.listdir(tmp))}.yaml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(to_yaml(cfg) + "\n")
    os.chmod(path, 0o644)
    p = subprocess.Popen([*argv_prefix, fb_bin(), "run", "-c", path], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    time.sleep(2.5)
    p.send_signal(15)
    out, _ = p.communicate(timeout=15)
    assert "started:" in out, out
    return out


def _readable_tmp():
    """A directory the unprivileged user (nobody) can read: pytest's tmp_path is root's 0700 tree."""
    import tempfile  # pylint: disable=import-outside-toplevel
    d = tempfile.mkdtemp(prefix="fb-privs-")
    os.chmod(d, 0o755)
    return d


def _sim_cfg(**top):
    cfg = gw_config(None, [{"name": "s", "url": "sim://s", "poll": "100ms",
                            "tags": [{"name": "x", "addr": "counter"}]}], **top)
    cfg["log"] = {"level": "info", "format": "text"}
    return cfg


AS_ROOT = [] if os.geteuid() == 0 else ["unshare", "--map-root-user"]
AS_NOBODY = (["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else [])


def test_root_without_need_is_a_warning():
    """Root is warned about (and still runs); an unprivileged user without
    capabilities gets no warning."""
    import shutil  # pylint: disable=import-outside-toplevel
    tmp = _readable_tmp()
    try:
        out = _privs_run(AS_ROOT, _sim_cfg(), tmp)
        assert "running as root, which fieldbridge does not need" in out, out
        assert "CAP_NET_BIND_SERVICE alone" not in out, out
        out = _privs_run(AS_NOBODY, _sim_cfg(), tmp)
        assert "running as root" not in out and "capabilities" not in out, out
    finally:
        shutil.rmtree(tmp)


def _free_low_port():
    import socket  # pylint: disable=import-outside-toplevel
    for port in range(1000, 900, -1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port below 1024 on 127.0.0.1")


def test_low_port_needs_only_net_bind_service():
    """A metrics endpoint below 1024: root is told that CAP_NET_BIND_SERVICE
    alone would do; an unprivileged user given exactly that capability is not
    warned; given more, it is."""
    import shutil  # pylint: disable=import-outside-toplevel
    from conftest import require  # pylint: disable=import-outside-toplevel
    require("root", os.geteuid() == 0,
            "this test gives the gateway exactly CAP_NET_BIND_SERVICE with setpriv, which needs root")
    port = _free_low_port()
    tmp = _readable_tmp()
    try:
        cfg = _sim_cfg(metrics={"listen": f"127.0.0.1:{port}"})
        out = _privs_run([], cfg, tmp)
        assert f"it listens on port {port} (below 1024), for which CAP_NET_BIND_SERVICE alone is enough" in out, out
        one = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
               "--inh-caps=+net_bind_service", "--ambient-caps=+net_bind_service"]
        out = _privs_run(one, cfg, tmp)
        assert "capabilities" not in out and "running as root" not in out, out
        more = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                "--inh-caps=+net_bind_service,+net_admin", "--ambient-caps=+net_bind_service,+net_admin"]
        out = _privs_run(more, cfg, tmp)
        assert "beyond what fieldbridge needs" in out and "CapEff 0x1000" in out, out
    finally:
        shutil.rmtree(tmp)


# ------------------------------------------------------------ certificate expiry
def http(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.read().decode()


def _cert_entries(status, pred):
    return [c for c in status.get("certificates", []) if pred(c)]


def test_certificate_expiry_warnings(start_broker, start_gateway, watch, certs, tmp_path):
    """Every certificate the gateway uses is watched: the MQTT CA and client
    certificate (the test PKI's are valid for 2 days), the OPC UA store of a
    secured device (a trusted server certificate valid for 10 days, one for
    400 days, our own generated one for 10 years).  Within cert_warning they
    are warned about in the log, listed in the status JSON (MQTT and
    GET /status) and in /metrics with the seconds left; one that expires is an
    error; a certificate put into the store while running is seen at the next
    check; `check` lists them all."""
    broker = start_broker(certs=certs)
    ca = peers.OpensslCA(tmp_path, "plant")
    pki = tmp_path / "pki"
    (pki / "trusted").mkdir(parents=True)
    soon = ca.issue("soon", "server-soon", days=10)[2]
    later = ca.issue("later", "server-later", days=400)[2]
    shutil.copy(soon, pki / "trusted" / "soon.der")
    shutil.copy(later, pki / "trusted" / "later.der")
    mport = peers.free_port()
    ua = {"name": "ua", "url": f"opc.tcp://127.0.0.1:{peers.free_port()}?security_policy=Basic256Sha256"
                               f"&pki={pki}&trust_server=auto", "poll": "1s",
          "tags": [{"name": "d", "addr": "ns=1;s=Double"}]}
    tls = {"ca": certs.path("ca.pem"), "cert": certs.path("client.pem"), "key": certs.path("client.key")}
    cfg = gw_config(None, [ua], mqtt={"url": f"mqtts://127.0.0.1:{broker.port}", "tls": tls},
                    metrics={"listen": f"127.0.0.1:{mport}"},
                    security={"cert_warning": "30d", "cert_check": "1s"})
    w = watch(broker.port, topics=(GW_STATUS,), certs=certs)
    gw = start_gateway(cfg)

    # the log: a warning for each certificate within 30 days, none for the others
    def logged(subject, use):
        return re.search(rf"warn .*certificate CN={re.escape(subject)} \({re.escape(use)}, .*\) expires on "
                         r"\d{4}-\d\d-\d\dT[\d:]+Z \(in \d+ (days|hours)[^)]*\): renew it before then", gw.output())
    assert wait(lambda: logged("gw-test", "mqtt.tls.cert"), 10), gw.output()[-3000:]
    assert logged("fieldbridge test ca", "mqtt.tls.ca"), gw.output()[-3000:]
    assert logged("server-soon", "device ua pki= trusted"), gw.output()[-3000:]
    assert "server-later" not in gw.output()

    # the status JSON, over MQTT and GET /status
    m = w.wait_for(lambda m: "certificates" in (m.json() or {}), 15, topic=GW_STATUS)
    assert m is not None, w.messages()
    for st in (m.json(), json.loads(http(mport, "/status"))):
        client = _cert_entries(st, lambda c: c["use"] == "mqtt.tls.cert")
        assert len(client) == 1 and client[0]["state"] == "expiring", st["certificates"]
        assert client[0]["subject"] == "CN=gw-test" and client[0]["file"] == certs.path("client.pem")
        assert 86400 < client[0]["expires_in_s"] <= 2 * 86400, client
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", client[0]["not_after"])
        ok = _cert_entries(st, lambda c: c["subject"] == "CN=server-later")
        assert len(ok) == 1 and ok[0]["state"] == "ok" and ok[0]["use"] == "device ua pki= trusted", ok
    # our own OPC UA certificate, generated at the first connect attempt: 10 years
    assert wait(lambda: _cert_entries(json.loads(http(mport, "/status")),
                                      lambda c: c["use"] == "device ua pki= own"), 10)
    own = _cert_entries(json.loads(http(mport, "/status")), lambda c: c["use"] == "device ua pki= own")[0]
    assert own["state"] == "ok" and own["expires_in_s"] > 9 * 365 * 86400, own

    # /metrics: seconds left per certificate, and the lead time
    text = http(mport, "/metrics")
    line = re.search(r'^fieldbridge_certificate_expiry_seconds\{use="mqtt\.tls\.cert",type="certificate",'
                     r'subject="CN=gw-test",file="[^"]+"\} (-?\d+)$', text, re.M)
    assert line and 86400 < int(line.group(1)) <= 2 * 86400, text
    soon_s = re.search(r'^fieldbridge_certificate_expiry_seconds\{use="device ua pki= trusted",type="certificate",'
                       r'subject="CN=server-soon",file="[^"]+"\} (\d+)$', text, re.M)
    assert soon_s and 9 * 86400 < int(soon_s.group(1)) <= 10 * 86400, text
    assert "fieldbridge_certificate_warning_seconds 2592000" in text

    # a certificate that expired two days ago, trusted while running: an error at the next check
    old = ca.issue("old", "server-old", start=peers.OpensslCA.stamp(-20), end=peers.OpensslCA.stamp(-2))[2]
    shutil.copy(old, pki / "trusted" / "old.der")
    assert wait(lambda: re.search(r"error .*certificate CN=server-old \(device ua pki= trusted, .*\) expired on "
                                  r"\S+ \(2 days ago\): connections that use it fail", gw.output()), 10), \
        gw.output()[-3000:]
    st = json.loads(http(mport, "/status"))
    old_e = _cert_entries(st, lambda c: c["subject"] == "CN=server-old")
    assert old_e and old_e[0]["state"] == "expired" and old_e[0]["expires_in_s"] < -86400, old_e
    # logged once, not at every check (once a day)
    time.sleep(2.5)
    assert gw.output().count("certificate CN=server-old") == 1, gw.output()[-3000:]
    assert gw.output().count("certificate CN=gw-test (mqtt.tls.cert") == 1

    # `check` lists them with their state
    r = run_cli("check", "-c", gw.path)
    assert r.returncode == 0, r.stderr
    assert re.search(r"certificate mqtt\.tls\.cert  CN=gw-test  \S+client\.pem  expires \S+ \(in \d+ hours\)  "
                     r"EXPIRING SOON: renew it", r.stdout), r.stdout
    assert re.search(r"certificate device ua pki= trusted  CN=server-old  .*  EXPIRED", r.stdout), r.stdout
    assert re.search(r"certificate device ua pki= trusted  CN=server-later  \S+  expires \S+ \(in 399 days\)\n",
                     r.stdout), r.stdout


def test_certificate_warning_lead_time(start_broker, start_gateway, certs):
    """cert_warning: 1d — the test PKI's 2-day certificates are not warned about."""
    broker = start_broker(certs=certs)
    tls = {"ca": certs.path("ca.pem"), "cert": certs.path("client.pem"), "key": certs.path("client.key")}
    sim = {"name": "s", "url": "sim://s", "poll": "200ms", "tags": [{"name": "x", "addr": "counter"}]}
    gw = start_gateway(gw_config(None, [sim], mqtt={"url": f"mqtts://127.0.0.1:{broker.port}", "tls": tls},
                                 security={"cert_warning": "1d"}))
    assert wait(lambda: "connected" in gw.output() or "started:" in gw.output(), 10)
    time.sleep(1)
    assert "certificate CN=" not in gw.output(), gw.output()[-2000:]


def test_metrics_over_tls(start_gateway, certs, tmp_path):
    """metrics.tls: /metrics and /status over TLS 1.2+ with the gateway's
    certificate, verified by the scraper against our CA (a scraper trusting
    another CA refuses it, TLS 1.1 is refused); plain HTTP on the port gets
    no HTTP answer; the certificate is in the expiry watch; `check` shows
    https; a key that others can read is refused before start."""
    import ssl  # pylint: disable=import-outside-toplevel
    import socket  # pylint: disable=import-outside-toplevel
    mport = peers.free_port()
    sim = {"name": "s", "url": "sim://s", "poll": "200ms", "tags": [{"name": "x", "addr": "counter"}]}
    tls = {"cert": certs.path("server.pem"), "key": certs.path("server.key")}
    gw = start_gateway(gw_config(None, [sim], metrics={"listen": f"127.0.0.1:{mport}", "tls": tls}))
    assert wait(lambda: f"metrics on https://127.0.0.1:{mport}/metrics" in gw.output(), 10), gw.output()[-2000:]

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(certs.path("ca.pem"))

    def get(path, context):
        with urllib.request.urlopen(f"https://127.0.0.1:{mport}{path}", timeout=5, context=context) as r:
            return r.read().decode()
    text = get("/metrics", ctx)
    assert "fieldbridge_build_info" in text
    # the endpoint's own certificate is watched like every other
    assert re.search(r'^fieldbridge_certificate_expiry_seconds\{use="metrics\.tls\.cert",type="certificate",'
                     r'subject="CN=127\.0\.0\.1",file="[^"]+server\.pem"\} \d+$', text, re.M), text
    st = json.loads(get("/status", ctx))
    assert _cert_entries(st, lambda c: c["use"] == "metrics.tls.cert"), st.get("certificates")
    # another CA: the scraper refuses the gateway
    other = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    other.load_verify_locations(certs.path("otherca.pem"))
    try:
        get("/metrics", other)
        assert False, "a scraper trusting another CA accepted the gateway"
    except urllib.error.URLError as e:
        assert isinstance(e.reason, ssl.SSLCertVerificationError), e
    # TLS 1.1: refused
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(certs.path("ca.pem"))
    try:
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, ssl.SSLError):
        old = None
    if old is not None:
        with socket.create_connection(("127.0.0.1", mport), timeout=5) as sk:
            try:
                old.wrap_socket(sk, server_hostname="127.0.0.1").do_handshake()
                assert False, "TLS 1.1 accepted"
            except (ssl.SSLError, ConnectionResetError):
                pass
    # plain HTTP on the TLS port gets no HTTP answer
    with socket.create_connection(("127.0.0.1", mport), timeout=5) as sk:
        sk.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        sk.settimeout(3)
        try:
            got = sk.recv(100)
        except (socket.timeout, ConnectionResetError):
            got = b""
    assert not got.startswith(b"HTTP/1.1 200"), got
    assert gw.alive()

    r = run_cli("check", "-c", gw.path)
    assert r.returncode == 0, r.stderr
    assert f"metrics on https://127.0.0.1:{mport}" in r.stdout, r.stdout
    # a key readable by others is refused, naming the key
    loose = tmp_path / "loose.key"
    shutil.copy(certs.path("server.key"), loose)
    loose.chmod(0o644)
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"""metrics:
  listen: "127.0.0.1:{mport}"
  tls: {{cert: "{certs.path('server.pem')}", key: "{loose}"}}
devices: []
""", encoding="utf-8")
    r = run_cli("check", "-c", str(bad))
    assert r.returncode != 0 and "metrics.tls.key" in r.stderr and "group or others" in r.stderr, r.stderr
    half = tmp_path / "half.yaml"
    half.write_text(f"""metrics:
  listen: "127.0.0.1:{mport}"
  tls: {{cert: "{certs.path('server.pem')}"}}
devices: []
""", encoding="utf-8")
    r = run_cli("check", "-c", str(half))
    assert r.returncode != 0 and "metrics.tls needs both cert and key" in r.stderr, r.stderr


# ------------------------------------------------------------ MQTT: CRL and host name
class _CaOnly:
    """TLS for the test subscriber: trusts `ca`, no client certificate, no CRL."""

    def __init__(self, ca):
        self.ca = ca

    def subscriber_tls(self):
        import ssl  # pylint: disable=import-outside-toplevel
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(self.ca)
        ctx.check_hostname = False
        return ctx


def _sim_tls_cfg(port, tls, **top):
    sim = {"name": "s", "url": "sim://s", "poll": "200ms", "tags": [{"name": "x", "addr": "counter"}]}
    return gw_config(None, [sim], mqtt={"url": f"mqtts://127.0.0.1:{port}", "tls": tls,
                                        "reconnect": {"min": "100ms", "max": "500ms"}}, **top)


def _telemetry_after(w, t0, timeout):
    return w.wait_for(lambda m: True, timeout, topic=topic("s", "telemetry"), after=t0)


def test_mqtt_crl_refuses_a_revoked_broker(start_broker, start_gateway, watch, tmp_path):
    """tls.crl: a broker certificate from our CA connects while the CRL does
    not list it; once it is revoked and the CRL file replaced, the next connect
    (after a broker restart) is refused with the reason, and a gateway started
    with that CRL never connects.  Without tls.crl the revoked certificate would
    be accepted; a CRL from another CA only is refused (every CA of the chain
    needs its CRL)."""
    ca = peers.OpensslCA(tmp_path, "mqtt-ca")
    srv_pem, srv_key, _ = ca.issue("broker", "127.0.0.1", san="IP:127.0.0.1,DNS:localhost")
    crl = tmp_path / "mqtt-ca.crl"
    shutil.copy(ca.crl()[0], crl)
    broker = start_broker(tls={"ca": ca.pem, "cert": srv_pem, "key": srv_key})
    w = watch(broker.port, certs=_CaOnly(ca.pem))
    gw = start_gateway(_sim_tls_cfg(broker.port, {"ca": ca.pem, "crl": str(crl)}), name="gw-crl")
    assert _telemetry_after(w, 0, 15), f"not connected with a CRL that does not list the broker:\n{gw.output()[-3000:]}"

    # revoke; the new CRL replaces the file while the gateway runs
    ca.revoke(srv_pem)
    shutil.copy(ca.crl(name="crl2")[0], crl)
    broker.restart()
    w2 = watch(broker.port, certs=_CaOnly(ca.pem))
    assert wait(lambda: "tls.crl " in gw.output() and "changed: 1 CRL loaded" in gw.output(), 15), \
        gw.output()[-3000:]
    assert wait(lambda: "certificate revoked at /CN=127.0.0.1; it is listed in tls.crl" in gw.output(), 15), \
        gw.output()[-3000:]
    t0 = time.monotonic()
    time.sleep(2)
    assert not _telemetry_after(w2, t0, 0.1), "connected to a broker whose certificate is revoked"
    gw.stop()

    # a gateway started with the revoked CRL: never connects, says why
    gw = start_gateway(_sim_tls_cfg(broker.port, {"ca": ca.pem, "crl": str(crl)}), name="gw-revoked")
    assert wait(lambda: "the broker's certificate chain was refused: certificate revoked" in gw.output(), 10), \
        gw.output()[-3000:]
    gw.stop()

    # the same without tls.crl: accepted (the CRL is what refuses it)
    t0 = time.monotonic()
    gw = start_gateway(_sim_tls_cfg(broker.port, {"ca": ca.pem}), name="gw-nocrl")
    assert _telemetry_after(w2, t0, 15), gw.output()[-3000:]
    gw.stop()

    # a CRL of another CA only: the broker's CA has no CRL → refused
    other = peers.OpensslCA(tmp_path, "other-ca")
    gw = start_gateway(_sim_tls_cfg(broker.port, {"ca": ca.pem, "crl": other.crl()[0]}), name="gw-othercrl")
    assert wait(lambda: "chain was refused: unable to get certificate CRL" in gw.output(), 10), gw.output()[-3000:]


def _cpu_seconds(pid):
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        x = f.read()
    x = x[x.rindex(")") + 2:].split()
    return (int(x[11]) + int(x[12])) / os.sysconf("SC_CLK_TCK")


def test_mqtt_tls_broker_down_costs_no_cpu(start_broker, start_gateway, tmp_path):
    """A TLS broker that is down: every attempt says "Connection refused" at
    once and the gateway idles between attempts.  (libmosquitto 2.0 takes the
    refused connect under TLS for "try again": its loop spun a core until the
    keepalive ran out and then blamed a missing CONNACK.)  The same reason
    again is logged once a minute, a new reason at once: the broker comes up
    with a revoked certificate and that is reported on the attempt that found
    it."""
    ca = peers.OpensslCA(tmp_path, "mqtt-ca")
    srv_pem, srv_key, _ = ca.issue("broker", "127.0.0.1", san="IP:127.0.0.1,DNS:localhost")
    ca.revoke(srv_pem)
    port = peers.free_port()
    gw = start_gateway(_sim_tls_cfg(port, {"ca": ca.pem, "crl": ca.crl(name="revoked")[0]}), name="gw-down")
    refused = f"cannot connect to 127.0.0.1:{port}: Connection refused"
    assert wait(lambda: refused in gw.output(), 5), gw.output()[-3000:]
    a, t = _cpu_seconds(gw.proc.pid), time.monotonic()
    time.sleep(3)  # several more refused attempts (reconnect max 500 ms)
    share = (_cpu_seconds(gw.proc.pid) - a) / (time.monotonic() - t)
    assert share < 0.05, f"{share * 100:.1f} % CPU while the TLS broker is down"
    assert gw.output().count(refused) == 1, gw.output()[-3000:]
    assert "no CONNACK" not in gw.output(), gw.output()[-3000:]
    start_broker(port=port, tls={"ca": ca.pem, "cert": srv_pem, "key": srv_key})
    assert wait(lambda: "certificate revoked at /CN=127.0.0.1; it is listed in tls.crl" in gw.output(), 5), \
        gw.output()[-3000:]


def test_mqtt_tls_stops_at_once_during_a_handshake(start_gateway, tmp_path):
    """A TLS broker address that accepts TCP but never answers the handshake:
    the gateway stops at once when asked (SIGTERM wakes its network thread
    out of the wait for the handshake), not after the wait's time-out."""
    ca = peers.OpensslCA(tmp_path, "mqtt-ca")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        for i in range(3):
            gw = start_gateway(_sim_tls_cfg(port, {"ca": ca.pem}), name=f"gw-hs{i}")
            assert wait(lambda: "sending CONNECT" in gw.output(), 5), gw.output()[-3000:]
            time.sleep(0.3 + 0.3 * i)  # at different points of the wait
            t0 = time.monotonic()
            assert gw.stop() == 0, gw.output()[-3000:]
            took = time.monotonic() - t0
            assert took < 0.3, f"stopping took {took:.2f} s during a TLS handshake"


def test_mqtt_dropped_connection_requests_are_named(start_gateway):
    """A broker address whose connection requests go unanswered (a firewall
    that drops them; here a listener whose accept queue is full, so the
    kernel drops the SYNs): the gateway says so after the keepalive instead
    of claiming the broker took the connection and ignored CONNECT."""
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        port = full.getsockname()[1]
        fillers = []
        for _ in range(4):  # fill the accept queue; the rest of the SYNs are dropped
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", port))
            fillers.append(c)
        time.sleep(0.2)
        try:
            gw = start_gateway(gw_config(port, [{"name": "s", "url": "sim://s", "poll": "200ms",
                                                 "tags": [{"name": "x", "addr": "counter"}]}]), name="gw-drop")
            assert wait(lambda: "no answer to the TCP connection request" in gw.output(), 12), gw.output()[-3000:]
            assert "no CONNACK" not in gw.output(), gw.output()[-3000:]
        finally:
            for c in fillers:
                c.close()


def test_mqtt_ca_chain_with_crls(start_broker, start_gateway, watch, tmp_path):
    """A broker certificate issued by an intermediate CA: the broker sends the
    chain, the gateway trusts only the root (tls.ca) and holds both CAs' CRLs
    in one tls.crl file — it connects; once the root revokes the intermediate
    CA, the next connect is refused (the whole chain is checked, not only the
    broker's own certificate); without the intermediate's CRL it is refused
    too (every CA of the chain needs its CRL)."""
    root = peers.OpensslCA(tmp_path, "root-ca")
    sub = peers.OpensslCA(tmp_path, "sub-ca", parent=root)
    srv_pem, srv_key, _ = sub.issue("broker", "127.0.0.1", san="IP:127.0.0.1,DNS:localhost")
    chain = tmp_path / "broker-chain.pem"
    chain.write_text(open(srv_pem, encoding="ascii").read() + open(sub.pem, encoding="ascii").read(),
                     encoding="ascii")
    crl = tmp_path / "chain.crl"

    def write_crls(*cas):
        crl.write_text("".join(open(ca.crl(name=f"crl-{time.monotonic_ns()}")[0], encoding="ascii").read()
                               for ca in cas), encoding="ascii")
    write_crls(root, sub)
    broker = start_broker(tls={"ca": root.pem, "cert": str(chain), "key": srv_key})
    w = watch(broker.port, certs=_CaOnly(root.pem))
    gw = start_gateway(_sim_tls_cfg(broker.port, {"ca": root.pem, "crl": str(crl)}), name="gw-chain")
    assert _telemetry_after(w, 0, 15), f"not connected through root → sub-CA → broker:\n{gw.output()[-3000:]}"

    # the root revokes the intermediate CA; the broker's own certificate stays unrevoked
    root.revoke(sub.pem)
    write_crls(root, sub)
    broker.restart()
    w2 = watch(broker.port, certs=_CaOnly(root.pem))
    assert wait(lambda: "certificate revoked at /CN=fieldbridge test sub-ca" in gw.output(), 20), \
        gw.output()[-3000:]
    t0 = time.monotonic()
    time.sleep(2)
    assert not _telemetry_after(w2, t0, 0.1), "connected through a revoked intermediate CA"
    gw.stop()

    # another chain whose tls.crl holds only the root's CRL: the intermediate has none → refused
    root2 = peers.OpensslCA(tmp_path, "root2-ca")
    sub2 = peers.OpensslCA(tmp_path, "sub2-ca", parent=root2)
    pem2, key2, _ = sub2.issue("broker2", "127.0.0.1", san="IP:127.0.0.1")
    chain2 = tmp_path / "broker2-chain.pem"
    chain2.write_text(open(pem2, encoding="ascii").read() + open(sub2.pem, encoding="ascii").read(),
                      encoding="ascii")
    b2 = start_broker(tls={"ca": root2.pem, "cert": str(chain2), "key": key2}, name="mosq-chain2")
    gw = start_gateway(_sim_tls_cfg(b2.port, {"ca": root2.pem, "crl": root2.crl()[0]}), name="gw-subnocrl")
    assert wait(lambda: "chain was refused: unable to get certificate CRL" in gw.output(), 10), gw.output()[-3000:]


def test_mqtt_crl_config_errors(tmp_path):
    """tls.crl needs the CA it belongs to; a file without a CRL is refused at start."""
    ca = peers.OpensslCA(tmp_path, "c")
    crl = ca.crl()[0]
    cfg = tmp_path / "c.yaml"
    from conftest import to_yaml  # pylint: disable=import-outside-toplevel
    cfg.write_text(to_yaml(_sim_tls_cfg(1, {"crl": crl})) + "\n")
    r = run_cli("check", "-c", cfg)
    assert r.returncode == 2 and "mqtt.tls.crl needs mqtt.tls.ca or mqtt.tls.ca_path" in r.stderr, r.stderr
    cfg.write_text(to_yaml(_sim_tls_cfg(1, {"ca": ca.pem, "crl": ca.pem})) + "\n")
    r = run_cli("run", "-c", cfg, timeout=20)
    assert r.returncode == 1 and f"mqtt.tls.crl: {ca.pem} holds no certificate revocation list" in r.stderr, \
        r.stderr


def test_mqtt_broker_host_name_checked(start_broker, start_gateway, watch, tmp_path):
    """OpenSSL checks the broker certificate's names against the URL's host
    (the session replaces libmosquitto's own check): a certificate for another
    host is refused, unless tls.verify_hostname is false."""
    ca = peers.OpensslCA(tmp_path, "h-ca")
    srv_pem, srv_key, _ = ca.issue("elsewhere", "broker.example", san="DNS:broker.example")
    broker = start_broker(tls={"ca": ca.pem, "cert": srv_pem, "key": srv_key})
    w = watch(broker.port, certs=_CaOnly(ca.pem))
    gw = start_gateway(_sim_tls_cfg(broker.port, {"ca": ca.pem}), name="gw-host")
    assert wait(lambda: "chain was refused: IP address mismatch at /CN=broker.example" in gw.output(), 10), \
        gw.output()[-3000:]
    gw.stop()
    t0 = time.monotonic()
    start_gateway(_sim_tls_cfg(broker.port, {"ca": ca.pem, "verify_hostname": False}), name="gw-nohost")
    assert _telemetry_after(w, t0, 15)


def test_spb_dump_over_mutual_tls(start_broker, start_gateway, certs):
    """spb-dump, the diagnostic client, speaks mutual TLS too (--cafile/--cert/--key)."""
    broker = start_broker(certs=certs)
    tls = {"ca": certs.path("ca.pem"), "cert": certs.path("client.pem"), "key": certs.path("client.key")}
    dev = {"name": "d", "url": "sim://d", "poll": "200ms", "tags": [{"name": "n", "addr": "counter"}]}
    cfg = gw_config(None, [dev])
    cfg["sparkplug"] = {"url": f"mqtts://127.0.0.1:{broker.port}", "group": "G1", "tls": tls,
                        "reconnect": {"min": "100ms", "max": "1s"}}
    cfg["devices"] = cfg.pop("devices")
    start_gateway(cfg)
    url = f"mqtts://127.0.0.1:{broker.port}"
    r = run_cli("spb-dump", url, "--cafile", certs.path("ca.pem"), "--cert", certs.path("subscriber.pem"),
                "--key", certs.path("subscriber.key"), "--count", "2", "--timeout", "15s", timeout=30)
    assert r.returncode == 0 and "spBv1.0/G1/" in r.stdout, r.stderr
    # without a client certificate the broker refuses it
    r = run_cli("spb-dump", url, "--cafile", certs.path("ca.pem"), "--count", "1", "--timeout", "3s", timeout=30)
    assert r.returncode == 1, r.stdout
    r = run_cli("spb-dump", f"mqtt://127.0.0.1:{broker.port}", "--cafile", certs.path("ca.pem"))
    assert r.returncode == 2 and "need an mqtts:// URL" in r.stderr
