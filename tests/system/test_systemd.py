"""test_systemd.py — fieldbridge as a systemd Type=notify service, with this
test standing in for systemd: an AF_UNIX datagram socket at $NOTIFY_SOCKET
that records every notification (READY=1, STATUS=, WATCHDOG=1, STOPPING=1)
with its arrival time, and $WATCHDOG_USEC as a unit's WatchdogSec= sets it.

The wedge is real, no test hook: a RevPi device whose PiCtory configuration
file does not exist yet (so its connection thread retries), then becomes a
FIFO that nobody writes — the next connect attempt blocks in open(2) for
good, as a call into a hung device driver or file system would.  The gateway
must then stop sending WATCHDOG=1 (systemd would kill and restart it), keep
saying why in STATUS=, and resume once the call returns (the test writes the
configuration into the FIFO).  A Modbus device that is offline the whole time
must not count as a stall.

Also: the unit file passes `systemd-analyze verify` (test_unit_verifies).
"""
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

from conftest import ROOT, gw_config, require
from notify import NotifySocket
from test_docker import healthcheck_cmd

RSC = os.path.join(ROOT, "tests", "unit", "data", "revpi", "core_dio.rsc")
UNIT = os.path.join(ROOT, "deploy", "systemd", "fieldbridge.service")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def pings(ns, t0, t1):
    return [at for at, m in ns.all() if t0 <= at < t1 and m == "WATCHDOG=1"]


