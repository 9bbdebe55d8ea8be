#!/usr/bin/env node
/* s7_server.js — snap7's S7Server (npm node-snap7 1.0.9, a real S7comm stack
 * that is not ours) as the test peer for fieldbridge's S7 driver.
 *
 * Usage: node s7_server.js --port 1102 [--db 1:256]... [--mk 256] [--pe 64]
 *        [--pa 64] [--ct 64] [--tm 64] [--pdu 480]
 * Binds 127.0.0.1 only.  Prints "READY <port>" on stdout when listening.
 *
 * Control on stdin, one JSON object per line, one JSON answer per line:
 *   {"op":"set","area":"DB","db":1,"start":0,"hex":"41a80000"}  → {"ok":true}
 *   {"op":"get","area":"DB","db":1,"start":0,"size":4}          → {"ok":true,"hex":"41a80000"}
 *   {"op":"clients"}                                              → {"ok":true,"clients":1}
 * Areas: DB, MK (M), PE (I), PA (Q), CT (counters), TM (timers).
 * Install: cd tests/peers/s7 && npm_config_nodedir=/usr npm ci
 */
'use strict';
const snap7 = require('node-snap7');
const readline = require('readline');

const args = process.argv.slice(2);
let port = 1102;
let pdu = 0;
const dbs = [];
const sizes = {};
for (let i = 0; i < args.length; i++) {
    const a = args[i], v = args[i + 1];
    if (a === '--port') { port = parseInt(v, 10); i++; }
    else if (a === '--db') { const [n, s] = v.split(':'); dbs.push([parseInt(n, 10), parseInt(s || '256', 10)]); i++; }
    else if (a === '--pdu') { pdu = parseInt(v, 10); i++; }
    else if (['--mk', '--pe', '--pa', '--ct', '--tm'].includes(a)) { sizes[a.slice(2).toUpperCase()] = parseInt(v, 10); i++; }
    else { console.error(`unknown argument ${a}`); process.exit(2); }
}

const srv = new snap7.S7Server();
const AREA = { DB: srv.srvAreaDB, MK: srv.srvAreaMK, PE: srv.srvAreaPE, PA: srv.srvAreaPA,
               CT: srv.srvAreaCT, TM: srv.srvAreaTM };

function check(ok, what) {
    if (ok === false) {
        console.error(`${what} failed: ${srv.ErrorText(srv.LastError())}`);
        process.exit(1);
    }
}

for (const [n, s] of dbs) check(srv.RegisterArea(srv.srvAreaDB, n, Buffer.alloc(s)), `RegisterArea DB${n}`);
for (const k of Object.keys(sizes)) check(srv.RegisterArea(AREA[k], Buffer.alloc(sizes[k])), `RegisterArea ${k}`);
check(srv.SetParam(srv.LocalPort, port), 'SetParam LocalPort');
if (pdu) check(srv.SetParam(srv.PDURequest, pdu), 'SetParam PDURequest');

srv.StartTo('127.0.0.1', (err) => {
    if (err) {
        console.error(`StartTo failed: ${srv.ErrorText(err)}`);
        process.exit(1);
    }
    process.stdout.write(`READY ${port}\n`);
});

function handle(req) {
    const area = AREA[(req.area || 'DB').toUpperCase()];
    if (area === undefined) throw new Error(`unknown area ${req.area}`);
    const isDB = area === srv.srvAreaDB;
    const getArea = () => (isDB ? srv.GetArea(area, req.db) : srv.GetArea(area));
    if (req.op === 'set') {
        const cur = getArea();
        const data = Buffer.from(req.hex, 'hex');
        if (req.start + data.length > cur.length) throw new Error('beyond the area');
        data.copy(cur, req.start);
        if (isDB) srv.SetArea(area, req.db, cur); else srv.SetArea(area, cur);
        return { ok: true };
    }
    if (req.op === 'get') {
        const cur = getArea();
        return { ok: true, hex: cur.subarray(req.start, req.start + req.size).toString('hex') };
    }
    if (req.op === 'clients') return { ok: true, clients: srv.ClientsCount() };
    throw new Error(`unknown op ${req.op}`);
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
    if (!line.trim()) return;
    let ans;
    try { ans = handle(JSON.parse(line)); } catch (e) { ans = { ok: false, error: String(e.message || e) }; }
    process.stdout.write(JSON.stringify(ans) + '\n');
});
rl.on('close', () => { srv.Stop(); process.exit(0); });
process.on('SIGTERM', () => { srv.Stop(); process.exit(0); });
