"""test_cli.py — `fieldbridge read` / `write` against a pymodbus TCP server.

The peer holds registers computed with Python's struct module (fbvalues.py);
writes are read back with a separate pymodbus client.  Contract: docs/modbus.md
(addresses, types, orders) and `fieldbridge help` (output, --json, exit codes 0/1/2).
"""
import json
import os
import struct

import pytest

import fbvalues as fv
import peers
from conftest import run_cli

CASES, CASE_REGS = fv.layout(100)

HR = {0: 0, 1: 0}
HR[0], HR[1] = fv.encode("float32", 21.5, "CDAB")      # the issue's example
HR[40] = 0x8021                                        # bits 0, 5, 15 set
for i, x in enumerate([1.5, -2.25, 3.125]):            # --count: three float32 ABCD
    HR[60 + 2 * i], HR[61 + 2 * i] = fv.encode("float32", x)
HR.update(CASE_REGS)
IR = [1111, 0xFFFF] + fv.encode("float32", 3.5)
CO = [1, 0, 1, 1, 0, 0, 0, 1]
DI = [0, 1, 1, 0]

SPEC = {"units": {"1": {"hr": fv.regs_list(HR, 400), "ir": IR, "co": CO, "di": DI},
                  "2": {"hr": {"0": 7, "1": 8}}}}


@pytest.fixture(scope="module")
def mb(tmp_path_factory):
    s = peers.ModbusServer(tmp_path_factory.mktemp("cli"), SPEC)
    yield s
    s.stop()


def url(mb, unit=1):
    return f"modbus-tcp://127.0.0.1:{mb.port}?unit={unit}"


def read_json(*args):
    r = run_cli("read", *args, "--json")
    assert r.returncode == 0, f"rc={r.returncode}\nstdout={r.stdout}\nstderr={r.stderr}"
    try:
        j = json.loads(r.stdout)
    except ValueError:
        pytest.fail(f"--json output is not JSON: {r.stdout!r}")
    assert isinstance(j, list), r.stdout
    for e in j:
        for k in ("addr", "type", "value", "quality"):
            assert k in e, f"--json entry lacks {k!r}: {e}"
    return j


def token_matches(tok, value, typ):
    tok = tok.strip('",')
    if isinstance(value, bool):
        return tok.lower() in (("true", "1", "on") if value else ("false", "0", "off"))
    if isinstance(value, str):
        return tok == value
    if typ in ("float32", "float64"):
        return fv.close(tok, value, typ)
    try:
        return int(tok) == value
    except ValueError:
        return False


def assert_plain(stdout, values, typ):
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    assert len(lines) == len(values), f"expected {len(values)} lines, got:\n{stdout}"
    for ln, v in zip(lines, values):
        toks = ln.split()
        assert any(token_matches(t, v, typ) for t in toks[1:]), \
            f"line {ln!r} does not show value {v!r}"


@pytest.mark.smoke
def test_read_issue_example(mb, fb):
    r = run_cli("read", url(mb), "hr:0", "--type", "float32", "--order", "CDAB")
    assert r.returncode == 0, r.stderr
    assert_plain(r.stdout, [21.5], "float32")


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_read_type_order(mb, fb, case):
    args = [url(mb), f"hr:{case['addr']}", "--type", case["type"]]
    if case["order"]:
        args += ["--order", case["order"]]
    j = read_json(*args)
    assert len(j) == 1, j
    assert j[0]["quality"] == "good", j
    assert fv.close(j[0]["value"], case["value"], case["type"]), \
        f"{case['name']}: regs {[hex(r) for r in case['regs']]} → got {j[0]['value']!r}, want {case['value']!r}"
    r = run_cli("read", *args)
    assert r.returncode == 0, r.stderr
    assert_plain(r.stdout, [case["value"]], case["type"])


@pytest.mark.parametrize("case", [c for c in CASES if c["order"] in (None, "CDAB", "GHEFCDAB")],
                         ids=lambda c: c["name"])
def test_read_type_in_address(mb, fb, case):
    """WHERE:TYPE is the same as --type."""
    args = [url(mb), f"hr:{case['addr']}:{case['type']}"]
    if case["order"]:
        args += ["--order", case["order"]]
    j = read_json(*args)
    assert fv.close(j[0]["value"], case["value"], case["type"]), j


