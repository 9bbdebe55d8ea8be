"""test_reliability.py — regression tests for the defects of the reliability
campaign (issue 14) that need the whole gateway: window statistics with an
odd ring capacity (a misaligned control block, a UBSan abort at the first
sample), hostile configs that must be refused quickly by `fieldbridge check`
(for: products, deep for: expressions, YAML alias/merge bombs, deep
nesting), and command time stamps. The smoke tests also run against
build-asan/fieldbridge, where any sanitizer report fails them."""
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
