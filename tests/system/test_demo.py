"""test_demo.py — scripts/demo.sh starts broker, simulator and gateway,
telemetry arrives, the printed command works, and a Ctrl-C the way a terminal
sends it (SIGINT to the whole process group) stops everything cleanly: exit 0,
ports free, and a subscriber receives the gateway's own offline status and
its devices' (the broker and the simulator must outlive the gateway), not the
broker's will.  Uses build/fieldbridge (the demo's own build, whatever FB_BIN
is), free ports, and skips the deps/build steps (scripts/test.sh has just run
them)."""
import os
import signal
import subprocess
import time

import pytest

import peers
from conftest import ROOT


def test_demo_runs_and_stops_on_sigint(tmp_path, watch):
    assert os.access(os.path.join(ROOT, "build", "fieldbridge"), os.X_OK), "build/fieldbridge is not built"
    mqtt_port, mb_port = peers.free_port(), peers.free_port()
    env = dict(os.environ, FB_DEMO_MQTT_PORT=str(mqtt_port), FB_DEMO_MODBUS_PORT=str(mb_port),
               FB_DEMO_SKIP_SETUP="1")
    log = tmp_path / "demo.out"
    with open(log, "wb") as out:
        p = subprocess.Popen([os.path.join(ROOT, "scripts", "demo.sh")], cwd=ROOT, env=env,
                             stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True)
    try:
        text = peers.wait_until(lambda: "Ctrl-C stops everything" in log.read_text()
                                or p.poll() is not None, 60)
        output = log.read_text()
        assert p.poll() is None and text, f"demo did not come up (rc={p.poll()}):\n{output}"
        assert f"mosquitto_sub -h 127.0.0.1 -p {mqtt_port} -t '#' -v" in output, output
        assert "mosquitto_pub" in output and "-q 1" in output and "/command/response" in output, output
        w = watch(mqtt_port)
        m = w.wait_for(lambda m: m.topic.endswith("/telemetry") and (m.json() or {}).get("values"), 15)
        assert m is not None, f"no telemetry from the demo:\n{output}"
        # the command line the demo prints works
        cmd_line = next(ln for ln in output.splitlines() if "mosquitto_pub" in ln)
        t = time.monotonic()
        r = subprocess.run(cmd_line.strip(), shell=True, timeout=15, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        resp = w.wait_for(lambda m: m.topic.endswith("/command/response"), 10, after=t)
        assert resp is not None and (resp.json() or {}).get("ok") is True, \
            f"demo command not answered ok: {resp}"
        # Ctrl-C in a terminal: SIGINT to every process of the foreground group
        t = time.monotonic()
        os.killpg(p.pid, signal.SIGINT)
        rc = p.wait(timeout=30)
        output = log.read_text()
        assert rc == 0, f"demo exit code {rc}:\n{output}"
        peers.wait_until(lambda: any('"online":false' in m.payload.decode(errors="replace")
                                     for m in w.messages() if m.t >= t), 3)
        status = [m for m in w.messages() if m.t >= t and m.topic.endswith("/status")]
        gw = [m.json() for m in status if isinstance(m.json(), dict) and "gateway" in m.json()]
        assert gw, f"no gateway status after Ctrl-C:\n{status}\n{output}"
        # the gateway's own offline status: a time stamp and its devices; the will
        # ("reason":"connection lost", "ts":null) means the broker went first
        assert gw[-1].get("online") is False and gw[-1].get("ts") and "devices" in gw[-1] \
            and gw[-1].get("reason") != "connection lost", f"not the gateway's own offline status: {gw}"
        devs = [m.json() for m in status if isinstance(m.json(), dict) and "device" in m.json()]
        assert len(devs) >= 2 and all(d.get("state") == "offline" and d.get("reason") == "gateway stopped"
                                      for d in devs), f"device offline statuses: {devs}"
        # the demo shows what its own subscriber saw
        shown = output[output.index("statuses a subscriber"):] if "statuses a subscriber" in output else ""
        assert '"online":false' in shown and '"reason":"gateway stopped"' in shown, output
        w.close()
        assert peers.wait_until(lambda: not peers.port_open(mqtt_port) and not peers.port_open(mb_port), 10), \
            "broker or simulator still running after the demo stopped"
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=5)