def test_notify_ready_watchdog_stall_and_stopping(broker, start_gateway, tmp_path):
    img = tmp_path / "piControl0"
    img.write_bytes(bytes(4096))
    rsc = tmp_path / "config.rsc"  # absent at start: the device retries
    closed = free_port()           # nothing listens: that device stays offline
    mport = free_port()
    cfg = gw_config(broker.port,
                    stall_timeout="1s",
                    metrics={"listen": f"127.0.0.1:{mport}"},
                    buffer={"path": str(tmp_path / "buffer")},
                    devices=[
                        {"name": "revpi-1", "url": f"revpi://{img}?config={rsc}&cycle=50ms", "poll": "50ms",
                         "tags": [{"name": "I_1", "addr": "I_1", "type": "bool"}]},
                        {"name": "plc-off", "url": f"modbus-tcp://127.0.0.1:{closed}?unit=1", "poll": "100ms",
                         "tags": [{"name": "t", "addr": "hr:0"}]},
                    ])
    ns = NotifySocket(tmp_path / "notify.sock")
    try:
        gw = start_gateway(cfg, env={"NOTIFY_SOCKET": ns.path, "WATCHDOG_USEC": "400000"})
        got = ns.wait_for(lambda m: m == "READY=1", 10)
        assert got, f"no READY=1; got {ns.all()}\n{gw.output()[-3000:]}"
        t_ready = got[0]
        # READY=1 comes after the start: everything is running, and nothing came before it
        assert "started:" in gw.output()
        assert ns.all()[0][1] == "READY=1", ns.all()[:5]

        # WATCHDOG=1 every WATCHDOG_USEC/2 = 200 ms while alive, also with a device offline
        time.sleep(2.2)
        p = pings(ns, t_ready + 0.1, t_ready + 2.1)
        assert 7 <= len(p) <= 13, p
        # (the first STATUS= may count the offline devices' first batches, not yet delivered)
        assert ns.wait_for(lambda m: m == "STATUS=0/2 devices connected, buffer 0 records", 3), ns.all()[:8]

        # wedge: the configuration file becomes a FIFO without a writer
        os.mkfifo(rsc)
        t_wedge = time.monotonic()
        stalled = ns.wait_for(lambda m: m.startswith("STATUS=") and "STALLED" in m, 8, after=t_wedge)
        assert stalled, f"no stall reported: {ns.since(t_wedge)}\n{gw.output()[-3000:]}"
        assert f"STALLED: connection revpi:{img}" in stalled[1], stalled
        time.sleep(0.1)
        t_quiet = time.monotonic()
        time.sleep(1.5)
        assert pings(ns, t_quiet, time.monotonic()) == [], ns.since(t_quiet)
        # the connect attempt got stuck at least stall_timeout before the pings stopped
        last = max(pings(ns, t_wedge, t_quiet), default=t_wedge)
        assert last - t_wedge >= 0.8, (last - t_wedge)
        assert "watchdog: connection revpi:" in gw.output()
        assert gw.alive()
        # /metrics says so, and the container image's HEALTHCHECK fails on it
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
        assert "\nfieldbridge_stalled_threads 1\n" in metrics
        hc = subprocess.run(["sh", "-c", healthcheck_cmd(mport)], capture_output=True, timeout=20, check=False)
        assert hc.returncode != 0

        # the call returns (the file gets its content): pings resume, the device connects
        with open(rsc, "wb") as f:  # the gateway holds the read end open
            with open(RSC, "rb") as src:
                f.write(src.read())
        t_free = time.monotonic()
        resumed = ns.wait_for(lambda m: m == "WATCHDOG=1", 3, after=t_free)
        assert resumed, ns.since(t_free)
        ok = ns.wait_for(lambda m: m == "STATUS=1/2 devices connected, buffer 0 records", 5, after=t_free)
        assert ok, ns.since(t_free)
        assert "every thread is running again" in gw.output()
        hc = subprocess.run(["sh", "-c", healthcheck_cmd(mport)], capture_output=True, timeout=20, check=False)
        assert hc.returncode == 0, hc

        # SIGTERM: STOPPING=1, then no more pings, exit 0
        t_term = time.monotonic()
        assert gw.stop(signal.SIGTERM, 15) == 0
        stop = ns.wait_for(lambda m: m == "STOPPING=1", 2, after=t_term)
        assert stop, ns.since(t_term)
        assert pings(ns, stop[0], time.monotonic() + 1) == []
    finally:
        if os.path.exists(rsc) and not os.path.isfile(rsc):
            # a failed test must not leave the gateway blocked on the FIFO (teardown
            # stops it): release the blocked open, and let the next attempt find a file
            fd = -1
            try:
                fd = os.open(rsc, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                pass
            os.unlink(rsc)
            shutil.copy(RSC, rsc)
            if fd >= 0:
                os.close(fd)
        ns.close()


def test_notify_without_watchdog_and_config_error(start_gateway, tmp_path):
    """No WatchdogSec=: READY and STATUS but no WATCHDOG=1.  A config error:
    exit 2 and no READY=1 (systemd reports the start as failed)."""
    ns = NotifySocket(tmp_path / "notify.sock")
    try:
        cfg = gw_config(devices=[{"name": "sim-1", "url": "sim://a", "poll": "100ms",
                                  "tags": [{"name": "x", "addr": "sine:amp=1,period=10s"}]}])
        gw = start_gateway(cfg, env={"NOTIFY_SOCKET": ns.path})
        assert ns.wait_for(lambda m: m == "READY=1", 10), gw.output()[-2000:]
        assert ns.wait_for(lambda m: m == "STATUS=1/1 devices connected, buffer 0 records", 5), ns.all()
        time.sleep(1.0)
        assert not [m for _, m in ns.all() if m == "WATCHDOG=1"]
        t = time.monotonic()
        assert gw.stop(signal.SIGTERM, 10) == 0
        assert ns.wait_for(lambda m: m == "STOPPING=1", 2, after=t)

        n = len(ns.all())
        bad = start_gateway("gateway: {id: x}\ndevices: [{name: d, url: 'sim://a', tags: [{name: x, addr: nope}]}]\n",
                            name="bad", env={"NOTIFY_SOCKET": ns.path, "WATCHDOG_USEC": "400000"})
        assert bad.wait(10) == 2
        time.sleep(0.3)
        assert ns.all()[n:] == []
    finally:
        ns.close()


def test_unit_verifies(tmp_path):
    """The unit as shipped passes `systemd-analyze verify` (with its binary
    path pointing at the build under test)."""
    sa = shutil.which("systemd-analyze")
    require("systemd-analyze", sa, "systemd-analyze not found (apt-get install systemd)")
    text = open(UNIT, encoding="utf-8").read()
    assert "Type=notify" in text and "WatchdogSec=" in text
    exe = os.path.abspath(os.environ.get("FB_BIN", os.path.join(ROOT, "build", "fieldbridge")))
    unit = tmp_path / "fieldbridge.service"
    unit.write_text(text.replace("/usr/bin/fieldbridge", exe))
    r = subprocess.run([sa, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60,
                       check=False)
    out = (r.stdout + r.stderr).strip()
    # the user does not exist on a build machine; everything else must be clean
    lines = [l for l in out.splitlines() if l.strip()]
    assert r.returncode == 0 and not lines, out
