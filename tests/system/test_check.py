"""test_check.py — `fieldbridge check -c FILE`: offline validation (docs/configuration.md).

Every examples/*.yaml must pass; bad configs exit 2 with `file:line:col:`
pointing at the offending spot (1-based line and column, like compilers).
"""
import glob
import os
import re

import pytest

from conftest import ROOT, run_cli

EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "examples", "*.yaml")))


def test_examples_exist():
    names = {os.path.basename(p) for p in EXAMPLES}
    for want in ("demo.yaml", "factory-3-lines.yaml", "conveyor-pdm.yaml"):
        assert want in names, f"examples/{want} missing (have {sorted(names)})"


@pytest.mark.smoke
@pytest.mark.parametrize("path", EXAMPLES, ids=[os.path.basename(p) for p in EXAMPLES])
def test_example_passes_check(fb, path):
    r = run_cli("check", "-c", path, env={"MQTT_PASSWORD": "x"})
    assert r.returncode == 0, f"{path}: rc={r.returncode}\n{r.stdout}\n{r.stderr}"
    assert r.stdout.strip(), "check prints a summary of what would run"


def test_check_summary_counts_factory(fb):
    """3 lines × 50 sensors via repetition: the summary shows 150 tags (or more)."""
    path = os.path.join(ROOT, "examples", "factory-3-lines.yaml")
    if not os.path.exists(path):
        pytest.fail("examples/factory-3-lines.yaml missing")
    r = run_cli("check", "-c", path, env={"MQTT_PASSWORD": "x"})
    assert r.returncode == 0, r.stderr
    nums = [int(n) for n in re.findall(r"\b(\d+)\b", r.stdout)]
    assert any(n >= 150 for n in nums), f"summary does not count the expanded tags:\n{r.stdout}"


GOOD = """\
gateway:
  id: gw1
  site: s
devices:
  - name: d1
    url: "modbus-tcp://127.0.0.1:5020?unit=1"
    poll: 1s
    tags:
      - name: t1
        addr: "hr:0:float32"
"""


