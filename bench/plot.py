#!/usr/bin/python3
"""plot.py — gnuplot charts from the latest bench/results/<scenario>-*.json.

Writes bench/results/throughput.png (delivered values/s and CPU per value per
tool, log scales: the tools span three orders of magnitude), latency.png
(change → subscriber and command round trip, p50/p90/p99/max) and
scaling.png (CPU per value and RSS per tag as tags grow).  Data files and the
gnuplot script go to a temp dir; gnuplot (Debian gnuplot-nox, pngcairo) does
the drawing so the charts are reproducible from the JSON alone.

usage: bench/plot.py [--results bench/results] [--out DIR] [--throughput FILE]
                     [--latency FILE] [--command FILE] [--scaling FILE]
(a FILE overrides the latest result of that scenario, e.g. to chart a quieter run)
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile


def latest(results, scenario, override=None):
    if override:
        with open(override) as f:
            return json.load(f)
    files = sorted(glob.glob(os.path.join(results, scenario + "-2*.json")))
    if not files:
        return None
    with open(files[-1]) as f:
        return json.load(f)


def run_gnuplot(script, tmp):
    path = os.path.join(tmp, "plot.gp")
    with open(path, "w") as f:
        f.write(script)
    subprocess.run(["gnuplot", path], check=True, cwd=tmp)


LABELS = {
    "bare_loop": "protocol limit (bare libmodbus loop)",
    "bare_loop_4conn": "protocol limit, 4 connections",
    "mosq_ingest": "Mosquitto ingest limit (bare publisher)",
    "e2e_minimal": "end-to-end limit (minimal C loop)",
    "python_pipeline": "Python (pymodbus + paho)",
    "nodered": "Node-RED + contrib-modbus, queue off",
    "nodered_queue": "Node-RED, client defaults (queue on)",
    "fieldbridge": "fieldbridge, 1 connection",
    "fieldbridge_4dev": "fieldbridge, 4 connections",
}


def throughput(doc, tmp, out):
    rows = doc["summary"]
    order = ["bare_loop", "bare_loop_4conn", "mosq_ingest", "e2e_minimal", "fieldbridge", "fieldbridge_4dev",
             "python_pipeline", "nodered", "nodered_queue"]
    data = []
    for n in order:
        r = rows.get(n)
        if not r or not r.get("values_per_s"):
            continue
        data.append((LABELS.get(n, n), r["values_per_s"], r.get("cpu_us_per_value") or 0, n.startswith("fieldbridge")))
    with open(os.path.join(tmp, "tp.dat"), "w") as f:
        for i, (lab, v, c, fb) in enumerate(data):
            f.write('%d "%s" %.1f %.4f %d\n' % (i, lab, v, c, 1 if fb else 0))
    when = "%s, %s, commit %s, median of %s" % (doc["date_utc"][:16].replace("T", " "), doc["machine"]["cpu"][:40],
                                                  doc["git_commit"], doc.get("reps") or "?")
    run_gnuplot("""
set terminal pngcairo size 1300,620 font "DejaVu Sans,11"
set output "%(out)s"
set multiplot layout 1,2 title "Throughput: 100 registers per poll, every value published as JSON at QoS 1\\n{/*0.8 %(when)s}"
set style fill solid 0.8 border -1
set yrange [-0.6:%(n)d-0.4]
set ytics scale 0
unset key
set grid xtics mxtics
set logscale x
set format x "10^{%%L}"
set xlabel "values delivered per second (log scale)"
set lmargin 38
set rmargin 10
set ytics font ",10"
plot "tp.dat" using ($3*0.5):1:($3*0.5):(0.38):($5>0?2:1):ytic(2) with boxxyerror lc variable, \\
     "" using 3:1:(sprintf(" %%.3g M", $3/1e6)) with labels left font ",9"
set ytics format ""
set lmargin 2
set rmargin 12
set xlabel "CPU µs per delivered value (tool only, log scale; lower is better)"
plot "tp.dat" using ($4>0?$4*0.5:1/0):1:($4*0.5):(0.38):($5>0?2:1):ytic("") with boxxyerror lc variable, \\
     "" using ($4>0?$4:1/0):1:(sprintf(" %%.3f", $4)) with labels left font ",9"
