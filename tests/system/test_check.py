"""test_check.py — `fieldbridge check -c FILE`: offline validation (DESIGN.md §4).

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
    for want in ("demo.yaml", "factory-3-lines.yaml"):
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
