"""test_footprint.py — memory per configured tag, measured on the real binary.

A gateway's memory is a fixed base (libraries, threads, buffers) plus what
each configured tag costs: its model entry, name and address, the driver's
parsed address and read plan, pipeline state, its share of the batches.  The
slope between two sizes of the same configuration is the per-tag cost, the
rest is the base (issue 15: ≤ 100 bytes per tag beyond a fixed base; see
BENCHMARKS.md for the figure and its breakdown).  Measured with Modbus
devices on one connection to a closed port (nothing answers, connects fail
at once on loopback) and no sink: every structure a running gateway keeps per
tag is built at start-up, whatever the device says.  Also: the start-up peak
(VmHWM) stays within 1.25× the steady state (VmRSS), and the base stays small:
no library is mapped or initialised that the configuration does not use.
"""
import re
import time

import peers
from conftest import gw_config


def config(ndev, ntags, port):
    devices = [{"name": f"m{d}", "url": f"modbus-tcp://127.0.0.1:{port}?unit={d % 247 + 1}", "poll": "1s",
                "tags": [{"for": {"i": f"0..{ntags - 1}"}, "name": "r{i}", "addr": "hr:{i}:int16",
                          "deadband": 5}]}
               for d in range(ndev)]
    cfg = gw_config(None, devices)
    cfg["log"] = {"level": "info"}
    return cfg


def rss(pid):
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        st = f.read()
    return {k: int(re.search(rf"^{k}:\s+(\d+) kB", st, re.M).group(1)) * 1024 for k in ("VmRSS", "VmHWM")}


def measure(start_gateway, ndev, ntags, port):
    g = start_gateway(config(ndev, ntags, port), name=f"fp{ndev}")
    assert peers.wait_until(lambda: "started:" in g.output(), 30, 0.1), g.output()[-2000:]
    time.sleep(1.5)  # a few connect attempts: the steady state
    m = rss(g.proc.pid)
    g.stop()
    return m


def test_memory_per_tag(start_gateway):
    port = peers.free_port()  # nothing listens: connect() is refused at once
    small = measure(start_gateway, 5, 1000, port)
    big = measure(start_gateway, 45, 1000, port)
    per_tag = (big["VmRSS"] - small["VmRSS"]) / 40000
    base = small["VmRSS"] - 5000 * per_tag
    print(f"\n5k tags: {small}; 45k tags: {big}; {per_tag:.0f} bytes per tag beyond a base of {base / 1e6:.1f} MB")
    # main before issue 15: about 550 bytes per tag with these settings; 177
    # before the tag shrank to 56 bytes and lost its address text (7 Dec);
    # 112-116 after; 97-103 since the 48-byte tag, poll groups of contiguous
    # tags without an id array and the 12-byte deadband state (BENCHMARKS.md,
    # "Memory per tag"; ±4 bytes between runs); 89-95 since a Modbus read
    # plan's item is a 4-byte index instead of a pointer: the 100
    assert per_tag <= 100, f"{per_tag:.0f} bytes per configured tag"
    # the base: 12.4 MB while libcurl was linked (≈ 25 libraries with it) and
    # the configuration's SHA-256 initialised OpenSSL's default provider
    # (≈ 1.8 MB of libcrypto; 8.3 MB with only libcurl gone); 6.3-6.5 MB
    # since (7 Dec, this machine)
    assert base <= 7.5e6, f"a base of {base / 1e6:.1f} MB"
    assert big["VmHWM"] <= 1.25 * big["VmRSS"], f"start-up peak {big['VmHWM']} > 1.25 × steady {big['VmRSS']}"
