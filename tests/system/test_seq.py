"""test_seq.py — what the telemetry `seq` is (docs/mqtt.md): +1 per batch and
never going back across a restart.  It starts from the clock in microseconds
whenever there is no counter to continue (no buffer; a new buffer or a lost
seq file, so that a wiped buffer cannot make numbers repeat), which is why it
looks like a time stamp (issue 11: a newcomer saw 1796559759869103 where the
README shows a small counter).  With a `buffer:` the counter is persisted: a
restart continues it (within one reserved block of 65,536), not the clock."""
import time

from conftest import gw_config, topic

DEV = "seqdev"
TELE = topic(DEV, "telemetry")


def device():
    return {"name": DEV, "url": "sim://seq", "poll": "100ms",
            "tags": [{"name": "n", "addr": "counter"}]}


def seqs_of(w, after=0.0, n=5, timeout=15):
    ok = w.wait_for(lambda m: len([x for x in w.messages(TELE) if x.t >= after]) >= n, timeout)
    assert ok is not None, f"fewer than {n} telemetry messages: {w.messages()}"
    return [m.json()["seq"] for m in w.messages(TELE) if m.t >= after]


def test_seq_without_buffer_starts_from_the_clock(broker, start_gateway, watch):
    w = watch(broker.port, topics=(TELE,))
    t0_us = int(time.time() * 1e6)
    gw = start_gateway(gw_config(broker.port, [device()]), name="gw1")
    s1 = seqs_of(w)
    t1_us = int(time.time() * 1e6)
    assert t0_us <= s1[0] <= t1_us, (t0_us, s1[0], t1_us)
    assert all(b > a for a, b in zip(s1, s1[1:])), s1
    gw.stop()
    t = time.monotonic()
    start_gateway(gw_config(broker.port, [device()]), name="gw2")
    s2 = seqs_of(w, after=t)
    assert s2[0] > s1[-1], (s1[-1], s2[0])  # increases across the restart


def test_seq_with_buffer_is_a_persisted_counter(broker, start_gateway, watch, tmp_path):
    w = watch(broker.port, topics=(TELE,))
    cfg = gw_config(broker.port, [device()], buffer={"path": str(tmp_path / "buf")})
    t0_us = int(time.time() * 1e6)
    gw = start_gateway(cfg, name="gw1")
    s1 = seqs_of(w)
    t1_us = int(time.time() * 1e6)
    assert t0_us <= s1[0] <= t1_us, (t0_us, s1[0], t1_us)  # a new buffer: the clock's number
    assert all(b == a + 1 for a, b in zip(s1, s1[1:])), s1
    gw.stop()
    time.sleep(2)  # the clock moves on by 2,000,000 µs; the persisted counter does not
    t = time.monotonic()
    start_gateway(cfg, name="gw2")
    s2 = seqs_of(w, after=t)
    assert s1[-1] < s2[0] <= s1[-1] + 65536 + 100, (s1[-1], s2[0])
