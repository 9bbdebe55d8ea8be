"""test_fleet.py — the gateway as a fleet member (issue 20), through the real
binary against Mosquitto and pymodbus: configuration reload (SIGHUP, the
gateway's own command topic, the systemd unit's ExecReload), what a reload
keeps running and what it restarts, remote configuration with a health check
and automatic roll-back, identity and lifecycle state in the retained status,
and the health block (docs/fleet.md, docs/metrics.md).
"""
import signal
import time

from conftest import GW_STATUS, gw_config, status_state
from test_run import device, ready


def wait_status(w, state, timeout=10, after=0.0):
    return w.wait_for(lambda m: status_state(m) == state, timeout, topic=GW_STATUS, after=after)


# ------------------------------------------------------------------ SIGHUP
def test_sighup_does_not_kill_the_gateway(broker, start_modbus, start_gateway, watch):
    """SIGHUP used to end the process at once (default action) without the
    offline status; now it asks for a reload and the gateway keeps running."""
    mb = start_modbus({"units": {"1": {"hr": [1]}}})
    w = watch(broker.port)
    gw = start_gateway(gw_config(broker.port, [device(mb.port, [{"name": "x", "addr": "hr:0"}])]))
    assert wait_status(w, "online")
    ready(w)
    t = time.monotonic()
    gw.proc.send(signal.SIGHUP)
    time.sleep(1.5)
    assert gw.alive(), f"SIGHUP ended the gateway:\n{gw.output()[-3000:]}"
    assert w.wait_for(lambda m: True, 5, topic="testsite/_/_/plc1/telemetry", after=t + 1.0), \
        "no telemetry after SIGHUP"
    assert not [m for m in w.messages(GW_STATUS) if m.t >= t and status_state(m) == "offline"], \
        w.messages(GW_STATUS)
    t2 = time.monotonic()
    gw.proc.send(signal.SIGTERM)
    assert gw.wait(15) == 0, gw.output()[-3000:]
    assert wait_status(w, "offline", timeout=5, after=t2), w.messages(GW_STATUS)
