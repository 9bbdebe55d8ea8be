#!/usr/bin/python3
"""python_pipeline.py — the seed-style Python peer: pymodbus → JSON → paho-mqtt.

What an automation engineer would write to bridge Modbus to MQTT in Python,
with the Debian packages (python3-pymodbus 3.0, python3-paho-mqtt 1.6):
a synchronous ModbusTcpClient polling R holding registers as fast as it can,
each poll turned into the same telemetry JSON the gateway publishes
(DESIGN.md §7) and published at QoS 1 by a paho client whose network thread
runs in the background (loop_start).  Not a strawman: compact JSON
(json.dumps with separators), names built once, paho's in-flight window raised
to the same 1000 messages the gateway and e2e_minimal use (paho's default of
20 would throttle QoS 1 on its own), and the loop does nothing else.

Runs for --duration seconds (bounded), waits up to 10 s for the last PUBACKs,
then prints one JSON object like the C tools (polls/s, values/s acknowledged,
CPU of this process).  Run it with /usr/bin/python3.
"""
import argparse
import datetime
import json
import resource
import sys
import threading
import time

import paho.mqtt.client as mqtt
from pymodbus.client import ModbusTcpClient


def cpu_seconds():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb-port", type=int, default=5020)
    ap.add_argument("--mqtt-port", type=int, default=1883)
    ap.add_argument("--regs", type=int, default=100)
    ap.add_argument("--unit", type=int, default=1)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--topic", default="site/_/_/python/telemetry")
    ap.add_argument("--device", default="python")
    ap.add_argument("--max-inflight", type=int, default=1000)
    args = ap.parse_args()

    acked = 0
    lock = threading.Lock()
    connected = threading.Event()

    def on_connect(client, userdata, flags, rc, properties=None):
        if rc == 0:
            connected.set()

    def on_publish(client, userdata, mid):
        nonlocal acked
        with lock:
            acked += 1

    client = mqtt.Client(client_id="python-pipeline", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(args.max_inflight)
    client.on_connect = on_connect
    client.on_publish = on_publish
    client.connect("127.0.0.1", args.mqtt_port, keepalive=30)
    client.loop_start()
    if not connected.wait(5):
        print("mqtt: not connected", file=sys.stderr)
        return 1

    mb = ModbusTcpClient("127.0.0.1", port=args.mb_port)
    if not mb.connect():
        print("modbus: cannot connect", file=sys.stderr)
        return 1

    names = ["r%d" % i for i in range(args.regs)]
    polls = errors = published = 0
    seq = 0
    c0 = cpu_seconds()
    t0 = time.monotonic()
    end = t0 + args.duration
    while time.monotonic() < end:
        rr = mb.read_holding_registers(0, args.regs, slave=args.unit)
        if rr.isError():
            errors += 1
            continue
        polls += 1
        seq += 1
        ts = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
        msg = {
            "ts": ts.replace("+00:00", "Z"),
            "seq": seq,
            "device": args.device,
            "values": {n: {"v": v if v < 32768 else v - 65536, "q": "good"}
                       for n, v in zip(names, rr.registers)},
        }
        info = client.publish(args.topic, json.dumps(msg, separators=(",", ":")), qos=1)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            published += 1
        else:
            errors += 1
    t_pub = time.monotonic() - t0
    drain_end = time.monotonic() + 10
    while time.monotonic() < drain_end:
        with lock:
            if acked >= published:
                break
        time.sleep(0.005)
    el = time.monotonic() - t0
    cpu = cpu_seconds() - c0
    client.disconnect()
    client.loop_stop()
    mb.close()
    with lock:
        n_acked = acked
    out = {
        "tool": "python_pipeline", "regs": args.regs, "seconds": round(t_pub, 3),
        "drain_s": round(el - t_pub, 3), "polls": polls, "published": published, "acked": n_acked,
        "errors": errors, "polls_per_s": round(n_acked / t_pub, 1),
        "values_per_s": round(n_acked * args.regs / t_pub, 1), "cpu_s": round(cpu, 3),
        "cpu_pct": round(100 * cpu / el, 1),
        "cpu_us_per_value": round(cpu * 1e6 / (n_acked * args.regs), 4) if n_acked else 0,
    }
    print(json.dumps(out))
    print("python_pipeline: %.0f polls/s, %.0f values/s acked, CPU %.0f%% of a core, %d errors"
          % (out["polls_per_s"], out["values_per_s"], out["cpu_pct"], errors), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
