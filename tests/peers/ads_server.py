#!/usr/bin/python3
"""ads_server.py — a fake Beckhoff TwinCAT 3 PLC for fieldbridge's tests.

Speaks ADS over AMS/TCP (commands 1-9) and the UDP 48899 add-route service,
from the wire facts in shared PROTOCOLS.md §2; validated against the npm
ads-client 2.1.0 (tests/peers/ads/validate.js) before our own driver's tests
count.  Nothing here is taken from another implementation.

What it offers
  * a symbol table (index group 0x4040) with a variable of every IEC type,
    STRING(n), arrays, a struct, an alias, and optional GVL.nVar0000..
    (--many N); entries as TwinCAT 3 writes them: flags u16 (0x0008: a type
    GUID follows, 0x1000: attributes follow) and arrayDim u16, then name,
    type, comment, array bounds, GUID, attributes;
  * handles by name (0xF003: classic 4-byte reply, or TwinCAT 3's extended
    reply when the read length is > 4), value by handle (0xF005), release
    (0xF006), value by name (0xF004), symbol version (0xF008), symbol info
    by name (0xF009: one symbol entry, also for struct members and array
    elements), upload info (0xF00C, 0xF00F), symbol and data-type uploads
    (0xF00B, 0xF00E), sum read / write / read-write (0xF080-0xF082), device
    state (0xF100);
  * raw areas: flags %M (0x4020 bytes, 0x4021 bits), inputs %I (0xF020,
    0xF021) and outputs %Q (0xF030, 0xF031); bit groups take byte*8+bit;
  * device notifications (on change and cyclic), pushed by a thread per
    connection;
  * a "download": the symbol version goes up, every variable moves to a new
    offset, old handles answer 0x710 and old notifications stop;
  * error injection: an AMS header error (0x7 no route, 0x6 port not found)
    or an ADS result code for every request;
  * older or smaller devices: --no-sum CODE answers the sum commands
    (0xF080-0xF086) with CODE (0x701 service not supported, or 0x702 invalid
    index group, as TwinCAT 2 before sum commands, BC/BX controllers and
    simulators do), --no-upload CODE the symbol and data-type uploads and
    their info (0xF00B, 0xF00C, 0xF00E, 0xF00F), --refuse IG=CODE any index
    group, --classic-handles gives only the 4-byte handle reply.

Control: one JSON object per line on stdin, one answer per line on stdout:
  {"op":"set","name":"MAIN.nInt","value":-5}       typed by the symbol
  {"op":"get","name":"MAIN.nInt"}                   -> {"value":..,"hex":..}
  {"op":"download"}   {"op":"error","code":7,"where":"ams"|"ads"}  {"op":"error","code":0}
  {"op":"stats"}      {"op":"reset_stats"}    {"op":"routes"}    {"op":"drop"} (close clients)
  {"op":"raw_set","area":"M","offset":10,"hex":"2a00"}  {"op":"raw_get","area":"I","offset":0,"size":2}
Start: ads_server.py --port P [--udp-port U] [--net-id ID] [--many N] [--no-sum CODE]
       [--no-upload CODE] [--refuse IG=CODE]... [--classic-handles]; prints "READY P U".
Benchmark options (bench/plc_bench.sh): --mixed gives the --many symbols
mixed types (cycling DINT REAL INT BOOL LREAL UDINT WORD STRING(16)) instead
of DINT only; --tick S changes every --many value each S seconds;
--note-period S is how often the notifier looks for changes (default 5 ms).
"""
import argparse
import hashlib
import json
import socket
import struct
import sys
import threading
import time

ADS_TYPES = {  # name: (size, struct format or None, ADST code)
    "BOOL": (1, "<?", 33), "BYTE": (1, "<B", 17), "USINT": (1, "<B", 17), "SINT": (1, "<b", 16),
    "WORD": (2, "<H", 18), "UINT": (2, "<H", 18), "INT": (2, "<h", 2),
    "DWORD": (4, "<I", 19), "UDINT": (4, "<I", 19), "DINT": (4, "<i", 3),
    "LWORD": (8, "<Q", 21), "ULINT": (8, "<Q", 21), "LINT": (8, "<q", 20),
    "REAL": (4, "<f", 4), "LREAL": (8, "<d", 5),
    "TIME": (4, "<I", 19), "TOD": (4, "<I", 19), "DATE": (4, "<I", 19), "DT": (4, "<I", 19),
    "LTIME": (8, "<Q", 21),
}

