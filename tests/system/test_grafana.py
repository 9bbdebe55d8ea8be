"""test_grafana.py — the Grafana provisioning and dashboards in deploy/grafana:
structure (a JSON Schema of the part of Grafana's dashboard model they use,
tests/system/grafana_dashboard.schema.json, plus the rules a schema cannot
say: unique ids, panels inside the 24-column grid and not overlapping, every
data source the provisioned one) and every query against a real InfluxDB 1.6
filled by a real gateway (`fieldbridge run` with an influx: sink, sim devices
and a buffer): each template variable's query is run and its values feed
the panel queries, which must run without an error and return data.

Grafana itself is not installable here (not in Debian 12, and its package
registry is out of reach), so the dashboards are not loaded into a Grafana;
what Grafana would send to InfluxDB is.

Run: FB_BIN=build/fieldbridge /usr/bin/python3 -m pytest tests/system/test_grafana.py -v
"""
import glob
import json
import os
import re
import time

import jsonschema
import pytest
import yaml

import influxdb
import peers
from conftest import ROOT, SANITIZER_RE, gw_config

GRAFANA = os.path.join(ROOT, "deploy", "grafana")
DASHBOARDS = sorted(glob.glob(os.path.join(GRAFANA, "dashboards", "*.json")))


def load_yaml(rel):
    with open(os.path.join(GRAFANA, rel), encoding="utf-8") as f:
        return yaml.safe_load(f)


def datasource():
    doc = load_yaml("provisioning/datasources/fieldbridge-influxdb.yaml")
    assert doc["apiVersion"] == 1
    (ds,) = doc["datasources"]
    assert ds["type"] == "influxdb" and ds["access"] == "proxy" and ds["url"].startswith("http")
    return ds


def test_provisioning_files():
    ds = datasource()
    assert ds["uid"] and ds["jsonData"]["dbName"]
    prov = load_yaml("provisioning/dashboards/fieldbridge.yaml")
    assert prov["apiVersion"] == 1
    (p,) = prov["providers"]
    assert p["type"] == "file" and p["options"]["path"].startswith("/")
    assert DASHBOARDS, "no dashboards in deploy/grafana/dashboards"


@pytest.mark.parametrize("path", DASHBOARDS, ids=[os.path.basename(p) for p in DASHBOARDS])
def test_dashboard_structure(path):
    with open(os.path.join(ROOT, "tests", "system", "grafana_dashboard.schema.json"), encoding="utf-8") as f:
        schema = json.load(f)
    with open(path, encoding="utf-8") as f:
        d = json.load(f)
    jsonschema.validate(d, schema)
    uid = datasource()["uid"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells = set()
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, f"{p['title']}: beyond the 24-column grid"
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps another panel"
                cells.add((x, y))
        for t in p["targets"] + [p]:
            assert t.get("datasource", {"uid": uid})["uid"] == uid
    names = [v["name"] for v in d["templating"]["list"]]
    for p in d["panels"]:
        for t in p["targets"]:
            for used in re.findall(r"\$(\w+)", t["query"]):
                assert used in names or used in ("timeFilter", "__interval"), f"unknown variable ${used}"


# ------------------------------------------------------------ the queries
def go_regex_escape(s):
    return re.sub(r"([\\.^$|?*+()\[\]{}/-])", r"\\\1", s)


def interpolate(q, values):
    """What Grafana sends: $timeFilter and $__interval filled in, variables
    regex-escaped inside /…/ (several values as a|b) and as they are elsewhere."""
    q = q.replace("$timeFilter", "time > now() - 1h").replace("$__interval", "1s")
    out = []
    in_re = False
    i = 0
    while i < len(q):
        c = q[i]
        if c == "/" and (in_re or re.match(r"/\^", q[i:i + 2])):
            in_re = not in_re
            out.append(c)
            i += 1
            continue
        m = re.match(r"\$(\w+)", q[i:])
        if m and m.group(1) in values:
            vals = values[m.group(1)]
            out.append("|".join(go_regex_escape(v) for v in vals) if in_re else vals[0])
            i += len(m.group(0))
            continue
        out.append(c)
        i += 1
    return "".join(out)


def js_regex_to_py(r):
    m = re.match(r"^/(.*)/$", r)
    return re.compile(m.group(1)) if m else None


@pytest.fixture(scope="module")
def filled(tmp_path_factory, request):
    """InfluxDB with what a real gateway wrote for a few seconds."""
    tmp = tmp_path_factory.mktemp("grafana")
    s = influxdb.InfluxDB(tmp, log_writes=False)
    db = datasource()["jsonData"]["dbName"]
    s.create_db(db)
    devs = [{"name": "press-01", "url": "sim://g", "poll": "100ms", "area": "assembly", "line": "01",
             "tags": [{"name": "temperature", "addr": "sine:amp=5,period=10s,offset=20"},
                      {"name": "count", "addr": "counter", "type": "uint32"},
                      {"name": "running", "addr": "square:period=2s", "type": "bool"},
                      {"name": "recipe", "addr": 'const:"PX-200"'},
                      {"name": "vibration", "addr": "walk:dropout=0.2", "window": "2s"}]}]
    cfg = gw_config(None, devs, buffer={"path": str(tmp / "buf")},
                    influx={"url": s.url, "db": db, "batch": {"interval": "200ms"}})
    from conftest import Gateway
    g = Gateway(tmp, cfg, name="gw-grafana")
    try:
        assert peers.wait_until(lambda: s.rows('SELECT count("sent") FROM "fieldbridge_sink"', db)
                                and s.count("press-01", "count", db) > 30, 20), g.output()[-3000:]
    finally:
        rc = g.stop()
    assert rc == 0 and not SANITIZER_RE.search(g.output()), g.output()[-6000:]
    yield s, db
    s.stop()


@pytest.mark.parametrize("path", DASHBOARDS, ids=[os.path.basename(p) for p in DASHBOARDS])
def test_every_query_returns_data(filled, path):
    s, db = filled
    with open(path, encoding="utf-8") as f:
        d = json.load(f)
    values = {}
    for v in d["templating"]["list"]:
        q = interpolate(v["query"], values)
        rows = [r for series in s.series(q, db) for r in series.get("values", [])]
        got = [r[1] if len(r) > 1 and q.startswith("SHOW TAG") else r[0] for r in rows]
        rx = js_regex_to_py(v.get("regex", ""))
        if rx:
            got = [x for x in got if rx.search(x)]
        assert got, f"variable ${v['name']}: {q} returned nothing"
        values[v["name"]] = sorted(set(got)) if v.get("multi") or v.get("includeAll") else [sorted(set(got))[0]]
    for p in d["panels"]:
        for t in p["targets"]:
            q = interpolate(t["query"], values)
            try:
                series = s.series(q, db)
            except influxdb.InfluxError as e:
                pytest.fail(f"panel {p['title']!r}: {e}")
            vals = [x for sr in series for row in sr.get("values", []) for x in row[1:] if x is not None]
            assert vals, f"panel {p['title']!r}: no data for {q}"
