"""test_rtu.py — Modbus RTU over a socat pty pair against pymodbus's serial
server (ModbusSerialServer with the RTU framer).  The peer also serves its
datastore on a TCP port so writes can be read back independently."""
import pytest

import fbvalues as fv
import peers
from conftest import gw_config, run_cli, topic, wait_values

SPEC = {"units": {"3": {"hr": fv.regs_list({0: fv.encode("float32", 21.5, "CDAB")[0],
                                            1: fv.encode("float32", 21.5, "CDAB")[1],
                                            2: 0xFFFB, 3: 4242}, 50),
                        "co": [1, 0, 1]}}}


@pytest.fixture
def rtu(tmp_path, start_modbus):
    pair = peers.SocatPair(tmp_path)
    mb = start_modbus(SPEC, serial=pair.b)
    yield pair, mb
    pair.stop()


def rtu_url(pair):
    return f"modbus-rtu://{pair.a}?baud=19200&parity=N&unit=3&timeout=1s"


@pytest.mark.smoke
def test_rtu_read(rtu, fb):
    pair, _ = rtu
    r = run_cli("read", rtu_url(pair), "hr:0", "--type", "float32", "--order", "CDAB", "--json")
    assert r.returncode == 0, f"rc={r.returncode}\n{r.stdout}\n{r.stderr}"
    assert '21.5' in r.stdout, r.stdout
    r = run_cli("read", rtu_url(pair), "hr:2", "--count", "2", "--json")
    assert r.returncode == 0, r.stderr
    assert "-5" in r.stdout and "4242" in r.stdout, r.stdout
    r = run_cli("read", rtu_url(pair), "co:0", "--count", "3", "--json")
    assert r.returncode == 0, r.stderr


def test_rtu_write(rtu, fb):
    pair, mb = rtu
    r = run_cli("write", rtu_url(pair), "hr:10:int16", "-5")
    assert r.returncode == 0, f"rc={r.returncode} {r.stderr}"
    assert mb.read_hr(10, unit=3) == [0xFFFB]
    r = run_cli("write", rtu_url(pair), "hr:12:float32", "12.5", "--order", "CDAB")
    assert r.returncode == 0, r.stderr
    assert mb.read_hr(12, 2, unit=3) == fv.encode("float32", 12.5, "CDAB")


def test_rtu_wrong_unit_times_out_exit_1(rtu, fb):
    pair, _ = rtu
    url = f"modbus-rtu://{pair.a}?baud=19200&parity=N&unit=9&timeout=300ms"
    r = run_cli("read", url, "hr:0")
    assert r.returncode == 1, f"rc={r.returncode} {r.stderr}"


def test_rtu_run_publishes(rtu, broker, start_gateway, watch):
    pair, _ = rtu
    dev = {"name": "rtu1", "url": rtu_url(pair), "poll": "300ms",
           "tags": [{"name": "temp", "addr": "hr:0:float32", "order": "CDAB"},
                    {"name": "neg", "addr": "hr:2"}, {"name": "c0", "addr": "co:0"}]}
    w = watch(broker.port)
    start_gateway(gw_config(broker.port, [dev]))
    m = wait_values(w, "rtu1", lambda v: all(v.get(k, {}).get("q") == "good" for k in ("temp", "neg", "c0")),
                    timeout=20)
    assert m is not None, f"no good RTU telemetry on {topic('rtu1', 'telemetry')}: {w.messages()[-3:]}"
    v = m.json()["values"]
    assert v["temp"]["v"] == 21.5 and v["neg"]["v"] == -5 and bool(v["c0"]["v"]) is True, v