STRUCTS = {  # name: [(member, type, offset)], size
    "ST_Recipe": ([("fSpeed", "LREAL", 0), ("nSteps", "DINT", 8), ("sName", "STRING(20)", 12)], 33),
}

BASE_SYMBOLS = [
    ("MAIN.bFlag", "BOOL", True), ("MAIN.nByte", "BYTE", 0xAB), ("MAIN.nUSInt", "USINT", 200),
    ("MAIN.nSInt", "SINT", -2), ("MAIN.nWord", "WORD", 65534), ("MAIN.nUInt", "UINT", 0x1234),
    ("MAIN.nInt", "INT", -300), ("MAIN.nDWord", "DWORD", 0xDEADBEEF), ("MAIN.nUDInt", "UDINT", 4000000000),
    ("MAIN.nDInt", "DINT", -100000), ("MAIN.nCount", "DINT", 42), ("MAIN.nLWord", "LWORD", 2 ** 63 + 5),
    ("MAIN.nULInt", "ULINT", 2 ** 64 - 1), ("MAIN.nLInt", "LINT", -(2 ** 62)),
    ("MAIN.fTemperature", "REAL", 21.5), ("MAIN.fLReal", "LREAL", 3.141592653589793),
    ("MAIN.sText", "STRING(80)", "hello ADS"), ("MAIN.sShort", "STRING(10)", "abc"),
    ("MAIN.tTime", "TIME", 5000), ("MAIN.tLTime", "LTIME", 1500000000), ("MAIN.todTime", "TOD", 3600000),
    ("MAIN.dDate", "DATE", 1709251200), ("MAIN.dtStamp", "DT", 1709212455),
    ("MAIN.aValues", "ARRAY [0..9] OF INT", [i * 10 for i in range(10)]),
    ("MAIN.aReals", "ARRAY [1..5] OF LREAL", [1.5, 2.5, 3.5, 4.5, 5.5]),
    ("MAIN.stRecipe", "ST_Recipe", {"fSpeed": 12.5, "nSteps": 7, "sName": "bread"}),
    ("MAIN.fSetpoint", "LREAL", 0.0),
    ("GVL.aBig", "ARRAY [0..999] OF DINT", [i * 3 for i in range(1000)]),
    ("MAIN.wsText", "WSTRING(20)", "Grüße €\U0001F600"),
    ("MAIN.nAlias", "T_Alias", -7),
]
ALIASES = {"T_Alias": "INT"}  # TYPE T_Alias : INT
ATTRIBUTES = {"MAIN.fTemperature": [("unit", "degC"), ("TcDisplayScale", "0-100")]}
SYM_TYPEGUID, SYM_ATTRIBUTES = 0x0008, 0x1000  # symbol entry flags (u16)
SUM_IGS = range(0xF080, 0xF087)
UPLOAD_IGS = (0xF00B, 0xF00C, 0xF00E, 0xF00F)
AREAS = {0x4020: ("M", False), 0x4021: ("M", True), 0xF020: ("I", False), 0xF021: ("I", True),
         0xF030: ("Q", False), 0xF031: ("Q", True)}
AREA_SIZE = {"M": 4096, "I": 256, "Q": 256}


MIXED = ["DINT", "REAL", "INT", "BOOL", "LREAL", "UDINT", "WORD", "STRING(16)"]


def mixed_value(t, i, step=0):
    """The value of --many variable number i of type t after `step` ticks."""
    k = i + step
    if t == "BOOL":
        return k % 2 == 1
    if t in ("REAL", "LREAL"):
        return k * 0.5
    if t.startswith("STRING"):
        return f"s{k % 100000}"
    if t in ("INT",):
        return k % 32768
    if t in ("WORD",):
        return k % 65536
    return k


def type_size(t):
    t = t.strip()
    if t.upper().startswith("WSTRING"):  # UTF-16LE, n + 1 code units
        n = 80 if t.upper() == "WSTRING" else int(t[8:-1])
        return 2 * (n + 1)
    if t.upper().startswith("STRING"):
        n = 80 if t.upper() == "STRING" else int(t[7:-1])
        return n + 1
    if t.upper().startswith("ARRAY"):
        lo, hi, elem = parse_array(t)
        return (hi - lo + 1) * type_size(elem)
    if t in STRUCTS:
        return STRUCTS[t][1]
    if t in ALIASES:
        return type_size(ALIASES[t])
    return ADS_TYPES[t.upper()][0]


