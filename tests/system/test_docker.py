"""test_docker.py — the container image and the compose stack, validated
offline (no image registry but Debian's and npm's is reachable, and CI has no
container engine; scripts/image-check.sh builds and runs the real image with
podman outside CI; docs/deployment.md, "Docker", says what was and was not
run):

- the Dockerfile against the rules that matter (our own lint, since hadolint
  is not in Debian): a pinned Debian 12 base, multi-stage with no toolchain in
  the runtime stage, a non-root USER, no secrets baked in or copied, apt lists
  removed in the RUN that made them and no recommends, a HEALTHCHECK, exec-form
  ENTRYPOINT/CMD (so SIGTERM reaches the gateway); each rule is shown to fail
  on a Dockerfile that breaks it;
- deploy/compose.yaml: `docker-compose config` (Debian's docker-compose 1.29)
  and its Compose Specification JSON schema; pinned images; every bind mount
  exists in the tree or is made by deploy/compose/certs.sh; no password in
  the environment; the fieldbridge configs it mounts pass `fieldbridge check`;
- the stack's broker and gateway for real: deploy/compose/certs.sh makes the
  certificates, Mosquitto runs deploy/compose/mosquitto.conf (paths and port
  moved to this test's), the gateway runs deploy/compose/gateway.yaml, and a
  client with the ingest certificate receives its telemetry over mutual TLS;
  the image's HEALTHCHECK command (taken from the Dockerfile) passes against it.
"""
import json
import os
import re
import shutil
import ssl
import subprocess

import pytest
import yaml

from conftest import ROOT, fb_bin, require, run_cli

import peers

DOCKERFILE = os.path.join(ROOT, "Dockerfile")
DOCKERIGNORE = os.path.join(ROOT, ".dockerignore")
COMPOSE = os.path.join(ROOT, "deploy", "compose.yaml")
COMPOSE_SCHEMA = "/usr/lib/python3/dist-packages/compose/config/compose_spec.json"
TOOLCHAIN = re.compile(r"(^|\s)(gcc|g\+\+|clang|cmake|ninja-build|make|build-essential|dpkg-dev|debhelper|"
                       r"[a-z0-9.+-]+-dev)(\s|$)")


# ------------------------------------------------------------------ Dockerfile lint
def instructions(text):
    """(instruction, arguments) per logical line: continuations joined, comments dropped."""
    out, cur = [], ""
    for line in text.splitlines():
        s = line.strip()
        if not cur and (not s or s.startswith("#")):
            continue
        if s.startswith("#"):
            continue
        cur += " " + s[:-1] if s.endswith("\\") else " " + s
        if not s.endswith("\\"):
            ins, _, rest = cur.strip().partition(" ")
            out.append((ins.upper(), rest.strip()))
            cur = ""
    return out


