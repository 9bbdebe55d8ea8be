"""test_soak.py — the CI size of the soak (bench/soak.py, docs/reliability.md):
the real gateway at 2,000 values/s for 60 s through one cycle of faults — the
broker stopped for 5 s, the Modbus device killed for 10 s, the buffer's tmpfs
filled to the last byte for 15 s — then drained.  Passes only when nothing
was lost (every sim counter value up to the last read, every seq hole a
device state change, no drop or loss counted) and fds and threads are back
to their baseline.  RSS slope is not judged at this length (one minute says
nothing about a leak); the 1-hour run in bench/ judges it.  About 75 s."""
import os
import shutil
import subprocess

from conftest import ROOT, fb_bin, require


def test_soak_short(tmp_path):
    require("mosquitto", shutil.which("mosquitto"), "mosquitto is not installed (scripts/deps.sh)")
    require("root", os.geteuid() == 0, "the soak needs root (unshare -m and a tmpfs for the buffer)")
    out = tmp_path / "soak"
    cmd = ["/usr/bin/python3", os.path.join(ROOT, "bench", "soak.py"), "--bin", fb_bin(), "--out", str(out),
           "--duration", "60", "--cycle", "50", "--rate", "2000", "--warmup", "10", "--sample", "2",
           "--rss-slope", "1e9", "--rss-margin", "1e9"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    tail = (r.stdout + r.stderr)[-6000:]
    assert r.returncode == 0, tail
    assert "FAIL" not in r.stdout, tail
    for kind in ("broker", "device", "disk"):
        assert f"fault {kind} for" in r.stdout, tail