def parse_array(t):
    inner = t[t.index("[") + 1:t.index("]")]
    lo, hi = inner.split("..")
    return int(lo), int(hi), t[t.upper().index(" OF ") + 4:].strip()


def encode(t, v):
    tu = t.upper()
    if tu.startswith("WSTRING"):
        n = type_size(t)
        b = v.encode("utf-16-le")[:n - 2]
        return b + bytes(n - len(b))
    if tu.startswith("STRING"):
        n = type_size(t)
        b = v.encode("latin-1")[:n - 1]
        return b + bytes(n - len(b))
    if tu.startswith("ARRAY"):
        lo, hi, elem = parse_array(t)
        return b"".join(encode(elem, x) for x in v)
    if t in STRUCTS:
        members, size = STRUCTS[t]
        out = bytearray(size)
        for m, mt, off in members:
            b = encode(mt, v[m])
            out[off:off + len(b)] = b
        return bytes(out)
    if t in ALIASES:
        return encode(ALIASES[t], v)
    return struct.pack(ADS_TYPES[tu][1], v)


def decode(t, b):
    tu = t.upper()
    if tu.startswith("WSTRING"):
        units = [b[i:i + 2] for i in range(0, len(b) - 1, 2)]
        end = units.index(b"\0\0") if b"\0\0" in units else len(units)
        return b"".join(units[:end]).decode("utf-16-le", "replace")
    if tu.startswith("STRING"):
        return b.split(b"\0")[0].decode("latin-1")
    if tu.startswith("ARRAY"):
        lo, hi, elem = parse_array(t)
        s = type_size(elem)
        return [decode(elem, b[i * s:(i + 1) * s]) for i in range(hi - lo + 1)]
    if t in STRUCTS:
        return {m: decode(mt, b[off:off + type_size(mt)]) for m, mt, off in STRUCTS[t][0]}
    if t in ALIASES:
        return decode(ALIASES[t], b)
    return struct.unpack(ADS_TYPES[tu][1], b[:ADS_TYPES[tu][0]])[0]


def cstr(s):
    return s.encode("latin-1") + b"\0"


def adst(t):
    """The ADST_* code TwinCAT gives a type (an array: its element's; structs: BIGTYPE)."""
    tu = t.upper()
    if tu.startswith("WSTRING"):
        return 31
    if tu.startswith("STRING"):
        return 30
    if tu.startswith("ARRAY"):
        return adst(parse_array(t)[2])
    if t in ALIASES:
        return adst(ALIASES[t])
    return ADS_TYPES.get(tu, (0, 0, 65))[2]


def sym_entry(name, t, off, size):
    """One symbol entry as the upload (0xF00B) and 0xF009 carry it."""
    arrdim = 1 if t.upper().startswith("ARRAY") else 0
    attrs = ATTRIBUTES.get(name, [])
    flags = SYM_TYPEGUID | (SYM_ATTRIBUTES if attrs else 0)
    body = struct.pack("<IIII HH HHH", 0x4040, off, size, adst(t), flags, arrdim, len(name), len(t), 0)
    body += cstr(name) + cstr(t) + cstr("")
    if arrdim:
        lo, hi, _ = parse_array(t)
        body += struct.pack("<iI", lo, hi - lo + 1)
    body += hashlib.md5(t.lower().encode()).digest()  # the type GUID (any 16 bytes will do here)
    if attrs:
        body += struct.pack("<H", len(attrs))
        for k, v in attrs:
            body += struct.pack("<BB", len(k), len(v)) + cstr(k) + cstr(v)
    body += bytes((-len(body) - 4) % 4)
    return struct.pack("<I", len(body) + 4) + body