def lint_dockerfile(text, ignore_text):
    """The rules; returns the list of problems (empty = clean)."""
    problems = []
    ins = instructions(text)
    args = {}
    stages = []  # [(from, name, [instructions])]
    for i, a in ins:
        if i == "ARG" and not stages:
            k, _, v = a.partition("=")
            args[k] = v
        elif i == "FROM":
            parts = a.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append((parts[0], name, []))
        elif stages:
            stages[-1][2].append((i, a))
    if len(stages) < 2:
        problems.append("not multi-stage (build and runtime stages)")
    names = {n for _, n, _ in stages if n}
    for base, _, _ in stages:
        m = re.fullmatch(r"\$\{?(\w+)\}?", base)
        ref = args.get(m.group(1), "") if m else base
        if base in names:
            continue
        if not ref:
            problems.append(f"base {base} has no default")
            continue
        image, _, tag = ref.partition(":")
        if "@sha256:" not in ref and (not tag or tag == "latest" or not re.search(r"\d+\.\d+", tag)):
            problems.append(f"base {ref} not pinned to a point release or digest")
        if not (image.endswith("debian") and ("bookworm" in tag or tag.startswith("12"))):
            problems.append(f"base {ref} is not Debian 12")
    if stages:
        final = stages[-1][2]
        users = [a for i, a in final if i == "USER"]
        if not users or users[-1].split(":")[0] in ("root", "0"):
            problems.append("the runtime stage does not end as a non-root USER")
        if not any(i == "HEALTHCHECK" and not a.upper().startswith("NONE") for i, a in final):
            problems.append("no HEALTHCHECK in the runtime stage")
        for i, a in final:
            if i == "RUN" and "apt-get install" in a:
                pkgs = a.split("apt-get install", 1)[1].split("&&")[0]
                if TOOLCHAIN.search(pkgs):
                    problems.append(f"toolchain in the runtime stage: {pkgs.strip()}")
        for i, a in final:
            if i in ("ENTRYPOINT", "CMD") and not a.startswith("["):
                problems.append(f"{i} in shell form (signals would go to a shell): {a}")
        if not any(i == "COPY" and "--from=" in a for i, a in final):
            problems.append("the runtime stage copies nothing from the build stage")
    for i, a in ins:
        if i == "RUN" and "apt-get update" in a and "rm -rf /var/lib/apt/lists" not in a:
            problems.append(f"apt lists not removed in the same RUN: {a[:60]}…")
        if i == "RUN" and "apt-get install" in a and "--no-install-recommends" not in a:
            problems.append(f"apt-get install without --no-install-recommends: {a[:60]}…")
        if i in ("ENV", "ARG") and re.search(r"(PASSWORD|PASSWD|SECRET|TOKEN|PRIVATE|_KEY)\w*\s*=\s*\S", a, re.I):
            problems.append(f"a secret in {i}: {a}")
        if i in ("COPY", "ADD") and re.search(r"\.(key|pem|p12|pfx)\b|id_rsa|\.token\b|secrets?/", a):
            problems.append(f"{i} of key or secret material: {a}")
        if i == "ADD" and re.search(r"https?://", a):
            problems.append(f"ADD from a URL: {a}")
    ignored = {l.strip() for l in ignore_text.splitlines() if l.strip() and not l.startswith("#")}
    for need in (".git", "**/*.key", "**/*.pem", "deploy/compose/certs", "deploy/compose/secrets"):
        if need not in ignored:
            problems.append(f".dockerignore misses {need}")
    return problems


def test_dockerfile_lint():
    text = open(DOCKERFILE, encoding="utf-8").read()
    ign = open(DOCKERIGNORE, encoding="utf-8").read()
    assert lint_dockerfile(text, ign) == []
    assert "bookworm" in text or "debian:12" in text


@pytest.mark.parametrize("change,expect", [
    (lambda t: t.replace("ARG BASE=debian:12.11-slim", "ARG BASE=debian:latest"), "not pinned"),
    (lambda t: t.replace("ARG BASE=debian:12.11-slim", "ARG BASE=ubuntu:22.04"), "not Debian 12"),
    (lambda t: t.replace("USER fieldbridge", "USER root"), "non-root USER"),
    (lambda t: re.sub(r"HEALTHCHECK.*?\|\| exit 1\n", "", t, flags=re.S), "no HEALTHCHECK"),
    (lambda t: t.replace(" \\\n && apt-get clean && rm -rf /var/lib/apt/lists/* /tmp/fieldbridge.deb", ""), "apt lists not removed"),
    (lambda t: t.replace("/tmp/fieldbridge.deb curl", "/tmp/fieldbridge.deb gcc curl"), "toolchain"),
    (lambda t: t.replace('CMD ["run", "-c", "/etc/fieldbridge/fieldbridge.yaml"]',
                         "CMD fieldbridge run -c /etc/fieldbridge/fieldbridge.yaml"), "shell form"),
    (lambda t: t.replace("USER fieldbridge", "ENV MQTT_PASSWORD=hunter2\nUSER fieldbridge"), "a secret"),
    (lambda t: t.replace("USER fieldbridge", "COPY deploy/compose/certs/edge-01.key /run/\nUSER fieldbridge"),
     "key or secret"),
    (lambda t: t.split("FROM ${BASE}\n# the user first")[0], "not multi-stage"),
])
def test_dockerfile_lint_catches(change, expect):
    """Each rule fails on a Dockerfile that breaks it (so the lint can fail)."""
    text = open(DOCKERFILE, encoding="utf-8").read()
    bad = change(text)
    assert bad != text
    problems = lint_dockerfile(bad, open(DOCKERIGNORE, encoding="utf-8").read())
    assert any(expect in p for p in problems), problems


def test_dockerignore_catches():
    text = open(DOCKERFILE, encoding="utf-8").read()
    ign = open(DOCKERIGNORE, encoding="utf-8").read().replace("**/*.key\n", "")
    assert any("misses **/*.key" in p for p in lint_dockerfile(text, ign))