def test_read_64bit_values_are_exact_integers(mb, fb):
    c = next(c for c in CASES if c["name"] == "uint64_ABCDEFGH")
    r = run_cli("read", url(mb), f"hr:{c['addr']}", "--type", "uint64", "--json")
    assert r.returncode == 0, r.stderr
    assert str(c["value"]) in r.stdout, f"uint64 {c['value']} not written as exact integer text: {r.stdout}"


@pytest.mark.smoke
def test_read_bits_in_register(mb, fb):
    want = {0: True, 1: False, 5: True, 14: False, 15: True}
    for bit, v in want.items():
        j = read_json(url(mb), f"hr:40.{bit}")
        assert j[0]["value"] == v, f"hr:40.{bit} of 0x8021: {j}"


def test_read_coils_and_discrete_inputs(mb, fb):
    j = read_json(url(mb), "co:0", "--count", "8")
    assert [bool(e["value"]) for e in j] == [bool(x) for x in CO], j
    j = read_json(url(mb), "di:0", "--count", "4")
    assert [bool(e["value"]) for e in j] == [bool(x) for x in DI], j
    r = run_cli("read", url(mb), "di:1")
    assert r.returncode == 0, r.stderr
    assert_plain(r.stdout, [True], "bool")


def test_read_input_registers(mb, fb):
    assert read_json(url(mb), "ir:0")[0]["value"] == 1111
    assert read_json(url(mb), "ir:1")[0]["value"] == -1          # int16 is the default
    assert read_json(url(mb), "ir:1", "--type", "uint16")[0]["value"] == 65535
    assert read_json(url(mb), "ir:2", "--type", "float32")[0]["value"] == 3.5


def test_read_modicon_forms(mb, fb):
    assert read_json(url(mb), "40001", "--type", "float32", "--order", "CDAB")[0]["value"] == 21.5
    assert read_json(url(mb), "40101")[0]["value"] == fv.SAMPLES["int16"]   # hr:100
    assert read_json(url(mb), "30001")[0]["value"] == 1111                  # ir:0
    assert bool(read_json(url(mb), "00001")[0]["value"]) is True            # co:0
    assert bool(read_json(url(mb), "00002")[0]["value"]) is False           # co:1
    assert bool(read_json(url(mb), "10002")[0]["value"]) is True            # di:1


@pytest.mark.smoke
def test_read_count(mb, fb):
    j = read_json(url(mb), "hr:60", "--type", "float32", "--count", "3")
    assert [e["value"] for e in j] == [1.5, -2.25, 3.125], j
    assert len({e["addr"] for e in j}) == 3, f"each value should carry its own address: {j}"
    r = run_cli("read", url(mb), "hr:60", "--type", "float32", "--count", "3")
    assert r.returncode == 0, r.stderr
    assert_plain(r.stdout, [1.5, -2.25, 3.125], "float32")


def test_read_several_addresses(mb, fb):
    j = read_json(url(mb), "hr:100", "ir:0", "co:0")
    assert [j[0]["value"], j[1]["value"], bool(j[2]["value"])] == [fv.SAMPLES["int16"], 1111, True], j


def test_read_prints_in_the_order_given(mb, fb):
    """Issue 12: Modbus plans its reads sorted by table and address; the output keeps the caller's order."""
    addrs = ["hr:60:float32", "co:0", "ir:0", "hr:0:float32:CDAB", "di:1", "hr:40.5"]
    j = read_json(url(mb), *addrs)
    assert [e["addr"] for e in j] == addrs, j
    assert [e["value"] for e in j] == [1.5, True, 1111, 21.5, True, True], j
    r = run_cli("read", url(mb), *addrs)
    assert r.returncode == 0, r.stderr
    assert [ln.split()[0] for ln in r.stdout.splitlines()] == addrs, r.stdout
    # --count keeps the elements of each address together, addresses in the given order
    j = read_json(url(mb), "hr:64:float32", "hr:60:float32", "--count", "2")
    assert [e["value"] for e in j] == [3.125, 0.0, 1.5, -2.25], j


