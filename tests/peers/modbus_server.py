#!/usr/bin/python3
"""modbus_server.py — a Modbus TCP / RTU peer for fieldbridge's system tests
and demo, built on pymodbus (an implementation independent of libmodbus, so
the gateway is checked against someone else's reading of the protocol).

Run with /usr/bin/python3 (Debian's python3-pymodbus 3.0.0).

  modbus_server.py --port 5020 --spec spec.json         # TCP, values from a file
  modbus_server.py --port 5020 --demo                    # TCP, the demo's plant
  modbus_server.py --serial /dev/pts/7 --baud 19200 --parity N --port 5021 --spec s.json
                                                         # RTU on a serial line; the TCP
                                                         # port shares the same datastore
                                                         # so tests can inspect it

Spec file (JSON):
  {"units": {"1": {"hr": [1, 2, 3],            list  -> sequential block from address 0
                   "ir": {"0": 5, "7": 9},     dict  -> sparse block: every address not
                                                        listed answers exception 02
                   "co": [1, 0, 1], "di": [0, 1]}}}
Lists shorter than 256 entries are padded with zeros to 256 so that reads
just past the configured values work.  A unit id that is not in "units" is
answered with exception 0B (gateway target device failed to respond), or not
at all with "silent_units": true in the spec — a dead unit behind a TCP→RTU
gateway that forwards requests without answering for its units.  Addresses are 0-based (zero_mode=True:
without it pymodbus shifts every address by one).

Once listening it prints "READY <tcp-port>" on stdout, so a test can wait for
it and learn a port chosen by the kernel (--port 0).  Every TCP connection a
client opens is printed as "CONNECTION <client port>", so a test can count
them (a gateway that kept its connection across a config reload opened none).
A spec's "counters": [{"unit": 1, "addr": 20, "period_ms": 50}] makes a
holding register count up by one per period.

Demo plant (--demo), unit 1, values change every 200 ms:
  hr:0-1   float32 CDAB  temperature  °C, 20..25 sine (period 60 s)
  hr:2     uint16        pressure     mbar, 1000..1050 sine
  hr:3     int16         level        -100..100 triangle
  hr:4-5   uint32 ABCD   counter      +1 per 200 ms
  hr:10    int16         setpoint     writable (initially 50), echoed into hr:11
  hr:11    int16         setpoint_readback
  ir:0     int16         motor_current ×100 A (e.g. 1234 = 12.34 A), noisy
  ir:1     uint16        speed rpm, 1450..1500
  co:0     bool          motor_on     writable (initially on)
  co:1     bool          alarm        on when temperature > 24.5
  di:0     bool          door_closed  toggles every 10 s
"""
import argparse
import asyncio
import json
import logging
import math
import os
import random
import signal
import struct
import sys
import time

from pymodbus.datastore import (ModbusSequentialDataBlock, ModbusServerContext,
                                ModbusSlaveContext, ModbusSparseDataBlock)
from pymodbus.server.async_io import (ModbusConnectedRequestHandler, ModbusSerialServer,
                                      ModbusTcpServer)
from pymodbus.transaction import ModbusRtuFramer, ModbusSocketFramer

PAD = 256


def make_block(spec, bits):
    """A datablock from a list (sequential) or a dict (sparse, holes raise 02)."""
    if spec is None:
        return ModbusSequentialDataBlock(0, [False if bits else 0] * PAD)
    if isinstance(spec, dict):
        vals = {int(k): (bool(v) if bits else int(v) & 0xFFFF) for k, v in spec.items()}
        return ModbusSparseDataBlock(vals)
    vals = [(bool(v) if bits else int(v) & 0xFFFF) for v in spec]
    if len(vals) < PAD:
        vals += [False if bits else 0] * (PAD - len(vals))
    return ModbusSequentialDataBlock(0, vals)


def make_context(spec):
    slaves = {}
    for unit, tables in spec.get("units", {"1": {}}).items():
        slaves[int(unit)] = ModbusSlaveContext(
            hr=make_block(tables.get("hr"), False),
            ir=make_block(tables.get("ir"), False),
            co=make_block(tables.get("co"), True),
            di=make_block(tables.get("di"), True),
            zero_mode=True,
        )
    return ModbusServerContext(slaves=slaves, single=False)


def f32_cdab(x):
    hi, lo = struct.unpack(">HH", struct.pack(">f", x))
    return [lo, hi]