unset multiplot
""" % {"out": out, "when": when, "n": len(data)}, tmp)


def latency(lat_doc, cmd_doc, tmp, out):
    rows = []
    if lat_doc:
        for r in lat_doc["records"]:
            lat = (r.get("sub") or {}).get("latency") or {}
            if lat.get("samples"):
                poll = "10 ms" if r["name"].endswith("_10ms") else "100 ms"
                rows.append(("poll %s: change → subscriber" % poll, lat["p50_ms"], lat["p90_ms"], lat["p99_ms"],
                             lat["max_ms"]))
    if cmd_doc:
        for r in cmd_doc["records"]:
            t = r.get("tool") or {}
            if t.get("p50_ms") is not None:
                which = "broker Nagle off" if r["name"].endswith("nodelay") else "broker defaults"
                rows.append(("command RTT, " + which, t["p50_ms"], t["p90_ms"], t["p99_ms"], t["max_ms"]))
    if not rows:
        return False
    with open(os.path.join(tmp, "lat.dat"), "w") as f:
        for lab, *v in rows:
            f.write('"%s" %s\n' % (lab, " ".join("%.3f" % x for x in v)))
    src = lat_doc or cmd_doc
    when = "%s, commit %s" % (src["date_utc"][:16].replace("T", " "), src["git_commit"])
    run_gnuplot("""
set terminal pngcairo size 1200,560 font "DejaVu Sans,11"
set output "%(out)s"
set title "fieldbridge latency (ms, log scale)\\n{/*0.8 targets: change p99 ≤ poll + 2 ms; command round trip p99 ≤ 5 ms — %(when)s}"
set style data histograms
set style histogram clustered gap 1.5
set style fill solid 0.85 border -1
set logscale y
set yrange [0.1:*]
set ylabel "milliseconds"
set grid ytics
set key top left
set xtics font ",10" noenhanced scale 0
plot "lat.dat" using 2:xtic(1) title "p50" lc rgb "#4c72b0", \\
     "" using 3 title "p90" lc rgb "#55a868", \\
     "" using 4 title "p99" lc rgb "#c44e52", \\
     "" using 5 title "max" lc rgb "#8172b2"
""" % {"out": out, "when": when}, tmp)
    return True


def scaling(doc, tmp, out):
    fast = []
    for r in doc["records"]:
        if r["name"].startswith("fieldbridge_fast_") and r.get("tags"):
            fast.append((r["tags"], r.get("cpu_us_per_value") or 0, r.get("rss_kb_per_tag") or 0,
                         r.get("values_per_s") or 0))
    if len(fast) < 2:
        return False
    fast.sort()
    with open(os.path.join(tmp, "sc.dat"), "w") as f:
        for t, c, m, v in fast:
            f.write("%d %.4f %.4f %.1f\n" % (t, c, m, v))
    when = "%s, commit %s" % (doc["date_utc"][:16].replace("T", " "), doc["git_commit"])
    run_gnuplot("""
set terminal pngcairo size 1000,520 font "DejaVu Sans,11"
set output "%(out)s"
set title "fieldbridge scaling, as fast as possible, one connection per device (flat = linear cost)\\n{/*0.8 %(when)s}"
set logscale x
set xlabel "registers polled (devices x tags)"
set xtics ("1k\\n10 x 100" 1000, "10k\\n100 x 100" 10000, "100k\\n100 x 1000" 100000)
set xrange [600:170000]
set ylabel "CPU µs per delivered value"
set offsets 0, 0, graph 0.15, 0
set xlabel offset 0,-0.8
set y2label "RSS kB per tag"
set yrange [0:*]
set y2range [0:*]
set ytics nomirror
set y2tics
set grid ytics
set key top right
plot "sc.dat" using 1:2 with linespoints lw 2 pt 7 title "CPU µs / value", \\
     "" using 1:2:(sprintf("%%.2f M/s", $4/1e6)) with labels offset 0,1.2 font ",9" notitle, \\
     "" using 1:3 axes x1y2 with linespoints lw 2 pt 5 title "RSS kB / tag"
""" % {"out": out, "when": when}, tmp)
    return True


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--results", default=os.path.join(here, "results"))
    ap.add_argument("--out", default=None)
    for sc in ("throughput", "latency", "command", "scaling"):
        ap.add_argument("--" + sc, default=None)
    a = ap.parse_args()
    out = a.out or a.results
    made = []
    with tempfile.TemporaryDirectory() as tmp:
        tp = latest(a.results, "throughput", a.throughput)
        if tp:
            throughput(tp, tmp, os.path.join(out, "throughput.png"))
            made.append("throughput.png")
        if latency(latest(a.results, "latency", a.latency), latest(a.results, "command", a.command), tmp, os.path.join(out, "latency.png")):
            made.append("latency.png")
        sc = latest(a.results, "scaling", a.scaling)
        if sc and scaling(sc, tmp, os.path.join(out, "scaling.png")):
            made.append("scaling.png")
    print("plot.py: wrote " + (", ".join(os.path.join(out, m) for m in made) or "nothing"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