def test_read_order_in_address(mb, fb):
    """hr:N:TYPE:ORDER is the same as --order; two different orders are a usage error."""
    assert read_json(url(mb), "hr:0:float32:CDAB")[0]["value"] == 21.5
    assert read_json(url(mb), "40001:float32:cdab")[0]["value"] == 21.5
    assert read_json(url(mb), "hr:0:float32:CDAB", "--order", "CDAB")[0]["value"] == 21.5
    r = run_cli("read", url(mb), "hr:0:float32:CDAB", "--order", "DCBA")
    assert r.returncode == 2 and "conflicts" in r.stderr, r
    r = run_cli("read", url(mb), "hr:0:float32:XYZW")
    assert r.returncode == 2 and "XYZW" in r.stderr, r


def test_write_order_in_address(wmb, fb):
    r = run_cli("write", url(wmb), "hr:30:float32:CDAB", "-0.375")
    assert r.returncode == 0, r.stderr
    assert wmb.read_hr(30, 2) == fv.encode("float32", -0.375, "CDAB")


# ----------------------------------------------------------------- exit codes
@pytest.mark.smoke
def test_read_device_down_exits_1(fb):
    port = peers.free_port()
    r = run_cli("read", f"modbus-tcp://127.0.0.1:{port}?unit=1&timeout=500ms", "hr:0", timeout=30)
    assert r.returncode == 1, f"rc={r.returncode} stdout={r.stdout} stderr={r.stderr}"


@pytest.mark.smoke
def test_read_exception_is_bad_value_exit_1(mb, fb):
    """Unit 2 has only hr:0..1: hr:5 answers exception 02 → a bad value, exit 1."""
    r = run_cli("read", url(mb, 2), "hr:5", "--json")
    assert r.returncode == 1, f"rc={r.returncode} stdout={r.stdout} stderr={r.stderr}"
    j = json.loads(r.stdout)
    assert j[0]["quality"] != "good", j
    r = run_cli("read", url(mb, 2), "hr:0")
    assert r.returncode == 0 and "7" in r.stdout, r


@pytest.mark.parametrize("args", [
    ["modbus-nope://127.0.0.1:1?unit=1", "hr:0"],
    ["modbus-tcp://127.0.0.1:1?unit=1&bogus_option=1", "hr:0"],
    ["modbus-tcp://127.0.0.1:99999?unit=1", "hr:0"],
    ["modbus-tcp://127.0.0.1:1?unit=300", "hr:0"],
    ["not a url", "hr:0"],
], ids=["scheme", "option", "port", "unit", "garbage"])
def test_read_bad_url_exits_2(fb, args):
    r = run_cli("read", *args)
    assert r.returncode == 2, f"{args}: rc={r.returncode} stderr={r.stderr}"
    assert r.stderr.strip(), "a usage error must say what is wrong"


@pytest.mark.parametrize("addr", ["hr:abc", "xx:1", "hr:70000", "hr:0.16", "hr:0:float128",
                                  "hr:0:string[0]", ""], ids=lambda a: a or "empty")
def test_read_bad_address_exits_2(mb, fb, addr):
    r = run_cli("read", url(mb), addr)
    assert r.returncode == 2, f"{addr!r}: rc={r.returncode} stdout={r.stdout} stderr={r.stderr}"


def test_read_bad_options_exit_2(mb, fb):
    for extra in (["--type", "float128"], ["--order", "ABDC"], ["--count", "0"], ["--count", "x"],
                  ["--bogus"]):
        r = run_cli("read", url(mb), "hr:0", *extra)
        assert r.returncode == 2, f"{extra}: rc={r.returncode} stderr={r.stderr}"


# ---------------------------------------------------------------------- write
@pytest.fixture
def wmb(tmp_path):
    s = peers.ModbusServer(tmp_path, {"units": {"1": {"hr": [0] * 300, "co": [0] * 64}}})
    yield s
    s.stop()


@pytest.mark.smoke
def test_write_negative_int16(wmb, fb):
    r = run_cli("write", url(wmb), "hr:10:int16", "-5")
    assert r.returncode == 0, f"rc={r.returncode} stderr={r.stderr}"
    assert wmb.read_hr(10) == [0xFFFB]