class Plc:
    """Symbols, memory, handles; shared by every connection (under lock)."""

    def __init__(self, many=0, mixed=False, refuse=None, classic_handles=False):
        self.lock = threading.RLock()
        self.refuse = dict(refuse or {})  # index group -> ADS error it is answered with
        self.classic_handles = classic_handles
        self.areas = {a: bytearray(n) for a, n in AREA_SIZE.items()}
        self.many = [(f"GVL.nVar{i:04d}", MIXED[i % len(MIXED)] if mixed else "DINT", i) for i in range(many)]
        self.symbols = list(BASE_SYMBOLS) + [(n, t, mixed_value(t, i)) for n, t, i in self.many]
        self._uploads = None
        self.version = 1
        self.base = 0x100
        self.layout()
        self.mem = bytearray(self.size)
        for name, t, v in self.symbols:
            off = self.offsets[name.lower()][0]
            b = encode(t, v)
            self.mem[off:off + len(b)] = b
        self.handles = {}
        self.next_handle = 0x1000
        self.err_ams = 0
        self.err_ads = 0
        self.state = 5
        self.stats = {}
        self.routes = []

    def layout(self):
        self._uploads = None
        self.offsets = {}
        off = self.base
        for name, t, _ in self.symbols:
            self.offsets[name.lower()] = (off, type_size(t), t, name)
            off += type_size(t)
        self.size = off + 16

    def download(self):
        """New symbol version; variables move; handles and notifications die."""
        with self.lock:
            old = {k: bytes(self.mem[o:o + s]) for k, (o, s, _, _) in self.offsets.items()}
            self.base += 0x40
            self.layout()
            self.mem = bytearray(self.size)
            for k, (o, s, _, _) in self.offsets.items():
                self.mem[o:o + s] = old[k]
            self.version = (self.version + 1) & 0xFF
            self.handles = {}

    def count(self, key, n=1):
        self.stats[key] = self.stats.get(key, 0) + n

    def resolve(self, name):
        """name (with members / subscripts) -> (offset, size, type) or None."""
        n = name.strip().rstrip("\0").strip()
        low = n.lower()
        if low in self.offsets:  # a plain symbol: no scan (10,000-symbol tables)
            off, size, t, _ = self.offsets[low]
            return off, size, t
        best = None
        for k in self.offsets:
            if low == k or (low.startswith(k) and low[len(k)] in ".["):
                if not best or len(k) > len(best):
                    best = k
        if not best:
            return None
        off, size, t, _ = self.offsets[best]
        rest = n[len(best):]
        while rest:
            if rest[0] == "[":
                if not t.upper().startswith("ARRAY"):
                    return None
                lo, hi, elem = parse_array(t)
                j = rest.index("]")
                i = int(rest[1:j])
                if i < lo or i > hi:
                    return None
                es = type_size(elem)
                off += (i - lo) * es
                size, t, rest = es, elem, rest[j + 1:]
            elif rest[0] == ".":
                if t not in STRUCTS:
                    return None
                m = rest[1:].split(".")[0].split("[")[0]
                for mn, mt, mo in STRUCTS[t][0]:
                    if mn.lower() == m.lower():
                        off += mo
                        size, t = type_size(mt), mt
                        break
                else:
                    return None
                rest = rest[1 + len(m):]
            else:
                return None
        return off, size, t

    def tick_many(self, step):
        """--tick: every --many variable takes a new value."""
        with self.lock:
            for name, t, i in self.many:
                off = self.offsets[name.lower()][0]
                b = encode(t, mixed_value(t, i, step))
                self.mem[off:off + len(b)] = b

    # ---- uploads
    def symbol_upload(self):
        if self._uploads is None:  # built once per layout (version)
            self._uploads = (self._symbol_upload(), self._dt_upload())
        return self._uploads[0]

    def _symbol_upload(self):
        out = []
        for name, t, _ in self.symbols:
            off, size, _, _ = self.offsets[name.lower()]
            out.append(sym_entry(name, t, off, size))
        return b"".join(out)

    def dt_entry(self, name, t, size, offs, subs=(), adst=65, comment=""):
        arr = b""
        arrdim = 0
        if t.upper().startswith("ARRAY"):
            lo, hi, _ = parse_array(t)
            arr, arrdim = struct.pack("<iI", lo, hi - lo + 1), 1
        sub = b"".join(subs)
        body = struct.pack("<IIIIIII HHHHH", 1, 0, 0, size, offs, adst, 0, len(name), len(t), len(comment),
                           arrdim, len(subs))
        body += cstr(name) + cstr(t) + cstr(comment) + arr + sub
        return struct.pack("<I", len(body) + 4) + body

    def dt_upload(self):
        self.symbol_upload()
        return self._uploads[1]

    def _dt_upload(self):
        out = b""
        for sname, (members, size) in STRUCTS.items():
            subs = [self.dt_entry(m, mt, type_size(mt), mo) for m, mt, mo in members]
            out += self.dt_entry(sname, "", size, 0, subs)
        for a, at in ALIASES.items():
            out += self.dt_entry(a, at, type_size(at), 0, (), adst(at))
        return out

    # ---- raw areas (%M, %I, %Q)
    def area_rw(self, ig, io, n, data=None):
        area, bit = AREAS[ig]
        mem = self.areas[area]
        if bit:
            byte, b = divmod(io, 8)
            if byte >= len(mem):
                return 0x703, b""
            if data is None:
                return (0x705, b"") if n != 1 else (0, bytes([(mem[byte] >> b) & 1]))
            if len(data) != 1:
                return 0x705, b""
            mem[byte] = (mem[byte] | (1 << b)) if data[0] else (mem[byte] & ~(1 << b))
            return 0, b""
        if io + (n if data is None else len(data)) > len(mem):
            return 0x703, b""
        if data is None:
            return 0, bytes(mem[io:io + n])
        mem[io:io + len(data)] = data
        return 0, b""

    # ---- generic access by (ig, io)
    def read(self, ig, io, n):
        with self.lock:
            if ig in self.refuse:
                return self.refuse[ig], b""
            if ig in AREAS:
                return self.area_rw(ig, io, n)
            if ig == 0x4040:
                if io + n > len(self.mem):
                    return 0x703, b""
                return 0, bytes(self.mem[io:io + n])
            if ig == 0xF005:
                h = self.handles.get(io)
                if not h:
                    return 0x710, b""
                if n > h[1]:
                    return 0x705, b""
                return 0, bytes(self.mem[h[0]:h[0] + n])
            if ig == 0xF008:
                return 0, bytes([self.version])[:n]
            if ig == 0xF00C:
                return 0, struct.pack("<II", len(self.symbols), len(self.symbol_upload()))[:n]
            if ig == 0xF00F:
                su, du = self.symbol_upload(), self.dt_upload()
                return 0, struct.pack("<IIIIII", len(self.symbols), len(su), len(STRUCTS) + 1, len(du), 0, 0)[:n]
            if ig == 0xF00B:
                return 0, self.symbol_upload()[:n]
            if ig == 0xF00E:
                return 0, self.dt_upload()[:n]
            if ig == 0xF100:
                return 0, struct.pack("<HH", self.state, 0)[:n]
            return 0x702, b""

    def write(self, ig, io, data):
        with self.lock:
            if ig in self.refuse:
                return self.refuse[ig]
            if ig in AREAS:
                return self.area_rw(ig, io, 0, data)[0]
            if ig == 0x4040:
                if io + len(data) > len(self.mem):
                    return 0x703
                self.mem[io:io + len(data)] = data
                return 0
            if ig == 0xF005:
                h = self.handles.get(io)
                if not h:
                    return 0x710
                if len(data) > h[1]:
                    return 0x705
                self.mem[h[0]:h[0] + len(data)] = data
                return 0
            if ig == 0xF006:
                if len(data) < 4:
                    return 0x705
                self.handles.pop(struct.unpack("<I", data[:4])[0], None)
                return 0
            return 0x702

    def readwrite(self, ig, io, rlen, data):
        with self.lock:
            if ig in self.refuse:
                return self.refuse[ig], b""
            if ig == 0xF003:
                r = self.resolve(data.split(b"\0")[0].decode("latin-1"))
                if not r:
                    return 0x710, b""
                h = self.next_handle
                self.next_handle += 1
                self.handles[h] = r
                if rlen <= 4 or self.classic_handles:
                    return 0, struct.pack("<I", h)
                tn = r[2].encode("latin-1")
                return 0, (struct.pack("<IIIH", h, r[1], 0, len(tn)) + tn + b"\0")[:rlen]
            if ig == 0xF004:
                r = self.resolve(data.split(b"\0")[0].decode("latin-1"))
                if not r:
                    return 0x710, b""
                return 0, bytes(self.mem[r[0]:r[0] + min(rlen, r[1])])
            if ig == 0xF009:  # symbol info by name: one entry, for members and elements too
                name = data.split(b"\0")[0].decode("latin-1").strip()
                r = self.resolve(name)
                if not r:
                    return 0x710, b""
                e = sym_entry(name, r[2], r[0], r[1])
                return (0, e) if rlen >= len(e) else (0x705, b"")
            if ig == 0xF080:  # sum read
                subs = [struct.unpack_from("<III", data, 12 * i) for i in range(io)]
                res, blobs = [], []
                for sig, sio, slen in subs:
                    e, d = self.read(sig, sio, slen)
                    res.append(struct.pack("<I", e))
                    blobs.append(d if not e else bytes(slen))
                self.count("sum_subs", io)
                return 0, b"".join(res) + b"".join(blobs)
            if ig == 0xF081:  # sum write
                subs = [struct.unpack_from("<III", data, 12 * i) for i in range(io)]
                off, res = 12 * io, b""
                for sig, sio, slen in subs:
                    res += struct.pack("<I", self.write(sig, sio, data[off:off + slen]))
                    off += slen
                self.count("sum_subs", io)
                return 0, res
            if ig == 0xF082:  # sum read-write
                subs = [struct.unpack_from("<IIII", data, 16 * i) for i in range(io)]
                off, head, blobs = 16 * io, [], []
                for sig, sio, srl, swl in subs:
                    e, d = self.readwrite(sig, sio, srl, data[off:off + swl])
                    off += swl
                    head.append(struct.pack("<II", e, len(d)))
                    blobs.append(d)
                self.count("sum_subs", io)
                return 0, b"".join(head) + b"".join(blobs)
            return 0x702, b""


