"""test_deb.py — the Debian package, built and installed as a user would.

scripts/deb.sh builds it with dpkg-buildpackage (debian/, nocheck: the unit
tests run elsewhere in scripts/test.sh); lintian checks it (no error or
warning; its output is in the test log); then it is installed with apt into a
throwaway bare Debian 12 root (a copy of a debootstrap minbase root: the one
shared/tools/fresh-debian.sh keeps, $FB_DEBIAN_ROOT, or one made here once
and kept in /var/cache/fieldbridge-test), so the dependencies come from the
package's Depends, not from this machine.  In that root: the system user,
the files and their owners, the conffile, `fieldbridge check` as the user,
then `fieldbridge run` as the user on the installed config, with a
notification socket (READY=1) and this test's Mosquitto (FB_MQTT_URL), whose
telemetry must arrive; SIGTERM → exit 0; purge removes the state.

The root has no systemd running (it is a chroot, and this machine's PID 1 is
not systemd), so the unit itself is checked by systemd-analyze verify
(test_systemd.py) and the service runs here as the unit would run it: as
the user fieldbridge, on /etc/fieldbridge/fieldbridge.yaml.
"""
import glob
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import ROOT, require
from notify import NotifySocket

CACHE_ROOT = "/var/cache/fieldbridge-test/bookworm-minbase"


def sh(*args, timeout=300, check=True, **kw):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=False, **kw)
    if check and r.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def mirror():
    """The Debian mirror apt uses here: only the files apt reads (sources.list,
    sources.list.d/*.list and *.sources; not e.g. *.disabled), only a Debian
    archive (not a vendor repository such as NodeSource's), not security."""
    files = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list") +
                                               glob.glob("/etc/apt/sources.list.d/*.sources"))
    for f in files:
        try:
            for line in open(f, encoding="utf-8"):
                line = line.strip()
                if line.startswith("#"):
                    continue
                for w in line.split():
                    if w.startswith(("http://", "https://")) and "security" not in w and "/debian" in w:
                        return w
        except OSError:
            pass
    return None  # debootstrap's own default mirror


def base_root():
    """A bare Debian 12 root to copy: FB_DEBIAN_ROOT, fresh-debian's pristine
    root, or one debootstrapped here (once; about 2 minutes)."""
    for r in (os.environ.get("FB_DEBIAN_ROOT"), "/tmp/fresh-debian.pristine", CACHE_ROOT):
        if r and os.path.exists(os.path.join(r, "bin", "bash")) and os.path.exists(os.path.join(r, "var/lib/dpkg/status")):
            return r
    require("debootstrap", shutil.which("debootstrap"), "debootstrap not found (apt-get install debootstrap)")
    tmp = CACHE_ROOT + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.dirname(CACHE_ROOT), exist_ok=True)
    m = mirror()
    sh("debootstrap", "--variant=minbase", "bookworm", tmp, *([m] if m else []), timeout=900)
    os.rename(tmp, CACHE_ROOT)
    return CACHE_ROOT


def mounted_under(path):
    path = os.path.realpath(path)
    with open("/proc/mounts", encoding="utf-8") as f:
        return [l.split()[1] for l in f if l.split()[1] == path or l.split()[1].startswith(path + "/")]


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    require("dpkg-buildpackage", shutil.which("dpkg-buildpackage") and shutil.which("dh"),
            "dpkg-buildpackage/debhelper not found (scripts/deps.sh test installs dpkg-dev and debhelper)")
    out = tmp_path_factory.mktemp("deb")
    t0 = time.monotonic()
    sh(os.path.join(ROOT, "scripts", "deb.sh"), out, timeout=900)
    debs = [d for d in glob.glob(str(out / "fieldbridge_*.deb"))]
    assert len(debs) == 1, os.listdir(out)
    print(f"\npackage built in {time.monotonic() - t0:.0f} s: {debs[0]} ({os.path.getsize(debs[0])} bytes)")
    return debs[0]


def test_lintian_clean(deb):
    require("lintian", shutil.which("lintian"), "lintian not found (apt-get install lintian)")
    r = sh("lintian", "--info", "--pedantic", "--display-info", deb, check=False, timeout=600)
    out = (r.stdout + r.stderr).strip()
    print("\nlintian --pedantic --display-info:\n" + (out or "(nothing)"))
    tags = [l for l in out.splitlines() if l[:2] in ("E:", "W:", "P:", "I:")]
    bad = [t for t in tags if t[:2] in ("E:", "W:")]
    assert not bad, out
    # the info-level tags, each understood (docs/deployment.md): no sysvinit script
    known = ("package-supports-alternative-init-but-no-init.d-script",)
    assert all(any(k in t for k in known) for t in tags if t[:2] in ("I:", "P:")), out


@pytest.fixture(autouse=True)
def _longer_limit():
    """apt in a bare root takes longer than conftest's 90 s default allows."""
    signal.alarm(max(600, int(os.environ.get("FB_TEST_TIMEOUT", "90"))))
    yield


@pytest.fixture(scope="module")
def base():
    return base_root()


@pytest.fixture
def droot(tmp_path, base):
    """A throwaway copy of a bare Debian 12 root with /proc mounted."""
    root = tmp_path / "root"
    sh("cp", "-a", base, root, timeout=300)
    shutil.copy("/etc/resolv.conf", root / "etc" / "resolv.conf")
    sh("mount", "-t", "proc", "proc", root / "proc")
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root / "proc")], check=False)
        left = mounted_under(root)
        assert not left, f"still mounted, not removing {root}: {left}"
        shutil.rmtree(root, ignore_errors=True)


