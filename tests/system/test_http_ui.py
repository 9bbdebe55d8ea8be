"""test_http_ui.py — the built-in web page in a real browser: Debian's
Chromium driven by playwright-core (tests/peers/browser/ui_test.js).

The page is loaded from the gateway, asks for a token, shows a simulated
value changing live (event stream), writes a setpoint to a Modbus device
(pymodbus) through the write dialog as operator — pymodbus then holds it —,
acknowledges the device's active alarm (the gateway logs who did), and,
signed in as a viewer, the same write is refused by the gateway and
the device keeps its value.  The page must load nothing from anywhere but
the gateway and log no errors beyond the refused requests.  Screenshots are
saved in the test's directory (printed, and in FB_TEST_ARTIFACTS if set).
"""
import json
import os
import shutil
import subprocess

import httpapi as H
from conftest import ROOT, gw_config, require

PEER = os.path.join(ROOT, "tests", "peers", "browser")
CHROMIUM = "/usr/bin/chromium"


def test_page_in_chromium(tmp_path, start_modbus, start_gateway):
    require("browser", os.path.isdir(os.path.join(PEER, "node_modules", "playwright-core")),
            "playwright-core is not installed in tests/peers/browser: run scripts/peers.sh")
    require("browser", os.access(CHROMIUM, os.X_OK), "chromium is missing: apt install chromium (scripts/deps.sh test)")
    mb = start_modbus({"units": {"1": {"hr": [0] * 40}}})
    mb.write_hr(10, [50])
    mb.write_hr(11, [90])  # above the pressure alarm's limit
    tokens = tmp_path / "http.tokens"
    H.write_tokens(tokens, ("op", "operator", H.OPERATOR), ("vi", "viewer", H.VIEWER))
    devs = [{"name": "line1", "url": "sim://line1?seed=7", "poll": "250ms",
             "tags": [{"name": "temperature", "addr": "sine:amp=5,period=20s,offset=60", "unit": "°C"},
                      {"name": "motor_on", "addr": "square:period=10s", "type": "bool"},
                      {"name": "recipe", "addr": "const:\"PX-200\""}]},
            {"name": "press", "url": f"modbus-tcp://127.0.0.1:{mb.port}?unit=1", "poll": "250ms",
             "tags": [{"name": "setpoint", "addr": "hr:10:int16", "access": "rw", "range": [0, 100], "unit": "bar"},
                      {"name": "pressure", "addr": "hr:11", "unit": "bar",
                       "alarms": {"hi": {"limit": 80, "message": "Press pressure high"}}}]}]
    gw = start_gateway(gw_config(None, devs, http={"listen": "127.0.0.1:0", "tokens": str(tokens),
                                                   "plaintext_writes": True}))
    port = H.api_port(gw)
    cfg = {"url": f"http://127.0.0.1:{port}/", "operator": H.OPERATOR, "viewer": H.VIEWER,
           "changing": {"device": "line1", "tag": "temperature"},
           "write": {"device": "press", "tag": "setpoint", "value": 42, "refused_value": 7},
           "alarm": {"device": "press", "alarm": "pressure/hi"},
           "shots": str(tmp_path)}
    cfg_path = tmp_path / "ui.json"
    cfg_path.write_text(json.dumps(cfg))
    r = subprocess.run(["node", os.path.join(PEER, "ui_test.js"), str(cfg_path)], cwd=PEER, capture_output=True,
                       text=True, timeout=80)
    out = json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else {}
    assert r.returncode == 0, f"browser test failed: {out.get('error')}\n{r.stderr[-3000:]}"
    for shot in out["shots"]:
        print(f"screenshot: {shot}")
        dest = os.environ.get("FB_TEST_ARTIFACTS")
        if dest:
            os.makedirs(dest, exist_ok=True)
            shutil.copy(shot, dest)
        assert os.path.getsize(shot) > 10000
    assert out["changed"][0] != out["changed"][1]
    assert out["operator_warning_hidden"] is True and out["operator_msg"] == "written: 42"
    assert mb.read_hr(10) == [42], "the operator's write did not reach the device"
    assert out["alarm_before"] == "ACTIVE · not acknowledged" and out["alarm_count"] == "1 alarm to acknowledge"
    assert out["alarm_after"] == "active · acknowledged" and out["alarm_count_after_hidden"] is True
    assert "operator needed" in out["viewer_warning"]
    assert out["viewer_msg"].startswith("refused (403): role viewer may not do this")
    assert out["final_value"] == "42" and mb.read_hr(10) == [42], "the viewer's write changed the device"
    assert out["foreign"] == [], f"the page loaded something from elsewhere: {out['foreign']}"
    # the browser logs the refused requests (401 before signing in, the viewer's 403), nothing else
    others = [m for m in out["console"] if "status of 401" not in m and "status of 403" not in m]
    assert others == [], others
    log = gw.output()
    assert "write 42 from http:op: ok" in log
    assert "alarm acknowledged by http:op" in log, log[-3000:]
    assert "refused POST /api/v1/devices/press/write from 127.0.0.1 (user vi): 403" in log