# ------------------------------------------------------------------ compose
def compose():
    with open(COMPOSE, encoding="utf-8") as f:
        return yaml.safe_load(f)


def test_compose_config_and_schema(tmp_path):
    dc = shutil.which("docker-compose")
    require("docker-compose", dc, "docker-compose not found (apt-get install docker-compose)")
    r = subprocess.run([dc, "-f", COMPOSE, "config", "-q"], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    import jsonschema  # pylint: disable=import-outside-toplevel
    require("compose-spec schema", os.path.exists(COMPOSE_SCHEMA),
            f"{COMPOSE_SCHEMA} not found (Debian's docker-compose ships it)")
    schema = json.load(open(COMPOSE_SCHEMA, encoding="utf-8"))
    jsonschema.validate(compose(), schema)
    # the schema and the CLI refuse a broken file (the checks can fail)
    bad = compose()
    bad["services"]["gateway"]["restart"] = ["always"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    p = tmp_path / "bad.yaml"
    p.write_text(open(COMPOSE, encoding="utf-8").read().replace("    restart: unless-stopped\n", "    restrat: no\n", 1))
    r = subprocess.run([dc, "-f", str(p), "config", "-q"], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode != 0 and "restrat" in r.stdout + r.stderr


def test_compose_stack_shape():
    c = compose()
    s = c["services"]
    assert set(s) == {"mosquitto", "influxdb", "grafana", "gateway", "ingest"}
    for name, svc in s.items():
        img = svc.get("image", "")
        tag = img.rpartition(":")[2] if ":" in img else ""
        assert tag and tag != "latest" and re.search(r"\d", tag), f"{name}: image {img!r} not pinned"
        for k, v in (svc.get("environment") or {}).items():
            assert not re.search(r"PASSWORD|SECRET|TOKEN", k) or k.endswith("__FILE"), f"{name}: {k} in plain text"
    assert s["gateway"]["build"]["context"] == ".." and s["gateway"]["build"]["dockerfile"] == "Dockerfile"
    # bind mounts: in the tree, or made by certs.sh
    deploy = os.path.dirname(COMPOSE)
    made = ("./compose/certs", "./compose/secrets")
    for name, svc in s.items():
        for v in svc.get("volumes", []):
            src = v.split(":")[0]
            if not src.startswith("."):
                assert src in c["volumes"], f"{name}: volume {src} not declared"
                continue
            if src.startswith(made) or src.startswith("./grafana"):
                continue
            assert os.path.exists(os.path.join(deploy, src)), f"{name}: {src} missing"
    assert "./compose/certs/edge-01.key:/run/certs/edge-01.key:ro" in s["gateway"]["volumes"]
    assert c["secrets"]["grafana_admin_password"]["file"] == "./compose/secrets/grafana_admin_password"
    # Grafana is provisioned from deploy/grafana (the InfluxDB work's data source and dashboards)
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in s["grafana"]["volumes"]
    assert "./grafana/dashboards:/var/lib/grafana/dashboards/fieldbridge:ro" in s["grafana"]["volumes"]
    grafana = os.path.join(deploy, "grafana")
    if os.path.isdir(grafana):  # deploy/grafana comes with the InfluxDB sink's branch (issue 16)
        ds = yaml.safe_load(open(os.path.join(grafana, "provisioning/datasources/fieldbridge-influxdb.yaml")))
        assert ds["datasources"][0]["url"] == "http://influxdb:8086"
        ingest = yaml.safe_load(open(os.path.join(deploy, "compose/ingest.yaml")))
        assert ds["datasources"][0]["jsonData"]["dbName"] == ingest["influx"]["db"]
        prov = yaml.safe_load(open(os.path.join(grafana, "provisioning/dashboards/fieldbridge.yaml")))
        assert prov["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards/fieldbridge"


def test_compose_fieldbridge_configs_check(fb):
    """The configs compose mounts pass `fieldbridge check` (the ingest one with a
    binary that has `fieldbridge ingest`, i.e. once the InfluxDB work is in)."""
    r = run_cli("check", "-c", os.path.join(ROOT, "deploy/compose/gateway.yaml"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "mqtts://mosquitto:8883" in r.stdout
    r = run_cli("check", "-c", os.path.join(ROOT, "deploy/fieldbridge.yaml"), "--strict")
    assert r.returncode == 0, r.stdout + r.stderr
    if "ingest -c FILE" in run_cli("help").stdout:
        r = run_cli("check", "-c", os.path.join(ROOT, "deploy/compose/ingest.yaml"))
        assert r.returncode == 0, r.stdout + r.stderr


# ------------------------------------------------------------------ the stack's TLS, for real
class StackCerts:
    def __init__(self, d):
        self.d = str(d)

    def path(self, n):
        return os.path.join(self.d, n)

    def subscriber_tls(self):
        ctx = ssl.create_default_context(cafile=self.path("ca.pem"))
        ctx.load_cert_chain(self.path("ingest-1.pem"), self.path("ingest-1.key"))
        return ctx


def healthcheck_cmd(port):
    text = open(DOCKERFILE, encoding="utf-8").read()
    hc = [a for i, a in instructions(text) if i == "HEALTHCHECK"][-1]
    cmd = hc.split(" CMD ", 1)[1]
    return cmd.replace("127.0.0.1:9100", f"127.0.0.1:{port}")


def test_stack_broker_gateway_mutual_tls(tmp_path, start_gateway):
    require("curl", shutil.which("curl"), "curl not found (apt-get install curl)")
    d = tmp_path / "compose"
    r = subprocess.run([os.path.join(ROOT, "deploy/compose/certs.sh"), str(d / "certs")],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    certs = StackCerts(d / "certs")
    for k in ("edge-01.key", "ingest-1.key", "mosquitto.key", "ca.key"):
        assert os.stat(certs.path(k)).st_mode & 0o077 == 0, k
    assert (d / "secrets" / "grafana_admin_password").read_text().strip()
    # no private key in the repository
    tracked = subprocess.run(["git", "-C", ROOT, "ls-files"], capture_output=True, text=True, check=True).stdout
    assert not [f for f in tracked.splitlines() if f.startswith("deploy/") and f.endswith((".key", ".pem"))]

    port = peers.free_port()
    conf = open(os.path.join(ROOT, "deploy/compose/mosquitto.conf"), encoding="utf-8").read()
    conf = conf.replace("listener 8883", f"listener {port} 127.0.0.1").replace("/mosquitto/certs", certs.d)
    conf = conf.replace("/mosquitto/data/", str(tmp_path) + "/").replace("log_dest stdout", "log_dest stderr")
    if os.geteuid() == 0:
        conf += "user root\n"
    (tmp_path / "mosquitto.conf").write_text(conf)
    mq = peers.Proc(["mosquitto", "-c", tmp_path / "mosquitto.conf"], tmp_path / "mosquitto.log")
    try:
        peers.wait_port(port, 10, mq.p)
        w = peers.Watcher(port, topics=("plant/#",), certs=certs)
        mport = peers.free_port()
        cfg = open(os.path.join(ROOT, "deploy/compose/gateway.yaml"), encoding="utf-8").read()
        cfg = (cfg.replace("mqtts://mosquitto:8883", f"mqtts://127.0.0.1:{port}")
               .replace("/run/certs", certs.d).replace("/var/lib/fieldbridge", str(tmp_path / "state"))
               .replace("0.0.0.0:9100", f"127.0.0.1:{mport}"))
        gw = start_gateway(cfg)
        m = w.wait_for(lambda m: m.topic == "plant/assembly/01/press-01/telemetry", timeout=15)
        assert m, (w.messages()[:5], gw.output()[-3000:])
        assert set(m.json()["values"]) >= {"temperature", "pressure", "strokes", "running"}
        # the gateway's certificate CN is its user name at the broker
        assert re.search(r"as edge-01|u'edge-01'", open(tmp_path / "mosquitto.log", errors="replace").read())
        # the image's HEALTHCHECK command, against this gateway's metrics endpoint
        hc = subprocess.run(["sh", "-c", healthcheck_cmd(mport)], capture_output=True, text=True, timeout=20,
                            check=False)
        assert hc.returncode == 0, hc.stdout + hc.stderr
        w.close()
    finally:
        mq.stop()
    # and it fails when the endpoint is not there
    hc = subprocess.run(["sh", "-c", healthcheck_cmd(peers.free_port())], capture_output=True, timeout=20, check=False)
    assert hc.returncode != 0