@pytest.mark.parametrize("typ,order,value", [
    ("uint16", None, 65535),
    ("int32", "CDAB", -100000),
    ("uint32", "ABCD", 4000000000),
    ("float32", "ABCD", 12.5),
    ("float32", "CDAB", -0.375),
    ("float32", "BADC", 1e-3),
    ("float32", "DCBA", 65536.25),
    ("int64", "ABCDEFGH", -(2 ** 62) - 7),
    ("uint64", "HGFEDCBA", 2 ** 64 - 3),
    ("float64", "GHEFCDAB", -1.0e100),
    ("float64", "CDAB", 2.718281828459045),
], ids=lambda x: str(x))
def test_write_types_read_back(wmb, fb, typ, order, value):
    args = ["write", url(wmb), f"hr:20:{typ}", repr(value) if isinstance(value, float) else str(value)]
    if order:
        args += ["--order", order]
    r = run_cli(*args)
    assert r.returncode == 0, f"rc={r.returncode} stderr={r.stderr}"
    o = {"CDAB": "GHEFCDAB"}.get(order, order) if typ.endswith("64") else order
    want = fv.encode(typ, value, o or "ABCD")
    got = wmb.read_hr(20, len(want))
    assert got == want, f"{typ} {order} {value}: registers {[hex(x) for x in got]} want {[hex(x) for x in want]}"
    # and our own read agrees
    rargs = [url(wmb), "hr:20", "--type", typ] + (["--order", order] if order else [])
    j = read_json(*rargs)
    exp = fv.f32(value) if typ == "float32" else value
    assert fv.close(j[0]["value"], exp, typ), j


def test_write_coil(wmb, fb):
    r = run_cli("write", url(wmb), "co:20", "1")
    assert r.returncode == 0, r.stderr
    assert wmb.read_coils(20) == [True]
    r = run_cli("write", url(wmb), "co:20", "0")
    assert r.returncode == 0, r.stderr
    assert wmb.read_coils(20) == [False]


@pytest.mark.parametrize("addr,value", [("hr:10:int16", "40000"), ("hr:10:uint16", "-1"),
                                        ("hr:10:int16", "abc"), ("hr:10:uint32", "4294967296"),
                                        ("hr:10:int16", "1.5e9"), ("co:1", "7")])
def test_write_out_of_range_exits_2(wmb, fb, addr, value):
    wmb.write_hr(10, [1234])
    r = run_cli("write", url(wmb), addr, value)
    assert r.returncode == 2, f"{addr} {value}: rc={r.returncode} stderr={r.stderr}"
    assert wmb.read_hr(10) == [1234], "a refused write must not touch the device"


def test_write_read_only_table_exits_2(wmb, fb):
    """Issue 12: writing an input register or a discrete input is a usage error (2), not a device error."""
    for addr in ("ir:3", "di:0"):
        r = run_cli("write", url(wmb), addr, "1")
        assert r.returncode == 2, f"{addr}: rc={r.returncode} stderr={r.stderr}"
        assert "read-only" in r.stderr, r.stderr


@pytest.mark.parametrize("cmd", ["read", "write"])
def test_secret_file_in_url_checked_before_connecting(fb, tmp_path, cmd):
    """A secret file others can read, or a missing one, is the caller's error (2):
    the device is never contacted (nothing listens on the port)."""
    pw = tmp_path / "ua.pass"
    pw.write_text("secret\n")
    os.chmod(pw, 0o644)
    port = peers.free_port()
    u = f"opc.tcp://127.0.0.1:{port}?user=op&password_file={pw}"
    args = [cmd, u, "i=2258"] + (["5"] if cmd == "write" else [])
    r = run_cli(*args)
    assert r.returncode == 2, f"rc={r.returncode} stderr={r.stderr}"
    assert f"chmod 600 {pw}" in r.stderr, r.stderr
    u = f"opc.tcp://127.0.0.1:{port}?user=op&password_file={tmp_path}/missing.pass"
    r = run_cli(*([cmd, u, "i=2258"] + (["5"] if cmd == "write" else [])))
    assert r.returncode == 2 and "missing.pass" in r.stderr, f"rc={r.returncode} stderr={r.stderr}"