def demo_spec():
    hr = [0] * 32
    hr[0:2] = f32_cdab(22.5)
    hr[2] = 1025
    hr[3] = 0
    hr[10] = 50
    hr[11] = 50
    return {"units": {"1": {"hr": hr, "ir": [1200, 1475], "co": [1, 0], "di": [1]}}}


async def demo_loop(ctx):
    """Move the demo plant's values (runs inside the server's event loop)."""
    s = ctx[1]
    t0 = time.monotonic()
    counter = 0
    while True:
        t = time.monotonic() - t0
        temp = 22.5 + 2.5 * math.sin(2 * math.pi * t / 60.0)
        s.setValues(3, 0, f32_cdab(temp))
        s.setValues(3, 2, [int(1025 + 25 * math.sin(2 * math.pi * t / 20.0))])
        tri = int(abs((t * 20) % 400 - 200) - 100)
        s.setValues(3, 3, [tri & 0xFFFF])
        counter = (counter + 1) & 0xFFFFFFFF
        s.setValues(3, 4, [counter >> 16, counter & 0xFFFF])
        s.setValues(3, 11, s.getValues(3, 10, 1))
        motor_on = bool(s.getValues(1, 0, 1)[0])
        cur = int((1200 + random.randint(-30, 30)) if motor_on else random.randint(0, 5))
        s.setValues(4, 0, [cur & 0xFFFF])
        s.setValues(4, 1, [(1450 + random.randint(0, 50)) if motor_on else 0])
        s.setValues(1, 1, [temp > 24.5])
        s.setValues(2, 0, [int(t / 10) % 2 == 0])
        await asyncio.sleep(0.2)


class CountingHandler(ModbusConnectedRequestHandler):
    """Says on stdout when a client connects."""

    def connection_made(self, transport):
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        print(f"CONNECTION {peer[1] if peer else '?'}", flush=True)


async def counter_loop(ctx, unit, addr, period_ms):
    """A holding register that counts up (wrapping at 65536) once per period."""
    s = ctx[unit]
    n = 0
    while True:
        n = (n + 1) & 0xFFFF
        s.setValues(3, addr, [n])
        await asyncio.sleep(period_ms / 1000.0)


async def main_async(args):
    spec = demo_spec() if args.demo else {"units": {"1": {}}}
    if args.spec:
        with open(args.spec, encoding="utf-8") as f:
            spec = json.load(f)
    ctx = make_context(spec)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    tasks = []
    tcp = None
    if args.port is not None:
        tcp = ModbusTcpServer(ctx, framer=ModbusSocketFramer, address=(args.host, args.port),
                              allow_reuse_address=True, handler=CountingHandler,
                              ignore_missing_slaves=bool(spec.get("silent_units")))
        tasks.append(asyncio.create_task(tcp.serve_forever()))
    serial_srv = None
    if args.serial:
        serial_srv = ModbusSerialServer(ctx, framer=ModbusRtuFramer, port=args.serial,
                                        baudrate=args.baud, parity=args.parity,
                                        bytesize=8, stopbits=1, timeout=0.05,
                                        ignore_missing_slaves=bool(spec.get("silent_units")))
        await serial_srv.start()
        if serial_srv.transport is None:
            print(f"cannot open serial port {args.serial}", file=sys.stderr, flush=True)
            return 1
    if args.demo:
        tasks.append(asyncio.create_task(demo_loop(ctx)))
    for c in spec.get("counters", []):
        tasks.append(asyncio.create_task(counter_loop(ctx, int(c.get("unit", 1)), int(c["addr"]),
                                                      float(c.get("period_ms", 100)))))

    port = 0
    if tcp is not None:
        await asyncio.wait_for(tcp.serving, 10)
        port = tcp.server.sockets[0].getsockname()[1]
    print(f"READY {port}", flush=True)

    await stop.wait()
    for t in tasks:
        t.cancel()
    if tcp is not None:
        try:
            await tcp.server_close()
        except Exception:  # pylint: disable=broad-except
            pass
    if serial_srv is not None:
        await serial_srv.shutdown()
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=None, help="TCP port (0: any free port)")
    ap.add_argument("--spec", help="JSON file with the initial values")
    ap.add_argument("--demo", action="store_true", help="the demo plant, values moving")
    ap.add_argument("--serial", help="serve Modbus RTU on this serial device")
    ap.add_argument("--baud", type=int, default=19200)
    ap.add_argument("--parity", default="N", choices=["N", "E", "O"])
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    if args.port is None and not args.serial:
        args.port = 5020
    # pymodbus logs an error on every client disconnect; keep the output useful.
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.CRITICAL,
                        stream=sys.stderr)
    try:
        return asyncio.run(main_async(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
