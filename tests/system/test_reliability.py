"""test_reliability.py — regression tests for the defects of the reliability
campaign (issue 14) that need the whole gateway: window statistics with an
odd ring capacity (a misaligned control block, a UBSan abort at the first
sample), hostile configs that must be refused quickly by `fieldbridge check`
(for: products, deep for: expressions, YAML alias/merge bombs, deep
nesting), and command time stamps. The smoke tests also run against
build-asan/fieldbridge, where any sanitizer report fails them."""
import os
import time

import pytest

from conftest import gw_config, run_cli, topic, wait_values

SIM = "sim1"
SIM_TELE = topic(SIM, "telemetry")


@pytest.mark.smoke
def test_window_with_odd_capacity(broker, start_gateway, watch):
    # window 10s at poll 100ms → ring capacity 10s/100ms*5/4+4 = 129 (odd);
    # 3s → 41, 700ms → 12 (even, for contrast)
    dev = {"name": SIM, "url": "sim://rel?seed=7", "poll": "100ms",
           "tags": [{"name": "a", "addr": "sine:amp=10,period=5s,offset=20", "window": "10s"},
                    {"name": "b", "addr": "ramp:min=0,max=100,period=3s", "window": "3s"},
                    {"name": "c", "addr": "walk:min=0,max=10,start=2,step=0.2", "window": "700ms"}]}
    w = watch(broker.port)
    gw = start_gateway(gw_config(broker.port, [dev]))

    def counted(v, n):
        return all(k in v and v[k].get("stats", {}).get("count", 0) >= n for k in ("a", "b", "c"))
    m = wait_values(w, SIM, lambda v: counted(v, 5), timeout=20)
    assert m is not None, (w.messages(SIM_TELE)[-2:], gw.output()[-3000:])
    st = m.json()["values"]["a"]["stats"]
    assert st["window"] == "10s" and st["min"] <= st["mean"] <= st["max"], st
    assert gw.alive(), gw.output()[-3000:]


def check_refused(tmp_path, text, want, limit_s=10.0):
    p = os.path.join(str(tmp_path), "bad.yaml")
    with open(p, "w", encoding="utf-8") as f:
        f.write(text)
    t = time.monotonic()
    r = run_cli("check", "-c", p, timeout=limit_s + 20)
    took = time.monotonic() - t
    out = r.stdout + r.stderr
    assert r.returncode != 0, out[-2000:]
    assert want in out, out[-2000:]
    assert took < limit_s, f"check took {took:.1f}s"
    assert f"{p}:" in out, out[-2000:]  # file:line:col
    return out


HEAD = "gateway: {id: gw}\ndevices:\n"


@pytest.mark.smoke
def test_check_refuses_huge_for_product(tmp_path):
    text = HEAD + ('  - for: {d: "1..100000"}\n    name: "d{d}"\n    url: "sim://x{d}"\n'
                   '    tags:\n      - for: {i: "1..100000"}\n        name: "t{i}"\n        addr: "const:value=1"\n')
    out = check_refused(tmp_path, text, "2000000")
    assert "10000000000" in out, out[-2000:]


@pytest.mark.smoke
def test_check_refuses_deep_for_expression(tmp_path):
    depth = 50000
    text = HEAD + ('  - for: {d: "1..2"}\n    name: "d' + "{" + "(" * depth + "d" + ")" * depth + "}" +
                   '"\n    url: "sim://x"\n    tags: [{name: t, addr: "const:value=1"}]\n')
    check_refused(tmp_path, text, "nested too deeply")


BOMB = """a: &a [x, x, x, x, x, x, x, x, x]
b: &b {<<: [*a, *a, *a, *a, *a, *a, *a, *a, *a]}
l0: &l0 {k0: v}
l1: &l1 {<<: [*l0, *l0, *l0, *l0, *l0, *l0, *l0, *l0, *l0], k1: v}
l2: &l2 {<<: [*l1, *l1, *l1, *l1, *l1, *l1, *l1, *l1, *l1], k2: v}
l3: &l3 {<<: [*l2, *l2, *l2, *l2, *l2, *l2, *l2, *l2, *l2], k3: v}
l4: &l4 {<<: [*l3, *l3, *l3, *l3, *l3, *l3, *l3, *l3, *l3], k4: v}
l5: &l5 {<<: [*l4, *l4, *l4, *l4, *l4, *l4, *l4, *l4, *l4], k5: v}
l6: &l6 {<<: [*l5, *l5, *l5, *l5, *l5, *l5, *l5, *l5, *l5], k6: v}
l7: &l7 {<<: [*l6, *l6, *l6, *l6, *l6, *l6, *l6, *l6, *l6], k7: v}
gateway: {id: gw, <<: [*l7, *l7, *l7, *l7, *l7, *l7, *l7, *l7, *l7]}
"""


@pytest.mark.smoke
def test_check_refuses_merge_key_bomb(tmp_path):
    check_refused(tmp_path, BOMB, "alias")


@pytest.mark.smoke
def test_check_refuses_deep_nesting(tmp_path):
    n = 100000
    check_refused(tmp_path, "gateway: {id: gw}\nx: " + "[" * n + "]" * n + "\n", "nested")
    check_refused(tmp_path, "gateway: {id: gw}\nx:\n" + "".join(" " * i + "- \n" for i in range(2000)),
                  "nested")
