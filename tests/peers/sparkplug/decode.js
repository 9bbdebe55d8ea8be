#!/usr/bin/env node
// decode.js — decode Sparkplug B payloads with Eclipse Tahu's reference
// JavaScript implementation (npm sparkplug-payload@1.0.3), for fieldbridge's
// interoperability tests: our own .proto must not be the judge of our encoder.
//
// Input (stdin): one JSON object per line, {"topic": "...", "hex": "..."},
// in the order the messages arrived.  Output (stdout): one JSON object per
// line, {"topic": ..., "payload": {...}} as decodePayload() returns it, with:
//  - DATA/CMD metrics that carry only an alias get the datatype (and name)
//    learnt from the NBIRTH/DBIRTH of the same node/device, as a host would;
//    the raw protobuf is decoded with the package's own generated Payload
//    type, the datatype filled in, re-encoded and decoded by decodePayload();
//  - Long objects normalised: 64-bit integers as decimal strings (exact),
//    timestamps and seq as numbers, and the package's UInt32 quirk (it reads
//    long_value with Long.toInt(), so values >= 2^31 come back negative)
//    undone, as is an Int64 that a newer `long` returns unsigned.
"use strict";
const readline = require("readline");
const sp = require("sparkplug-payload").get("spBv1.0");
const Proto = require("sparkplug-payload/lib/sparkplugPayloadProto").org.eclipse.tahu.protobuf.Payload;
const Long = require("long");

const births = new Map(); // "group/edge[/device]" → Map(alias → {name, datatype})

function num(v) {
  if (Long.isLong(v)) return v.toNumber();
  return v;
}

function normValue(type, v) {
  if (v === null || v === undefined) return v === undefined ? null : v;
  switch (type) {
    case "Int64":
      if (Long.isLong(v)) return v.toSigned().toString();
      return String(v);
    case "UInt64":
    case "DateTime":
      if (Long.isLong(v)) return v.toUnsigned().toString();
      return String(v);
    case "UInt32":
      if (Long.isLong(v)) v = v.toNumber();
      return v < 0 ? v + 4294967296 : v;
    default:
      if (Long.isLong(v)) return v.toString();
      if (v instanceof Uint8Array) return Buffer.from(v).toString("hex");
      return v;
  }
}

function normProps(p) {
  if (!p) return p;
  const out = {};
  for (const k of Object.keys(p)) out[k] = { type: p[k].type, value: num(p[k].value) };
  return out;
}

function keyOf(topic) {
  const lv = topic.split("/"); // spBv1.0/group/TYPE/edge[/device]
  return { type: lv[2], key: lv[1] + "/" + lv[3] + (lv.length > 4 ? "/" + lv[4] : "") };
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  if (!line.trim()) return;
  const { topic, hex } = JSON.parse(line);
  const buf = Buffer.from(hex, "hex");
  const out = { topic };
  try {
    const { type, key } = keyOf(topic);
    let bytes = buf;
    const names = new Map();
    if (type === "NBIRTH" || type === "DBIRTH") {
      const m = new Map();
      const raw = Proto.decode(buf);
      for (const x of raw.metrics || [])
        if (x.alias !== undefined && x.alias !== null) m.set(num(x.alias), { name: x.name, datatype: x.datatype });
      births.set(key, m);
      if (type === "NBIRTH") for (const k of [...births.keys()]) if (k.startsWith(key + "/")) births.delete(k);
    } else if (type === "NDATA" || type === "DDATA" || type === "NCMD" || type === "DCMD") {
      const m = births.get(key) || new Map();
      const raw = Proto.decode(buf);
      (raw.metrics || []).forEach((x, i) => {
        const b = x.alias !== undefined && x.alias !== null ? m.get(num(x.alias)) : undefined;
        if (b) {
          if (!x.datatype) x.datatype = b.datatype;
          names.set(i, b.name);
        }
      });
      bytes = Proto.encode(raw).finish();
    }
    const p = sp.decodePayload(bytes);
    const res = {};
    if (p.timestamp !== undefined) res.timestamp = num(p.timestamp);
    if (p.seq !== undefined) res.seq = num(p.seq);
    res.metrics = (p.metrics || []).map((x, i) => {
      const r = { name: x.name !== undefined ? x.name : names.get(i), type: x.type, value: normValue(x.type, x.value) };
      if (x.alias !== undefined) r.alias = num(x.alias);
      if (x.timestamp !== undefined) r.timestamp = num(x.timestamp);
      if (x.isHistorical !== undefined) r.isHistorical = x.isHistorical;
      if (x.properties) r.properties = normProps(x.properties);
      return r;
    });
    out.payload = res;
  } catch (e) {
    out.error = String(e && e.message ? e.message : e);
  }
  process.stdout.write(JSON.stringify(out) + "\n");
});