class Conn(threading.Thread):
    def __init__(self, srv, sock):
        super().__init__(daemon=True)
        self.srv, self.plc, self.sock = srv, srv.plc, sock
        self.wlock = threading.Lock()
        self.notes = {}
        self.next_note = 1
        self.alive = True
        self.peer = None

    def send(self, b):
        with self.wlock:
            self.sock.sendall(b)

    def reply(self, hdr, cmd, err, body):
        tgt, tport, src, sport, _, _, _, _, inv = hdr
        ams = struct.pack("<6sH6sHHHIII", src, sport, tgt, tport, cmd, 0x0005, len(body), err, inv)
        self.send(struct.pack("<HI", 0, 32 + len(body)) + ams + body)

    def run(self):
        threading.Thread(target=self.notifier, daemon=True).start()
        buf = b""
        try:
            while True:
                d = self.sock.recv(65536)
                if not d:
                    break
                buf += d
                while len(buf) >= 6:
                    reserved, ln = struct.unpack_from("<HI", buf)
                    if len(buf) < 6 + ln:
                        break
                    frame, buf = buf[6:6 + ln], buf[6 + ln:]
                    if reserved != 0:  # router commands: not for a PLC
                        continue
                    self.handle(frame)
        except OSError:
            pass
        self.alive = False
        try:
            self.sock.close()
        except OSError:
            pass

    def handle(self, frame):
        hdr = struct.unpack_from("<6sH6sHHHIII", frame)
        tgt, tport, src, sport, cmd, flags, dlen, _, inv = hdr
        data = frame[32:32 + dlen]
        p = self.plc
        with p.lock:
            p.count(f"cmd{cmd}")
            if cmd in (2, 3, 9) and len(data) >= 4:
                p.count(f"cmd{cmd}:0x{struct.unpack_from('<I', data)[0]:X}")
            if tgt != self.srv.net_id:
                return self.reply(hdr, cmd, 0x7, b"")
            if tport not in (self.srv.ams_port, 10000):
                return self.reply(hdr, cmd, 0x6, b"")
            if p.err_ams:
                return self.reply(hdr, cmd, p.err_ams, b"")
            if p.err_ads and cmd != 4:
                return self.reply(hdr, cmd, 0, struct.pack("<I", p.err_ads))
        if cmd == 1:
            body = struct.pack("<IBBH", 0, 3, 1, 4024) + b"Plc30 App".ljust(16, b"\0")
        elif cmd == 4:
            body = struct.pack("<IHH", 0, p.state, 0)
        elif cmd == 5:
            if len(data) >= 4:
                p.state = struct.unpack_from("<H", data)[0]
            body = struct.pack("<I", 0)
        elif cmd == 2:
            ig, io, n = struct.unpack_from("<III", data)
            e, d = p.read(ig, io, n)
            body = struct.pack("<II", e, len(d)) + d
        elif cmd == 3:
            ig, io, n = struct.unpack_from("<III", data)
            body = struct.pack("<I", p.write(ig, io, data[12:12 + n]))
        elif cmd == 9:
            ig, io, rl, wl = struct.unpack_from("<IIII", data)
            e, d = p.readwrite(ig, io, rl, data[16:16 + wl])
            body = struct.pack("<II", e, len(d)) + d
        elif cmd == 6:
            ig, io, n, mode, maxdelay, cycle = struct.unpack_from("<IIIIII", data)
            e, d = p.read(ig, io, n)
            if e:
                body = struct.pack("<II", e, 0)
            else:
                h = self.next_note
                self.next_note += 1
                self.notes[h] = {"ig": ig, "io": io, "n": n, "mode": mode, "cycle": cycle / 1e7,
                                 "last": None, "due": 0.0, "ver": p.version}
                p.count("notes_added")
                body = struct.pack("<II", 0, h)
        elif cmd == 7:
            h = struct.unpack_from("<I", data)[0]
            body = struct.pack("<I", 0 if self.notes.pop(h, None) else 0x714)
            p.count("notes_deleted")
        else:
            body = struct.pack("<I", 0x701)
        self.reply(hdr, cmd, 0, body)
        if cmd == 2 or cmd == 9 or cmd == 6:
            self.peer = (src, sport)

    def notifier(self):
        """Push notifications: on change (mode 4) or every cycle (mode 3)."""
        while self.alive:
            time.sleep(self.srv.note_period)
            if not self.notes or not self.peer:
                continue
            now = time.time()
            samples = []
            p = self.plc
            with p.lock:
                for h, nt in list(self.notes.items()):
                    if nt["ver"] != p.version and nt["ig"] == 0xF005:
                        continue  # a download killed it
                    e, d = p.read(nt["ig"], nt["io"], nt["n"])
                    if e:
                        continue
                    if nt["mode"] == 3:
                        if now < nt["due"]:
                            continue
                        nt["due"] = now + max(nt["cycle"], 0.01)
                    elif d == nt["last"]:
                        continue
                    nt["last"] = d
                    samples.append(struct.pack("<II", h, len(d)) + d)
                if samples:
                    p.count("notes_sent", len(samples))
            if not samples:
                continue
            ft = int(now * 1e7) + 116444736000000000
            stamp = struct.pack("<QI", ft, len(samples)) + b"".join(samples)
            body = struct.pack("<II", 4 + len(stamp), 1) + stamp
            src, sport = self.peer
            ams = struct.pack("<6sH6sHHHIII", src, sport, self.srv.net_id, self.srv.ams_port, 8, 0x0004,
                              len(body), 0, 0)
            try:
                self.send(struct.pack("<HI", 0, 32 + len(body)) + ams + body)
            except OSError:
                return