def chroot(root, *args, user=None, timeout=300, check=True, env=None):
    cmd = ["chroot"]
    if user:
        cmd.append(f"--userspec={user}:{user}")
    e = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root",
         "DEBIAN_FRONTEND": "noninteractive"}
    e.update(env or {})
    return sh(*cmd, root, "/usr/bin/env", "-i", *[f"{k}={v}" for k, v in e.items()], *args,
              timeout=timeout, check=check)


def test_install_check_run_purge(deb, droot, broker, watch):
    root = droot
    shutil.copy(deb, root / "tmp" / "fieldbridge.deb")
    t0 = time.monotonic()
    chroot(root, "apt-get", "update", "-q")
    r = chroot(root, "apt-get", "install", "-y", "-q", "--no-install-recommends", "/tmp/fieldbridge.deb", timeout=600)
    print(f"\napt-get install in a bare root: {time.monotonic() - t0:.0f} s\n" + r.stdout[-1500:])

    # the system user, its home the state directory, no login
    pw = chroot(root, "getent", "passwd", "fieldbridge").stdout.strip().split(":")
    assert int(pw[2]) < 1000 and pw[5] == "/var/lib/fieldbridge" and pw[6].endswith("nologin"), pw
    assert chroot(root, "getent", "group", "fieldbridge").stdout.startswith("fieldbridge:")
    # files, owners, modes; the config is a conffile readable by the group only
    for f in ("usr/bin/fieldbridge", "lib/systemd/system/fieldbridge.service", "etc/fieldbridge/fieldbridge.yaml",
              "usr/share/doc/fieldbridge/copyright", "usr/share/man/man1/fieldbridge.1.gz",
              "usr/share/doc/fieldbridge/examples/demo.yaml"):
        assert (root / f).exists(), f
    st = chroot(root, "stat", "-c", "%U:%G %a %n", "/etc/fieldbridge", "/etc/fieldbridge/fieldbridge.yaml",
                "/var/lib/fieldbridge").stdout.split("\n")
    assert st[0] == "root:fieldbridge 750 /etc/fieldbridge", st
    assert st[1] == "root:fieldbridge 640 /etc/fieldbridge/fieldbridge.yaml", st
    assert st[2] == "fieldbridge:fieldbridge 700 /var/lib/fieldbridge", st
    conff = (root / "var/lib/dpkg/info/fieldbridge.conffiles").read_text()
    assert "/etc/fieldbridge/fieldbridge.yaml" in conff
    # not enabled: the gateway talks to devices only once configured
    assert not (root / "etc/systemd/system/multi-user.target.wants/fieldbridge.service").exists()
    assert chroot(root, "fieldbridge", "version").stdout.strip() == "fieldbridge 0.1.0"

    # check as the service user
    r = chroot(root, "fieldbridge", "check", "-c", "/etc/fieldbridge/fieldbridge.yaml", "--strict", user="fieldbridge")
    assert "/etc/fieldbridge/fieldbridge.yaml: OK" in r.stdout, r.stdout

    # run as the service user, on the installed config, against this test's broker
    w = watch(broker.port, topics=("plant/#",))
    ns = NotifySocket(root / "run" / "fb-notify.sock")
    os.chmod(root / "run" / "fb-notify.sock", 0o777)
    e = {"FB_MQTT_URL": f"mqtt://127.0.0.1:{broker.port}", "NOTIFY_SOCKET": "/run/fb-notify.sock",
         "WATCHDOG_USEC": "2000000"}
    log = open(root.parent / "installed-run.log", "w", encoding="utf-8")
    p = subprocess.Popen(["chroot", "--userspec=fieldbridge:fieldbridge", str(root), "/usr/bin/env", "-i",
                          "PATH=/usr/bin:/bin", *[f"{k}={v}" for k, v in e.items()],
                          "fieldbridge", "run", "-c", "/etc/fieldbridge/fieldbridge.yaml"],
                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert ns.wait_for(lambda m: m == "READY=1", 15), open(root.parent / "installed-run.log").read()
        m = w.wait_for(lambda m: m.topic == "plant/demo/01/sim-01/telemetry", timeout=15)
        assert m, [x.topic for x in w.messages()]
        assert "temperature" in json.loads(m.payload)["values"]
        assert ns.wait_for(lambda m: m == "WATCHDOG=1", 5)
        # the buffer lives in the state directory, made by the user
        assert chroot(root, "stat", "-c", "%U", "/var/lib/fieldbridge/buffer/mqtt").stdout.strip() == "fieldbridge"
        os.kill(p.pid, signal.SIGTERM)
        assert p.wait(20) == 0
        assert ns.wait_for(lambda m: m == "STOPPING=1", 2)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
        log.close()
        ns.close()
    out = open(root.parent / "installed-run.log", encoding="utf-8").read()
    assert "error" not in out.lower(), out

    # purge: the package, its config and its state go; the user stays (Debian's way)
    chroot(root, "apt-get", "purge", "-y", "-q", "fieldbridge")
    for f in ("usr/bin/fieldbridge", "etc/fieldbridge", "var/lib/fieldbridge", "lib/systemd/system/fieldbridge.service"):
        assert not (root / f).exists(), f
