"""test_ota.py — signed software updates (issue 20; docs/fleet.md#ota)
through the real binary: the gateway runs as install/current/fieldbridge, a
notify on its ota/notify topic makes it download the package over HTTP
(resuming an interrupted transfer with a range request), verify its size,
SHA-256 and Ed25519 signature (keys made with the openssl CLI), stage it,
swap the `current` symlink, execute the new version (same PID), health-check
it and keep it — or roll back when a device that was online is not after
the switch.  A tampered package, one signed with another key and a
truncated one are each refused with their reason and change nothing.
"""
import base64
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import threading
import time

import peers
from conftest import GW_ID, SANITIZER_RE, fb_bin, gw_config, to_yaml, topic
from test_run import device

OTA = topic(GW_ID, "ota")


class PackageServer:
    """Serves named byte strings over HTTP with range requests; `cut` names
    whose first transfer stops halfway (the connection drops)."""

    def __init__(self):
        self.files = {}
        self.cut = set()
        self.requests = []  # (path, Range header)
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                rng = self.headers.get("Range")
                outer.requests.append((name, rng))
                data = outer.files.get(name)
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if name in outer.cut:
                    outer.cut.discard(name)
                    self.wfile.write(body[:len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, name):
        return f"http://127.0.0.1:{self.port}/{name}"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_key(d, name):
    openssl("genpkey", "-algorithm", "ed25519", "-out", f"{name}.key", cwd=d)
    openssl("pkey", "-in", f"{name}.key", "-pubout", "-out", f"{name}.pub", cwd=d)
    return os.path.join(d, f"{name}.key"), os.path.join(d, f"{name}.pub")


def sign(d, key, data):
    p = os.path.join(d, "tosign.bin")
    with open(p, "wb") as f:
        f.write(data)
    openssl("pkeyutl", "-sign", "-inkey", key, "-rawin", "-in", p, "-out", p + ".sig", cwd=d)
    with open(p + ".sig", "rb") as f:
        return base64.b64encode(f.read()).decode()


class Setup:
    """An install directory with version 1.0 (our binary) current, the
    signing keys, a package server and the gateway started from current."""

    def __init__(self, tmp_path, broker, mb, health_check="2s", env=None):
        self.d = str(tmp_path)
        self.install = os.path.join(self.d, "install")
        os.makedirs(os.path.join(self.install, "versions", "1.0"))
        self.binary = open(fb_bin(), "rb").read()  # pylint: disable=consider-using-with
        v1 = os.path.join(self.install, "versions", "1.0", "fieldbridge")
        shutil.copy2(fb_bin(), v1)
        os.symlink("versions/1.0", os.path.join(self.install, "current"))
        self.key, self.pub = make_key(self.d, "signing")
        self.other_key, _ = make_key(self.d, "other")
        self.srv = PackageServer()
        cfg = gw_config(broker.port, [device(mb.port, [{"name": "x", "addr": "hr:0"}], poll="100ms")],
                        fleet={"state_dir": os.path.join(self.d, "state"),
                               "ota": {"public_key": self.pub, "install_dir": self.install,
                                       "health_check": health_check}})
        self.cfg_path = os.path.join(self.d, "gw.yaml")
        with open(self.cfg_path, "w", encoding="utf-8") as f:
            f.write(to_yaml(cfg) + "\n")
        self.proc = peers.Proc([os.path.join(self.install, "current", "fieldbridge"), "run", "-c", self.cfg_path],
                               os.path.join(self.d, "gw.log"), env=dict(os.environ, **(env or {})))

    def current(self):
        return os.readlink(os.path.join(self.install, "current"))

    def exe(self):
        return os.readlink(f"/proc/{self.proc.p.pid}/exe")

    def notify(self, w, job, version, data, name=None, sig=None, size=True, sha=None):
        name = name or f"fieldbridge-{version}"
        self.srv.files[name] = data
        body = {"job": job, "version": version, "url": self.srv.url(name),
                "sha256": sha or hashlib.sha256(data).hexdigest(),
                "signature": sig or sign(self.d, self.key, data)}
        if size:
            body["size"] = size if isinstance(size, int) and size is not True else len(data)
        w.publish(f"{OTA}/notify", body, qos=1)

    def stop(self):
        self.srv.stop()
        rc = self.proc.stop() if self.proc.poll() is None else self.proc.poll()
        out = self.proc.output()
        assert not SANITIZER_RE.search(out), out[-6000:]
        assert rc == 0, f"the gateway exited with {rc}:\n{out[-3000:]}"


def complete(w, job, timeout=60):
    m = w.wait_for(lambda m: (m.json() or {}).get("job") == job, timeout, topic=f"{OTA}/complete")
    assert m is not None, w.messages()[-20:]
    return m.json()


def ready(w):
    assert w.wait_for(lambda m: True, 20, topic=topic("plc1", "telemetry")), w.messages()[-5:]
    time.sleep(0.5)


def test_ota_good_package_installs_resumes_and_is_kept(broker, start_modbus, watch, tmp_path):
    mb = start_modbus({"units": {"1": {"hr": [1]}}})
    w = watch(broker.port)
    s = Setup(tmp_path, broker, mb)
    try:
        ready(w)
        pid = s.proc.p.pid
        s.srv.cut.add("fieldbridge-2.0")  # the first transfer breaks off halfway: resumed
        s.notify(w, "job-1", "2.0", s.binary)
        r = complete(w, "job-1")
        assert r["ok"] is True and r["health_check"] == "passed" and r["version"] == "2.0", r
        steps = [m.json()["step"] for m in w.messages(f"{OTA}/progress") if m.json().get("job") == "job-1"]
        for st in ("downloading", "verifying", "staging", "restarting", "health_check"):
            assert st in steps, steps
        assert s.current() == "versions/2.0"
        assert s.proc.poll() is None and s.proc.p.pid == pid, "the gateway is not the same process (exec)"
        assert s.exe().endswith("/install/versions/2.0/fieldbridge"), s.exe()
        ranges = [r for n, r in s.srv.requests if n == "fieldbridge-2.0"]
        assert len(ranges) == 2 and ranges[0] is None and ranges[1] == f"bytes={len(s.binary) // 2}-", ranges
        assert w.wait_for(lambda m: True, 10, topic=topic("plc1", "telemetry"), after=time.monotonic())
        # the same version again is refused: it is installed
        s.notify(w, "job-1b", "2.0", s.binary)
        r = complete(w, "job-1b")
        assert r["ok"] is False and "installed" in r["error"], r
    finally:
        s.stop()


def test_ota_refuses_tampered_wrong_key_truncated(broker, start_modbus, watch, tmp_path):
    mb = start_modbus({"units": {"1": {"hr": [1]}}})
    w = watch(broker.port)
    s = Setup(tmp_path, broker, mb)
    try:
        ready(w)
        pid = s.proc.p.pid
        good_sig = sign(s.d, s.key, s.binary)
        # tampered: one byte changed after signing (its SHA-256 recomputed by the attacker)
        bad = bytearray(s.binary)
        bad[len(bad) // 3] ^= 0xFF
        s.notify(w, "job-t", "3.0", bytes(bad), sig=good_sig)
        r = complete(w, "job-t")
        assert r["ok"] is False and r["step"] == "verify" and "signature does not verify" in r["error"], r
        # the same bytes with the notify's SHA-256 of the original: the hash catches it first
        s.notify(w, "job-t2", "3.1", bytes(bad), sig=good_sig, sha=hashlib.sha256(s.binary).hexdigest())
        r = complete(w, "job-t2")
        assert r["ok"] is False and r["step"] == "verify" and "SHA-256 mismatch" in r["error"], r
        # signed with another key
        s.notify(w, "job-k", "3.2", s.binary, sig=sign(s.d, s.other_key, s.binary))
        r = complete(w, "job-k")
        assert r["ok"] is False and "signature does not verify with the configured public key" in r["error"], r
        # truncated: the server has only part of the package
        s.notify(w, "job-tr", "3.3", s.binary[:len(s.binary) // 2], sig=good_sig, size=len(s.binary),
                 sha=hashlib.sha256(s.binary).hexdigest())
        r = complete(w, "job-tr")
        assert r["ok"] is False and r["error"].startswith("truncated: got"), r
        # a bad notify
        w.publish(f"{OTA}/notify", {"job": "job-x", "version": "../etc", "url": "http://127.0.0.1:1/x",
                                    "sha256": "0" * 64, "signature": "AA=="}, qos=1)
        r = complete(w, "job-x")
        assert r["ok"] is False and r["step"] == "notify" and "version" in r["error"], r
        # nothing changed: same process, same version, nothing staged
        assert s.proc.poll() is None and s.proc.p.pid == pid
        assert s.current() == "versions/1.0"
        assert sorted(os.listdir(os.path.join(s.install, "versions"))) == ["1.0"]
        assert os.listdir(os.path.join(s.install, ".download")) == []
        assert "reboot: restarting" not in s.proc.output()
    finally:
        s.stop()


def test_ota_rolls_back_when_the_health_check_fails(broker, start_modbus, watch, tmp_path):
    mb = start_modbus({"units": {"1": {"hr": [1]}}})
    w = watch(broker.port)
    s = Setup(tmp_path, broker, mb, health_check="3s")
    try:
        ready(w)
        pid = s.proc.p.pid
        s.notify(w, "job-rb", "4.0", s.binary)
        m = w.wait_for(lambda m: (m.json() or {}).get("step") == "restarting", 30, topic=f"{OTA}/progress")
        assert m is not None, w.messages()[-10:]
        mb.stop()  # the device that was online is gone after the switch
        r = complete(w, "job-rb", timeout=60)
        assert r["ok"] is False and r.get("rolled_back") is True and "device plc1 is offline" in r["error"], r
        assert s.current() == "versions/1.0"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not s.exe().endswith("/versions/1.0/fieldbridge"):
            time.sleep(0.2)
        assert s.exe().endswith("/install/versions/1.0/fieldbridge"), s.exe()
        assert s.proc.poll() is None and s.proc.p.pid == pid
        assert not os.path.exists(os.path.join(s.d, "state", "ota", "pending.json"))
        def kept():
            with open(os.path.join(s.d, "state", "ota", "result.json"), encoding="utf-8") as f:
                return json.load(f)
        # the result was kept by the new version and published by the old one once it ran again
        assert peers.wait_until(lambda: kept()["published"] is True, 10), kept()
        assert kept()["rolled_back"] is True
    finally:
        s.stop()


def test_ota_config_errors(tmp_path):
    from conftest import run_cli  # pylint: disable=import-outside-toplevel
    d = str(tmp_path)
    openssl("genpkey", "-algorithm", "rsa", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "rsa.key", cwd=d)
    openssl("pkey", "-in", "rsa.key", "-pubout", "-out", "rsa.pub", cwd=d)
    cfg = gw_config(1883, [device(5020, [{"name": "x", "addr": "hr:0"}])],
                    fleet={"ota": {"public_key": os.path.join(d, "rsa.pub")}})
    p = os.path.join(d, "bad.yaml")
    with open(p, "w", encoding="utf-8") as f:
        f.write(to_yaml(cfg) + "\n")
    r = run_cli("check", "-c", p)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "is not an Ed25519 public key in PEM" in r.stderr, r.stderr
    assert "fleet.ota.install_dir: missing" in r.stderr, r.stderr
    assert "fleet.ota needs fleet.state_dir" in r.stderr, r.stderr
    assert p + ":" in r.stderr, r.stderr


def test_ota_result_is_published_only_once_the_broker_has_it(start_broker, start_modbus, watch, tmp_path):
    """A result kept in state_dir/ota/result.json unpublished (a roll-back
    executed this version) stays unpublished while no broker acknowledged it:
    a gateway that ran without its broker and stopped still has it, and the
    next start publishes it; `published` turns true on the PUBACK, and a start
    after that does not publish it again (docs/fleet.md#ota)."""
    broker = start_broker()
    broker.stop()  # the broker is down for the first run
    mb = start_modbus({"units": {"1": {"hr": [1]}}})
    res_path = os.path.join(str(tmp_path), "state", "ota", "result.json")
    os.makedirs(os.path.dirname(res_path))
    kept = {"job": "job-kept", "version": "5.0", "ok": False, "step": "health_check",
            "error": "health check failed: device plc1 is offline", "rolled_back": True,
            "timestamp": 1796579437, "published": False}
    with open(res_path, "w", encoding="utf-8") as f:
        json.dump(kept, f)

    def result_json():
        with open(res_path, encoding="utf-8") as f:
            return json.load(f)
    s = Setup(tmp_path, broker, mb)
    try:
        assert peers.wait_until(lambda: "publishing the result of 5.0" in s.proc.output(), 15), \
            s.proc.output()[-3000:]
        time.sleep(1.0)
        assert s.proc.stop() == 0, s.proc.output()[-3000:]
        assert result_json()["published"] is False, result_json()  # nobody acknowledged it
        broker.start()
        w = watch(broker.port)
        t = time.monotonic()
        s.proc = peers.Proc(s.proc.p.args, os.path.join(s.d, "gw2.log"))
        m = w.wait_for(lambda m: (m.json() or {}).get("job") == "job-kept", 20, topic=f"{OTA}/complete", after=t)
        assert m is not None, s.proc.output()[-3000:]
        assert m.json()["rolled_back"] is True and "published" not in m.json(), m.json()
        assert peers.wait_until(lambda: result_json()["published"] is True, 10), result_json()
        assert "the result was acknowledged by the broker" in s.proc.output()
        assert s.proc.stop() == 0, s.proc.output()[-3000:]
        # published: the next start does not send it again
        t = time.monotonic()
        s.proc = peers.Proc(s.proc.p.args, os.path.join(s.d, "gw3.log"))
        ready(w)
        time.sleep(1.0)
        assert not [m for m in w.messages(f"{OTA}/complete") if m.t >= t], w.messages(f"{OTA}/complete")
    finally:
        s.stop()


def test_ota_notify_during_start_up_waits_for_the_fleet_component(broker, start_modbus, watch, tmp_path):
    """The MQTT sink takes commands as soon as it connects, before the fleet
    component has started OTA: a notify (and a gateway command) arriving in
    that moment waits for it and is handled as configured, not refused as
    "software updates are off" (docs/fleet.md#commands).  The test hook
    FB_TEST_FLEET_START_DELAY holds that moment open for 3 s."""
    mb = start_modbus({"units": {"1": {"hr": [1]}}})
    w = watch(broker.port)
    t = time.monotonic()
    s = Setup(tmp_path, broker, mb, env={"FB_TEST_FLEET_START_DELAY": "3000"})
    try:
        # the gateway's first status: its sink is connected and subscribed
        assert w.wait_for(lambda m: True, 20, topic=topic(GW_ID, "status"), after=t), w.messages()[-5:]
        w.publish(topic(GW_ID, "command"), {"id": "s-early", "cmd": "status"}, qos=1)
        s.notify(w, "job-early", "1.0", s.binary)  # the version installed: refused for that reason
        r = complete(w, "job-early", timeout=20)
        assert r["ok"] is False and r["step"] == "notify" and r["error"] == "version 1.0 is the one installed", r
        m = w.wait_for(lambda m: (m.json() or {}).get("id") == "s-early", 10,
                       topic=topic(GW_ID, "command/response"))
        assert m and m.json()["ok"] is True, m and m.json()
        out = s.proc.output()
        # they did arrive in that moment: the first of them waited (the notify behind the status
        # command, in order, or on its own when it came first)
        assert "FB_TEST_FLEET_START_DELAY" in out and "waits for the start-up to finish" in out, out[-3000:]
        assert "software updates are off" not in out, out[-3000:]
    finally:
        s.stop()


def test_ota_health_check_watches_the_whole_window(broker, start_modbus, watch, tmp_path):
    """The device that was online drops out for a few seconds during the new
    version's health check and is back before its end: rolled back with the
    reason (sampled every second), not kept (docs/fleet.md#ota)."""
    mb = start_modbus({"units": {"1": {"hr": [1]}}})
    w = watch(broker.port)
    s = Setup(tmp_path, broker, mb, health_check="15s")
    try:
        ready(w)
        s.notify(w, "job-w", "6.0", s.binary)
        m = w.wait_for(lambda m: (m.json() or {}).get("step") == "health_check", 60, topic=f"{OTA}/progress")
        assert m is not None, w.messages()[-10:]
        t0 = m.t
        assert w.wait_for(lambda m: True, 20, topic=topic("plc1", "telemetry"), after=t0)  # the new version polls
        time.sleep(1.5)
        mb.stop()
        time.sleep(3.0)
        mb.start()
        back = w.wait_for(lambda m: True, 10, topic=topic("plc1", "telemetry"), after=time.monotonic())
        assert back and back.t < t0 + 15 - 2, "the device was not back before the window's end: the test proves nothing"
        r = complete(w, "job-w", timeout=60)
        assert r["ok"] is False and r.get("rolled_back") is True, r
        assert r["error"].startswith("health check failed: device plc1 was offline during the check"), r
        assert s.current() == "versions/1.0"
    finally:
        s.stop()
