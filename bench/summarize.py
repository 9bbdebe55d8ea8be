#!/usr/bin/python3
"""summarize.py — turn bench/run.sh's raw records into a results file and a table.

Reads the JSON lines run.sh wrote (one per measured process), adds the machine
(CPU model, cores, kernel, load before the run, Mosquitto/libmodbus versions),
the git commit and the exact command, computes medians over repetitions, and
writes bench/results/<scenario>-<date>.json; prints a Markdown table whose
columns BENCHMARKS.md uses.  "Limited by" is a heuristic stated in the table
notes: the busiest process if it used ≥ 90 % of a core, otherwise "both
cores" when the machine was ≥ 185 % busy, otherwise the request/response
round trip (the tool waits on the network, nobody is CPU-bound).
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return ""


def machine():
    model = sh("lscpu | sed -n 's/^Model name: *//p'")
    return {
        "cpu": model, "cores": os.cpu_count(), "kernel": platform.release(),
        "virtualization": sh("lscpu | sed -n 's/^Hypervisor vendor: *//p'"),
        "mem_mb": int(sh("awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo") or 0),
        "loadavg_at_summary": open("/proc/loadavg").read().split()[:3],
        "mosquitto": sh("dpkg-query -W -f='${Version}' mosquitto"),
        "libmodbus": sh("dpkg-query -W -f='${Version}' libmodbus5"),
        "libmosquitto": sh("dpkg-query -W -f='${Version}' libmosquitto1"),
        "pymodbus": sh("dpkg-query -W -f='${Version}' python3-pymodbus"),
        "paho": sh("dpkg-query -W -f='${Version}' python3-paho-mqtt"),
        "node": sh("node --version"),
        "node_red": sh("node -p \"require('" + os.path.join(os.path.dirname(os.path.abspath(__file__)), "nodered",
                       "node_modules", "node-red", "package.json") + "').version\" 2>/dev/null"),
        "loadavg_before": sh("cat /proc/loadavg"),
    }


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def limited_by(r):
    # a CPU figure is None when its process was gone at an end of the window (unknown)
    procs = {"tool": r.get("cpu_pct") or 0, "broker": r.get("broker_cpu_pct") or 0,
             "modbus server": r.get("server_cpu_pct") or 0, "subscriber": r.get("sub_cpu_pct") or 0}
    name, top = max(procs.items(), key=lambda kv: kv[1])
    if r.get("name", "").startswith("python") and (r.get("cpu_pct") or 0) >= 90:
        return "tool CPU (Python, GIL: one core)"
    if top >= 90 and not (name == "tool" and top < 100 and r.get("machine_busy_pct", 0) >= 185):
        return f"{name} CPU ({top:.0f}%)"
    if r.get("machine_busy_pct", 0) >= 185:
        return f"both cores busy ({r['machine_busy_pct']:.0f}%)"
    return "round trips (nobody CPU-bound)"


def fmt(x, nd=0):
    if x is None:
        return "–"
    return f"{x:,.{nd}f}"


def throughput(recs):
    by = {}
    for r in recs:
        by.setdefault(r["name"], []).append(r)
    rows = {}
    for name, rs in by.items():
        row = {"name": name, "reps": len(rs), "config": rs[0].get("config", "")}
        for k in ("values_per_s", "cpu_pct", "cpu_us_per_value", "rss_kb", "broker_cpu_pct",
                  "server_cpu_pct", "sub_cpu_pct", "machine_busy_pct", "loadavg_1m_end"):
            row[k] = med([r.get(k) for r in rs])
        row["values_per_s_all"] = [r.get("values_per_s") for r in rs]
        # the rep closest to the median decides "limited by"
        mid = sorted(rs, key=lambda r: abs((r.get("values_per_s") or 0) - (row["values_per_s"] or 0)))[0]
        row["limited_by"] = limited_by(mid)
        rows[name] = row
    e2e = (rows.get("e2e_minimal") or {}).get("values_per_s")
    bare = (rows.get("bare_loop") or {}).get("values_per_s")
    py = rows.get("python_pipeline") or {}
    # the floor (bench/floor.c): one tuned single-threaded publisher; the reference
    floor = rows.get("floor") or {}
    for row in rows.values():
        v = row["values_per_s"]
        row["pct_of_e2e"] = 100 * v / e2e if e2e and v else None
        row["pct_of_protocol"] = 100 * v / bare if bare and v else None
        if floor.get("cpu_us_per_value") and row.get("cpu_us_per_value") and \
                not row["name"].startswith(("bare_loop", "mosq_ingest")):
            # CPU per value as a share of the floor's: 100 % = as cheap as the floor
            row["floor_pct_cpu"] = 100 * floor["cpu_us_per_value"] / row["cpu_us_per_value"]
        if py.get("cpu_us_per_value") and row.get("cpu_us_per_value") and \
                not row["name"].startswith(("bare_loop", "mosq_ingest")):
            row["cpu_per_value_vs_python"] = py["cpu_us_per_value"] / row["cpu_us_per_value"]
    nr = rows.get("nodered") or {}
    for row in rows.values():
        if nr.get("values_per_s") and row.get("values_per_s"):
            row["throughput_vs_nodered"] = row["values_per_s"] / nr["values_per_s"]
        if nr.get("cpu_us_per_value") and row.get("cpu_us_per_value"):
            row["cpu_per_value_vs_nodered"] = nr["cpu_us_per_value"] / row["cpu_us_per_value"]
    ing = rows.get("mosq_ingest")
    if ing:
        t = [r.get("tool", {}) for r in by["mosq_ingest"]]
        ing["msgs_per_s"] = med([x.get("msgs_per_s") for x in t])
        ing["bytes_per_s"] = med([x.get("bytes_per_s") for x in t])
        ing["message_bytes"] = med([x.get("message_bytes") for x in t])
    order = ["bare_loop", "bare_loop_4conn", "mosq_ingest", "floor", "floor_batch1", "e2e_minimal", "python_pipeline",
             "nodered", "nodered_queue", "fieldbridge", "fieldbridge_baseline", "fieldbridge_4dev"]
    lines = ["| tool | values/s delivered | polls/s | % of e2e | % of protocol limit | CPU (tool) | CPU µs/value "
             "| CPU/value vs Python | floor's CPU/value ÷ this | vs Node-RED: throughput / CPU per value | RSS MB "
             "| broker CPU | server CPU | subscriber CPU | machine busy | load avg | limited by |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for n in order + sorted(set(rows) - set(order)):
        if n not in rows:
            continue
        r = rows[n]
        vs_nr = "–"
        if r.get("throughput_vs_nodered") and r.get("cpu_per_value_vs_nodered") and not n.startswith("nodered"):
            vs_nr = "%s× / %s×" % (fmt(r["throughput_vs_nodered"], 1), fmt(r["cpu_per_value_vs_nodered"], 1))
        lines.append("| %s | %s | %s | %s | %s | %s%% | %s | %s | %s | %s | %s | %s%% | %s%% | %s%% | %s%% | %s | %s |" % (
            n, fmt(r["values_per_s"]), fmt((r["values_per_s"] or 0) / 100), fmt(r["pct_of_e2e"], 1),
            fmt(r["pct_of_protocol"], 1), fmt(r["cpu_pct"]), fmt(r["cpu_us_per_value"], 3),
            (fmt(r.get("cpu_per_value_vs_python"), 1) + "×") if r.get("cpu_per_value_vs_python") else "–",
            (fmt(r.get("floor_pct_cpu"), 0) + "%") if r.get("floor_pct_cpu") else "–", vs_nr,
            fmt((r["rss_kb"] or 0) / 1024, 1), fmt(r["broker_cpu_pct"]), fmt(r["server_cpu_pct"]),
            fmt(r["sub_cpu_pct"]), fmt(r["machine_busy_pct"]), fmt(r.get("loadavg_1m_end"), 2), r["limited_by"]))
    lines.append("")
    lines.append("bare_loop values/s = registers read (nothing published); the others = values counted at the "
                 "subscriber; polls/s = values/s ÷ 100 (for mosq_ingest: messages/s). CPU = % of one core over the "
                 "window (tool incl. all its threads). \"floor's CPU/value ÷ this\" = bench/floor.c's CPU per value "
                 "divided by the row's (100 % = as cheap per value as the floor). Load avg = 1-minute load average "
                 "at the end of the window.")
    if ing:
        lines.append("")
        lines.append("mosq_ingest (Mosquitto's ingest limit): %s messages/s of %s bytes = %s MB/s acknowledged "
                     "at QoS 1." % (fmt(ing.get("msgs_per_s")), fmt(ing.get("message_bytes")),
                                    fmt((ing.get("bytes_per_s") or 0) / 1e6, 1)))
    return rows, lines


def footprint(recs):
    lines = ["| config | RSS MB | peak RSS MB | CPU | values/s delivered | start-up → first publish | load avg |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    out = []
    for r in recs:
        if r.get("name") == "binary":
            out.append(r)
            continue
        out.append(r)
        lines.append("| %s — %s | %s | %s | %s%% | %s | %s ms | %s |" % (
            r["name"], r.get("config", ""), fmt(r.get("rss_kb", 0) / 1024, 1), fmt(r.get("hwm_kb", 0) / 1024, 1),
            fmt(r.get("cpu_pct"), 2), fmt(r.get("values_per_s")), fmt(r.get("startup_to_first_msg_ms"), 1),
            fmt(r.get("loadavg_1m_end"), 2)))
    for r in recs:
        if r.get("name") == "binary":
            lines.append("")
            lines.append("binary: %s bytes (%s stripped)" % (fmt(r["binary_bytes"]), fmt(r["stripped_bytes"])))
    return out, lines


def scaling(recs):
    lines = ["| config | tags | values/s delivered | CPU | CPU µs/value | CPU per 1k tags | RSS MB | RSS kB/tag "
             "| broker CPU | server CPU | machine busy | load avg | limited by |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in recs:
        ntags = 0
        c = r.get("config", "")
        try:
            ndev = int(c.split(" devices")[0])
            ntags = ndev * int(c.split(" x ")[1].split()[0])
        except (ValueError, IndexError):
            pass
        r["tags"] = ntags
        r["rss_kb_per_tag"] = r.get("rss_kb", 0) / ntags if ntags else None
        r["cpu_pct_per_1k_tags"] = r["cpu_pct"] * 1000 / ntags if ntags and r.get("cpu_pct") is not None else None
        lines.append("| %s | %s | %s | %s%% | %s | %s%% | %s | %s | %s%% | %s%% | %s%% | %s | %s |" % (
            c, fmt(ntags), fmt(r.get("values_per_s")), fmt(r.get("cpu_pct"), 1), fmt(r.get("cpu_us_per_value"), 3),
            fmt(r["cpu_pct_per_1k_tags"], 2), fmt(r.get("rss_kb", 0) / 1024, 1), fmt(r["rss_kb_per_tag"], 2),
            fmt(r.get("broker_cpu_pct")), fmt(r.get("server_cpu_pct")), fmt(r.get("machine_busy_pct")),
            fmt(r.get("loadavg_1m_end"), 2), limited_by(r)))
    return recs, lines


def latency(recs):
    lines = ["| config | samples | p50 ms | p90 ms | p99 ms | max ms | target p99 ≤ poll + 2 ms | CPU |",
             "|---|---:|---:|---:|---:|---:|---|---:|"]
    for r in recs:
        lat = (r.get("sub") or {}).get("latency") or {}
        poll = 10 if "10ms" in r["name"] and "100ms" not in r["name"] else 100
        p99 = lat.get("p99_ms")
        ok = "–" if p99 is None else ("met" if p99 <= poll + 2 else "MISSED")
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s%% |" % (
            r.get("config", r["name"]), lat.get("samples", 0), fmt(lat.get("p50_ms"), 2), fmt(lat.get("p90_ms"), 2),
            fmt(p99, 2), fmt(lat.get("max_ms"), 2), ok, fmt(r.get("cpu_pct"), 1)))
    return recs, lines


def command(recs):
    lines = ["| config | sent | ok | refused | timeouts | write verified | p50 ms | p90 ms | p99 ms | max ms |",
             "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in recs:
        t = r.get("tool", {})
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            r.get("config", ""), t.get("sent"), t.get("ok"), t.get("refused"), t.get("timeouts"),
            {1: "yes", 0: "NO", -1: "not checked"}.get(t.get("verified"), "?"), fmt(t.get("p50_ms"), 2),
            fmt(t.get("p90_ms"), 2), fmt(t.get("p99_ms"), 2), fmt(t.get("max_ms"), 2)))
        if t.get("last_response"):
            lines.append("")
            lines.append("last refusal: `%s`" % t["last_response"])
    return recs, lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", required=True)
    ap.add_argument("--records", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--build", default="")
    ap.add_argument("--root", default=".")
    ap.add_argument("--quick", default="0")
    ap.add_argument("--cmdline", default="")
    ap.add_argument("--reps", default="")
    ap.add_argument("--window", default="")
    ap.add_argument("--warmup", default="")
    a = ap.parse_args()
    recs = []
    with open(a.records) as f:
        for line in f:
            line = line.strip()
            if line:
                recs.append(json.loads(line))
    fn = {"throughput": throughput, "footprint": footprint, "scaling": scaling, "latency": latency,
          "command": command}[a.scenario]
    summary, lines = fn(recs)
    doc = {
        "scenario": a.scenario,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": a.cmdline.strip(),
        "quick": a.quick == "1",
        "reps": a.reps, "window_s": a.window, "warmup_s": a.warmup,
        "git_commit": sh(f"git -C {a.root} rev-parse --short HEAD"),
        "git_dirty": bool(sh(f"git -C {a.root} status --porcelain --untracked-files=no")),
        "build": a.build,
        "machine": machine(),
        "summary": summary,
        "table_markdown": "\n".join(lines),
        "records": recs,
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"\n## {a.scenario}  ({doc['date_utc']}, {doc['machine']['cpu']}, {doc['machine']['cores']} cores)\n")
    print("\n".join(lines))
    print(f"\nresults: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
