"""test_security.py — the security features against real peers (docs/security.md):

- who may command: `commands.allow` and a tag's `write_roles`, through the one
  router, for MQTT commands and Sparkplug DCMDs (Mosquitto, pymodbus);
- secrets never printed: a whole run at debug level, `check`, the status JSON
  (MQTT and GET /status) and /metrics searched for the broker password;
- certificate expiry warnings (log, status JSON, /metrics) for certificates
  made by openssl at test time;
- CRLs for MQTT (Mosquitto with a CA-signed server certificate, revoked or not);
- the start-up warning when running as root without need.

OPC UA mutual authentication and CA chains with CRLs are in test_opcua.py.

Run: FB_BIN=build/fieldbridge /usr/bin/python3 -m pytest tests/system/test_security.py -v
"""
import json
import os
import time

from conftest import GW_ID, gw_config, topic

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
