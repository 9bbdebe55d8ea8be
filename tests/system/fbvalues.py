"""fbvalues.py — the reference encodings the system tests give the Modbus peer.

Registers are computed here with Python's struct module (NOT with fieldbridge's
encoder), following docs/modbus.md ("Byte and word order"): registers are big-endian,
A is the most significant byte; ABCD = high word first, CDAB = words swapped,
BADC = bytes swapped inside each word, DCBA = both; the 64-bit names are the
same two flags over four registers.
"""
import math
import struct

ORDERS32 = ["ABCD", "CDAB", "BADC", "DCBA"]
ORDERS64 = ["ABCDEFGH", "GHEFCDAB", "BADCFEHG", "HGFEDCBA"]
ALIAS64 = {"ABCD": "ABCDEFGH", "CDAB": "GHEFCDAB", "BADC": "BADCFEHG", "DCBA": "HGFEDCBA"}

FMT = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "float32": ">f",
       "int64": ">q", "uint64": ">Q", "float64": ">d"}


def _apply_order(raw, order):
    """raw: big-endian bytes (ABCD...) → list of 16-bit registers in `order`."""
    regs = [raw[i] << 8 | raw[i + 1] for i in range(0, len(raw), 2)]
    swap_bytes = order in ("BADC", "DCBA", "BADCFEHG", "HGFEDCBA")
    swap_words = order in ("CDAB", "DCBA", "GHEFCDAB", "HGFEDCBA")
    if swap_bytes:
        regs = [((r & 0xFF) << 8) | (r >> 8) for r in regs]
    if swap_words:
        regs = regs[::-1]
    return regs


def encode(typ, value, order="ABCD"):
    """Registers holding `value` of `typ` in `order`."""
    if typ in FMT:
        raw = struct.pack(FMT[typ], value)
        if len(raw) == 2:
            return [raw[0] << 8 | raw[1]]
        return _apply_order(raw, order)
    if typ == "bcd16":
        return [int(str(value), 16)]
    if typ == "bcd32":
        v = int(str(value), 16)
        return [v >> 16, v & 0xFFFF]
    if typ.startswith("string"):
        n = int(typ[typ.index("[") + 1:-1])
        b = value.encode("ascii").ljust(n, b"\0")
        if len(b) % 2:
            b += b"\0"
        return [b[i] << 8 | b[i + 1] for i in range(0, len(b), 2)]
    raise ValueError(typ)


def nregs(typ):
    return len(encode(typ, 0 if not typ.startswith("string") else ""))


def f32(x):
    """x rounded to float32, as the device holds it."""
    return struct.unpack(">f", struct.pack(">f", x))[0]


def close(a, b, typ):
    if isinstance(b, float) or typ in ("float32", "float64"):
        try:
            a = float(a)
        except (TypeError, ValueError):
            return False
        if math.isnan(b):
            return math.isnan(a)
        tol = 1e-6 if typ == "float32" else 1e-12
        return math.isclose(a, b, rel_tol=tol, abs_tol=1e-9)
    return a == b


# (type, value) — values chosen to exercise sign, > 2^31, > 2^53, > 2^63.
SAMPLES = {
    "int16": -12345,
    "uint16": 54321,
    "int32": -123456789,
    "uint32": 3000000000,
    "int64": -1234567890123456789,
    "uint64": 18000000000000000123,
    "float32": -1234.5625,
    "float64": 98765.4321e10,
}


def layout(start=100):
    """All type × order cases laid out from hr:start, each with its own registers.

    Returns a list of dicts {name, type, order, addr, value, regs}, and the
    registers as {address: value} for the peer.
    """
    cases = []
    addr = start

    def add(name, typ, value, order=None, regs=None):
        nonlocal addr
        r = regs if regs is not None else encode(typ, value, order or "ABCD")
        cases.append({"name": name, "type": typ, "order": order, "addr": addr,
                      "value": value, "regs": r})
        addr += len(r)

    add("i16", "int16", SAMPLES["int16"])
    add("u16", "uint16", SAMPLES["uint16"])
    for typ in ("int32", "uint32", "float32"):
        for o in ORDERS32:
            add(f"{typ}_{o}", typ, SAMPLES[typ], o)
    for typ in ("int64", "uint64", "float64"):
        for o in ORDERS64:
            add(f"{typ}_{o}", typ, SAMPLES[typ], o)
    # four-letter names mean the matching 64-bit order
    for o, o64 in ALIAS64.items():
        add(f"float64_alias_{o}", "float64", SAMPLES["float64"], o, encode("float64", SAMPLES["float64"], o64))
    add("bcd16", "bcd16", 1234)
    add("bcd32", "bcd32", 12345678)
    add("str8", "string[8]", "HELLO-FB")
    add("str10", "string[10]", "abc")
    for c in cases:
        if c["type"] == "float32":
            c["value"] = f32(c["value"])
    regs = {}
    for c in cases:
        for i, r in enumerate(c["regs"]):
            regs[c["addr"] + i] = r
    return cases, regs


def regs_list(regs, size=None):
    n = max(regs) + 1 if regs else 0
    n = max(n, size or 0)
    return [regs.get(i, 0) for i in range(n)]
