"""conftest.py — fixtures for fieldbridge's system tests.

The binary under test is $FB_BIN (default build/fieldbridge).  Every peer
(pymodbus, Mosquitto, socat) runs on 127.0.0.1 with ports chosen at run time
and is stopped by PID when the test ends.  Each test is bounded by an alarm
(FB_TEST_TIMEOUT seconds, default 90).  A gateway whose output shows an
AddressSanitizer / UBSan report fails the test, so the same tests double as
sanitizer checks when FB_BIN points at build-asan/fieldbridge (the smoke subset,
marked `smoke`, is what scripts/test.sh runs there).

Skips: a test is skipped only for something the user turned off explicitly, by
name, in FB_TEST_SKIP (comma-separated: opcua, s7, ads-client, sparkplug, tmpfs, root).
Anything a test needs that is missing (an npm peer that did not install, root
for a tmpfs) is a FAILURE that says what is missing and how to get it, so a
broken install step cannot pass as "N skipped" (scripts/test.sh also fails on
any skip that FB_TEST_SKIP did not ask for).

Run: /usr/bin/python3 -m pytest tests/system -v
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "peers"))

import peers  # noqa: E402  pylint: disable=wrong-import-position

SANITIZER_RE = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|"
                          r"SUMMARY: (Address|Undefined|Leak)")


TURNED_OFF = {x.strip() for x in os.environ.get("FB_TEST_SKIP", "").split(",") if x.strip()}


def require(name, present, missing_why):
    """A test needs `name` (a peer or a facility).  Skipped only when the user
    turned it off (FB_TEST_SKIP=name); when it is missing, the test fails with
    `missing_why` — never a silent skip."""
    if name in TURNED_OFF:
        pytest.skip(f"{name} turned off by FB_TEST_SKIP={os.environ.get('FB_TEST_SKIP')}")
    if not present:
        pytest.fail(f"{missing_why} (to leave these tests out on purpose: FB_TEST_SKIP={name})",
                    pytrace=False)


def pytest_configure(config):
    config.addinivalue_line("markers", "smoke: quick subset also run against the ASan build")


def fb_bin():
    b = os.environ.get("FB_BIN", os.path.join(ROOT, "build", "fieldbridge"))
    return os.path.abspath(b)


@pytest.fixture(autouse=True)
def _time_limit():
    """Bound every test in time (SIGALRM → a failure with a clear message)."""
    limit = int(os.environ.get("FB_TEST_TIMEOUT", "90"))

    def on_alarm(signum, frame):
        raise TimeoutError(f"test exceeded {limit}s (FB_TEST_TIMEOUT)")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(limit)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="session")
def fb():
    b = fb_bin()
    if not os.access(b, os.X_OK):
        pytest.fail(f"fieldbridge binary not found at {b} (set FB_BIN or run scripts/build.sh)")
    return b


def run_cli(*args, timeout=20, env=None, check_sanitizer=True):
    """Run `fieldbridge ARGS...` and return the CompletedProcess (text)."""
    e = dict(os.environ)
    if env:
        e.update(env)
    r = subprocess.run([fb_bin(), *[str(a) for a in args]], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=timeout, env=e)
    if check_sanitizer and SANITIZER_RE.search(r.stderr):
        pytest.fail(f"sanitizer report from fieldbridge {' '.join(map(str, args))}:\n{r.stderr}")
    return r


# --------------------------------------------------------------- YAML writer
def _scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return json.dumps(v)
    return json.dumps(str(v))  # a JSON string is a valid YAML double-quoted scalar


def to_yaml(obj, indent=0):
    """Block-style YAML for dicts/lists/scalars (enough for our configs)."""
    pad = " " * indent
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                out.append(f"{pad}{k}:")
                out.append(to_yaml(v, indent + 2))
            elif isinstance(v, dict):
                out.append(f"{pad}{k}: {{}}")
            elif isinstance(v, list):
                out.append(f"{pad}{k}: []")
            else:
                out.append(f"{pad}{k}: {_scalar(v)}")
    elif isinstance(obj, list):
        for v in obj:
            if isinstance(v, dict) and v:
                inner = to_yaml(v, indent + 2).split("\n")
                inner[0] = pad + "- " + inner[0].lstrip()
                out.append("\n".join(inner))
            elif isinstance(v, list) and not any(isinstance(x, (dict, list)) for x in v):
                out.append(f"{pad}- [{', '.join(_scalar(x) for x in v)}]")
            else:
                out.append(f"{pad}- {_scalar(v)}")
    else:
        out.append(pad + _scalar(obj))
    return "\n".join(out)


SITE = "testsite"
GW_ID = "gw-test"


def topic(device, kind):
    """Default template {site}/{area}/{line}/{device}/{kind}, area/line unset → "_"."""
    return f"{SITE}/_/_/{device}/{kind}"


GW_STATUS = topic(GW_ID, "status")


def gw_config(mqtt_port=None, devices=(), mqtt=None, **top):
    """A gateway config dict: our site/id, fast status and reconnects."""
    cfg = {"gateway": {"id": GW_ID, "site": SITE},
           "log": {"level": "debug", "format": "text"},
           "status_interval": "1s"}
    if mqtt_port is not None or mqtt is not None:
        m = {"url": f"mqtt://127.0.0.1:{mqtt_port}", "version": 5, "keepalive": "5s",
             "reconnect": {"min": "100ms", "max": "1s"}}
        m.update(mqtt or {})
        cfg["mqtt"] = m
    cfg.update(top)
    cfg["devices"] = list(devices)
    return cfg


def reload_gateway(gw, cfg, timeout=15):
    """Write cfg over the gateway's config file, reload it with SIGHUP and
    return what the reload changed (the `changes` object of its "reload:
    applied" log line; docs/fleet.md).  Fails when it is not applied."""
    with open(gw.path, "w", encoding="utf-8") as f:
        f.write(cfg if isinstance(cfg, str) else to_yaml(cfg) + "\n")
    pat = re.compile(r"reload(?:: applied \((\{.*\})\)| refused: )")
    n = len(pat.findall(gw.output()))
    gw.proc.send(signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = pat.findall(gw.output())
        if len(found) > n:
            if not found[n]:
                pytest.fail("the reload was not applied:\n" + gw.output()[-3000:])
            return json.loads(found[n])
        time.sleep(0.05)
    pytest.fail("no reload result in the log:\n" + gw.output()[-3000:])


class Gateway:
    """`fieldbridge run -c FILE` as a child process."""

    def __init__(self, workdir, cfg, name="gw", env=None):
        self.path = os.path.join(str(workdir), f"{name}.yaml")
        with open(self.path, "w", encoding="utf-8") as f:
            f.write(cfg if isinstance(cfg, str) else to_yaml(cfg) + "\n")
        e = dict(os.environ)
        if env:
            e.update(env)
        self.proc = peers.Proc([fb_bin(), "run", "-c", self.path],
                               os.path.join(str(workdir), f"{name}.log"), env=e)

    def alive(self):
        return self.proc.poll() is None

    def output(self):
        return self.proc.output()

    def stop(self, sig=signal.SIGTERM, timeout=10):
        return self.proc.stop(sig, timeout)

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


@pytest.fixture
def workdir(tmp_path):
    return tmp_path


@pytest.fixture
def start_modbus(tmp_path):
    started = []

    def start(spec, port=0, serial=None, name=None):
        s = peers.ModbusServer(tmp_path, spec, port=port, serial=serial,
                               name=name or f"modbus{len(started)}")
        started.append(s)
        return s
    yield start
    for s in started:
        s.stop()


@pytest.fixture
def start_broker(tmp_path):
    started = []

    def start(certs=None, port=None, name=None, tls=None, users=None, persistence=False):
        m = peers.Mosquitto(tmp_path, port=port, certs=certs, name=name or f"mosquitto{len(started)}", tls=tls,
                            users=users, persistence=persistence)
        started.append(m)
        return m
    yield start
    for m in started:
        m.stop()


@pytest.fixture
def broker(start_broker):
    return start_broker()


@pytest.fixture
def watch():
    clients = []

    def make(port, topics=("#",), version=5, certs=None, session=False):
        w = peers.Watcher(port, topics, version=version, certs=certs, session=session)
        clients.append(w)
        return w
    yield make
    for w in clients:
        try:
            w.close()
        except Exception:  # pylint: disable=broad-except
            pass


@pytest.fixture
def start_gateway(tmp_path, request):
    started = []

    def start(cfg, name=None, env=None):
        g = Gateway(tmp_path, cfg, name=name or f"gw{len(started)}", env=env)
        started.append(g)
        return g
    yield start
    problems = []
    for g in started:
        if g.alive():
            rc = g.stop()
            if rc != 0:  # e.g. a sanitizer abort at exit (leaks)
                problems.append(f"gateway exited with {rc} on SIGTERM at teardown ({g.proc.log_path})")
        out = g.output()
        if SANITIZER_RE.search(out):
            problems.append(f"sanitizer report in {g.proc.log_path}:\n{out[-6000:]}")
        if request.node.rep_call_failed if hasattr(request.node, "rep_call_failed") else False:
            sys.stderr.write(f"\n--- gateway log {g.proc.log_path} (tail) ---\n{out[-4000:]}\n")
    if problems:
        pytest.fail("\n".join(problems))


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.rep_call_failed = rep.failed


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    return peers.Certs(tmp_path_factory.mktemp("pki"), client_cn=GW_ID)


def telemetry_values(msg):
    """{"tag": {"v":..,"q":..}} from a telemetry message, or None."""
    j = msg.json()
    if not isinstance(j, dict):
        return None
    return j.get("values")


def wait_values(w, device, pred, timeout=15.0, after=0.0):
    """The first telemetry message of `device` whose values satisfy pred(values)."""
    t = topic(device, "telemetry")

    def ok(m):
        v = telemetry_values(m)
        return v is not None and pred(v)
    return w.wait_for(ok, timeout, topic=t, after=after)


def merged_values(w, device, after=0.0):
    """Latest value per tag over all telemetry messages of `device` so far."""
    last = {}
    for m in w.messages(topic(device, "telemetry")):
        if m.t < after:
            continue
        v = telemetry_values(m) or {}
        last.update(v)
    return last


def status_state(msg):
    """'online' / 'offline' / None from a status payload (tolerant of its exact shape)."""
    j = msg.json()
    if isinstance(j, dict):
        for k in ("status", "state", "connection"):
            if isinstance(j.get(k), str) and j[k].lower() in ("online", "offline"):
                return j[k].lower()
        if isinstance(j.get("online"), bool):
            return "online" if j["online"] else "offline"
    t = msg.text().lower()
    if "offline" in t:
        return "offline"
    if "online" in t:
        return "online"
    return None


def dump_on_fail(*things):
    return "\n".join(str(t) for t in things)