def test_write_device_down_exits_1(fb):
    port = peers.free_port()
    r = run_cli("write", f"modbus-tcp://127.0.0.1:{port}?unit=1&timeout=500ms", "hr:0:int16", "5",
                timeout=30)
    assert r.returncode == 1, f"rc={r.returncode} stderr={r.stderr}"


def test_struct_reference_sanity():
    """The reference encoder itself (guards the tests, not the product)."""
    assert fv.encode("float32", 21.5, "ABCD") == [0x41AC, 0x0000]
    assert fv.encode("float32", 21.5, "CDAB") == [0x0000, 0x41AC]
    assert fv.encode("float32", 21.5, "BADC") == [0xAC41, 0x0000]
    assert fv.encode("float32", 21.5, "DCBA") == [0x0000, 0xAC41]
    assert fv.encode("int64", 0x0102030405060708, "GHEFCDAB") == [0x0708, 0x0506, 0x0304, 0x0102]
    assert fv.encode("int64", 0x0102030405060708, "BADCFEHG") == [0x0201, 0x0403, 0x0605, 0x0807]
    assert fv.encode("string[8]", "AB") == [0x4142, 0, 0, 0]
    assert struct.pack(">h", -5) == b"\xff\xfb"


# ----------------------------------------------------------------------- help
SCHEMES = ("modbus-tcp://", "modbus-rtu://", "opc.tcp://", "s7://", "ads://", "revpi://", "sim://")


def test_help_lists_every_url_form(fb):
    r = run_cli("help")
    assert r.returncode == 0, r.stderr
    for s in SCHEMES:
        assert s in r.stdout, f"{s} missing from `fieldbridge help`:\n{r.stdout}"
    # options of each protocol are named (one from each driver's table)
    for opt in ("unit", "baud", "password_file", "security_policy", "rack", "net_id", "config", "seed"):
        assert opt in r.stdout, f"option {opt} missing from `fieldbridge help`"
    assert "DESIGN.md" not in r.stdout


@pytest.mark.parametrize("cmd,options", [
    ("run", ["-c", "--log-format", "--log-level"]),
    ("check", ["-c", "--strict"]),
    ("read", ["--type", "--order", "--count", "--json", "--timeout"]),
    ("write", ["--type", "--order", "--timeout"]),
    ("browse", ["depth", "node", "config"]),
    ("spb-dump", ["--topic", "--count", "--timeout", "--username", "--rebirth", "--cafile", "--cert", "--key"]),
    ("ads", ["--net-id", "--user", "--password-file", "--address", "--route-name", "--port", "--timeout"]),
    ("version", []),
])
def test_help_command(fb, cmd, options):
    r = run_cli("help", cmd)
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0] if r.stdout else ""
    assert first.startswith("usage: fieldbridge " + cmd), f"`help {cmd}` is not its own help:\n{r.stdout}"
    for o in options:
        assert o in r.stdout, f"`help {cmd}` does not mention {o}:\n{r.stdout}"


def test_help_unknown_command_exits_2(fb):
    r = run_cli("help", "frobnicate")
    assert r.returncode == 2 and "frobnicate" in r.stderr


def test_read_unknown_scheme_lists_every_driver(fb):
    r = run_cli("read", "fieldbus://127.0.0.1", "hr:0")
    assert r.returncode == 2
    for s in SCHEMES:
        assert s in r.stderr, f"{s} missing: {r.stderr}"


def test_read_float32_shortest_form(fb, tmp_path):
    """Numbers print in the shortest form that reads back the same: a float32 7.77 is "7.77"."""
    s = peers.ModbusServer(tmp_path, {"units": {"1": {"hr": fv.encode("float32", 7.77)}}})
    try:
        r = run_cli("read", url(s), "hr:0:float32", "--json")
        assert r.returncode == 0 and '"value":7.77,' in r.stdout, r
        r = run_cli("read", url(s), "hr:0:float32")
        assert r.stdout.split() == ["hr:0:float32", "7.77"], r.stdout
    finally:
        s.stop()
