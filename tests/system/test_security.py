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