def write(tmp_path, text, name="cfg.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def assert_err_at(r, path, line, cols):
    assert r.returncode == 2, f"rc={r.returncode}\nstdout={r.stdout}\nstderr={r.stderr}"
    out = r.stderr + r.stdout
    m = re.search(re.escape(path) + r":(\d+):(\d+):", out)
    assert m, f"no '{path}:line:col:' in the output:\n{out}"
    got = (int(m.group(1)), int(m.group(2)))
    assert got[0] == line and got[1] in cols, f"error at {got}, expected line {line} col {cols}:\n{out}"


@pytest.mark.smoke
def test_good_config_passes(fb, tmp_path):
    r = run_cli("check", "-c", write(tmp_path, GOOD))
    assert r.returncode == 0, r.stderr


@pytest.mark.smoke
def test_unknown_key(fb, tmp_path):
    text = GOOD.replace("    poll: 1s\n", "    poll: 1s\n    bogus_key: 3\n")   # line 8, col 5
    p = write(tmp_path, text)
    r = run_cli("check", "-c", p)
    assert_err_at(r, p, 8, {5})
    assert "bogus_key" in r.stderr + r.stdout


def test_unknown_top_level_key(fb, tmp_path):
    p = write(tmp_path, GOOD + "mqqt:\n  url: mqtt://127.0.0.1:1883\n")   # line 11, col 1
    assert_err_at(run_cli("check", "-c", p), p, 11, {1})


def test_bad_duration(fb, tmp_path):
    p = write(tmp_path, GOOD.replace("poll: 1s", "poll: 10parsecs"))  # line 7, value at col 11
    assert_err_at(run_cli("check", "-c", p), p, 7, {11})


def test_unset_env_var(fb, tmp_path):
    text = GOOD.replace("  id: gw1", '  id: "${FB_TEST_SURELY_UNSET_VAR}"')  # line 2, scalar at col 7
    p = write(tmp_path, text)
    r = run_cli("check", "-c", p)
    assert_err_at(r, p, 2, set(range(7, 7 + len('"${FB_TEST_SURELY_UNSET_VAR}"'))))
    assert "FB_TEST_SURELY_UNSET_VAR" in r.stderr + r.stdout


def test_env_var_default_and_set(fb, tmp_path):
    text = GOOD.replace("  id: gw1", '  id: "${FB_TEST_GW_ID:-gw-default}"')
    p = write(tmp_path, text)
    assert run_cli("check", "-c", p).returncode == 0
    assert run_cli("check", "-c", p, env={"FB_TEST_GW_ID": "gw-env"}).returncode == 0


def test_bad_address(fb, tmp_path):
    p = write(tmp_path, GOOD.replace('"hr:0:float32"', '"hr:zz:float32"'))  # line 10, col 15
    assert_err_at(run_cli("check", "-c", p), p, 10, {15})


def test_order_in_address(fb, tmp_path):
    """A Modbus address may carry its order (hr:102:float32:CDAB), in a config too."""
    p = write(tmp_path, GOOD.replace('"hr:0:float32"', '"hr:0:float32:CDAB"'))
    assert run_cli("check", "-c", p).returncode == 0
    p = write(tmp_path, GOOD.replace('"hr:0:float32"', '"hr:0:float32:CDAB"\n        order: ABCD'), "c2.yaml")
    r = run_cli("check", "-c", p)
    assert_err_at(r, p, 10, {15})
    assert "conflicts" in r.stderr, r.stderr


def test_writable_tag_on_read_only_table(fb, tmp_path):
    """A writable tag on input registers or discrete inputs is a config error (exit 2)."""
    for addr in ("ir:3", "30004", "di:0"):
        p = write(tmp_path, GOOD.replace('"hr:0:float32"', f'"{addr}"\n        access: rw'))
        r = run_cli("check", "-c", p)
        assert_err_at(r, p, 10, {15})
        assert "read-only" in r.stderr, r.stderr
    p = write(tmp_path, GOOD.replace('"hr:0:float32"', '"ir:3"\n        access: r'))
    assert run_cli("check", "-c", p).returncode == 0


def test_yaml_syntax_error(fb, tmp_path):
    p = write(tmp_path, GOOD + "  - name: [unclosed\n")
    r = run_cli("check", "-c", p)
    assert r.returncode == 2, r
    assert re.search(re.escape(p) + r":\d+:\d+:", r.stderr + r.stdout), r.stderr


def test_duplicate_tag_name(fb, tmp_path):
    p = write(tmp_path, GOOD + '      - name: t1\n        addr: "hr:2"\n')  # line 12
    r = run_cli("check", "-c", p)
    assert r.returncode == 2, r
    assert re.search(re.escape(p) + r":1[12]:\d+:", r.stderr + r.stdout), r.stderr


def test_missing_file(fb, tmp_path):
    r = run_cli("check", "-c", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2, r


def test_literal_password_refused(fb, tmp_path):
    text = GOOD + "mqtt:\n  url: mqtt://127.0.0.1:1883\n  password: hunter2\n"  # line 13, col 3..
    p = write(tmp_path, text)
    r = run_cli("check", "-c", p)
    assert r.returncode == 2, r
    assert re.search(re.escape(p) + r":13:\d+:", r.stderr + r.stdout), r.stderr


def test_password_file_readable_by_others_refused_by_check(fb, tmp_path):
    pw = tmp_path / "mqtt.pass"
    pw.write_text("secret\n")
    os.chmod(pw, 0o644)
    p = write(tmp_path, GOOD + f"mqtt:\n  url: mqtt://127.0.0.1:1883\n  username: u\n"
                               f"  password_file: {pw}\n")
    r = run_cli("check", "-c", p)
    assert r.returncode == 2, f"rc={r.returncode} {r.stderr}"
    os.chmod(pw, 0o600)
    r = run_cli("check", "-c", p)
    assert r.returncode == 0, f"rc={r.returncode} {r.stderr}"


# ------------------------------------------------- files a config names
UA_DEV = """\
gateway:
  id: gw1
devices:
  - name: ua
    url: "opc.tcp://127.0.0.1:4840?{query}"
    tags:
      - name: t
        addr: "i=2258"
"""


def secret(tmp_path, name, mode, text="secret\n"):
    p = tmp_path / name
    p.write_text(text)
    os.chmod(p, mode)
    return str(p)


def test_opcua_password_file_missing_is_error_with_strict(fb, tmp_path):
    """Issue 12: a missing OPC UA password file passed check, then the gateway retried forever."""
    p = write(tmp_path, UA_DEV.format(query=f"user=op&password_file={tmp_path}/nope.pass"))
    r = run_cli("check", "-c", p)
    assert r.returncode == 0, r.stderr
    assert "password_file" in r.stderr and "nope.pass" in r.stderr, r.stderr   # a warning
    r = run_cli("check", "--strict", "-c", p)
    assert_err_at(r, p, 5, {10})
    assert "nope.pass" in r.stderr and "No such file" in r.stderr, r.stderr
    # `run` checks strictly: it refuses to start instead of retrying forever
    r = run_cli("run", "-c", p, timeout=10)
    assert r.returncode == 2 and "nope.pass" in r.stderr, r


def test_opcua_secret_files_permissions(fb, tmp_path):
    pw = secret(tmp_path, "ua.pass", 0o644)
    p = write(tmp_path, UA_DEV.format(query=f"user=op&password_file={pw}"))
    r = run_cli("check", "-c", p)
    assert_err_at(r, p, 5, {10})
    assert f"chmod 600 {pw}" in r.stderr, r.stderr
    os.chmod(pw, 0o600)
    assert run_cli("check", "--strict", "-c", p).returncode == 0
    # X.509 user identity: the certificate must exist, the key must be private
    cert = secret(tmp_path, "user.der", 0o644, "cert")
    key = secret(tmp_path, "user.key", 0o640, "key")
    p = write(tmp_path, UA_DEV.format(query=f"user_cert={cert}&user_key={key}"), "x509.yaml")
    r = run_cli("check", "-c", p)
    assert_err_at(r, p, 5, {10})
    assert "user_key" in r.stderr and f"chmod 600 {key}" in r.stderr, r.stderr
    os.chmod(key, 0o600)
    assert run_cli("check", "--strict", "-c", p).returncode == 0
    os.unlink(cert)
    r = run_cli("check", "--strict", "-c", p)
    assert r.returncode == 2 and "user_cert" in r.stderr, r.stderr


def test_opcua_pki_own_key_permissions(fb, tmp_path):
    own = tmp_path / "pki" / "own"
    own.mkdir(parents=True)
    key = secret(own, "key.pem", 0o644, "key")
    p = write(tmp_path, UA_DEV.format(query=f"pki={tmp_path}/pki"))
    r = run_cli("check", "-c", p)
    assert r.returncode == 2 and f"chmod 600 {key}" in r.stderr, r.stderr
    os.chmod(key, 0o600)
    assert run_cli("check", "--strict", "-c", p).returncode == 0
    # a store that does not exist yet is created by the driver: no complaint
    p = write(tmp_path, UA_DEV.format(query=f"pki={tmp_path}/newpki"), "new.yaml")
    assert run_cli("check", "--strict", "-c", p).returncode == 0


def test_sparkplug_files_checked(fb, tmp_path):
    ca = secret(tmp_path, "ca.pem", 0o644, "ca")
    cert = secret(tmp_path, "gw.pem", 0o644, "cert")
    key = secret(tmp_path, "gw.key", 0o644, "key")
    pw = secret(tmp_path, "spb.pass", 0o600)
    text = GOOD + (f"sparkplug:\n  url: mqtt://127.0.0.1:1883\n  group: g\n  username: u\n"
                   f"  password_file: {pw}\n  tls: {{ca: {ca}, cert: {cert}, key: {key}}}\n")
    p = write(tmp_path, text)
    r = run_cli("check", "-c", p)
    assert r.returncode == 2 and "sparkplug.tls.key" in r.stderr and f"chmod 600 {key}" in r.stderr, r.stderr
    os.chmod(key, 0o600)
    assert run_cli("check", "--strict", "-c", p).returncode == 0
    os.chmod(pw, 0o604)
    r = run_cli("check", "-c", p)
    assert r.returncode == 2 and "sparkplug.password_file" in r.stderr, r.stderr
    os.chmod(pw, 0o600)
    os.unlink(ca)
    r = run_cli("check", "--strict", "-c", p)
    assert r.returncode == 2 and "sparkplug.tls.ca" in r.stderr, r.stderr


def test_unknown_scheme_lists_every_driver(fb, tmp_path):
    """One driver table: the hint names every scheme the binary has."""
    p = write(tmp_path, GOOD.replace("modbus-tcp://127.0.0.1:5020?unit=1", "fieldbus://127.0.0.1"))
    r = run_cli("check", "-c", p)
    assert_err_at(r, p, 6, {10})
    for scheme in ("modbus-tcp://", "modbus-rtu://", "opc.tcp://", "s7://", "ads://", "revpi://", "sim://"):
        assert scheme in r.stderr, f"{scheme} missing from the hint: {r.stderr}"
    p = write(tmp_path, GOOD.replace("modbus-tcp://127.0.0.1:5020?unit=1", "opc.tpc://127.0.0.1"), "typo.yaml")
    assert "did you mean 'opc.tcp'" in run_cli("check", "-c", p).stderr


def test_queue_with_buffer_is_noted(fb, tmp_path):
    """`queue:` bounds the memory queue of a sink without a buffer; next to a
    buffer it does nothing, and check says so (a note, not an error)."""
    text = GOOD + "mqtt: {url: \"mqtt://127.0.0.1:1883\", queue: 10}\nbuffer: {path: buf}\n"
    r = run_cli("check", "-c", write(tmp_path, text))
    assert r.returncode == 0, r.stderr
    assert "mqtt.queue has no effect with a buffer" in r.stdout + r.stderr, r.stdout + r.stderr
    r = run_cli("check", "-c", write(tmp_path, GOOD + "mqtt: {url: \"mqtt://127.0.0.1:1883\", queue: 10}\n", "b.yaml"))
    assert r.returncode == 0 and "no effect" not in r.stdout + r.stderr, r.stdout + r.stderr