class Server:
    def __init__(self, port, udp_port, net_id, ams_port, many, user, password, mixed=False, note_period=0.005,
                 refuse=None, classic_handles=False):
        self.plc = Plc(many, mixed, refuse, classic_handles)
        self.note_period = note_period
        self.net_id = bytes(int(x) for x in net_id.split("."))
        self.ams_port = ams_port
        self.user, self.password = user, password
        self.conns = []
        self.ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", port))
        self.ls.listen(16)
        self.port = self.ls.getsockname()[1]
        self.us = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.us.bind(("127.0.0.1", udp_port if udp_port is not None else self.port))
        self.udp_port = self.us.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()
        threading.Thread(target=self.udp, daemon=True).start()

    def accept(self):
        while True:
            s, _ = self.ls.accept()
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c = Conn(self, s)
            self.conns.append(c)
            self.plc.count("connections")
            c.start()

    def udp(self):
        while True:
            d, addr = self.us.recvfrom(2048)
            if len(d) < 24 or d[:4] != b"\x03\x66\x14\x71":
                continue
            inv, service = struct.unpack_from("<II", d, 4)
            ntags = struct.unpack_from("<I", d, 20)[0]
            tags, off = {}, 24
            for _ in range(ntags):
                if off + 4 > len(d):
                    break
                tid, ln = struct.unpack_from("<HH", d, off)
                tags[tid] = d[off + 4:off + 4 + ln]
                off += 4 + ln
            head = b"\x03\x66\x14\x71" + struct.pack("<II", inv, service | 0x80000000) + self.net_id + \
                struct.pack("<H", 10000)
            if service == 1:
                name = b"fake-plc\0"
                out = head + struct.pack("<I", 1) + struct.pack("<HH", 12, len(name)) + name
            elif service == 6:
                s = lambda t: tags.get(t, b"").split(b"\0")[0].decode("latin-1")  # noqa: E731
                ok = s(13) == self.user and s(2) == self.password
                if ok:
                    self.plc.routes.append({"name": s(12), "net_id": ".".join(str(b) for b in tags.get(7, b"")),
                                            "host": s(5)})
                out = head + struct.pack("<I", 1) + struct.pack("<HHI", 1, 4, 0 if ok else 0x704)
            else:
                continue
            self.us.sendto(out, addr)

    def control(self):
        for line in sys.stdin:
            try:
                req = json.loads(line)
                ans = self.op(req)
                ans["ok"] = True
            except Exception as e:  # pylint: disable=broad-except
                ans = {"ok": False, "error": repr(e)}
            sys.stdout.write(json.dumps(ans) + "\n")
            sys.stdout.flush()

    def op(self, req):
        p = self.plc
        op = req["op"]
        with p.lock:
            if op in ("set", "get"):
                r = p.resolve(req["name"])
                if not r:
                    raise KeyError(req["name"])
                off, size, t = r
                if op == "set":
                    b = bytes.fromhex(req["hex"]) if "hex" in req else encode(t, req["value"])
                    p.mem[off:off + len(b)] = b
                    return {}
                b = bytes(p.mem[off:off + size])
                return {"value": decode(t, b), "hex": b.hex(), "type": t}
            if op == "download":
                p.download()
                return {"version": p.version}
            if op == "error":
                code = int(req.get("code", 0))
                if req.get("where", "ams") == "ams":
                    p.err_ams, p.err_ads = code, 0
                else:
                    p.err_ads, p.err_ams = code, 0
                return {}
            if op == "state":
                p.state = int(req["state"])
                return {}
            if op == "stats":
                return {"stats": dict(p.stats), "handles": len(p.handles),
                        "notes": sum(len(c.notes) for c in self.conns if c.alive)}
            if op == "reset_stats":
                p.stats = {}
                return {}
            if op == "routes":
                return {"routes": p.routes}
            if op in ("raw_set", "raw_get"):
                mem, off = p.areas[req["area"]], int(req["offset"])
                if op == "raw_set":
                    b = bytes.fromhex(req["hex"])
                    mem[off:off + len(b)] = b
                    return {}
                return {"hex": bytes(mem[off:off + int(req.get("size", 1))]).hex()}
        if op == "drop":
            for c in self.conns:
                try:
                    c.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            return {}
        raise ValueError(f"unknown op {op}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--udp-port", type=int, default=None)
    ap.add_argument("--net-id", default="5.80.192.200.1.1")
    ap.add_argument("--ams-port", type=int, default=851)
    ap.add_argument("--many", type=int, default=0, help="add GVL.nVar0000.. DINT symbols")
    ap.add_argument("--user", default="Administrator")
    ap.add_argument("--password", default="1")
    ap.add_argument("--mixed", action="store_true", help="--many symbols of mixed types")
    ap.add_argument("--tick", type=float, default=0, help="change every --many value each TICK seconds")
    ap.add_argument("--note-period", type=float, default=0.005, help="notifier check period, seconds")
    num = lambda v: int(v, 0)  # noqa: E731
    ap.add_argument("--no-sum", type=num, default=0, metavar="CODE",
                    help="answer the sum commands 0xF080-0xF086 with this ADS error (0x701 or 0x702)")
    ap.add_argument("--no-upload", type=num, default=0, metavar="CODE",
                    help="answer the symbol/data-type uploads and their info (0xF00B/C/E/F) with this ADS error")
    ap.add_argument("--refuse", action="append", default=[], metavar="IG=CODE",
                    help="answer index group IG with ADS error CODE (repeatable), e.g. 0xF009=0x701")
    ap.add_argument("--classic-handles", action="store_true", help="0xF003 replies only the 4-byte handle")
    a = ap.parse_args()
    refuse = {}
    if a.no_sum:
        refuse.update({ig: a.no_sum for ig in SUM_IGS})
    if a.no_upload:
        refuse.update({ig: a.no_upload for ig in UPLOAD_IGS})
    for r in a.refuse:
        ig, code = r.split("=")
        refuse[int(ig, 0)] = int(code, 0)
    srv = Server(a.port, a.udp_port, a.net_id, a.ams_port, a.many, a.user, a.password, a.mixed,
                 max(a.note_period, 0.001), refuse, a.classic_handles)
    if a.tick > 0:
        def ticker():
            step = 0
            while True:
                time.sleep(a.tick)
                step += 1
                srv.plc.tick_many(step)
        threading.Thread(target=ticker, daemon=True).start()
    sys.stdout.write(f"READY {srv.port} {srv.udp_port}\n")
    sys.stdout.flush()
    srv.control()


if __name__ == "__main__":
    main()
